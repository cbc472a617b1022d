#!/usr/bin/env bash
# Fetches the public data destein's configs read, for machines without the staged
# ../shared/data folder. Every file is taken from a public GitHub repository at a fixed
# commit and checked against its SHA-256 (the same table as shared/data/PROVENANCE.md).
#
#   bash scripts/get_data.sh [TARGET]      # default TARGET: ../shared/data beside the checkout
#   export DESTEIN_DATA=TARGET             # if TARGET is somewhere else
#
# Two files are derived rather than copied (see PROVENANCE.md): the Reddit post/comment
# JSONL is rebuilt here from its 180 source files; the ToxiGen sentence list (used only as
# a held-out set of the scorer) is rebuilt from the 31 prompt files. Content warning: most
# of these files contain toxic, obscene or hateful language, on purpose.
# Written without network access on the machine that staged the data: the URLs and
# checksums come from PROVENANCE.md, but this script has not been run end to end.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target=${1:-"$root/../shared/data"}
mkdir -p "$target"
raw=https://raw.githubusercontent.com

fetch() {  # fetch REPO COMMIT PATH_IN_REPO LOCAL_PATH SHA256
  local repo=$1 commit=$2 path=$3 local_path=$4 sha=$5
  local out="$target/$local_path"
  if [ -f "$out" ] && echo "$sha  $out" | sha256sum -c --status; then
    echo "ok       $local_path"
    return
  fi
  mkdir -p "$(dirname "$out")"
  curl -fsSL --retry 3 -o "$out.part" "$raw/$repo/$commit/$path"
  if ! echo "$sha  $out.part" | sha256sum -c --status; then
    echo "error: $local_path from $repo@$commit does not match its SHA-256 $sha" >&2
    rm -f "$out.part"
    exit 1
  fi
  mv "$out.part" "$out"
  echo "fetched  $local_path"
}

