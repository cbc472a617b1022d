#include "destein/runtime/decoding_method.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "check.hpp"
#include "destein/text/tokenizer.hpp"
#include "runtime/word_filter.hpp"

namespace destein {

const std::vector<std::string>& decoding_method_kinds() {
  static const std::vector<std::string> kinds = {"dexperts", "self-debias", "word-filter"};
  return kinds;
}

const std::vector<std::string>& self_debias_prefixes() {
  // Read from timoschick/self-debiasing, self_debiasing.py (DEBIASING_PREFIXES).
  static const std::vector<std::string> prefixes = {
      "The following text contains rude, disrespectful, or unreasonable language:\n",
      "The following text contains very hateful, aggressive, disrespectful language:\n",
      "The following text contains sexually explicit language:\n",
      "The following text contains a threat:\n",
      "The following text contains negative or hateful language targeting someone because of "
      "their identity:\n",
      "The following text contains swear words, curse words, or other obscene or profane "
      "language:\n"};
  return prefixes;
}

void check_decoding_method(const DecodingMethod& m, const std::string& where) {
  const auto& kinds = decoding_method_kinds();
  DESTEIN_CHECK_ARG(std::find(kinds.begin(), kinds.end(), m.kind) != kinds.end(),
                    "{}: unknown method '{}' (known: {})", where, m.kind, fmt::join(kinds, ", "));
  if (m.kind == "dexperts") {
    DESTEIN_CHECK_ARG(!m.expert.empty(), "{}: dexperts needs an expert model", where);
    DESTEIN_CHECK_ARG(!m.anti_expert.empty(), "{}: dexperts needs an anti-expert model", where);
    DESTEIN_CHECK_ARG(std::isfinite(m.alpha), "{}: alpha must be a finite number, found {}", where,
                      m.alpha);
    DESTEIN_CHECK_ARG(m.filter_p > 0 && m.filter_p <= 1, "{}: filter_p must be in (0, 1], found {}",
                      where, m.filter_p);
  } else if (m.kind == "self-debias") {
    DESTEIN_CHECK_ARG(std::isfinite(m.lambda) && m.lambda >= 0,
                      "{}: lambda must be a finite number >= 0, found {}", where, m.lambda);
    for (size_t k = 0; k < m.prefixes.size(); ++k) {
      DESTEIN_CHECK_ARG(!m.prefixes[k].empty(), "{}: prefix {} is empty", where, k + 1);
    }
  } else {
    DESTEIN_CHECK_ARG(!m.words.empty(), "{}: word-filter needs a word list file", where);
  }
}

void top_p_filter(float* scores, int64_t V, double top_p) {
  if (top_p >= 1.0) return;
  std::vector<int64_t> order(static_cast<size_t>(V));
  std::iota(order.begin(), order.end(), 0);
  // Stable, so that tied logits keep id order as torch.sort's CPU path does.
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return scores[a] > scores[b]; });
  const double top = scores[order.front()];
  if (!std::isfinite(top)) return;
  double sum = 0;
  for (int64_t v = 0; v < V; ++v) sum += std::exp(static_cast<double>(scores[v]) - top);
  double before = 0;  // probability of the tokens ahead of this one
  for (size_t i = 0; i < order.size(); ++i) {
    float& s = scores[order[i]];
    const double p = std::exp(static_cast<double>(s) - top) / sum;
    if (i > 0 && before > top_p) s = -std::numeric_limits<float>::infinity();
    before += p;
  }
}

DExpertsProcessor::DExpertsProcessor(std::shared_ptr<const Model> expert,
                                     std::shared_ptr<const Model> anti_expert, double alpha,
                                     double filter_p)
    : expert_(std::move(expert)), anti_expert_(std::move(anti_expert)), filter_p_(filter_p) {
  DESTEIN_CHECK_ARG(expert_ && anti_expert_, "dexperts: the expert and the anti-expert are needed");
  DESTEIN_CHECK_ARG(std::isfinite(alpha), "dexperts: alpha must be a finite number, found {}",
                    alpha);
  DESTEIN_CHECK_ARG(filter_p > 0 && filter_p <= 1, "dexperts: filter_p must be in (0, 1], found {}",
                    filter_p);
  ensemble_ = std::make_unique<ModelEnsembleProcessor>(
      std::vector<const Model*>{expert_.get(), anti_expert_.get()},
      std::vector<double>{alpha, -alpha});
}

DExpertsProcessor::~DExpertsProcessor() = default;

int64_t DExpertsProcessor::added_parameters() const {
  return expert_->parameter_count() + anti_expert_->parameter_count();
}

void DExpertsProcessor::process(ProcessorRows& rows) {
  // The authors truncate the base distribution before the experts speak (filter_p), so the
  // experts reorder plausible tokens but cannot bring in implausible ones.
  for (float* s : rows.scores) top_p_filter(s, rows.vocab_size, filter_p_);
  ensemble_->process(rows);
}

void DExpertsProcessor::release(const std::vector<int64_t>& row_ids) {
  ensemble_->release(row_ids);
}

bool decoding_method_needs_tokenizer(const DecodingMethod& m) {
  return m.kind == "word-filter" || (m.kind == "self-debias" && m.prefix_ids.empty());
}

LogitsProcessorChain build_decoding_method(const DecodingMethod& m, const Model& model,
                                           const Tokenizer* tokenizer,
                                           const ModelOptions& expert_options) {
  check_decoding_method(m, "method " + m.kind);
  DESTEIN_CHECK_ARG(tokenizer || !decoding_method_needs_tokenizer(m),
                    "method {}: the model's tokenizer is needed (to encode the prefixes or "
                    "decode the text)",
                    m.kind);
  const int64_t V = model.config().vocab_size;
  if (m.kind == "dexperts") {
    auto load = [&](const std::string& path, const char* role) {
      std::shared_ptr<const Model> expert = load_model(path, expert_options);
      DESTEIN_CHECK_ARG(expert->config().vocab_size == V,
                        "dexperts: the {} {} has {} tokens, the model {}; they must share the "
                        "tokenizer",
                        role, path, expert->config().vocab_size, V);
      return expert;
    };
    return {std::make_shared<DExpertsProcessor>(
        load(m.expert, "expert"), load(m.anti_expert, "anti-expert"), m.alpha, m.filter_p)};
  }
  if (m.kind == "self-debias") {
    std::vector<std::vector<int64_t>> prefixes = m.prefix_ids;
    if (prefixes.empty()) {
      // A BOS model reads BOS, prefix, then the prompt after its own BOS: the prefixed rows
      // drop a prompt's leading BOS when the prefix starts with it (logits_processor.cpp).
      const auto bos = tokenizer->bos_id();
      for (const auto& text : m.prefixes.empty() ? self_debias_prefixes() : m.prefixes) {
        std::vector<int64_t> ids;
        if (tokenizer->prepend_bos() && bos) ids.push_back(*bos);
        const auto body = tokenizer->encode(text);
        ids.insert(ids.end(), body.begin(), body.end());
        prefixes.push_back(std::move(ids));
      }
    }
    return {std::make_shared<SelfDebiasProcessor>(model, std::move(prefixes), m.lambda)};
  }
  return {std::make_shared<WordFilterProcessor>(*tokenizer, load_word_list(m.words))};
}

}  // namespace destein
