#pragma once
/// Decoding-time detoxification methods, the comparison baselines of DeStein, each built
/// into a chain of logits processors (logits_processor.hpp) from its options:
///   - "dexperts" (Liu et al., 2021): z_base truncated to its top filter_p nucleus, plus
///     alpha (z_expert - z_anti), expert and anti-expert sharing the tokenizer;
///   - "self-debias" (Schick et al., 2021): the model's own distribution under debiasing
///     prefixes decays the tokens those prefixes make more likely;
///   - "word-filter" (Gehman et al., 2020): no listed word is ever spelled (word_filter.hpp).
/// Formulas, defaults and where they come from: docs/methods.md.
///
///   destein::DecodingMethod m;
///   m.kind = "dexperts";
///   m.expert = "experts/nontoxic.pt";
///   m.anti_expert = "experts/toxic.pt";
///   destein::GenerationOptions o;
///   o.processors = destein::build_decoding_method(m, *model, tokenizer.get());
///   auto gens = destein::generate(*model, prompts, o);

#include <memory>
#include <string>
#include <vector>

#include "destein/runtime/logits_processor.hpp"
#include "destein/runtime/model.hpp"

namespace destein {

class Tokenizer;

struct DecodingMethod {
  std::string kind;  ///< "dexperts", "self-debias" or "word-filter"
  // dexperts
  std::string expert, anti_expert;  ///< checkpoints sharing the model's tokenizer
  double alpha = 2.0;               ///< DExperts' strength (the authors' toxicity runs)
  /// The base logits keep only their top-p nucleus before the experts are added (the
  /// authors' filter_p); 1 keeps every token.
  double filter_p = 0.9;
  // self-debias
  double lambda = 50.0;  ///< the decay constant (the authors' default)
  /// Debiasing prefixes as text; empty: the authors' six (self_debias_prefixes()).
  std::vector<std::string> prefixes;
  /// Prefixes as token ids instead of text (used when not empty).
  std::vector<std::vector<int64_t>> prefix_ids;
  // word-filter
  std::string words;  ///< word list file (load_word_list)
};

/// The kinds build_decoding_method() knows.
const std::vector<std::string>& decoding_method_kinds();

/// Self-Debiasing's debiasing prefixes for toxicity (Schick et al., 2021, the
/// DEBIASING_PREFIXES of their self_debiasing.py), each ending in a newline.
const std::vector<std::string>& self_debias_prefixes();

/// Checks the options of `method` (kind known, alpha finite, filter_p in (0, 1], lambda
/// finite and >= 0, the files each kind needs named). `where` starts each message (an
/// option or a config key path). Throws std::invalid_argument.
void check_decoding_method(const DecodingMethod& method, const std::string& where);

/// The processor chain of `method` for rows of `model`, whose tokenizer is `tokenizer`
/// (may be null for dexperts and for self-debias with prefix_ids; it must then outlive the
/// chain). Expert models load with `expert_options` and live as long as the chain. Throws
/// what check_decoding_method() throws, what loading a model or the word list throws, and
/// std::invalid_argument when an expert's vocabulary differs from the model's or the
/// tokenizer is missing.
LogitsProcessorChain build_decoding_method(const DecodingMethod& method, const Model& model,
                                           const Tokenizer* tokenizer,
                                           const ModelOptions& expert_options = {});

/// Whether build_decoding_method() needs the tokenizer for `method`.
bool decoding_method_needs_tokenizer(const DecodingMethod& method);

/// Keeps the smallest set of top tokens whose probability reaches `top_p` (Holtzman et al.;
/// the sort-and-cumulate rule of the DExperts and Hugging Face code: a token stays while
/// the probability before it is <= top_p, the first always) and sets the others to
/// -infinity. `scores` (V) float logits; top_p >= 1 leaves them as they are.
void top_p_filter(float* scores, int64_t vocab_size, double top_p);

/// DExperts as one processor: top_p_filter(z, filter_p) + alpha (z_expert - z_anti), the
/// two experts' rows cached and advancing with each row (ModelEnsembleProcessor).
class DExpertsProcessor : public LogitsProcessor {
 public:
  /// Throws std::invalid_argument for a null model, differing vocabularies, a non-finite
  /// alpha or filter_p outside (0, 1].
  DExpertsProcessor(std::shared_ptr<const Model> expert, std::shared_ptr<const Model> anti_expert,
                    double alpha, double filter_p);
  ~DExpertsProcessor() override;
  std::string name() const override { return "dexperts"; }
  void process(ProcessorRows& rows) override;
  void release(const std::vector<int64_t>& row_ids) override;
  int64_t added_parameters() const override;
  int64_t extra_rows_per_row() const override { return 2; }

 private:
  std::shared_ptr<const Model> expert_, anti_expert_;
  double filter_p_;
  std::unique_ptr<ModelEnsembleProcessor> ensemble_;
};

}  // namespace destein
