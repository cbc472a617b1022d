// The word filter: the ban rule by hand on a made-up vocabulary, the ban set against a naive
// oracle that decodes every candidate in context, and the guarantee on the real small
// model's continuations: listed words it writes without the filter, none with it, batched
// or alone.
#include <fmt/format.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cctype>
#include <fstream>
#include <map>

#include "destein/runtime/generate.hpp"
#include "destein/text/tokenizer.hpp"
#include "runtime/word_filter.hpp"
#include "test_support.hpp"

using namespace destein;
using Catch::Matchers::Contains;

namespace {

const std::filesystem::path kTinyLm =
    std::filesystem::path(DESTEIN_SOURCE_DIR) / "models" / "tiny-lm";

// A tokenizer whose tokens are the given strings; id 0 is an end-of-sequence token.
class PieceTokenizer : public Tokenizer {
 public:
  explicit PieceTokenizer(std::vector<std::string> pieces) : pieces_(std::move(pieces)) {}
  std::vector<int64_t> encode(std::string_view text) const override {
    for (size_t i = 1; i < pieces_.size(); ++i) {
      if (pieces_[i] == text) return {static_cast<int64_t>(i)};
    }
    return {};
  }
  std::string decode(const std::vector<int64_t>& ids) const override {
    std::string out;
    for (int64_t id : ids) out += pieces_.at(static_cast<size_t>(id));
    return out;
  }
  int64_t vocab_size() const override { return static_cast<int64_t>(pieces_.size()); }
  std::optional<int64_t> bos_id() const override { return std::nullopt; }
  std::optional<int64_t> eos_id() const override { return 0; }
  bool prepend_bos() const override { return false; }
  std::string kind() const override { return "pieces"; }

 private:
  std::vector<std::string> pieces_;
};

bool word_byte(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) && static_cast<unsigned char>(c) < 0x80;
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// The whole occurrences of `words` in `text` that cover a byte at or after `start`.
std::vector<std::string> whole_words_after(const std::string& text_in, size_t start,
                                           const std::vector<std::string>& words) {
  const std::string text = lower(text_in);
  std::vector<std::string> found;
  for (const auto& w : words) {
    const std::string lw = lower(w);
    for (size_t i = text.find(lw); i != std::string::npos; i = text.find(lw, i + 1)) {
      const size_t e = i + lw.size();
      const bool left = i == 0 || !word_byte(text[i - 1]);
      const bool right = e == text.size() || !word_byte(text[e]);
      if (left && right && e > start)
        found.push_back(fmt::format("'{}' at {} in '{}'", w, i, text_in));
    }
  }
  return found;
}

// The oracle of the ban rule: decode every token after the row, in context, and ban it when
// the new text holds a listed word (boundary before it) that ends inside the token's text
// and is followed there by a non-word byte or by the text's end.
std::vector<int64_t> naive_bans(const Tokenizer& tok, const std::vector<int64_t>& prompt,
                                const std::vector<int64_t>& generated,
                                const std::vector<std::string>& words) {
  const std::string before = lower(tok.decode(prompt) + tok.decode_continuation(prompt, generated));
  std::vector<int64_t> out;
  for (int64_t t = 0; t < tok.vocab_size(); ++t) {
    std::vector<int64_t> g = generated;
    g.push_back(t);
    const std::string text = lower(tok.decode(prompt) + tok.decode_continuation(prompt, g));
    bool banned = false;
    for (const auto& w : words) {
      const std::string lw = lower(w);
      for (size_t i = text.find(lw); i != std::string::npos && !banned; i = text.find(lw, i + 1)) {
        const size_t e = i + lw.size();
        const bool left = i == 0 || !word_byte(text[i - 1]);
        const bool right = e == text.size() || !word_byte(text[e]);
        banned = left && right && e > before.size();
      }
    }
    if (banned) out.push_back(t);
  }
  return out;
}

}  // namespace

