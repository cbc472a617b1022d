// The LM training corpus: source readers, the RTP overlap filter, dedup and the split.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <set>

#include "train/lm_corpus.hpp"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;

namespace {

fs::path data_dir() {
  const char* env = std::getenv("DESTEIN_DATA");
  return env != nullptr && *env != '\0' ? fs::path(env) : fs::path(DESTEIN_DEFAULT_DATA_DIR);
}

std::vector<destein::LmDocument> docs(const std::vector<std::string>& texts) {
  std::vector<destein::LmDocument> out;
  for (const auto& t : texts) out.push_back({t, "test"});
  return out;
}

}  // namespace

TEST_CASE("overlap text is lower-cased with whitespace folded", "[lm_corpus]") {
  CHECK(destein::normalize_for_overlap("  The\tQUICK \n\n brown  Fox ") == "the quick brown fox");
  CHECK(destein::normalize_for_overlap("") == "");
}

TEST_CASE("the overlap filter finds a prompt inside a document whatever its case and spacing",
          "[lm_corpus]") {
  destein::PromptOverlapFilter filter({"So I told him that he was a complete", "Short one",
                                       "Fourteen lengthy words here",
                                       "and then they all said the f"});
  CHECK(filter.prompts().size() == 3);
  CHECK(filter.too_short() == 1);  // "short one" is under 25 characters
  CHECK(filter.find_in("Yesterday  so i TOLD him that he\nwas a complete idiot.") == 0);
  // The prompt's last word may be cut inside a longer word of the document.
  CHECK(filter.find_in("... and then they ALL said the fucking thing") == 2);
  // A prompt of exactly four words is keyed on its first three.
  CHECK(filter.find_in("fourteen lengthy words here, and more") == 1);
  CHECK(filter.find_in("So I told him that he was a compliment") == -1);
  CHECK(filter.find_in("so i told him") == -1);
  CHECK(filter.find_in("") == -1);

  auto corpus = docs({"nothing here", "YES so I told him that he was a complete fool",
                      "short one indeed", "Fourteen lengthy words here"});
  auto report = filter.remove_overlaps(corpus);
  CHECK(report.documents_checked == 4);
  CHECK(report.documents_removed == 2);
  CHECK(report.prompts_checked == 3);
  CHECK(report.prompts_too_short == 1);
  REQUIRE(corpus.size() == 2);
  CHECK(corpus[0].text == "nothing here");
  CHECK(corpus[1].text == "short one indeed");  // short prompts are not searched
  REQUIRE(report.matches.size() == 2);
  CHECK(report.matches[0].first == "so i told him that he was a complete");
}

TEST_CASE("tokenised punctuation is rejoined", "[lm_corpus]") {
  CHECK(destein::detokenize_spaced_text("it is , as they say , great . do n't you think ?") ==
        "it is, as they say, great. don't you think?");
  CHECK(destein::detokenize_spaced_text("the 1 @,@ 000 km @-@ long road ( a @.@ k @.@ a ) is ok") ==
        "the 1,000 km-long road (a.k.a) is ok");
  CHECK(destein::detokenize_spaced_text("he 's here and they 're not") ==
        "he's here and they're not");
}

TEST_CASE("duplicates go, and the held-out split depends on the text alone", "[lm_corpus]") {
  auto corpus = docs({"a", "b", "a", "c", "b"});
  CHECK(destein::remove_duplicate_documents(corpus) == 2);
  CHECK(corpus.size() == 3);

  std::vector<std::string> texts;
  for (int i = 0; i < 4000; ++i) texts.push_back("document number " + std::to_string(i));
  auto split = destein::split_documents(docs(texts), 0.1, 7);
  CHECK(split.train.size() + split.heldout.size() == 4000);
  CHECK(split.heldout.size() > 320);
  CHECK(split.heldout.size() < 480);
  // Reversed order and a subset: each document lands on the same side.
  std::vector<std::string> reversed(texts.rbegin(), texts.rbegin() + 1000);
  auto again = destein::split_documents(docs(reversed), 0.1, 7);
  std::set<std::string> heldout;
  for (const auto& d : split.heldout) heldout.insert(d.text);
  for (const auto& d : again.heldout) CHECK(heldout.count(d.text) == 1);
  for (const auto& d : again.train) CHECK(heldout.count(d.text) == 0);
  auto other_seed = destein::split_documents(docs(texts), 0.1, 8);
  CHECK(other_seed.heldout.size() != split.heldout.size());
  CHECK_THROWS_WITH(destein::split_documents(docs(texts), 1.0, 0), Contains("[0, 1)"));
}

