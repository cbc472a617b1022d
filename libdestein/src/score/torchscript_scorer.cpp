#include "destein/score/torchscript_scorer.hpp"

#include <ATen/ATen.h>
#include <torch/script.h>

#include "check.hpp"
#include "destein/runtime/device.hpp"

namespace destein {

struct TorchScriptScorer::Impl {
  TorchScriptScorerOptions options;
  torch::jit::Module module;
  std::unique_ptr<Tokenizer> tokenizer;
  c10::Device device = c10::Device(c10::kCPU);
};

TorchScriptScorer::TorchScriptScorer(TorchScriptScorerOptions o) : impl_(std::make_unique<Impl>()) {
  const std::string file = o.module.string();
  DESTEIN_CHECK_IO(std::filesystem::exists(o.module), "{}: no such TorchScript classifier", file);
  DESTEIN_CHECK_ARG(o.activation == "sigmoid" || o.activation == "softmax",
                    "classifier activation must be sigmoid or softmax, found '{}'", o.activation);
  DESTEIN_CHECK_ARG(
      o.label_index >= 0 && o.max_length >= 2 && o.batch_size >= 1,
      "classifier options: label_index >= 0, max_length >= 2 and batch_size >= 1 are required");
  impl_->device = parse_device(o.device);
  try {
    impl_->module = torch::jit::load(file, impl_->device);
  } catch (const c10::Error& e) {
    std::string what = e.what_without_backtrace();
    throw std::runtime_error(
        fmt::format("{}: not a TorchScript module ({})", file, what.substr(0, what.find('\n'))));
  }
  impl_->module.eval();
  const auto tok_path = o.tokenizer.empty() ? o.module.parent_path() : o.tokenizer;
  impl_->tokenizer = load_tokenizer(tok_path.empty() ? std::filesystem::path(".") : tok_path);
  impl_->options = std::move(o);
}

TorchScriptScorer::~TorchScriptScorer() = default;

std::string TorchScriptScorer::name() const {
  return "torchscript:" + impl_->options.module.string();
}

std::vector<std::optional<double>> TorchScriptScorer::score(const std::vector<std::string>& texts) {
  const auto& o = impl_->options;
  std::vector<std::optional<double>> out;
  out.reserve(texts.size());
  c10::InferenceMode guard;
  for (size_t start = 0; start < texts.size(); start += static_cast<size_t>(o.batch_size)) {
    const size_t end = std::min(texts.size(), start + static_cast<size_t>(o.batch_size));
    std::vector<std::vector<int64_t>> rows;
    int64_t T = 1;
    for (size_t i = start; i < end; ++i) {
      std::vector<int64_t> ids;
      if (o.bos_id >= 0) ids.push_back(o.bos_id);
      auto body = impl_->tokenizer->encode(texts[i]);
      const int64_t room =
          o.max_length - static_cast<int64_t>(ids.size()) - (o.eos_id >= 0 ? 1 : 0);
      if (static_cast<int64_t>(body.size()) > room)
        body.resize(static_cast<size_t>(std::max<int64_t>(room, 0)));
      ids.insert(ids.end(), body.begin(), body.end());
      if (o.eos_id >= 0) ids.push_back(o.eos_id);
      T = std::max<int64_t>(T, ids.size());
      rows.push_back(std::move(ids));
    }
    const int64_t B = static_cast<int64_t>(rows.size());
    at::Tensor ids = at::full({B, T}, o.pad_id, at::kLong), mask = at::zeros({B, T}, at::kLong);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t n = static_cast<int64_t>(rows[b].size());
      if (n == 0) continue;
      ids[b].narrow(0, 0, n).copy_(at::tensor(rows[b], at::kLong));
      mask[b].narrow(0, 0, n).fill_(1);
    }
    c10::IValue result;
    try {
      result = impl_->module.forward({ids.to(impl_->device), mask.to(impl_->device)});
    } catch (const c10::Error& e) {
      std::string what = e.what_without_backtrace();
      throw std::runtime_error(fmt::format("{}: forward(input_ids, attention_mask) failed: {}",
                                           o.module.string(), what.substr(0, what.find('\n'))));
    }
    // Traced Hugging Face models return a tuple (logits, ...); plain modules a tensor.
    if (result.isTuple()) result = result.toTupleRef().elements().at(0);
    DESTEIN_CHECK_IO(result.isTensor(), "{}: forward returned {}, expected logits (B, C)",
                     o.module.string(), result.tagKind());
    at::Tensor logits = result.toTensor().to(at::kCPU, at::kFloat);
    DESTEIN_CHECK_IO(logits.dim() == 2 && logits.size(0) == B && logits.size(1) > o.label_index,
                     "{}: forward returned shape {}, expected ({}, C) with C > label_index {}",
                     o.module.string(), c10::str(logits.sizes()), B, o.label_index);
    at::Tensor probs = o.activation == "sigmoid" ? logits.sigmoid() : logits.softmax(-1);
    for (int64_t b = 0; b < B; ++b) {
      const double p = probs[b][o.label_index].item<double>();
      out.push_back(std::isfinite(p) ? std::optional<double>(p) : std::nullopt);
    }
  }
  return out;
}

}  // namespace destein
