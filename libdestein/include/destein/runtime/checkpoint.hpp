#pragma once
/// Model checkpoints: TorchScript archives with Hugging Face parameter names and the
/// model's config.json as an extra file, or Hugging Face model folders (safetensors).

#include <ATen/core/Tensor.h>

#include <filesystem>
#include <map>
#include <optional>
#include <string>

#include "destein/runtime/model_config.hpp"

namespace destein {

/// Reference inputs and the source framework's logits, stored by
/// tools/export_checkpoint.py as the extra file `reference.json`, so that a checkpoint
/// can verify our forward pass against the framework it came from.
struct ReferenceLogits {
  std::vector<std::vector<int64_t>> inputs;     ///< token ids, one list per case
  std::vector<std::vector<float>> last_logits;  ///< logits of each case's last position (V)
  std::string source;                           ///< e.g. "transformers 4.36 gpt2"
};

/// Weights and configuration of one model, as stored.
struct Checkpoint {
  ModelConfig config;
  std::map<std::string, at::Tensor> tensors;  ///< Hugging Face names -> CPU tensors as stored
  std::optional<ReferenceLogits> reference;
  std::filesystem::path source;  ///< file or folder it was read from
};

/// Loads a checkpoint from
///  - a TorchScript archive (`torch.jit.save`) whose named parameters and buffers carry
///    the Hugging Face names, with extra files `config.json` (required) and
///    `reference.json` (optional), or
///  - a folder with `config.json` and `model.safetensors` or a sharded
///    `model.safetensors.index.json`, or a folder holding `model.pt` (an archive).
/// Throws std::runtime_error naming the file for a missing, truncated or foreign file, a
/// missing config.json, or malformed JSON.
Checkpoint load_checkpoint(const std::filesystem::path& path);

/// Writes a TorchScript archive that load_checkpoint() (and Python's torch.jit.load) reads:
/// parameters nested by the dots of their names, `config` serialised as config.json.
void save_checkpoint(const std::filesystem::path& path, const nlohmann::json& hf_config,
                     const std::map<std::string, at::Tensor>& tensors,
                     const std::optional<ReferenceLogits>& reference = std::nullopt);

}  // namespace destein
