// LM training text: source readers, the RTP overlap filter, dedup and the held-out split.
#include "train/lm_corpus.hpp"

#include <algorithm>
#include <fstream>
#include <unordered_set>

#include "check.hpp"
#include "fnv1a.hpp"
#include "io/jsonl.hpp"
#include "splitmix.hpp"
#include "train/scorer_data.hpp"

namespace destein {
namespace {

namespace fs = std::filesystem;

// Prompt keys are hashes of a prompt's first words; four words make a key rare enough
// that almost every candidate is a real match.
constexpr int kKeyWords = 4;

std::string fold_whitespace(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  bool space = false;
  for (char c : text) {
    if (c == ' ' || c == '\n' || c == '\r' || c == '\t' || c == '\f' || c == '\v') {
      space = !out.empty();
    } else {
      if (space) out.push_back(' ');
      space = false;
      out.push_back(c);
    }
  }
  return out;
}

fs::path require_file(const fs::path& data_dir, const std::string& relative,
                      std::string_view source) {
  const fs::path p = data_dir / relative;
  DESTEIN_CHECK_IO(fs::is_regular_file(p), "LM source '{}': file '{}' not found (data folder '{}')",
                   source, p.string(), data_dir.string());
  return p;
}

void add_document(std::vector<LmDocument>& out, std::string_view text, std::string_view source,
                  int label = -1) {
  std::string folded = fold_whitespace(sanitize_utf8(text));
  if (!folded.empty()) out.push_back({std::move(folded), std::string(source), label});
}

// GoEmotions: "text \t emotion ids \t comment id", no header, no quoting.
void read_goemotions(const fs::path& data_dir, std::vector<LmDocument>& out) {
  for (const char* split : {"train", "dev", "test"}) {
    const fs::path p =
        require_file(data_dir, fmt::format("lm/goemotions/{}.tsv", split), "goemotions");
    std::ifstream in(p, std::ios::binary);
    DESTEIN_CHECK_IO(in.good(), "cannot open '{}' for reading", p.string());
    std::string line;
    int64_t n = 0;
    while (std::getline(in, line)) {
      ++n;
      const size_t tab = line.find('\t');
      DESTEIN_CHECK_IO(tab != std::string::npos,
                       "{}:{}: expected 'text<TAB>labels<TAB>id', found no tab", p.string(), n);
      add_document(out, std::string_view(line).substr(0, tab), "goemotions");
    }
    DESTEIN_CHECK_IO(!in.bad(), "error while reading '{}'", p.string());
  }
}

void read_reddit(const fs::path& data_dir, std::vector<LmDocument>& out) {
  JsonlReader in(require_file(data_dir, "lm/reddit_post_comment/reddit_post_comment.jsonl",
                              "reddit_post_comment"));
  nlohmann::json value;
  while (in.next(value)) {
    add_document(out, record_text(value, in.where()), "reddit_post_comment");
  }
}

// WikiText-2 (tokenised): one paragraph per line, " = Heading = " lines and blank lines
// between them. Headings are dropped; "<unk>" stays a word the tokenizer can learn.
void read_wikitext(const fs::path& data_dir, std::vector<LmDocument>& out) {
  for (const char* split : {"valid", "test"}) {
    const fs::path p =
        require_file(data_dir, fmt::format("lm/wikitext-2-tokenized/{}.txt", split), "wikitext2");
    std::ifstream in(p, std::ios::binary);
    DESTEIN_CHECK_IO(in.good(), "cannot open '{}' for reading", p.string());
    std::string line;
    while (std::getline(in, line)) {
      const std::string folded = fold_whitespace(line);
      if (folded.empty() || folded.front() == '=') continue;
      add_document(out, detokenize_spaced_text(folded), "wikitext2");
    }
    DESTEIN_CHECK_IO(!in.bad(), "error while reading '{}'", p.string());
  }
}

// Plain books: paragraphs separated by blank lines. `start`/`end` markers, when given,
// bound the text (Project Gutenberg's header and licence footer).
void read_paragraphs(const fs::path& p, std::string_view source, std::string_view start,
                     std::string_view end, std::vector<LmDocument>& out) {
  std::ifstream in(p, std::ios::binary);
  DESTEIN_CHECK_IO(in.good(), "cannot open '{}' for reading", p.string());
  std::string line, paragraph;
  bool inside = start.empty();
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!inside) {
      inside = line.find(start) != std::string::npos;
      continue;
    }
    if (!end.empty() && line.find(end) != std::string::npos) break;
    if (line.find_first_not_of(" \t") == std::string::npos) {
      add_document(out, paragraph, source);
      paragraph.clear();
    } else {
      paragraph += line;
      paragraph += '\n';
    }
  }
  add_document(out, paragraph, source);
  DESTEIN_CHECK_IO(!in.bad(), "error while reading '{}'", p.string());
}

uint64_t hash_words(std::string_view text) { return detail::fnv1a64(text.data(), text.size()); }

