#include "runtime/kv_cache_rows.hpp"

#include <ATen/ATen.h>

#include <algorithm>
#include <limits>

#include "check.hpp"

namespace destein {

at::Tensor KVCacheRows::forward(const at::Tensor& ids, const at::Tensor& mask,
                                KVCache& cache) const {
  ForwardOptions fo;
  fo.cache = &cache;
  fo.hooks = hooks_;
  fo.logits = LogitsFor::kLast;
  fo.attention_mask = mask;
  const int64_t V = model_.config().vocab_size;
  return model_.forward(ids, fo).logits.reshape({ids.size(0), V}).to(at::kCPU).contiguous();
}

at::Tensor KVCacheRows::prefill(const std::vector<std::vector<int64_t>>& sequences,
                                const std::vector<int64_t>& row_source, int64_t reserve) {
  const int64_t S = static_cast<int64_t>(sequences.size());
  DESTEIN_CHECK_ARG(S > 0, "KVCacheRows::prefill: no sequence");
  int64_t L = 0;
  for (const auto& s : sequences) L = std::max<int64_t>(L, static_cast<int64_t>(s.size()));
  at::Tensor ids = at::full({S, L}, pad_id_, at::kLong);  // (S, L), left padded
  at::Tensor mask = at::zeros({S, L}, at::kLong);         // (S, L), 1 = real token
  {
    auto acc = ids.accessor<int64_t, 2>();
    for (int64_t i = 0; i < S; ++i) {
      const auto& seq = sequences[static_cast<size_t>(i)];
      const int64_t n = static_cast<int64_t>(seq.size());
      DESTEIN_CHECK_ARG(n > 0, "KVCacheRows::prefill: sequence {} is empty", i);
      for (int64_t j = 0; j < n; ++j) acc[i][L - n + j] = seq[static_cast<size_t>(j)];
      mask.narrow(0, i, 1).narrow(1, L - n, n).fill_(1);
    }
  }
  const bool empty = begin_.empty();
  // A first prompt pass writes straight into a cache wide enough for the rows' tokens to
  // come; later ones are stacked onto the rows already decoding.
  KVCache fresh = model_.make_cache(S, empty ? L + reserve : L);
  at::Tensor logits = forward(ids, mask, fresh);  // (S, V)
  bool identity = static_cast<int64_t>(row_source.size()) == S;
  for (size_t r = 0; identity && r < row_source.size(); ++r)
    identity = row_source[r] == static_cast<int64_t>(r);
  if (!identity) fresh.select_rows(at::tensor(row_source, at::kLong));
  int64_t shift_old = 0, timeline = L;
  if (empty) {
    cache_ = std::move(fresh);
  } else {
    const int64_t T = cache_.length();
    timeline = std::max(T, L);
    shift_old = timeline - T;
    cache_ = KVCache::stack({&cache_, &fresh}, timeline + reserve);
  }
  for (auto& b : begin_) b += shift_old;
  for (int64_t src : row_source) {
    const int64_t n = static_cast<int64_t>(sequences[static_cast<size_t>(src)].size());
    begin_.push_back(timeline - n);
    length_.push_back(n);
  }
  return logits;
}

at::Tensor KVCacheRows::advance(const std::vector<int64_t>& tokens, const std::vector<char>& live,
                                int64_t reserve) {
  const int64_t B = size();
  DESTEIN_CHECK_ARG(
      static_cast<int64_t>(tokens.size()) == B && static_cast<int64_t>(live.size()) == B,
      "KVCacheRows::advance: {} tokens and {} flags for {} rows", tokens.size(), live.size(), B);
  const int64_t T = cache_.length();
  if (T + 1 > cache_.capacity())
    cache_ = KVCache::stack({&cache_}, T + std::max<int64_t>(reserve, 1));
  at::Tensor mask = at::zeros({B, T + 1}, at::kLong);  // (B, T + 1): each row's real positions
  for (int64_t b = 0; b < B; ++b) {
    const auto r = static_cast<size_t>(b);
    DESTEIN_CHECK_ARG(!live[r] || begin_[r] + length_[r] == T,
                      "KVCacheRows::advance: row {} stopped advancing earlier and cannot resume",
                      b);
    mask.narrow(0, b, 1).narrow(1, begin_[r], length_[r] + (live[r] ? 1 : 0)).fill_(1);
  }
  at::Tensor logits = forward(at::tensor(tokens, at::kLong).view({B, 1}), mask, cache_);
  for (size_t r = 0; r < length_.size(); ++r) length_[r] += live[r] ? 1 : 0;
  return logits;
}

void KVCacheRows::keep(const std::vector<int64_t>& rows) {
  if (rows.empty()) {
    clear();
    return;
  }
  std::vector<int64_t> begin, length;
  int64_t first = std::numeric_limits<int64_t>::max();
  for (int64_t r : rows) {
    begin.push_back(begin_[static_cast<size_t>(r)]);
    length.push_back(length_[static_cast<size_t>(r)]);
    first = std::min(first, begin.back());
  }
  cache_.select_rows(at::tensor(rows, at::kLong));
  // Columns that are padding for every remaining row carry nothing.
  cache_.drop_leading_columns(first);
  for (auto& b : begin) b -= first;
  begin_ = std::move(begin);
  length_ = std::move(length);
}

void KVCacheRows::clear() {
  cache_ = KVCache();
  begin_.clear();
  length_.clear();
}

}  // namespace destein
