// Random steering vectors with gate probes shaped for a model: what the CLI and server
// tests steer with (their oracle is the same command without the server, not the values).
#pragma once

#include <ATen/ATen.h>

#include "destein/runtime/model_config.hpp"
#include "destein/steer/steering_vectors.hpp"

namespace destein::test {

inline SteeringVectors random_gated_vectors(const ModelConfig& c) {
  at::manual_seed(3);
  SteeringVectors v;
  v.directions = at::randn({c.n_layers, c.n_heads, c.head_dim});
  v.probe_accuracy = 0.6 + 0.4 * at::rand({c.n_layers, c.n_heads});
  v.probe_weight = at::randn({c.n_layers, c.n_heads, c.head_dim});
  v.probe_bias = at::randn({c.n_layers, c.n_heads});
  v.probe_feature_mean = at::zeros({c.n_layers, c.n_heads, c.head_dim});
  v.probe_feature_scale = at::ones({c.n_layers, c.n_heads, c.head_dim});
  v.model_type = c.model_type;
  return v;
}

}  // namespace destein::test
