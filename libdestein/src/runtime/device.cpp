#include "destein/runtime/device.hpp"

#include <ATen/Parallel.h>
#include <torch/cuda.h>

#include <algorithm>
#include <cctype>
#include <thread>

#include "check.hpp"

namespace destein {

void set_threads(int n) {
  if (n <= 0) {
    unsigned hw = std::thread::hardware_concurrency();
    n = hw > 0 ? static_cast<int>(hw) : 1;
  }
  if (at::get_num_threads() != n) at::set_num_threads(n);
}

int threads() { return at::get_num_threads(); }

bool cuda_available() { return torch::cuda::is_available(); }

c10::Device parse_device(const std::string& name) {
  std::string lower = name;
  std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
  if (lower == "cpu") return c10::Device(c10::kCPU);
  if (lower.rfind("cuda", 0) == 0) {
    DESTEIN_CHECK_ARG(cuda_available(),
                      "device '{}' asked for, but this LibTorch build sees no CUDA device; "
                      "use --device cpu",
                      name);
    try {
      return c10::Device(lower);
    } catch (const std::exception&) {
    }
  }
  throw std::invalid_argument(
      fmt::format("unknown device '{}': expected cpu, cuda or cuda:N", name));
}

c10::ScalarType parse_dtype(const std::string& name) {
  std::string lower = name;
  std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
  if (lower == "float32" || lower == "f32" || lower == "float" || lower == "fp32")
    return c10::kFloat;
  if (lower == "float16" || lower == "f16" || lower == "half" || lower == "fp16") return c10::kHalf;
  if (lower == "bfloat16" || lower == "bf16") return c10::kBFloat16;
  throw std::invalid_argument(
      fmt::format("unknown dtype '{}': expected float32, float16 or bfloat16", name));
}

std::string dtype_name(c10::ScalarType dtype) {
  switch (dtype) {
    case c10::kFloat:
      return "float32";
    case c10::kHalf:
      return "float16";
    case c10::kBFloat16:
      return "bfloat16";
    case c10::kDouble:
      return "float64";
    default:
      return c10::toString(dtype);
  }
}

}  // namespace destein
