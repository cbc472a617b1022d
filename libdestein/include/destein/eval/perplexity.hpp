#pragma once
/// Conditional perplexity of continuations under an evaluator model, as the method note
/// defines it: exp((NLL(prompt + gen) - NLL(prompt)) / (n(prompt + gen) - n(prompt))),
/// both texts tokenised by the evaluator's tokenizer.

#include <cstdint>
#include <string>
#include <vector>

#include "destein/runtime/model.hpp"
#include "destein/text/tokenizer.hpp"

namespace destein {

class PerplexityEvaluator {
 public:
  /// `batch_size`: sequences per forward pass (their logits are held at once).
  PerplexityEvaluator(const Model& model, const Tokenizer& tokenizer, int64_t batch_size = 25);
  /// One value per continuation; NaN when the continuation adds no token.
  std::vector<double> perplexities(const std::string& prompt,
                                   const std::vector<std::string>& continuations) const;
  /// Many prompts at once: result[i][j] is the perplexity of continuations[i][j] after
  /// prompts[i]. The tokens a prompt's sequences share (the prompt, as a rule) go through
  /// the model once, into a KV cache the continuations then read, so a prompt of P tokens
  /// with n continuations of G tokens costs P + n G positions rather than (n + 1) P + n G.
  /// Throws std::invalid_argument when the two lists differ in length.
  std::vector<std::vector<double>> perplexities(
      const std::vector<std::string>& prompts,
      const std::vector<std::vector<std::string>>& continuations) const;
  /// Sum of -log p(token_t | tokens_<t) over t >= 1 for each sequence, each sequence in
  /// full (no shared prefix). (N) doubles. On a model with row-stable kernels a sequence's
  /// value does not depend on the others.
  std::vector<double> nll_sums(const std::vector<std::vector<int64_t>>& sequences) const;
  /// The same sums for groups of sequences that share a prefix: the longest prefix common
  /// to a group's sequences is computed once. result[g][j] is the sum of groups[g][j].
  /// Agrees with nll_sums() to float rounding; with row-stable kernels a group's values do
  /// not depend on the other groups.
  std::vector<std::vector<double>> shared_prefix_nll_sums(
      const std::vector<std::vector<std::vector<int64_t>>>& groups) const;

 private:
  const Model& model_;
  const Tokenizer& tokenizer_;
  int64_t batch_size_;
};

}  // namespace destein
