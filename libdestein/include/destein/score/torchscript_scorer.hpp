#pragma once
/// A toxicity classifier exported to TorchScript (e.g. a Detoxify / RoBERTa model traced
/// with `torch.jit.trace(model, (input_ids, attention_mask))`), run from C++.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "destein/score/scorer.hpp"
#include "destein/text/tokenizer.hpp"

namespace destein {

struct TorchScriptScorerOptions {
  std::filesystem::path
      module;  ///< the .pt file: forward(input_ids (B, T) long, attention_mask (B, T) long) -> logits (B, C)
  std::filesystem::path tokenizer;     ///< tokenizer file or folder (empty: the module's folder)
  std::string activation = "sigmoid";  ///< "sigmoid" (multi-label, Detoxify) or "softmax" (classes)
  int64_t label_index = 0;             ///< the logit / class that means "toxic"
  int64_t max_length = 512;            ///< tokens per text, special tokens included
  int64_t batch_size = 32;
  int64_t bos_id = -1;  ///< prepended when >= 0 (RoBERTa: 0)
  int64_t eos_id = -1;  ///< appended when >= 0 (RoBERTa: 2)
  int64_t pad_id = 0;   ///< right padding (RoBERTa: 1)
  std::string device = "cpu";
};

/// Throws std::runtime_error naming the file for a missing or non-TorchScript module, and
/// on the first batch for a module whose output is not (B, C) logits with C > label_index.
class TorchScriptScorer : public ToxicityScorer {
 public:
  explicit TorchScriptScorer(TorchScriptScorerOptions options);
  ~TorchScriptScorer() override;
  std::vector<std::optional<double>> score(const std::vector<std::string>& texts) override;
  std::string name() const override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace destein