TEST_CASE("word filter: the ban rule on a made-up vocabulary (hand values)",
          "[generate][processors][word-filter]") {
  //                                0   1    2      3      4      5       6       7
  const PieceTokenizer tok({"", "a", "you", " id", "iot", "iots", "iot.", " idiot",
                            //  8        9    10   11   12    13         14     15       16
                            " IDIOT", " ", ".", "s", "id", " idiots", " go", " away", " awayness",
                            //  17      18        19         20
                            "idiot", "Idiot,", "idiotic", "x.idiot!"});
  WordFilterProcessor filter(tok, {"idiot", "Go Away"});
  using Ids = std::vector<int64_t>;
  // "you": the word can only begin inside a token, after its own space or punctuation.
  CHECK(filter.banned_after({2}, {}) == Ids{7, 8, 20});
  // "you id": "iot" and "iot." complete it (text end / '.' after), "iots" is another word.
  CHECK(filter.banned_after({2, 3}, {}) == Ids{4, 6, 7, 8, 20});
  CHECK(filter.banned_after({2}, {3}) == Ids{4, 6, 7, 8, 20});
  // "you ": a word may start with the next token.
  CHECK(filter.banned_after({2, 9}, {}) == Ids{7, 8, 17, 18, 20});
  // A phrase across tokens, its space included: "you go" + " away" (not " awayness").
  CHECK(filter.banned_after({2}, {14}) == Ids{7, 8, 15, 20});
  // "you idiot" spelled by the prompt alone is the prompt's: "." may follow it.
  CHECK(filter.banned_after({2, 7}, {}) == Ids{7, 8, 20});
  // No boundary before "aid": "iot" does not make a word.
  CHECK(filter.banned_after({1, 12}, {}) == Ids{7, 8, 20});
  // The oracle agrees on every context above.
  const std::vector<std::string> words = {"idiot", "Go Away"};
  for (const auto& [p, g] : std::vector<std::pair<Ids, Ids>>{{{2}, {}},
                                                             {{2, 3}, {}},
                                                             {{2}, {3}},
                                                             {{2, 9}, {}},
                                                             {{2}, {14}},
                                                             {{2, 7}, {}},
                                                             {{1, 12}, {}}}) {
    CHECK(filter.banned_after(p, g) == naive_bans(tok, p, g, words));
  }
  CHECK_THROWS_WITH(WordFilterProcessor(tok, {}), Contains("no word"));
  CHECK_THROWS_WITH(WordFilterProcessor(tok, {"x", ""}), Contains("word 1 is empty"));
}

TEST_CASE("word filter: word lists name the file and line of an error", "[word-filter]") {
  auto dir = test::temp_dir("word_list");
  std::ofstream(dir / "ok.txt") << "# insults\n\n  Idiot \nstupid\n# end\ngo away\n";
  CHECK(load_word_list(dir / "ok.txt") == std::vector<std::string>{"Idiot", "stupid", "go away"});
  std::ofstream(dir / "empty.txt") << "# nothing\n\n";
  CHECK_THROWS_WITH(load_word_list(dir / "empty.txt"),
                    Contains("empty.txt") && Contains("no word"));
  std::ofstream(dir / "bad.txt") << "idiot\nfoo\tbar\n";
  CHECK_THROWS_WITH(load_word_list(dir / "bad.txt"),
                    Contains("bad.txt:2") && Contains("control character"));
  CHECK_THROWS_WITH(load_word_list(dir / "missing.txt"),
                    Contains("missing.txt") && Contains("cannot be read"));
}

