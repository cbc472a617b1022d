#pragma once
// Randomly initialised checkpoints for benchmarks (no pretrained weights exist here).

#include <cstdint>

#include "destein/runtime/checkpoint.hpp"

namespace destein::app {

/// A GPT-2 checkpoint with N(0, 0.02) weights, unit LayerNorms and zero biases.
Checkpoint random_gpt2_checkpoint(int64_t layers, int64_t d_model, int64_t heads, int64_t vocab,
                                  int64_t positions);

}  // namespace destein::app
