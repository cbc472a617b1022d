#include "steering_args.hpp"

#include <fmt/format.h>

namespace destein::app {

SteeringArgs read_steering_args(Args& args) {
  SteeringArgs s;
  s.vectors_path = args.get("vectors");
  auto mode = args.get("mode");
  auto alpha = args.get("alpha");
  auto layers = args.get("layers");
  const int64_t top_k = args.get_int("top-k-heads", 0);
  if (!s.vectors_path && (mode || alpha || layers || top_k)) {
    throw std::invalid_argument("--mode, --alpha, --layers and --top-k-heads need --vectors FILE");
  }
  if (mode) s.options.mode = parse_steering_mode(*mode);
  if (alpha) s.options.alpha = args.get_double("alpha", 0.4);
  s.options.top_k_heads = top_k;
  if (layers) {
    auto colon = layers->find(':');
    try {
      if (colon == std::string::npos) throw std::invalid_argument("no colon");
      s.options.layer_start = colon == 0 ? 0 : std::stoll(layers->substr(0, colon));
      s.options.layer_end = colon + 1 == layers->size() ? -1 : std::stoll(layers->substr(colon + 1));
    } catch (const std::exception&) {
      throw std::invalid_argument(fmt::format("--layers: expected START:END (end exclusive, either may be empty), found '{}'", *layers));
    }
  }
  return s;
}

std::optional<SteeringHandle> attach_from_args(const SteeringArgs& steering, Hooks& hooks, const Model& model) {
  if (!steering.vectors_path) return std::nullopt;
  SteeringVectors vectors = load_steering_vectors(*steering.vectors_path);
  check_vectors_match_model(vectors, model.config(), *steering.vectors_path);
  return attach_steering(hooks, model, vectors, steering.options);
}

}  // namespace destein::app
