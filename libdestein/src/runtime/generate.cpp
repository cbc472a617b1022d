#include "destein/runtime/generate.hpp"

#include <ATen/ATen.h>
#include "runtime/parallel.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "check.hpp"
#include "runtime/decode_batch.hpp"
#include "runtime/row_stream.hpp"

namespace destein {
namespace {

using detail::row_stream;

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
  // u * kz rounded up to kz: the last token that has weight (never a banned one).
  for (auto it = kept.rbegin(); it != kept.rend(); ++it) {
    if (w[*it] > 0) return *it;
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
    if (b > static_cast<uint32_t>(boundary))
      kept.push_back(static_cast<int32_t>(i));
    else if (b == static_cast<uint32_t>(boundary))
      edge.push_back(static_cast<int32_t>(i));
  }
  std::sort(edge.begin(), edge.end(),
            [&](int32_t a, int32_t b) { return w[a] > w[b] || (w[a] == w[b] && a < b); });
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
    for (int64_t i = V - 1; i > 0; --i) {  // u * z rounded up to z: the last token with weight
      if (w[i] > 0) return i;
    }
    return 0;
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

std::vector<Generation> generate(const Model& model,
                                 const std::vector<std::vector<int64_t>>& prompts,
                                 const GenerationOptions& o, const Hooks* hooks,
                                 const GenerationProgress& progress) {
  check_sampling_options(o, "generate");
  DESTEIN_CHECK_ARG(o.num_samples > 0, "generate: num_samples must be positive, found {}",
                    o.num_samples);
  DESTEIN_CHECK_ARG(o.batch_size >= 0, "generate: batch_size must be >= 0, found {}", o.batch_size);
  check_decode_prompts(model, prompts, o.max_new_tokens, "generate");
  DESTEIN_CHECK_ARG(o.prompt_seeds.empty() || o.prompt_seeds.size() == prompts.size(),
                    "generate: {} prompt_seeds for {} prompts (expected one per prompt, or none)",
                    o.prompt_seeds.size(), prompts.size());
  const int64_t eos = o.eos_id >= 0 ? o.eos_id : model.config().eos_token_id.value_or(-1);
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
  // What each row samples with: the options without what belongs to generate() itself.
  GenerationOptions row_sampling = o;
  row_sampling.eos_id = eos;
  row_sampling.prompt_seeds.clear();
  row_sampling.before_forward = nullptr;
  row_sampling.processors.clear();
  row_sampling.processors_for_row = nullptr;

  const int64_t rows_total = static_cast<int64_t>(results.size());
  const int64_t chunk = o.batch_size > 0 ? o.batch_size : std::max<int64_t>(rows_total, 1);
  for (int64_t start = 0; start < rows_total; start += chunk) {
    const int64_t B = std::min(chunk, rows_total - start);
    // Rows are ids into `results`; the caller's callback hears prompt and sample indices.
    int64_t decode_step = 0;
    DecodeBatchOptions bo;
    bo.hooks = hooks;
    bo.pad_id = pad;
    if (o.before_forward) {
      bo.before_forward = [&](const DecodeForward& f) {
        GenerationRows layout;
        layout.prompt_pass = f.prefill;
        layout.decode_step = f.prefill ? 0 : decode_step;
        for (const auto& ids : f.row_ids) {
          const Generation& g = results[static_cast<size_t>(ids.front())];
          layout.prompt_index.push_back(g.prompt_index);
          layout.sample_index.push_back(ids.size() == 1 ? g.sample_index : -1);
        }
        o.before_forward(layout);
      };
    }
    DecodeBatch batch(model, std::move(bo));
    std::vector<DecodeRowSpec> specs(static_cast<size_t>(B));
    for (int64_t r = 0; r < B; ++r) {
      const Generation& g = results[static_cast<size_t>(start + r)];
      DecodeRowSpec& spec = specs[static_cast<size_t>(r)];
      spec.id = start + r;
      spec.prompt = prompts[static_cast<size_t>(g.prompt_index)];
      spec.sampling = row_sampling;
      spec.rng =
          o.prompt_seeds.empty()
              ? row_stream(o.seed, g.prompt_index, g.sample_index)
              : row_stream(o.prompt_seeds[static_cast<size_t>(g.prompt_index)], 0, g.sample_index);
      spec.processors = o.processors_for_row ? o.processors_for_row(g.prompt_index, g.sample_index)
                                             : o.processors;
      spec.prefill_group = o.share_prefill ? g.prompt_index : -1;
    }
    batch.add(std::move(specs));
    while (batch.running() > 0) {
      ++decode_step;
      batch.step();
    }
    for (const DecodeRow& row : batch.rows()) {
      DESTEIN_CHECK_IO(row.finish != FinishReason::kError,
                       "generate: row (prompt {}, sample {}): {}",
                       results[static_cast<size_t>(row.id)].prompt_index,
                       results[static_cast<size_t>(row.id)].sample_index, row.error);
      Generation& g = results[static_cast<size_t>(row.id)];
      g.token_ids = row.generated;
      g.stopped_at_eos = row.finish == FinishReason::kEos;
    }
    if (progress) progress(start + B, rows_total);
  }
  return results;
}

}  // namespace destein