// Offsets at which each word of normalised `text` starts, plus text.size() at the end.
std::vector<size_t> word_starts(std::string_view text) {
  std::vector<size_t> starts;
  if (text.empty()) return {0};
  starts.push_back(0);
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == ' ') starts.push_back(i + 1);
  }
  starts.push_back(text.size() + 1);  // as if a space followed the last word
  return starts;
}

}  // namespace

std::vector<std::string> lm_source_names() {
  std::vector<std::string> names = {"goemotions", "reddit_post_comment", "wikitext2",
                                    "tinyshakespeare", "botchan"};
  for (const auto& spec : labeled_sets()) {
    if (spec.role == LabeledSetRole::kTrain) names.push_back(spec.name);
  }
  return names;
}

std::vector<LmDocument> load_lm_source(const fs::path& data_dir, std::string_view name) {
  DESTEIN_CHECK_ARG(name.rfind("rtp", 0) != 0,
                    "LM source '{}': rtp/ holds the evaluation prompts and is never training text",
                    name);
  std::vector<LmDocument> out;
  if (name == "goemotions") {
    read_goemotions(data_dir, out);
  } else if (name == "reddit_post_comment") {
    read_reddit(data_dir, out);
  } else if (name == "wikitext2") {
    read_wikitext(data_dir, out);
  } else if (name == "tinyshakespeare") {
    read_paragraphs(require_file(data_dir, "lm/tinyshakespeare/input.txt", name), name, "", "",
                    out);
  } else if (name == "botchan") {
    read_paragraphs(require_file(data_dir, "lm/botchan/botchan.txt", name), name, "*** START",
                    "End of Project Gutenberg", out);
  } else {
    std::string known;
    for (const auto& n : lm_source_names()) known += (known.empty() ? "" : ", ") + n;
    const LabeledSetSpec* spec = nullptr;
    for (const auto& s : labeled_sets()) {
      if (s.name == name) spec = &s;
    }
    DESTEIN_CHECK_ARG(spec != nullptr, "unknown LM source '{}': expected one of {}", name, known);
    DESTEIN_CHECK_ARG(
        spec->role == LabeledSetRole::kTrain,
        "LM source '{}' is a held-out set of the toxicity scorer: it stays out of the LM "
        "mix so that the scorer's measurements stay independent (known sources: {})",
        name, known);
    const bool tokenised = name.rfind("detox_civil_comments", 0) == 0;
    for (const auto& t : load_labeled_set(data_dir, name)) {
      add_document(out, tokenised ? detokenize_spaced_text(t.text) : t.text, name, t.label);
    }
  }
  return out;
}

std::string detokenize_spaced_text(std::string_view input) {
  std::string text = fold_whitespace(input);
  // WikiText's escaped in-word punctuation first.
  for (const auto& [from, to] : {std::pair<std::string_view, std::string_view>{" @-@ ", "-"},
                                 {" @,@ ", ","},
                                 {" @.@ ", "."}}) {
    for (size_t at = text.find(from); at != std::string::npos;
         at = text.find(from, at + to.size())) {
      text.replace(at, from.size(), to);
    }
  }
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == ' ' && i + 1 < text.size()) {
      const char next = text[i + 1];
      const bool closes = next == ',' || next == '.' || next == '!' || next == '?' || next == ';' ||
                          next == ':' || next == ')' || next == '%';
      // "n't", "'s", "'re", "'ll", "'ve", "'m", "'d" attach to the word before.
      const std::string_view rest = std::string_view(text).substr(i + 1);
      const bool clitic = rest.rfind("n't", 0) == 0 || rest.rfind("'s ", 0) == 0 || rest == "'s" ||
                          rest.rfind("'re", 0) == 0 || rest.rfind("'ll", 0) == 0 ||
                          rest.rfind("'ve", 0) == 0 || rest.rfind("'m ", 0) == 0 ||
                          rest.rfind("'d ", 0) == 0;
      // Only when a word (or closing mark) precedes: " ." at the start stays.
      if ((closes || clitic) && !out.empty()) continue;
      if (!out.empty() && out.back() == '(') continue;
    }
    out.push_back(c);
  }
  return out;
}

std::string normalize_for_overlap(std::string_view text) {
  std::string folded = fold_whitespace(text);
  for (char& c : folded) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return folded;
}

