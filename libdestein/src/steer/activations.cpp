#include "destein/steer/activations.hpp"

#include <ATen/ATen.h>

#include "check.hpp"

namespace destein {

HookSite hook_site_of(SteeringSite site) {
  return site == SteeringSite::kAttnOut ? HookSite::kAttnOut : HookSite::kAttnZ;
}

at::Tensor capture_site_activations(const Model& model,
                                    const std::vector<std::vector<int64_t>>& sequences,
                                    const ActivationOptions& options,
                                    const std::function<void(int64_t, int64_t)>& progress) {
  const ModelConfig& c = model.config();
  DESTEIN_CHECK_ARG(options.last_k >= 1, "capture_site_activations: last_k must be >= 1, found {}",
                    options.last_k);
  DESTEIN_CHECK_ARG(options.batch_size >= 1,
                    "capture_site_activations: batch_size must be >= 1, found {}",
                    options.batch_size);
  const int64_t N = static_cast<int64_t>(sequences.size());
  const int64_t L = c.n_layers, H = c.n_heads, Dh = c.head_dim;
  DESTEIN_CHECK_ARG(
      options.site != SteeringSite::kAttnOut || H * Dh == c.d_model,
      "capture_site_activations: site attn_out needs heads x head_dim = hidden size, and this {} "
      "model has {} x {} != {}; use site hook_z",
      c.model_type, H, Dh, c.d_model);
  for (int64_t i = 0; i < N; ++i) {
    DESTEIN_CHECK_ARG(!sequences[i].empty(), "capture_site_activations: sequence {} is empty", i);
  }
  at::Tensor out = at::zeros({N, L, H, Dh}, at::kFloat);
  const HookSite site = hook_site_of(options.site);

  for (int64_t start = 0; start < N; start += options.batch_size) {
    const int64_t B = std::min(options.batch_size, N - start);
    int64_t T = 0;
    for (int64_t b = 0; b < B; ++b) T = std::max<int64_t>(T, sequences[start + b].size());
    at::Tensor ids = at::zeros({B, T}, at::kLong);
    at::Tensor mask = at::zeros({B, T}, at::kLong);
    for (int64_t b = 0; b < B; ++b) {
      const auto& s = sequences[start + b];
      const int64_t n = static_cast<int64_t>(s.size());
      ids[b].narrow(0, T - n, n).copy_(at::tensor(s, at::kLong));
      mask[b].narrow(0, T - n, n).fill_(1);
    }
    // Weights over the last k columns: left padding puts every row's last tokens there;
    // rows shorter than k average only their real tokens.
    const int64_t k = std::min(options.last_k, T);
    at::Tensor weights = mask.narrow(1, T - k, k).to(at::kFloat);  // (B, k)
    weights = weights / weights.sum(1, /*keepdim=*/true);

    Hooks own_hooks;
    Hooks& hooks = options.hooks ? *options.hooks : own_hooks;
    std::vector<HookHandle> handles;
    for (int64_t l = 0; l < L; ++l) {
      handles.push_back(
          hooks.observe(hook_point_name(l, site), [&, l](const at::Tensor& x, const HookContext&) {
            at::Tensor tail = x.narrow(1, T - k, k).to(at::kCPU, at::kFloat).reshape({B, k, H, Dh});
            at::Tensor mean = (tail * weights.view({B, k, 1, 1})).sum(1);  // (B, H, Dh)
            out.narrow(0, start, B).select(1, l).copy_(mean);
          }));
    }
    ForwardOptions fo;
    fo.attention_mask = mask;
    fo.hooks = &hooks;
    fo.logits = LogitsFor::kNone;
    model.forward(ids, fo);
    if (progress) progress(start + B, N);
  }
  return out;
}

}  // namespace destein
