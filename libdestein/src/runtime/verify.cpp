#include <ATen/ATen.h>

#include "check.hpp"
#include "destein/runtime/model.hpp"

namespace destein {

VerifyReport verify_against_reference(const Model& model, const Checkpoint& checkpoint, double atol,
                                      double rtol) {
  DESTEIN_CHECK_IO(checkpoint.reference.has_value(),
                   "{}: the checkpoint carries no reference.json (export it with "
                   "tools/export_checkpoint.py to get reference logits)",
                   checkpoint.source.string());
  const ReferenceLogits& ref = *checkpoint.reference;
  VerifyReport report;
  report.passed = true;
  for (size_t i = 0; i < ref.inputs.size(); ++i) {
    const auto& input = ref.inputs[i];
    at::Tensor ids = at::tensor(input, at::kLong).unsqueeze(0);
    ForwardOptions fo;
    fo.logits = LogitsFor::kLast;
    at::Tensor ours = model.forward(ids, fo).logits.reshape({-1}).to(at::kCPU).to(at::kDouble);
    at::Tensor theirs = at::tensor(ref.last_logits[i], at::kFloat).to(at::kDouble);
    DESTEIN_CHECK_IO(ours.numel() == theirs.numel(),
                     "{}: reference case {} has {} logits, the model produces {}",
                     checkpoint.source.string(), i, theirs.numel(), ours.numel());
    const double diff = (ours - theirs).abs().max().item<double>();
    const double scale = theirs.abs().max().item<double>();
    report.max_abs_diff = std::max(report.max_abs_diff, diff);
    report.max_rel_diff = std::max(report.max_rel_diff, scale > 0 ? diff / scale : diff);
    if (ours.argmax().item<int64_t>() != theirs.argmax().item<int64_t>())
      report.argmax_agrees = false;
    if (diff > atol + rtol * scale) report.passed = false;
    ++report.cases;
  }
  return report;
}

}  // namespace destein
