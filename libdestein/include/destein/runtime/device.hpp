#pragma once
/// Process-wide LibTorch settings: threads, device and dtype parsing.

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <string>

namespace destein {

/// Sets LibTorch's intra-op thread count (LibTorch starts with one). `threads` <= 0 means
/// every hardware core.
void set_threads(int threads);

/// The intra-op thread count in force.
int threads();

/// "cpu", "cuda", "cuda:1". Throws std::invalid_argument for an unknown name, or for cuda
/// when this LibTorch build has no CUDA device.
c10::Device parse_device(const std::string& name);

/// "float32"/"f32", "float16"/"f16", "bfloat16"/"bf16". Throws std::invalid_argument.
c10::ScalarType parse_dtype(const std::string& name);

/// Short name of a dtype ("float32", ...).
std::string dtype_name(c10::ScalarType dtype);

/// Whether LibTorch can use a CUDA device here.
bool cuda_available();

}  // namespace destein
