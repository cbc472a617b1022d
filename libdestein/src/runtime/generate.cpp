#include "destein/runtime/generate.hpp"

#include <ATen/ATen.h>
#include "runtime/parallel.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <cstring>

#include "check.hpp"
#include "runtime/row_stream.hpp"

namespace destein {
namespace {

using detail::row_stream;
using detail::uniform01;

void check_options(const GenerationOptions& o) {
  DESTEIN_CHECK_ARG(o.max_new_tokens > 0, "generate: max_new_tokens must be positive, found {}", o.max_new_tokens);
  DESTEIN_CHECK_ARG(o.num_samples > 0, "generate: num_samples must be positive, found {}", o.num_samples);
  DESTEIN_CHECK_ARG(!o.do_sample || o.temperature > 0,
                    "generate: temperature must be > 0 when sampling, found {} (use greedy decoding "
                    "instead of temperature 0)",
                    o.temperature);
  DESTEIN_CHECK_ARG(o.top_k >= 0, "generate: top_k must be >= 0 (0 = off), found {}", o.top_k);
  DESTEIN_CHECK_ARG(o.top_p > 0 && o.top_p <= 1, "generate: top_p must be in (0, 1], found {}", o.top_p);
  DESTEIN_CHECK_ARG(o.batch_size >= 0, "generate: batch_size must be >= 0, found {}", o.batch_size);
}

}  // namespace

namespace {
// Inverse CDF over the kept tokens, in the order given.
int64_t draw(const std::vector<int32_t>& kept, const std::vector<float>& w, double u) {
  double kz = 0;
  for (int32_t i : kept) kz += w[i];
  double target = u * kz, run = 0;
  for (int32_t i : kept) {
    run += w[i];
    if (run > target) return i;
  }
  return kept.back();
}

// Top-p without sorting the vocabulary: the weights are positive floats, whose bit
// patterns order like their values, so a histogram over the high bits finds the bucket
// where the nucleus ends in two linear passes; only that bucket is sorted. Keeps exactly
// the tokens Hugging Face keeps (a token stays while the mass before it is below top_p).
int64_t sample_nucleus(const std::vector<float>& w, double z, double top_p, double u) {
  constexpr int kShift = 20;  // 4096 buckets over the float bit pattern
  const int64_t V = static_cast<int64_t>(w.size());
  std::vector<double> mass(4096, 0.0);
  auto bucket = [&](float x) {
    uint32_t bits;
    std::memcpy(&bits, &x, sizeof(bits));
    return bits >> kShift;
  };
  for (int64_t i = 0; i < V; ++i) mass[bucket(w[i])] += w[i];
  const double need = top_p * z;
  double above = 0;  // mass of the buckets above the boundary
  int64_t boundary = 4095;
  for (; boundary > 0; --boundary) {
    if (above + mass[boundary] >= need) break;
    above += mass[boundary];
  }
  std::vector<int32_t> kept, edge;
  for (int64_t i = 0; i < V; ++i) {
    const uint32_t b = bucket(w[i]);
    if (b > static_cast<uint32_t>(boundary)) kept.push_back(static_cast<int32_t>(i));
    else if (b == static_cast<uint32_t>(boundary)) edge.push_back(static_cast<int32_t>(i));
  }
  std::sort(edge.begin(), edge.end(), [&](int32_t a, int32_t b) { return w[a] > w[b] || (w[a] == w[b] && a < b); });
  double acc = above;
  for (int32_t i : edge) {
    if (acc >= need && !kept.empty()) break;
    kept.push_back(i);
    acc += w[i];
  }
  // Tokens above the boundary bucket in vocabulary order, then the boundary's by weight.
  return draw(kept, w, u);
}
}  // namespace

int64_t sample_token(const float* logits, int64_t V, const GenerationOptions& o, double u) {
  if (!o.do_sample) return std::max_element(logits, logits + V) - logits;
  const double inv_t = 1.0 / o.temperature;
  const float lmax = *std::max_element(logits, logits + V);
  std::vector<float> w(static_cast<size_t>(V));
  double z = 0;
  for (int64_t i = 0; i < V; ++i) {
    w[i] = static_cast<float>(std::exp((static_cast<double>(logits[i]) - lmax) * inv_t));
    z += w[i];
  }
  const int64_t limit = (o.top_k > 0 && o.top_k < V) ? o.top_k : V;
  if (limit == V && o.top_p >= 1.0) {
    double target = u * z, acc = 0;
    for (int64_t i = 0; i < V; ++i) {
      acc += w[i];
      if (acc > target) return i;
    }
    return V - 1;
  }
  if (limit == V) return sample_nucleus(w, z, o.top_p, u);
  // Only the head of the distribution matters: find the m largest weights (nth_element is
  // linear), sort just those, and widen m until it covers top-k or the top-p mass.
  std::vector<int32_t> idx(static_cast<size_t>(V));
  std::iota(idx.begin(), idx.end(), 0);
  auto by_weight = [&](int32_t a, int32_t b) { return w[a] > w[b] || (w[a] == w[b] && a < b); };
  int64_t m = std::min<int64_t>(limit, 256);
  std::vector<int32_t> kept;
  while (true) {
    std::nth_element(idx.begin(), idx.begin() + (m - 1), idx.end(), by_weight);
    std::sort(idx.begin(), idx.begin() + m, by_weight);
    const int64_t upto = std::min(m, limit);
    const bool all_candidates = m >= limit;
    if (o.top_p >= 1.0) {
      if (all_candidates) {
        kept.assign(idx.begin(), idx.begin() + limit);
        break;
      }
    } else {
      // Nucleus mass is measured against the whole distribution, or the top-k survivors.
      double mass = z;
      if (limit < V && all_candidates) {
        mass = 0;
        for (int64_t i = 0; i < limit; ++i) mass += w[idx[i]];
      }
      const double need = o.top_p * mass;
      double acc = 0;
      int64_t take = -1;
      for (int64_t i = 0; i < upto; ++i) {
        // Hugging Face keeps a token while the mass strictly before it is below top_p.
        if (acc >= need) {
          take = i;
          break;
        }
        acc += w[idx[i]];
      }
      if (take < 0 && all_candidates) take = upto;
      if (take > 0) {
        kept.assign(idx.begin(), idx.begin() + take);
        break;
      }
    }
    m = std::min<int64_t>(limit, m * 8);
  }
  return draw(kept, w, u);
}

std::vector<Generation> generate(const Model& model, const std::vector<std::vector<int64_t>>& prompts,
                                 const GenerationOptions& o, const Hooks* hooks,
                                 const GenerationProgress& progress) {
  check_options(o);
  const ModelConfig& c = model.config();
  const int64_t V = c.vocab_size;
  for (size_t p = 0; p < prompts.size(); ++p) {
    DESTEIN_CHECK_ARG(!prompts[p].empty(), "generate: prompt {} is empty (it needs at least one token)", p);
    DESTEIN_CHECK_ARG(static_cast<int64_t>(prompts[p].size()) + o.max_new_tokens <= c.max_positions,
                      "generate: prompt {} has {} tokens; with max_new_tokens {} that is past the "
                      "model's limit of {} positions",
                      p, prompts[p].size(), o.max_new_tokens, c.max_positions);
    for (int64_t id : prompts[p]) {
      DESTEIN_CHECK_ARG(id >= 0 && id < V, "generate: prompt {} holds token id {} outside the vocabulary [0, {})",
                        p, id, V);
    }
  }
  DESTEIN_CHECK_ARG(o.prompt_seeds.empty() || o.prompt_seeds.size() == prompts.size(),
                    "generate: {} prompt_seeds for {} prompts (expected one per prompt, or none)",
                    o.prompt_seeds.size(), prompts.size());
  const int64_t eos = o.eos_id >= 0 ? o.eos_id : c.eos_token_id.value_or(-1);
  const int64_t pad = o.pad_id >= 0 ? o.pad_id : (eos >= 0 ? eos : 0);

  std::vector<Generation> results;
  for (size_t p = 0; p < prompts.size(); ++p) {
    for (int64_t s = 0; s < o.num_samples; ++s) {
      Generation g;
      g.prompt_index = static_cast<int64_t>(p);
      g.sample_index = s;
      results.push_back(std::move(g));
    }
  }
  const int64_t rows_total = static_cast<int64_t>(results.size());
  const int64_t chunk = o.batch_size > 0 ? o.batch_size : std::max<int64_t>(rows_total, 1);
  const auto long_cpu = at::TensorOptions().dtype(at::kLong);

  for (int64_t start = 0; start < rows_total; start += chunk) {
    const int64_t B = std::min(chunk, rows_total - start);
    int64_t L = 0;
    for (int64_t r = 0; r < B; ++r) {
      L = std::max<int64_t>(L, prompts[results[start + r].prompt_index].size());
    }
    const int64_t capacity = L + o.max_new_tokens;
    at::Tensor mask = at::zeros({B, capacity}, long_cpu);
    std::vector<std::mt19937_64> streams;
    // Rows of the prefill: one per distinct prompt when shared, else one per row.
    std::vector<int64_t> prefill_prompt, row_to_prefill(static_cast<size_t>(B));
    for (int64_t r = 0; r < B; ++r) {
      const auto& g = results[start + r];
      const int64_t n = static_cast<int64_t>(prompts[g.prompt_index].size());
      mask.narrow(0, r, 1).narrow(1, L - n, n).fill_(1);
      streams.push_back(o.prompt_seeds.empty() ? row_stream(o.seed, g.prompt_index, g.sample_index)
                                               : row_stream(o.prompt_seeds[g.prompt_index], 0, g.sample_index));
      if (!o.share_prefill || prefill_prompt.empty() || prefill_prompt.back() != g.prompt_index) {
        prefill_prompt.push_back(g.prompt_index);
      }
      row_to_prefill[r] = static_cast<int64_t>(prefill_prompt.size()) - 1;
    }
    mask.narrow(1, L, o.max_new_tokens).fill_(1);  // generated tokens are real tokens
    const int64_t P = static_cast<int64_t>(prefill_prompt.size());
    at::Tensor ids = at::full({P, L}, pad, long_cpu);
    at::Tensor prefill_mask = at::zeros({P, L}, long_cpu);
    {
      auto acc = ids.accessor<int64_t, 2>();
      for (int64_t i = 0; i < P; ++i) {
        const auto& prompt = prompts[prefill_prompt[i]];
        const int64_t n = static_cast<int64_t>(prompt.size());
        for (int64_t j = 0; j < n; ++j) acc[i][L - n + j] = prompt[j];
        prefill_mask.narrow(0, i, 1).narrow(1, L - n, n).fill_(1);
      }
    }

    GenerationRows layout;
    if (o.before_forward) {
      layout.prompt_index = prefill_prompt;
      layout.sample_index.assign(static_cast<size_t>(P), -2);
      for (int64_t r = 0; r < B; ++r) {
        int64_t& s = layout.sample_index[static_cast<size_t>(row_to_prefill[r])];
        s = s == -2 ? results[start + r].sample_index : -1;
      }
      o.before_forward(layout);
    }

    KVCache cache = model.make_cache(P, capacity);
    ForwardOptions fo;
    fo.cache = &cache;
    fo.hooks = hooks;
    fo.logits = LogitsFor::kLast;
    fo.attention_mask = prefill_mask;
    at::Tensor logits = model.forward(ids, fo).logits;  // (P, 1, V)
    if (P != B) {
      at::Tensor rows = at::tensor(row_to_prefill, long_cpu);
      cache.select_rows(rows);
      logits = logits.index_select(0, rows.to(logits.device()));  // (B, 1, V)
    }

    std::vector<char> finished(static_cast<size_t>(B), 0);
    std::vector<int64_t> next(static_cast<size_t>(B), pad);
    for (int64_t step = 0; step < o.max_new_tokens; ++step) {
      at::Tensor host = logits.reshape({B, V}).to(at::kCPU).contiguous();
      const float* data = host.data_ptr<float>();
      // Uniforms are drawn serially so that each row's stream advances once per step.
      std::vector<double> uniforms(static_cast<size_t>(B));
      for (int64_t r = 0; r < B; ++r) uniforms[r] = finished[r] ? 0.0 : uniform01(streams[r]);
      at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
          next[r] = finished[r] ? pad : sample_token(data + r * V, V, o, uniforms[r]);
        }
      });
      bool all_done = true;
      for (int64_t r = 0; r < B; ++r) {
        if (finished[r]) continue;
        auto& g = results[start + r];
        if (o.stop_at_eos && next[r] == eos) {
          finished[r] = 1;
          g.stopped_at_eos = true;
          next[r] = pad;
          // The filler a finished row is fed while others continue is no generated token:
          // masked, hooks do not count it (steering statistics would otherwise depend on
          // which rows share the batch, and how long the longest of them runs).
          mask.narrow(0, r, 1).narrow(1, L + step, o.max_new_tokens - step).fill_(0);
        } else {
          g.token_ids.push_back(next[r]);
          all_done = false;
        }
      }
      if (all_done || step + 1 == o.max_new_tokens) break;
      if (o.before_forward) {
        if (layout.prompt_pass) {
          layout.prompt_pass = false;
          layout.prompt_index.clear();
          layout.sample_index.clear();
          for (int64_t r = 0; r < B; ++r) {
            layout.prompt_index.push_back(results[start + r].prompt_index);
            layout.sample_index.push_back(results[start + r].sample_index);
          }
        }
        layout.decode_step = step + 1;
        o.before_forward(layout);
      }
      fo.attention_mask = mask.narrow(1, 0, L + step + 1);
      logits = model.forward(at::tensor(next, long_cpu).view({B, 1}), fo).logits;
    }
    if (progress) progress(start + B, rows_total);
  }
  return results;
}

}  // namespace destein
