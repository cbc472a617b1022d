#pragma once
/// Steering pairs: (toxic text, non-toxic text) with the same content, the raw material of
/// DeStein's directions and probes (reference notes §1). Readers for the two formats we
/// take pairs from (JSON Lines written by us or by hand, and the ParaDetox TSV), the
/// reference's text cleaning, seeded sampling, deduplication, a writer and a stable hash
/// of a pair set for the vectors file's metadata.
///
/// Example:
///
///     auto seeds = destein::load_paradetox(DESTEIN_DEFAULT_DATA_DIR "/paradetox/paradetox.tsv");
///     auto pairs = destein::sample_pairs(destein::deduplicate_pairs(seeds), 20, /*seed=*/1);
///     destein::write_pairs_jsonl("pairs.jsonl", pairs);
///     std::string hash = destein::pair_set_hash(pairs);  // goes into the vectors' metadata

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace destein {

/// One steering pair. `provenance` says where it came from: for ParaDetox
/// {"source": "paradetox.tsv", "row": 17, "line": 18, "column": "neutral1"} (row: 1-based
/// data row, header excluded; line: the physical line the row starts on); for JSON Lines
/// whatever the line carried besides the two texts, else {"source": file name, "line": n}.
struct SteeringPair {
  std::string toxic;
  std::string nontoxic;
  nlohmann::json provenance;
};

/// The prefixes put before each side when it is run through the model: exactly the
/// reference's two templates by default (note the trailing space).
struct PairPrefixes {
  std::string toxic =
      "The following text is abusive, harmful, negative, obscene, racist, rude and toxic: ";
  std::string nontoxic =
      "The following text is kind, polite, positive, respectful and supportive: ";
};

/// How the readers treat the texts they load.
struct PairLoadOptions {
  /// Apply clean_pair_text() to both sides (the reference cleans before prefixing).
  bool clean = true;
  /// ParaDetox only: one pair per row, with `neutral1`, instead of one pair per non-empty
  /// neutral column (11,927 instead of 19,743 pairs on the shipped file).
  bool first_neutral_only = false;
};

/// The reference's cleaning as it reaches a text: the reference runs
/// `(prefix + text).strip(" .").strip(".")` on the prefixed text, and with a prefix in front
/// that removes only the text's trailing spaces and periods -- Python's
/// `text.rstrip(" .")`. So "he is an idiot. " gives "he is an idiot", "x . ." gives "x",
/// and "\twait .\n" stays as it is (tabs and newlines are not stripped, nor is anything at
/// the start). steering_input_text() applies the reference's full expression.
std::string clean_pair_text(std::string_view text);

/// The text the model reads for one side of a pair, exactly the reference's
/// `(prefix + text).strip(" .").strip(".")`: spaces and periods stripped at both ends of the
/// prefixed text (the second strip never finds a period left). For a non-empty prefix and a
/// text already passed through clean_pair_text() this is prefix + text.
std::string steering_input_text(std::string_view prefix, std::string_view text);

/// One group label per pair, equal for pairs with the same toxic text after
/// clean_pair_text() (labels count up from 0 in order of first appearance): the
/// ProbeOptions::groups that keep a toxic text's paraphrases on one side of a split.
std::vector<int64_t> pair_groups_by_toxic_text(const std::vector<SteeringPair>& pairs);

/// Reads pairs from JSON Lines. Each non-blank line is either a 2-element array
/// `["toxic", "non-toxic"]` or an object with `toxic` and `nontoxic` (or `non_toxic` /
/// `non-toxic`, exactly one of them); an object's `provenance` value (an object) is taken
/// as the pair's provenance, its other keys are added to it. Throws std::runtime_error
/// naming `file:line` and what was expected for malformed JSON, a wrong layout or type, a
/// missing or ambiguous key, or a text that is empty (after cleaning); and naming the file
/// when it cannot be read or holds no pairs.
std::vector<SteeringPair> load_pairs_jsonl(const std::filesystem::path& path,
                                           const PairLoadOptions& options = {});

/// Reads the ParaDetox TSV (header `toxic, neutral1, neutral2, neutral3`; quoted fields
/// may span lines): one pair per (toxic, non-empty neutral_k), in file order, or one per
/// row with `first_neutral_only`. Throws std::runtime_error naming the file and the
/// expected header when the header differs, naming `file:line` for a row with too few
/// fields, an empty toxic text, or (first_neutral_only) an empty neutral1, and naming the
/// file when it cannot be read or holds no pairs.
std::vector<SteeringPair> load_paradetox(const std::filesystem::path& path,
                                         const PairLoadOptions& options = {});

/// `n` pairs drawn without replacement, deterministically from `seed` on every platform
/// (splitmix64 and our own unbiased bounded draw, not <random>'s distributions). The
/// chosen pairs come back in their input order, and the sample of n is contained in the
/// sample of n + 1 with the same seed, so growing a set keeps the pairs already chosen.
/// Throws std::invalid_argument "asked for N pairs but the set has M" when n > size.
std::vector<SteeringPair> sample_pairs(const std::vector<SteeringPair>& pairs, size_t n,
                                       uint64_t seed);

/// The pairs without exact duplicates (same toxic and same non-toxic text after
/// clean_pair_text()); the first occurrence is kept, order is preserved.
/// A pair file by `format`: "paradetox" (the TSV), "jsonl", or "auto" (.tsv is ParaDetox,
/// anything else JSON Lines), without pairs whose two sides are identical (ParaDetox has
/// rows whose rewrite is unchanged); `identical_dropped` (may be null) counts those.
/// Throws std::invalid_argument for another format, and what the readers throw.
std::vector<SteeringPair> load_pair_file(const std::filesystem::path& path,
                                         const std::string& format,
                                         const PairLoadOptions& options = {},
                                         int64_t* identical_dropped = nullptr);

std::vector<SteeringPair> deduplicate_pairs(const std::vector<SteeringPair>& pairs);

/// Writes `pairs` as JSON Lines objects {"toxic", "nontoxic", "provenance"} (provenance
/// left out when null), atomically: a temporary file next to `path`, then a rename. The
/// file reads back with load_pairs_jsonl(). Throws std::invalid_argument for an empty set,
/// std::runtime_error naming the file when it cannot be written.
void write_pairs_jsonl(const std::filesystem::path& path, const std::vector<SteeringPair>& pairs);

/// A stable hash of a pair set, for the vectors file's `pair_hash`: the SHA-256, as 64
/// lower-case hex digits, of the cleaned texts in order, each followed by a NUL byte
/// (toxic, NUL, non-toxic, NUL, next pair ...). Provenance does not count; order does
/// (the holdout probes depend on it). Reproducible outside destein, e.g. in Python:
/// `hashlib.sha256(b"".join(t.encode() + b"\0" for p in pairs for t in p)).hexdigest()`.
std::string pair_set_hash(const std::vector<SteeringPair>& pairs);

}  // namespace destein