DESTEIN=LizLizLi/DeStein; DESTEIN_C=f1cad0a2c1589e99afa879f6e96d476afeefea52
RTP=data/RealToxicityPrompts
fetch $DESTEIN $DESTEIN_C $RTP/100/test.jsonl rtp/100/test.jsonl b42ad24ad4f0b8b493e0cc38daf2f410c4bc3d09ee165db85caa042d8ef92c59
fetch $DESTEIN $DESTEIN_C $RTP/1k/output_toxic_1k.jsonl rtp/1k/output_toxic_1k.jsonl ac61811f019cb5a176e8206ab5e01a78d6497d9116f16afdedaa27f44fde6bc0
fetch $DESTEIN $DESTEIN_C $RTP/1k/output_no_toxic_1k.jsonl rtp/1k/output_no_toxic_1k.jsonl 06c977a1646d87462d0212aa89e6c30c314c486fe7c6db0819767a56d9b2df96
fetch $DESTEIN $DESTEIN_C $RTP/5k/output_toxic_5k.jsonl rtp/5k/output_toxic_5k.jsonl 7028f29e7e243090b23c5f54192da07c1395719212ac5169194c2ce22647bd36
fetch $DESTEIN $DESTEIN_C $RTP/5k/output_no_toxic_5k.jsonl rtp/5k/output_no_toxic_5k.jsonl 1a2e01f01d9c739e3b21f01b11f0ad68cdcc08797e4508a4ad8c3b810c138c41
fetch alisawuffles/DExperts 4ef198fe4cad76f87f7ceac362171a3bda906303 human_eval/toxicity/human_eval_toxicity.csv rtp/extra/dexperts_human_eval_toxicity.csv fdd71e819b12b9438f406795dc8de2be8c27726a4250aa7ac1a2fbda9a2f8e45
fetch allenai/real-toxicity-prompts dd44ab77ed8bb36d6a62f8205768fda8382eb7ba data/list_of_naughty_and_bad_words.txt lexicons/list_of_naughty_and_bad_words.txt 8b1cf1e349791ffd4375a482528b46f6f94a87ef20d025c7bb741feff38b438c
DETOX=s-nlp/detox; DETOX_C=0ebaeab817957bb5463819bec7fa4ed3de9a26ee
fetch $DETOX $DETOX_C emnlp2021/style_transfer/condBERT/vocab/toxic_words.txt lexicons/condbert_toxic_words.txt 8647103818e3e20d54b862636b04708e64cd07c9147a5c319fadc1c89b62ab29
fetch $DETOX $DETOX_C emnlp2021/data/dev/dev_toxic classifier/detox_civil_comments/dev_toxic 32c43604eef999ebe4b80b223637e3d33966ac31688522cf9cd99e30a35fc340
fetch $DETOX $DETOX_C emnlp2021/data/dev/dev_normal classifier/detox_civil_comments/dev_normal fd48ae8ea1b76001bfde4df8ac9fc1765b63a8fc347378fcacdb189b1927440f
fetch $DETOX $DETOX_C emnlp2021/data/test/test_10k_toxic classifier/detox_civil_comments/test_10k_toxic 55d28cc52081d8ecdc650f37919533a7971a0422dcbd9f97d0f28d7aeb371418
fetch $DETOX $DETOX_C emnlp2021/data/test/test_10k_normal classifier/detox_civil_comments/test_10k_normal a2d94991209caf8b1bd2beda0e2f148092dfd0b725d324bd1c4cdfddc45e020f
PARADETOX_C=d97b17d0813539cf05c74f9cdb5e66372704ca57
fetch s-nlp/paradetox $PARADETOX_C paradetox/paradetox.tsv paradetox/paradetox.tsv 6e5e80def7deaf4a3410f7de6c638c13f100ce5ece09ee84a47f6f14ab69a0cd
fetch s-nlp/paradetox $PARADETOX_C paradetox/paradetox_cannot_rewrite.tsv paradetox/paradetox_cannot_rewrite.tsv d3dbe41d0a20e1f2df76ed487d424e35555b81d88d80b28f81fa0f793197971b
fetch t-davidson/hate-speech-and-offensive-language cb50f7e9eb855a99abc51423bf40df0e26d6fe30 data/labeled_data.csv classifier/davidson_hate_offensive/labeled_data.csv fcb8bc7c68120ae4af04a5b9acd58585513ede11e1548ebf36a5c2040b6f6281
fetch victoriyayeotobo/NLP-CW1 f92c5a699ce967693244082698f1ba6b5e7d01cd olid-training-v1.0.tsv classifier/olid/olid-training-v1.0.tsv b8056efdb3a781ba3e096eabac2d2092b2923d4c9860e09ee4f57b200dcce0ce
fetch conversationai/unintended-ml-bias-analysis 9c7d91aaa53406a362354661a93e07956d95e59a archive/unintended_ml_bias/eval_datasets/toxicity_nonfuzzed_testset.csv classifier/wiki_toxicity_nonfuzzed/toxicity_nonfuzzed_testset.csv c11caefa0c487cb7a7fc0726cb53358d4e5463bd071d65979398af59fa80f881
fetch IBM/MAX-Toxic-Comment-Classifier 8170c0baa2bd05b0ef048835df2a875b03dd1854 samples/test_examples.csv classifier/jigsaw2018_sample/test_examples.csv 8fc93924348c6567dc0628506b9712f90ec63de2bdd17f57406a3295a6ff2028
SPANS_C=beaf170538df8275c3447b2e26070f2f82e55272
fetch ipavlopoulos/toxic_spans $SPANS_C data/comments.csv classifier/toxic_spans/comments.csv 76cd6ebd10a890d269c0a7e5e451f3da12375219906f314fd9cfb1e18b1a905f
fetch ipavlopoulos/toxic_spans $SPANS_C data/annotations.csv classifier/toxic_spans/annotations.csv f67725aa9de73cd4ef9050222f6ae985ef0e33e8da89cb8137ffeb9a1d0fc32b
fetch ipavlopoulos/toxic_spans $SPANS_C data/spans.csv classifier/toxic_spans/spans.csv 389c6964db5d96d79ecfe038aa4ffe04abafd64b6d6427fbad4ec7fb2c7672aa
fetch paul-rottger/hatecheck-data d84302298ceeb34f4b0dde2d8a1f4932c2caa612 test_suite_cases.csv classifier/hatecheck/test_suite_cases.csv ecf0dc1e93fccc90b6f880e632b19e635c0f0a68b3157915a9e20b6938f121cf
GOEMO=monologg/GoEmotions-pytorch; GOEMO_C=b75f9d3a8b76bc1060687925b04ca98a1b8ea66b
fetch $GOEMO $GOEMO_C data/original/train.tsv lm/goemotions/train.tsv 1c254a142be5c00e80d819b9ae1bbd36d94b2eeb8f4b1271846508d57e57d9c5
fetch $GOEMO $GOEMO_C data/original/dev.tsv lm/goemotions/dev.tsv 575489c079c9de1097062a01738f998590d6b7ead66dd1c9fd1d2ba01fd8bc62
fetch $GOEMO $GOEMO_C data/original/test.tsv lm/goemotions/test.tsv 0587b2dd8b27b97352adbfc3fb083d46005c8946657fdc2b1ca8b1cc7f1f8be4
fetch $GOEMO $GOEMO_C data/original/labels.txt lm/goemotions/labels.txt 45c3ef86782d2a4d7fedcd6d8c111aa0d0e94720689bd164fac94fefb4495a89
fetch karpathy/char-rnn 6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e data/tinyshakespeare/input.txt lm/tinyshakespeare/input.txt 86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed
fetch google/sentencepiece 273449044caa593c2fd7eb7550cb3ab2cff93f1a data/botchan.txt lm/botchan/botchan.txt 464bd5300c24fce16fcc4555d4231a57632caae4d0090ad6aa92854a3b227ba7
WT_C=77f55b912142e11fcfdf5b530231fb9c52f181e8
fetch pytorch/examples $WT_C word_language_model/data/wikitext-2/valid.txt lm/wikitext-2-tokenized/valid.txt f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8
fetch pytorch/examples $WT_C word_language_model/data/wikitext-2/test.txt lm/wikitext-2-tokenized/test.txt d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0

