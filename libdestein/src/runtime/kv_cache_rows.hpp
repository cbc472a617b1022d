// Private: the rows of one KV cache on one timeline, for the decode core (decode_batch.cpp)
// and the processors that run rows of their own (logits_processor.cpp). It owns the cache
// and the attention mask; it knows nothing of sampling.
//
// Each row's real tokens occupy columns [begin, begin + length) of the timeline; a running
// row is right-aligned (begin + length == the cache length), a row that stopped advancing
// is fed filler that its mask hides. Columns in front of a row are its left padding.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "destein/runtime/model.hpp"

namespace destein {

class KVCacheRows {
 public:
  KVCacheRows(const Model& model, const Hooks* hooks, int64_t pad_id)
      : model_(model), hooks_(hooks), pad_id_(pad_id) {}

  int64_t size() const { return static_cast<int64_t>(begin_.size()); }

  /// Runs `sequences` (each non-empty) through one left-padded prompt pass and appends
  /// one cache row per entry of `row_source` (the sequence it continues), after the rows
  /// already here. The cache gets `reserve` free columns past the longest row. Returns the
  /// last position's logits of each sequence: (S, V) float32, CPU, contiguous. When the
  /// forward pass throws, nothing changed.
  at::Tensor prefill(const std::vector<std::vector<int64_t>>& sequences,
                     const std::vector<int64_t>& row_source, int64_t reserve);

  /// Feeds tokens[r] to every row r; rows with live[r] == 0 are fed it as masked filler.
  /// Grows the cache by `reserve` columns when it is full. Returns (B, V) float32, CPU,
  /// contiguous. When the forward pass throws, the rows are in an unknown state: clear().
  at::Tensor advance(const std::vector<int64_t>& tokens, const std::vector<char>& live,
                     int64_t reserve);

  /// Keeps `rows` (indices, in the order given) and drops the columns in front of all of
  /// them.
  void keep(const std::vector<int64_t>& rows);
  void clear();

 private:
  at::Tensor forward(const at::Tensor& ids, const at::Tensor& mask, KVCache& cache) const;

  const Model& model_;
  const Hooks* hooks_;
  int64_t pad_id_;
  KVCache cache_;
  std::vector<int64_t> begin_;   // per row: first real column
  std::vector<int64_t> length_;  // per row: real tokens in the cache
};

}  // namespace destein
