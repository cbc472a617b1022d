#pragma once
// Steering flags shared by `destein generate` and `destein logits`:
//   --vectors V --mode reference|headwise --alpha A [--layers START:END] [--top-k-heads K]
//   [--positions all|prompt|generated] [--gate none|probe] [--gate-threshold P]
//   [--compose "key=value,...;key=value,..."]
// --compose adds entries applied after the first, in order; each is comma-separated
// key=value with keys vectors (default: --vectors), mode, alpha, layers, top_k_heads,
// positions, gate, gate_threshold (defaults as for the flags).

#include <nlohmann/json.hpp>

#include <memory>
#include <optional>

#include "args.hpp"
#include "destein/runtime/hooks.hpp"
#include "destein/runtime/model.hpp"
#include "destein/steer/steering.hpp"

namespace destein::app {

struct SteeringEntrySpec {
  std::string vectors_path;
  SteeringOptions options;
};

struct SteeringArgs {
  std::optional<std::string> vectors_path;
  SteeringOptions options;
  std::vector<SteeringEntrySpec> more;  ///< --compose entries, after the first
};

/// Reads the steering flags (all optional; --mode/--alpha without --vectors is an error).
/// `alpha_taken`: --alpha belongs to a decoding-time method (method_args.hpp), so it is
/// neither read nor an error here.
SteeringArgs read_steering_args(Args& args, bool alpha_taken = false);

/// Parses "START:END" (end exclusive, either may be empty) into options; `what` names the
/// flag or key in the error.
void parse_layer_range(const std::string& text, SteeringOptions& options, const std::string& what);

/// Loads the vectors and attaches steering to `hooks` when --vectors was given. A vectors
/// file that does not fit the model or lacks the probes --gate probe needs is an error
/// naming the file.
std::optional<SteeringHandle> attach_from_args(const SteeringArgs& steering, Hooks& hooks,
                                               const Model& model);

/// The acted report as text, one block per entry (for `generate --explain`).
std::string steering_report_text(const SteeringReport& report);

}  // namespace destein::app