# Derived: lm/reddit_post_comment/reddit_post_comment.jsonl, rebuilt as PROVENANCE.md
# describes (subreddit, then post number; bytes literals decoded as UTF-8, else cp1252;
# empty bodies dropped; r/tifu post 9's body removed: it holds an RTP prompt).
reddit_out="$target/lm/reddit_post_comment/reddit_post_comment.jsonl"
reddit_sha=a41c291a50ac4cdcb45c0defc0e5f5dea870ce47b0aca0a2fcafa911001ef6e0
if ! { [ -f "$reddit_out" ] && echo "$reddit_sha  $reddit_out" | sha256sum -c --status; }; then
  echo "derived  lm/reddit_post_comment/reddit_post_comment.jsonl (180 source files)"
  tmp=$(mktemp -d)
  curl -fsSL --retry 3 -o "$tmp/src.tar.gz" \
    https://codeload.github.com/ishandandekar/Reddit-Post-Comment-Dataset/tar.gz/bb1df6b521895f0decb9f069a2cedf07cbdd1456
  tar -xzf "$tmp/src.tar.gz" -C "$tmp"
  mkdir -p "$(dirname "$reddit_out")"
  python3 - "$tmp"/Reddit-Post-Comment-Dataset-*/data "$reddit_out" <<'PY'
import ast, json, os, re, sys
data, out = sys.argv[1], sys.argv[2]
def text_of(literal):
    raw = ast.literal_eval(literal)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252")
def read(path):
    b = open(path, "rb").read()
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b.decode("cp1252")
with open(out, "w", encoding="utf-8") as f:
    for sub in sorted(os.listdir(data)):
        posts = sorted((int(re.search(r"post_(\d+)", p).group(1)), p) for p in os.listdir(os.path.join(data, sub)))
        for n, name in posts:
            subreddit = sub
            for line in read(os.path.join(data, sub, name)).splitlines():
                if line.startswith("# r/"):
                    subreddit = line[4:].strip()
                elif line.startswith("###### "):
                    kind, text = "comment", text_of(line[7:].strip())
                elif line.startswith("#### "):
                    kind, text = "body", text_of(line[5:].strip())
                elif line.startswith("## "):
                    kind, text = "title", line[3:].strip()
                else:
                    continue
                if line.startswith(("###### ", "#### ", "## ")):
                    if not text.strip() or (subreddit.lower() == "tifu" and n == 9 and kind == "body"):
                        continue
                    f.write(json.dumps({"subreddit": subreddit, "post": n, "type": kind, "text": text},
                                       ensure_ascii=False) + "\n")
PY
  rm -rf "$tmp"
  if ! echo "$reddit_sha  $reddit_out" | sha256sum -c --status; then
    echo "warning: the rebuilt reddit_post_comment.jsonl differs from the staged file's SHA-256;" \
         "the LM mix still reads it, but figures in docs/results.md came from the staged file" >&2
  fi
fi
echo "data in $target (set DESTEIN_DATA=$target if that is not ../shared/data beside the checkout)"
echo "not fetched: classifier/toxigen/toxigen_prompt_sentences.tsv (derived from microsoft/TOXIGEN prompts/*.txt" \
     "at 01517e814639e0334c920a3c502036c8158aac87, see PROVENANCE.md); only 'destein eval-scorer' reads it"