TEST_CASE(
    "word filter: the real model's listed words never appear with the filter, batched or alone",
    "[generate][processors][word-filter]") {
  auto model = load_model(kTinyLm);
  auto tok = load_tokenizer(kTinyLm);
  std::vector<std::vector<int64_t>> prompts;
  std::vector<std::string> prompt_texts = {
      "The", "I think that", "You are a", "We went to the", "Why would anyone", "Hello"};
  for (const auto& t : prompt_texts) prompts.push_back(tok->encode_prompt(t));
  GenerationOptions o;
  o.num_samples = 4;
  o.max_new_tokens = 24;
  o.seed = 11;
  o.top_p = 0.95;
  auto texts_of = [&](const std::vector<Generation>& gens) {
    std::vector<std::pair<std::string, size_t>>
        out;  // (prompt text + continuation, prompt text size)
    for (const auto& g : gens) {
      const auto& p = prompts[static_cast<size_t>(g.prompt_index)];
      const std::string head = tok->decode(p);
      out.push_back({head + tok->decode_continuation(p, g.token_ids), head.size()});
    }
    return out;
  };
  // The words the model writes most often without the filter (whole words, >= 3 letters).
  const auto plain = texts_of(generate(*model, prompts, o));
  std::map<std::string, int> counts;
  for (const auto& [text, start] : plain) {
    std::string w;
    for (size_t i = start; i <= text.size(); ++i) {
      if (i < text.size() && word_byte(text[i])) {
        w += static_cast<char>(std::tolower(static_cast<unsigned char>(text[i])));
      } else {
        if (w.size() >= 3) ++counts[w];
        w.clear();
      }
    }
  }
  std::vector<std::pair<int, std::string>> by_count;
  for (const auto& [w, n] : counts) by_count.push_back({n, w});
  std::sort(by_count.rbegin(), by_count.rend());
  REQUIRE(by_count.size() >= 4);
  std::vector<std::string> words;
  for (size_t i = 0; i < 4; ++i) words.push_back(by_count[i].second);
  words[0][0] =
      static_cast<char>(std::toupper(static_cast<unsigned char>(words[0][0])));  // case-insensitive
  size_t plain_hits = 0;
  for (const auto& [text, start] : plain)
    plain_hits += whole_words_after(text, start, words).size();
  INFO(fmt::format("listed: {} {} {} {}; {} whole occurrences without the filter", words[0],
                   words[1], words[2], words[3], plain_hits));
  REQUIRE(plain_hits >= 8);

  std::vector<std::vector<int64_t>> alone;
  for (int64_t batch : {1, 0, 5}) {
    o.batch_size = batch;
    o.processors = {std::make_shared<WordFilterProcessor>(*tok, words)};
    const auto gens = generate(*model, prompts, o);
    size_t tokens = 0;
    for (const auto& [text, start] : texts_of(gens)) {
      const auto hits = whole_words_after(text, start, words);
      INFO("batch " << batch);
      CHECK(hits == std::vector<std::string>{});
    }
    std::vector<std::vector<int64_t>> ids;
    for (const auto& g : gens) {
      ids.push_back(g.token_ids);
      tokens += g.token_ids.size();
    }
    CHECK(tokens > 6 * 4 * 10);  // the rows ran, not ended at once
    if (batch == 1)
      alone = ids;
    else
      CHECK(ids == alone);
  }
  // The ban set equals the naive oracle after real continuations (prompt + part of a row).
  WordFilterProcessor filter(*tok, words);
  o.batch_size = 0;
  o.processors.clear();
  const auto gens = generate(*model, prompts, o);
  for (size_t i = 0; i < gens.size(); i += 5) {
    const auto& p = prompts[static_cast<size_t>(gens[i].prompt_index)];
    for (size_t cut : {size_t{0}, size_t{3}, gens[i].token_ids.size()}) {
      const std::vector<int64_t> g(gens[i].token_ids.begin(),
                                   gens[i].token_ids.begin() + static_cast<std::ptrdiff_t>(std::min(
                                                                   cut, gens[i].token_ids.size())));
      INFO("row " << i << " after " << g.size() << " tokens");
      CHECK(filter.banned_after(p, g) == naive_bans(*tok, p, g, words));
    }
  }
}
