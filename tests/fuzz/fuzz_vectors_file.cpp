// The steering vectors file on arbitrary bytes: the safetensors header, then the vectors
// reader's own checks (format and site metadata, tensor names and shapes, gate probes,
// finite values, integers in the metadata). Every failure must be a std::exception, never
// a crash or a sanitizer report; a file that loads must be usable as the steering code
// assumes.
#include <ATen/ATen.h>

#include <exception>

#include "destein/steer/steering_vectors.hpp"
#include "fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = destein::fuzz::write_input(data, size, ".vectors.safetensors");
  try {
    const destein::SteeringVectors v = destein::load_steering_vectors(path);
    if (v.directions.dim() != 3 || v.directions.scalar_type() != at::kFloat) __builtin_trap();
    if (!at::isfinite(v.directions).all().item<bool>()) __builtin_trap();
    if (v.probe_accuracy.defined() && v.probe_accuracy.sizes() != v.directions.sizes().slice(0, 2))
      __builtin_trap();
    destein::ModelConfig config;
    config.n_layers = v.layers();
    config.n_heads = v.heads();
    config.head_dim = v.head_dim();
    config.model_type = v.model_type;
    destein::check_vectors_match_model(v, config, "fuzz");
  } catch (const std::exception&) {
  }
  return 0;
}
