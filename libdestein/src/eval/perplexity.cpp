#include "destein/eval/perplexity.hpp"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "check.hpp"
#include "destein/eval/metrics.hpp"

namespace destein {
namespace {

// log p(target) = logit[target] - logsumexp(logits) at each position: (B, T, V) logits and
// (B, T) targets give (B, T) doubles on the CPU. No (B, T, V) log-softmax is materialised.
at::Tensor target_log_probs(const at::Tensor& logits, const at::Tensor& targets) {
  at::Tensor picked = logits.gather(2, targets.to(logits.device()).unsqueeze(-1)).squeeze(-1);
  return (picked - logits.logsumexp(-1)).to(at::kCPU, at::kDouble).contiguous();
}

int64_t common_prefix(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  const size_t n = std::min(a.size(), b.size());
  size_t i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return static_cast<int64_t>(i);
}

// One row of a shared-prefix chunk: sequence `seq` of group `group`, whose prefix is row
// `b` of the chunk's prefix forward.
struct Row {
  int64_t b;
  size_t group, seq;
  int64_t prefix, length;
};

// The predictions after a prefix's next token: the remainders of `remainder_rows`, right
// padded, batch_size at a time, each reading its prefix's row of `cache` through `mask`
// (B, Tp); their negative log-probabilities added to `out` in token order.
void add_remainder_nlls(const Model& model, int64_t batch_size,
                        const std::vector<std::vector<std::vector<int64_t>>>& groups,
                        const std::vector<Row>& remainder_rows, const KVCache& cache,
                        const at::Tensor& mask, std::vector<std::vector<double>>* out) {
  const int64_t Tp = mask.size(1);
  const int64_t num_rows = static_cast<int64_t>(remainder_rows.size());
  for (int64_t rs = 0; rs < num_rows; rs += batch_size) {
    const int64_t R = std::min(batch_size, num_rows - rs);
    int64_t T = 0;
    for (int64_t r = 0; r < R; ++r) {
      const Row& row = remainder_rows[static_cast<size_t>(rs + r)];
      T = std::max(T, row.length - row.prefix - 1);
    }
    at::Tensor in = at::zeros({R, T}, at::kLong), target = at::zeros({R, T}, at::kLong);
    at::Tensor row_mask = at::zeros({R, Tp + T}, at::kLong);
    std::vector<int64_t> cache_rows;
    for (int64_t r = 0; r < R; ++r) {
      const Row& row = remainder_rows[static_cast<size_t>(rs + r)];
      const auto& s = groups[row.group][row.seq];
      const int64_t n = row.length - row.prefix - 1;
      in[r].narrow(0, 0, n).copy_(at::tensor(
          std::vector<int64_t>(s.begin() + row.prefix, s.begin() + row.prefix + n), at::kLong));
      target[r].narrow(0, 0, n).copy_(
          at::tensor(std::vector<int64_t>(s.begin() + row.prefix + 1, s.end()), at::kLong));
      row_mask[r].narrow(0, 0, Tp).copy_(mask[row.b]);
      row_mask[r].narrow(0, Tp, n).fill_(1);  // right padding stays 0: no real position follows it
      cache_rows.push_back(row.b);
    }
    KVCache rows_cache = cache;  // select_rows() makes new tensors: `cache` is not touched
    rows_cache.select_rows(at::tensor(cache_rows, at::kLong));
    ForwardOptions ro;
    ro.attention_mask = row_mask;
    ro.cache = &rows_cache;
    at::Tensor host = target_log_probs(model.forward(in, ro).logits, target);
    const double* lp = host.data_ptr<double>();
    for (int64_t r = 0; r < R; ++r) {
      const Row& row = remainder_rows[static_cast<size_t>(rs + r)];
      double& sum = (*out)[row.group][row.seq];
      for (int64_t t = 0; t < row.length - row.prefix - 1; ++t) sum -= lp[r * T + t];
    }
  }
}

}  // namespace

PerplexityEvaluator::PerplexityEvaluator(const Model& model, const Tokenizer& tokenizer,
                                         int64_t batch_size)
    : model_(model), tokenizer_(tokenizer), batch_size_(std::max<int64_t>(1, batch_size)) {}

std::vector<double> PerplexityEvaluator::nll_sums(
    const std::vector<std::vector<int64_t>>& seqs) const {
  std::vector<double> out(seqs.size(), 0.0);
  const int64_t N = static_cast<int64_t>(seqs.size());
  for (int64_t start = 0; start < N; start += batch_size_) {
    const int64_t B = std::min(batch_size_, N - start);
    int64_t T = 0;
    for (int64_t b = 0; b < B; ++b) T = std::max<int64_t>(T, seqs[start + b].size());
    if (T < 2) continue;  // nothing is predicted in a one-token sequence
    at::Tensor ids = at::zeros({B, T}, at::kLong), mask = at::zeros({B, T}, at::kLong);
    for (int64_t b = 0; b < B; ++b) {
      const auto& s = seqs[start + b];
      const int64_t n = static_cast<int64_t>(s.size());
      if (n == 0) continue;
      ids[b].narrow(0, T - n, n).copy_(at::tensor(s, at::kLong));
      mask[b].narrow(0, T - n, n).fill_(1);
    }
    ForwardOptions fo;
    fo.attention_mask = mask;
    at::Tensor logits = model_.forward(ids, fo).logits;  // (B, T, V)
    // Token t is predicted at position t - 1; count only real (unpadded) predictions.
    const double* lp = nullptr;
    at::Tensor host = target_log_probs(logits.narrow(1, 0, T - 1), ids.narrow(1, 1, T - 1));
    lp = host.data_ptr<double>();
    // Summed in order over the sequence's own predictions only: a vectorised sum over the
    // padded row would group the terms by the padding width, i.e. by the batch.
    for (int64_t b = 0; b < B; ++b) {
      const int64_t n = static_cast<int64_t>(seqs[start + b].size());
      double sum = 0;
      for (int64_t t = T - n; t < T - 1; ++t) sum -= lp[b * (T - 1) + t];
      out[start + b] = sum;
    }
  }
  return out;
}

std::vector<std::vector<double>> PerplexityEvaluator::shared_prefix_nll_sums(
    const std::vector<std::vector<std::vector<int64_t>>>& groups) const {
  std::vector<std::vector<double>> out(groups.size());
  struct Shared {
    size_t group;
    int64_t prefix;  // tokens every sequence of the group starts with
  };
  std::vector<Shared> shared;
  // Groups with nothing to share (one sequence, or sequences that differ from their first
  // token) go through nll_sums() whole.
  std::vector<std::vector<int64_t>> whole;
  std::vector<std::pair<size_t, size_t>> whole_at;
  for (size_t g = 0; g < groups.size(); ++g) {
    out[g].assign(groups[g].size(), 0.0);
    if (groups[g].empty()) continue;
    int64_t c = static_cast<int64_t>(groups[g][0].size());
    for (const auto& s : groups[g]) c = std::min(c, common_prefix(groups[g][0], s));
    if (groups[g].size() > 1 && c >= 1) {
      shared.push_back({g, c});
    } else {
      for (size_t j = 0; j < groups[g].size(); ++j) {
        whole.push_back(groups[g][j]);
        whole_at.emplace_back(g, j);
      }
    }
  }
  if (!whole.empty()) {
    const auto sums = nll_sums(whole);
    for (size_t k = 0; k < whole.size(); ++k) out[whole_at[k].first][whole_at[k].second] = sums[k];
  }

  const int64_t num_shared = static_cast<int64_t>(shared.size());
  for (int64_t start = 0; start < num_shared; start += batch_size_) {
    const int64_t Bp = std::min(batch_size_, num_shared - start);
    // One forward over the chunk's prefixes, left padded, into a cache with room for the
    // longest remainder; then the remainders, right padded, read that cache row by row.
    int64_t Tp = 0, Ts = 0;
    for (int64_t b = 0; b < Bp; ++b) {
      const Shared& sh = shared[start + b];
      Tp = std::max(Tp, sh.prefix);
      for (const auto& s : groups[sh.group])
        Ts = std::max<int64_t>(Ts, static_cast<int64_t>(s.size()) - sh.prefix - 1);
    }
    at::Tensor ids = at::zeros({Bp, Tp}, at::kLong), mask = at::zeros({Bp, Tp}, at::kLong);
    for (int64_t b = 0; b < Bp; ++b) {
      const Shared& sh = shared[start + b];
      const auto& s = groups[sh.group][0];
      ids[b]
          .narrow(0, Tp - sh.prefix, sh.prefix)
          .copy_(at::tensor(std::vector<int64_t>(s.begin(), s.begin() + sh.prefix), at::kLong));
      mask[b].narrow(0, Tp - sh.prefix, sh.prefix).fill_(1);
    }
    KVCache cache = model_.make_cache(Bp, Tp + Ts);
    ForwardOptions fo;
    fo.attention_mask = mask;
    fo.cache = &cache;
    at::Tensor logits = model_.forward(ids, fo).logits;  // (Bp, Tp, V)

    // Running sums start with the prefix's own predictions, in token order as nll_sums()
    // adds them, then the token after the prefix, predicted at the prefix's last position.
    std::vector<double> prefix_sum(static_cast<size_t>(Bp), 0.0);
    if (Tp > 1) {
      at::Tensor host = target_log_probs(logits.narrow(1, 0, Tp - 1), ids.narrow(1, 1, Tp - 1));
      const double* lp = host.data_ptr<double>();
      for (int64_t b = 0; b < Bp; ++b) {
        double sum = 0;
        for (int64_t t = Tp - shared[start + b].prefix; t < Tp - 1; ++t)
          sum -= lp[b * (Tp - 1) + t];
        prefix_sum[static_cast<size_t>(b)] = sum;
      }
    }
    std::vector<Row> rows, remainder_rows;
    std::vector<int64_t> row_prompt, row_token;
    for (int64_t b = 0; b < Bp; ++b) {
      const Shared& sh = shared[start + b];
      for (size_t j = 0; j < groups[sh.group].size(); ++j) {
        const auto& s = groups[sh.group][j];
        const Row r{b, sh.group, j, sh.prefix, static_cast<int64_t>(s.size())};
        out[sh.group][j] = prefix_sum[static_cast<size_t>(b)];
        if (r.length > r.prefix) {
          rows.push_back(r);
          row_prompt.push_back(b);
          row_token.push_back(s[static_cast<size_t>(sh.prefix)]);
        }
        if (r.length > r.prefix + 1) remainder_rows.push_back(r);
      }
    }
    if (!rows.empty()) {
      at::Tensor prompt_index = at::tensor(row_prompt, at::kLong);
      at::Tensor last =
          logits.select(1, Tp - 1).index_select(0, prompt_index.to(logits.device()));  // (R, V)
      at::Tensor host =
          target_log_probs(last.unsqueeze(1), at::tensor(row_token, at::kLong).unsqueeze(1));
      const double* lp = host.data_ptr<double>();
      for (size_t k = 0; k < rows.size(); ++k) out[rows[k].group][rows[k].seq] -= lp[k];
    }

    add_remainder_nlls(model_, batch_size_, groups, remainder_rows, cache, mask, &out);
  }
  return out;
}

std::vector<double> PerplexityEvaluator::perplexities(
    const std::string& prompt, const std::vector<std::string>& continuations) const {
  return perplexities(std::vector<std::string>{prompt},
                      std::vector<std::vector<std::string>>{continuations})[0];
}

std::vector<std::vector<double>> PerplexityEvaluator::perplexities(
    const std::vector<std::string>& prompts,
    const std::vector<std::vector<std::string>>& continuations) const {
  DESTEIN_CHECK_ARG(prompts.size() == continuations.size(),
                    "perplexities: {} prompts but {} lists of continuations", prompts.size(),
                    continuations.size());
  const int64_t max_len = model_.config().max_positions;
  auto tokens = [&](const std::string& text) {
    std::vector<int64_t> ids = tokenizer_.encode_prompt(text);
    if (static_cast<int64_t>(ids.size()) > max_len) ids.resize(static_cast<size_t>(max_len));
    return ids;
  };
  // Group i: the prompt alone, then prompt + each continuation.
  std::vector<std::vector<std::vector<int64_t>>> groups(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    groups[i].push_back(tokens(prompts[i]));
    for (const auto& c : continuations[i]) groups[i].push_back(tokens(prompts[i] + c));
  }
  const auto nll = shared_prefix_nll_sums(groups);
  std::vector<std::vector<double>> out(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    const int64_t n_prompt = static_cast<int64_t>(groups[i][0].size());
    for (size_t j = 1; j < groups[i].size(); ++j) {
      const int64_t n = static_cast<int64_t>(groups[i][j].size());
      out[i].push_back(n > n_prompt ? conditional_perplexity(nll[i][j], nll[i][0], n, n_prompt)
                                    : std::numeric_limits<double>::quiet_NaN());
    }
  }
  return out;
}

}  // namespace destein