std::vector<std::string> load_rtp_prompt_texts(const fs::path& data_dir) {
  const fs::path rtp = data_dir / "rtp";
  DESTEIN_CHECK_IO(fs::is_directory(rtp),
                   "no RTP folder at '{}': the overlap check needs the prompts", rtp.string());
  std::vector<fs::path> files;
  for (const auto& entry : fs::recursive_directory_iterator(rtp)) {
    if (entry.is_regular_file() && entry.path().extension() == ".jsonl")
      files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  std::vector<std::string> texts;
  for (const auto& f : files) {
    for (auto& p : load_rtp_prompts(f)) texts.push_back(std::move(p.text));
  }
  return texts;
}

PromptOverlapFilter::PromptOverlapFilter(const std::vector<std::string>& prompts,
                                         size_t min_chars) {
  std::unordered_set<std::string> seen;
  std::vector<bool> used_length(kKeyWords + 1, false);
  for (const auto& raw : prompts) {
    std::string p = normalize_for_overlap(raw);
    if (p.size() < min_chars) {
      ++too_short_;
      continue;
    }
    if (!seen.insert(p).second) continue;
    const std::vector<size_t> starts = word_starts(p);
    const int words = static_cast<int>(starts.size()) - 1;
    const int k = std::min(words, kKeyWords);
    // The key is the first k whole words; the prompt's last word may be cut in the
    // document ("fuck" in "fucking"), so a prompt of k words keys on k - 1 when it can.
    const int key_words = (words <= kKeyWords && words > 1) ? words - 1 : k;
    const std::string_view key = std::string_view(p).substr(0, starts[key_words] - 1);
    by_first_words_[hash_words(key) ^ static_cast<uint64_t>(key_words)].push_back(
        static_cast<int32_t>(prompts_.size()));
    used_length[key_words] = true;
    prompts_.push_back(std::move(p));
  }
  for (int k = 1; k <= kKeyWords; ++k) {
    if (used_length[k]) key_lengths_.push_back(k);
  }
}

int64_t PromptOverlapFilter::find_in(std::string_view raw) const {
  const std::string text = normalize_for_overlap(raw);
  const std::vector<size_t> starts = word_starts(text);
  const size_t words = starts.size() - 1;
  for (size_t w = 0; w < words; ++w) {
    for (int k : key_lengths_) {
      if (w + static_cast<size_t>(k) > words) break;
      const std::string_view key =
          std::string_view(text).substr(starts[w], starts[w + k] - 1 - starts[w]);
      auto it = by_first_words_.find(hash_words(key) ^ static_cast<uint64_t>(k));
      if (it == by_first_words_.end()) continue;
      for (int32_t index : it->second) {
        const std::string& p = prompts_[static_cast<size_t>(index)];
        if (text.compare(starts[w], p.size(), p) == 0) return index;
      }
    }
  }
  return -1;
}

OverlapReport PromptOverlapFilter::remove_overlaps(std::vector<LmDocument>& documents) const {
  OverlapReport report;
  report.prompts_checked = static_cast<int64_t>(prompts_.size());
  report.prompts_too_short = too_short_;
  report.documents_checked = static_cast<int64_t>(documents.size());
  std::vector<LmDocument> kept;
  kept.reserve(documents.size());
  for (auto& d : documents) {
    const int64_t hit = find_in(d.text);
    if (hit >= 0) {
      report.matches.emplace_back(prompts_[static_cast<size_t>(hit)], d.source);
    } else {
      kept.push_back(std::move(d));
    }
  }
  report.documents_removed = static_cast<int64_t>(report.matches.size());
  documents = std::move(kept);
  return report;
}

namespace {
bool hash_below(const std::string& text, double fraction, uint64_t seed) {
  const double scale = 1.0 / 18446744073709551616.0;  // 2^-64
  const uint64_t h = detail::splitmix64(hash_words(text) ^ detail::splitmix64(seed));
  return static_cast<double>(h) * scale < fraction;
}
}  // namespace

int64_t thin_toxic_documents(std::vector<LmDocument>& documents, double keep_fraction,
                             uint64_t seed) {
  DESTEIN_CHECK_ARG(keep_fraction >= 0.0 && keep_fraction <= 1.0,
                    "toxic keep fraction must be in [0, 1], found {}", keep_fraction);
  std::vector<LmDocument> kept;
  kept.reserve(documents.size());
  for (auto& d : documents) {
    // A different stream from the held-out split's, so the two choices are independent.
    if (d.label != 1 || hash_below(d.text, keep_fraction, seed ^ 0x746f786963ULL))
      kept.push_back(std::move(d));
  }
  const int64_t dropped = static_cast<int64_t>(documents.size() - kept.size());
  documents = std::move(kept);
  return dropped;
}

int64_t remove_duplicate_documents(std::vector<LmDocument>& documents) {
  std::unordered_set<std::string> seen;
  std::vector<LmDocument> kept;
  kept.reserve(documents.size());
  for (auto& d : documents) {
    if (seen.insert(d.text).second) kept.push_back(std::move(d));
  }
  const int64_t dropped = static_cast<int64_t>(documents.size() - kept.size());
  documents = std::move(kept);
  return dropped;
}

DocumentSplit split_documents(const std::vector<LmDocument>& documents, double heldout_fraction,
                              uint64_t seed) {
  DESTEIN_CHECK_ARG(heldout_fraction >= 0.0 && heldout_fraction < 1.0,
                    "held-out fraction must be in [0, 1), found {}", heldout_fraction);
  DocumentSplit split;
  for (const auto& d : documents) {
    (hash_below(d.text, heldout_fraction, seed) ? split.heldout : split.train).push_back(d);
  }
  return split;
}

}  // namespace destein
