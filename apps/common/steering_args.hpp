#pragma once
// Steering flags shared by `destein generate` and `destein logits`:
// --vectors V --mode reference|headwise --alpha A [--layers START:END] [--top-k-heads K].

#include <memory>
#include <optional>

#include "args.hpp"
#include "destein/runtime/hooks.hpp"
#include "destein/runtime/model.hpp"
#include "destein/steer/steering.hpp"

namespace destein::app {

struct SteeringArgs {
  std::optional<std::string> vectors_path;
  SteeringOptions options;
};

/// Reads the steering flags (all optional; --mode/--alpha without --vectors is an error).
SteeringArgs read_steering_args(Args& args);

/// Loads the vectors and attaches steering to `hooks` when --vectors was given.
std::optional<SteeringHandle> attach_from_args(const SteeringArgs& steering, Hooks& hooks, const Model& model);

}  // namespace destein::app
