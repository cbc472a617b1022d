// Cache surgery for continuous batching: rows of caches of different lengths stacked on one
// timeline, and leading padding dropped when the longest rows leave.
#include <ATen/ATen.h>

#include <algorithm>

#include "check.hpp"
#include "destein/runtime/model.hpp"

namespace destein {

KVCache KVCache::stack(const std::vector<const KVCache*>& parts, int64_t capacity) {
  std::vector<const KVCache*> used;
  int64_t length = 0, rows = 0;
  for (const KVCache* p : parts) {
    if (p == nullptr || p->batch_ == 0 || p->keys_.empty()) continue;
    used.push_back(p);
    length = std::max(length, p->length_);
    rows += p->batch_;
  }
  DESTEIN_CHECK_ARG(!used.empty(), "KVCache::stack: no cache with rows to stack");
  DESTEIN_CHECK_ARG(capacity >= length,
                    "KVCache::stack: capacity {} is below the longest part's {} positions",
                    capacity, length);
  const size_t layers = used.front()->keys_.size();
  for (const KVCache* p : used) {
    DESTEIN_CHECK_ARG(p->keys_.size() == layers,
                      "KVCache::stack: parts have {} and {} layers (one model only)", layers,
                      p->keys_.size());
  }
  KVCache out;
  for (size_t l = 0; l < layers; ++l) {
    const at::Tensor& k0 = used.front()->keys_[l];  // (B, Hkv, capacity, Dh)
    at::Tensor keys = at::zeros({rows, k0.size(1), capacity, k0.size(3)}, k0.options());
    at::Tensor values = at::zeros_like(keys);
    int64_t row = 0;
    for (const KVCache* p : used) {
      const int64_t shift = length - p->length_;
      keys.narrow(0, row, p->batch_)
          .narrow(2, shift, p->length_)
          .copy_(p->keys_[l].narrow(2, 0, p->length_));
      values.narrow(0, row, p->batch_)
          .narrow(2, shift, p->length_)
          .copy_(p->values_[l].narrow(2, 0, p->length_));
      row += p->batch_;
    }
    out.keys_.push_back(std::move(keys));
    out.values_.push_back(std::move(values));
  }
  out.length_ = length;
  out.capacity_ = capacity;
  out.batch_ = rows;
  return out;
}

void KVCache::drop_leading_columns(int64_t columns) {
  DESTEIN_CHECK_ARG(
      columns >= 0 && columns <= length_,
      "KVCache::drop_leading_columns: {} columns asked of a cache holding {} positions", columns,
      length_);
  if (columns == 0) return;
  // Views, not copies: the next stack() (a row joining, or growth) compacts them.
  for (auto& k : keys_) k = k.narrow(2, columns, capacity_ - columns);
  for (auto& v : values_) v = v.narrow(2, columns, capacity_ - columns);
  capacity_ -= columns;
  length_ -= columns;
}

}  // namespace destein
