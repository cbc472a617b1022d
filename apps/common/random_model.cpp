#include "random_model.hpp"

#include <ATen/ATen.h>
#include <fmt/format.h>

namespace destein::app {

Checkpoint random_gpt2_checkpoint(int64_t L, int64_t d, int64_t H, int64_t V, int64_t P) {
  Checkpoint c;
  nlohmann::json cfg = {{"model_type", "gpt2"}, {"vocab_size", V}, {"n_embd", d},
                        {"n_layer", L},         {"n_head", H},     {"n_positions", P},
                        {"eos_token_id", V - 1}};
  c.config = ModelConfig::from_hf_json(cfg, "random gpt2");
  c.source = "random gpt2";
  auto r = [](std::vector<int64_t> shape) { return at::randn(shape) * 0.02; };
  c.tensors["transformer.wte.weight"] = r({V, d});
  c.tensors["transformer.wpe.weight"] = r({P, d});
  c.tensors["transformer.ln_f.weight"] = at::ones({d});
  c.tensors["transformer.ln_f.bias"] = at::zeros({d});
  for (int64_t i = 0; i < L; ++i) {
    const std::string p = fmt::format("transformer.h.{}.", i);
    c.tensors[p + "ln_1.weight"] = at::ones({d});
    c.tensors[p + "ln_1.bias"] = at::zeros({d});
    c.tensors[p + "ln_2.weight"] = at::ones({d});
    c.tensors[p + "ln_2.bias"] = at::zeros({d});
    c.tensors[p + "attn.c_attn.weight"] = r({d, 3 * d});
    c.tensors[p + "attn.c_attn.bias"] = at::zeros({3 * d});
    c.tensors[p + "attn.c_proj.weight"] = r({d, d});
    c.tensors[p + "attn.c_proj.bias"] = at::zeros({d});
    c.tensors[p + "mlp.c_fc.weight"] = r({d, 4 * d});
    c.tensors[p + "mlp.c_fc.bias"] = at::zeros({4 * d});
    c.tensors[p + "mlp.c_proj.weight"] = r({4 * d, d});
    c.tensors[p + "mlp.c_proj.bias"] = at::zeros({d});
  }
  return c;
}

}  // namespace destein::app
