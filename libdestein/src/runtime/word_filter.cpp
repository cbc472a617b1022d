#include "runtime/word_filter.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <limits>

#include "check.hpp"
#include "destein/text/tokenizer.hpp"

namespace destein {

namespace {

bool is_word_byte(unsigned char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

std::string lower_ascii(std::string s) {
  for (char& c : s) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return s;
}

std::string trim(const std::string& s) {
  const char* ws = " \t\r\n\f\v";
  const auto first = s.find_first_not_of(ws);
  if (first == std::string::npos) return "";
  return s.substr(first, s.find_last_not_of(ws) - first + 1);
}

}  // namespace

std::vector<std::string> load_word_list(const std::filesystem::path& file) {
  std::ifstream in(file);
  DESTEIN_CHECK_IO(in.good(), "word list {}: cannot be read", file.string());
  std::vector<std::string> words;
  std::string line;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    const std::string word = trim(line);
    if (word.empty() || word[0] == '#') continue;
    for (unsigned char c : word) {
      DESTEIN_CHECK_IO(c >= 0x20 && c != 0x7f,
                       "{}:{}: a word holds the control character 0x{:02x}; write one word or "
                       "phrase per line",
                       file.string(), number, c);
    }
    words.push_back(word);
  }
  DESTEIN_CHECK_IO(!words.empty(),
                   "word list {}: no word in it (one word per line; '#' starts a comment)",
                   file.string());
  return words;
}

// A byte trie over the lower-cased words.
struct WordFilterProcessor::Trie {
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> children;
    bool word_end = false;
  };
  std::vector<Node> nodes{Node{}};
  size_t longest = 0;

  void add(const std::string& word) {
    int32_t n = 0;
    for (unsigned char c : word) {
      int32_t next = child(n, c);
      if (next < 0) {
        next = static_cast<int32_t>(nodes.size());
        nodes[static_cast<size_t>(n)].children.push_back({c, next});
        nodes.emplace_back();
      }
      n = next;
    }
    nodes[static_cast<size_t>(n)].word_end = true;
    longest = std::max(longest, word.size());
  }
  int32_t child(int32_t n, unsigned char c) const {
    for (const auto& [b, next] : nodes[static_cast<size_t>(n)].children) {
      if (b == c) return next;
    }
    return -1;
  }
  // Whether `text`, read from node `n` (a word begun before it with a boundary in front),
  // completes a word that a non-word byte or the end of `text` follows.
  bool completes(int32_t n, const std::string& text) const {
    for (size_t j = 0; j < text.size(); ++j) {
      n = child(n, static_cast<unsigned char>(text[j]));
      if (n < 0) return false;
      const bool boundary_after =
          j + 1 == text.size() || !is_word_byte(static_cast<unsigned char>(text[j + 1]));
      if (nodes[static_cast<size_t>(n)].word_end && boundary_after) return true;
    }
    return false;
  }
};

WordFilterProcessor::WordFilterProcessor(const Tokenizer& tokenizer, std::vector<std::string> words)
    : tokenizer_(tokenizer), trie_(std::make_unique<Trie>()) {
  DESTEIN_CHECK_ARG(!words.empty(), "word filter: no word to filter");
  for (size_t i = 0; i < words.size(); ++i) {
    DESTEIN_CHECK_ARG(!words[i].empty(), "word filter: word {} is empty", i);
    words_.push_back(lower_ascii(words[i]));
    trie_->add(words_.back());
  }
  // A token's text after an anchor that ends in a whole character: SentencePiece drops the
  // leading space of a sequence's first piece, which decode_continuation keeps.
  const std::vector<int64_t> anchor = tokenizer.encode("a");
  const int64_t V = tokenizer.vocab_size();
  token_text_.resize(static_cast<size_t>(V));
  first_byte_.resize(256);
  for (int64_t t = 0; t < V; ++t) {
    std::string text = lower_ascii(anchor.empty() ? tokenizer.decode({t})
                                                  : tokenizer.decode_continuation(anchor, {t}));
    if (!text.empty())
      first_byte_[static_cast<unsigned char>(text[0])].push_back(static_cast<int32_t>(t));
    // Words that begin inside the token, after one of its own non-word bytes, ban it
    // whatever comes before.
    for (size_t k = 1; k < text.size(); ++k) {
      if (is_word_byte(static_cast<unsigned char>(text[k - 1]))) continue;
      if (trie_->completes(0, text.substr(k))) {
        always_banned_.push_back(t);
        break;
      }
    }
    token_text_[static_cast<size_t>(t)] = std::move(text);
  }
}

WordFilterProcessor::~WordFilterProcessor() = default;

std::vector<int64_t> WordFilterProcessor::banned_after(
    const std::vector<int64_t>& prompt, const std::vector<int64_t>& generated) const {
  const std::string text =
      lower_ascii(tokenizer_.decode(prompt) + tokenizer_.decode_continuation(prompt, generated));
  // The words begun in the text's tail with a boundary in front, as trie nodes (the root:
  // the text ends on a boundary, so a word may start with the next token).
  std::vector<int32_t> open;
  const size_t L = text.size();
  const size_t first = L >= trie_->longest ? L - trie_->longest + 1 : 0;
  for (size_t i = first; i <= L; ++i) {
    if (i > 0 && is_word_byte(static_cast<unsigned char>(text[i - 1]))) continue;
    int32_t n = 0;
    for (size_t j = i; j < L && n >= 0; ++j)
      n = trie_->child(n, static_cast<unsigned char>(text[j]));
    if (n >= 0) open.push_back(n);
  }
  std::vector<char> banned(token_text_.size(), 0);
  for (int64_t t : always_banned_) banned[static_cast<size_t>(t)] = 1;
  for (int32_t n : open) {
    // Only tokens whose text starts with a byte that continues the open word can complete it.
    for (const auto& [b, next] : trie_->nodes[static_cast<size_t>(n)].children) {
      for (int32_t t : first_byte_[b]) {
        if (!banned[static_cast<size_t>(t)] &&
            trie_->completes(n, token_text_[static_cast<size_t>(t)])) {
          banned[static_cast<size_t>(t)] = 1;
        }
      }
    }
  }
  std::vector<int64_t> out;
  for (size_t t = 0; t < banned.size(); ++t) {
    if (banned[t]) out.push_back(static_cast<int64_t>(t));
  }
  return out;
}

void WordFilterProcessor::process(ProcessorRows& rows) {
  for (int64_t i = 0; i < rows.size(); ++i) {
    float* scores = rows.scores[static_cast<size_t>(i)];
    for (int64_t t : banned_after(*rows.prompts[static_cast<size_t>(i)],
                                  *rows.generated[static_cast<size_t>(i)])) {
      if (t < rows.vocab_size) scores[t] = -std::numeric_limits<float>::infinity();
    }
  }
}

}  // namespace destein
