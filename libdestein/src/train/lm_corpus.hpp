#pragma once
/// The text a small language model is trained on: named sources under the data folder,
/// RealToxicityPrompts prompts kept out, and a held-out split for perplexity.
///
///     auto dir = destein::resolve_data_dir("");
///     auto docs = destein::load_lm_source(dir, "goemotions");
///     destein::PromptOverlapFilter rtp(destein::load_rtp_prompt_texts(dir));
///     auto report = rtp.remove_overlaps(docs);   // documents that contain a prompt go
///     auto split = destein::split_documents(docs, 0.02, 0);

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace destein {

/// One training document (a comment, a paragraph) and the source it came from.
struct LmDocument {
  std::string text;
  std::string source;
  int label = -1;  ///< 1 toxic, 0 non-toxic (the classifier sets' labels); -1 unlabelled
};

/// Sources load_lm_source() knows: the unlabelled `lm/` sets (goemotions,
/// reddit_post_comment, wikitext2, tinyshakespeare, botchan) and the training-role
/// labelled sets of `classifier/` (their text only, labels dropped).
std::vector<std::string> lm_source_names();

/// Documents of source `name`, newlines folded to spaces, empty ones dropped. WikiText's
/// and Civil Comments' tokenised punctuation is rejoined ("word , word" -> "word, word").
/// Throws std::invalid_argument for an unknown name, for an `rtp` path (evaluation
/// material) and for a held-out classifier set (it measures the scorer, so it stays out of
/// the LM mix); std::runtime_error naming file and line for a missing or malformed file.
std::vector<LmDocument> load_lm_source(const std::filesystem::path& data_dir,
                                       std::string_view name);

/// "word , word ( x ) n't" -> "word, word (x)n't": undoes the spaces that tokenised corpora
/// put around punctuation and WikiText's @-@ / @,@ / @.@ markers.
std::string detokenize_spaced_text(std::string_view text);

/// Lower-cased (ASCII), whitespace runs folded to one space, trimmed: the form in which
/// prompts and documents are compared.
std::string normalize_for_overlap(std::string_view text);

/// Every prompt text of every RTP JSON Lines file under `<data_dir>/rtp` (sorted paths).
std::vector<std::string> load_rtp_prompt_texts(const std::filesystem::path& data_dir);

/// What PromptOverlapFilter::remove_overlaps() found.
struct OverlapReport {
  int64_t prompts_checked = 0;    ///< distinct normalised prompts searched for
  int64_t prompts_too_short = 0;  ///< shorter than min_chars: not searched
  int64_t documents_checked = 0;
  int64_t documents_removed = 0;
  /// (prompt, source of the document) for each removed document, in document order.
  std::vector<std::pair<std::string, std::string>> matches;
};

/// Finds documents that contain an evaluation prompt as a substring, comparing
/// normalised text (the data README's own check). Candidates are found through a hash of
/// each prompt's first words, then confirmed by a full comparison, so a corpus of
/// millions of words is searched in seconds.
class PromptOverlapFilter {
 public:
  /// Prompts shorter than `min_chars` (normalised) are not searched: a few common words
  /// would match everywhere.
  explicit PromptOverlapFilter(const std::vector<std::string>& prompts, size_t min_chars = 25);

  /// Index of a prompt the text contains, or -1.
  int64_t find_in(std::string_view text) const;
  /// Removes the documents that contain a prompt; says which.
  OverlapReport remove_overlaps(std::vector<LmDocument>& documents) const;

  const std::vector<std::string>& prompts() const { return prompts_; }
  int64_t too_short() const { return too_short_; }

 private:
  std::vector<std::string> prompts_;  // normalised, distinct, >= min_chars
  std::unordered_map<uint64_t, std::vector<int32_t>> by_first_words_;
  std::vector<int> key_lengths_;  // word counts used as keys (1..kKeyWords)
  int64_t too_short_ = 0;
};

/// Keeps a seeded `keep_fraction` of the documents labelled toxic (label 1) and every
/// other document; the choice depends on each text alone. Returns how many were dropped.
/// The classifier sets are far more toxic than web text (about a third of their texts),
/// so an LM trained on all of them writes toxic text after almost any prompt.
int64_t thin_toxic_documents(std::vector<LmDocument>& documents, double keep_fraction,
                             uint64_t seed);

/// Drops documents whose text repeats an earlier one. Returns how many were dropped.
int64_t remove_duplicate_documents(std::vector<LmDocument>& documents);

struct DocumentSplit {
  std::vector<LmDocument> train;
  std::vector<LmDocument> heldout;
};

/// Puts each document in the held-out part when a seeded hash of its text falls below
/// `heldout_fraction`, so the split does not depend on order or on the other documents.
DocumentSplit split_documents(const std::vector<LmDocument>& documents, double heldout_fraction,
                              uint64_t seed);

}  // namespace destein
