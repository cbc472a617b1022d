#pragma once
/// Loaders of the labelled toxicity sets under the data folder (see shared/data/README.md)
/// and of RealToxicityPrompts files, with each set's own parsing and labelling rules.
/// RTP files are evaluation material: no function here turns them into training data.
///
/// Example:
///
///     auto dir = destein::resolve_data_dir("");  // $DESTEIN_DATA or the build default
///     auto olid = destein::load_labeled_set(dir, "olid");
///     auto prompts = destein::load_rtp_prompts(dir / "rtp/1k/output_toxic_1k.jsonl");

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "destein/score/linear_scorer.hpp"

#include "io/data_folder.hpp"  // resolve_data_dir

namespace destein {

/// What a labelled set is for: fitting the scorer, or measuring it.
enum class LabeledSetRole { kTrain, kHeldOut };

/// One labelled set: its name, its files (relative to the data folder), its role, and how
/// its labels are read.
struct LabeledSetSpec {
  std::string name;
  std::vector<std::string> files;
  LabeledSetRole role;
  std::string label_rule;
};

/// Every set the loaders know, training sets first.
const std::vector<LabeledSetSpec>& labeled_sets();

/// The spec named `name`. Throws std::invalid_argument listing the known names.
const LabeledSetSpec& labeled_set(std::string_view name);

/// Texts and labels (1 = toxic) of set `name`, in file order, `source` = name. Texts
/// without a clear label (toxic_spans ties, cannot-rewrite rows with mixed reasons) are
/// left out. Throws std::invalid_argument for an unknown name, std::runtime_error naming
/// file and line for a missing file or a malformed row.
std::vector<LabeledText> load_labeled_set(const std::filesystem::path& data_dir,
                                          std::string_view name);

/// An RTP prompt with its Perspective toxicity.
struct RtpPrompt {
  std::string text;
  double toxicity = 0.0;
};

/// Prompts of an RTP JSON Lines file (`{"prompt": {"text", "toxicity", ...}}`). Throws
/// std::runtime_error naming file, line and key when one is missing or of the wrong type.
std::vector<RtpPrompt> load_rtp_prompts(const std::filesystem::path& jsonl);

/// The text of one JSON Lines record: `{"text": ...}` or the RTP form
/// `{"prompt": {"text": ...}}`. Throws std::runtime_error with `where` (file:line) when
/// neither holds a string.
std::string record_text(const nlohmann::json& record, const std::string& where);

/// `text` with every invalid UTF-8 sequence replaced by U+FFFD (for files with cut-off
/// characters, such as OLID).
std::string sanitize_utf8(std::string_view text);

}  // namespace destein