TEST_CASE("toxic-labelled documents are thinned by a seeded hash, the rest kept", "[lm_corpus]") {
  std::vector<destein::LmDocument> corpus;
  for (int i = 0; i < 2000; ++i) corpus.push_back({"toxic " + std::to_string(i), "set", 1});
  for (int i = 0; i < 500; ++i) corpus.push_back({"clean " + std::to_string(i), "set", 0});
  for (int i = 0; i < 500; ++i) corpus.push_back({"plain " + std::to_string(i), "lm", -1});
  auto thinned = corpus;
  const int64_t dropped = destein::thin_toxic_documents(thinned, 0.25, 0);
  CHECK(dropped > 1350);
  CHECK(dropped < 1650);
  CHECK(static_cast<int64_t>(thinned.size()) + dropped == 3000);
  int64_t labelled_clean = 0, unlabelled = 0;
  for (const auto& d : thinned) {
    labelled_clean += d.label == 0;
    unlabelled += d.label == -1;
  }
  CHECK(labelled_clean == 500);
  CHECK(unlabelled == 500);
  auto all = corpus;
  CHECK(destein::thin_toxic_documents(all, 1.0, 0) == 0);
  auto none = corpus;
  CHECK(destein::thin_toxic_documents(none, 0.0, 0) == 2000);
  CHECK_THROWS_WITH(destein::thin_toxic_documents(none, 1.5, 0), Contains("[0, 1]"));
}

TEST_CASE("evaluation prompts and the scorer's held-out sets are refused as LM text",
          "[lm_corpus]") {
  CHECK_THROWS_WITH(destein::load_lm_source(data_dir(), "rtp/1k"), Contains("evaluation"));
  CHECK_THROWS_WITH(destein::load_lm_source(data_dir(), "hatecheck"), Contains("held-out"));
  CHECK_THROWS_WITH(destein::load_lm_source(data_dir(), "wikipedia"),
                    Contains("unknown LM source 'wikipedia'") && Contains("goemotions"));
  CHECK_THROWS_WITH(destein::load_lm_source("/nonexistent", "goemotions"),
                    Contains("/nonexistent"));
}

TEST_CASE("LM sources read the real data folder", "[lm_corpus][data]") {
  auto goemotions = destein::load_lm_source(data_dir(), "goemotions");
  CHECK(goemotions.size() == 54263);  // train + dev + test lines
  CHECK(goemotions.front().label == -1);
  auto olid = destein::load_lm_source(data_dir(), "olid");
  int64_t offensive = 0;
  for (const auto& d : olid) offensive += d.label == 1;
  CHECK(offensive == 4400);  // OLID's OFF rows, its own annotation
  CHECK(goemotions.front().text == "My favourite food is anything I didn't have to cook myself.");
  auto wiki = destein::load_lm_source(data_dir(), "wikitext2");
  for (const auto& d : wiki) {
    REQUIRE(d.text.front() != '=');                      // headings dropped
    REQUIRE(d.text.find(" @-@ ") == std::string::npos);  // markers rejoined
  }
  auto botchan = destein::load_lm_source(data_dir(), "botchan");
  for (const auto& d : botchan) REQUIRE(d.text.find("Project Gutenberg") == std::string::npos);
}

TEST_CASE("the default LM mix holds exactly the RTP leaks the data README lists",
          "[lm_corpus][data]") {
  std::vector<destein::LmDocument> corpus;
  for (const char* name :
       {"goemotions", "reddit_post_comment", "wikitext2", "detox_civil_comments_dev",
        "davidson_hate_offensive", "olid", "toxic_spans"}) {
    for (auto& d : destein::load_lm_source(data_dir(), name)) corpus.push_back(std::move(d));
  }
  destein::PromptOverlapFilter filter(destein::load_rtp_prompt_texts(data_dir()));
  auto report = filter.remove_overlaps(corpus);
  // README: "The following is a list of" (wikitext test), "I want the God damn fucking flag"
  // (toxic_spans), "What's the difference between anti" (olid); the fourth leak is in
  // detox_civil_comments/test_10k_toxic, a held-out file the mix leaves out.
  REQUIRE(report.documents_removed == 3);
  std::set<std::string> sources;
  for (const auto& m : report.matches) sources.insert(m.second);
  CHECK(sources == std::set<std::string>{"wikitext2", "toxic_spans", "olid"});
  CHECK(report.prompts_checked > 11000);
}
