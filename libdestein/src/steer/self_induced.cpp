#include "destein/steer/self_induced.hpp"

#include <set>

#include <cstring>

#include "check.hpp"
#include "parallel/process_group.hpp"
#include "parallel/work_split.hpp"
#include "splitmix.hpp"
#include "splitmix_inverse.hpp"

namespace destein {

InductionDirection parse_induction_direction(const std::string& name) {
  if (name == "detoxify") return InductionDirection::kDetoxify;
  if (name == "toxify") return InductionDirection::kToxify;
  if (name == "both") return InductionDirection::kBoth;
  throw std::invalid_argument(
      fmt::format("unknown induction direction '{}': expected detoxify, toxify or both", name));
}

std::string induction_direction_name(InductionDirection d) {
  switch (d) {
    case InductionDirection::kDetoxify:
      return "detoxify";
    case InductionDirection::kToxify:
      return "toxify";
    default:
      return "both";
  }
}

std::string induction_prompt(const std::vector<SteeringPair>& demos, const std::string& source,
                             bool detoxify, const SelfInductionOptions& o) {
  const std::string& from = detoxify ? o.toxic_label : o.nontoxic_label;
  const std::string& to = detoxify ? o.nontoxic_label : o.toxic_label;
  std::string prompt = o.instruction.empty() ? "" : o.instruction + "\n";
  for (const auto& d : demos) {
    prompt += fmt::format("{}: {}\n{}: {}\n", from, detoxify ? d.toxic : d.nontoxic, to,
                          detoxify ? d.nontoxic : d.toxic);
  }
  prompt += fmt::format("{}: {}\n{}:", from, source, to);
  return prompt;
}

namespace {
// The rewrite is the generated text up to the first line break, without the whitespace a
// continuation starts with (clean_pair_text() keeps the start of a text, as the reference does).
std::string first_line(const std::string& text) {
  const size_t nl = text.find('\n');
  std::string line = nl == std::string::npos ? text : text.substr(0, nl);
  const size_t start = line.find_first_not_of(" \t\r\f\v");
  return start == std::string::npos ? std::string() : line.substr(start);
}

// generate() over the ranks of `group`: each rank takes one contiguous block of whole
// batches; rank 0 gets every generation in prompt order, the others an empty list.
std::vector<Generation> generate_over_ranks(const Model& model,
                                            const std::vector<std::vector<int64_t>>& prompts,
                                            const GenerationOptions& options,
                                            const GenerationProgress& progress,
                                            const ProcessGroup& group) {
  const int64_t n = static_cast<int64_t>(prompts.size());
  const int64_t per_unit =
      options.batch_size > 0
          ? std::max<int64_t>(1, options.batch_size / std::max<int64_t>(1, options.num_samples))
          : 1;
  const auto [unit_begin, unit_end] =
      shard_range((n + per_unit - 1) / per_unit, group.rank(), group.size());
  const int64_t begin = std::min(n, unit_begin * per_unit), end = std::min(n, unit_end * per_unit);
  GenerationOptions mine = options;
  mine.prompt_seeds.clear();
  for (int64_t p = begin; p < end; ++p) {
    // generate() seeds row (p, s) from splitmix64(splitmix64(seed) ^ p) and, given
    // prompt_seeds, from splitmix64(splitmix64(prompt_seed) ^ 0): this prompt_seed makes
    // the two equal, so a rank's block draws what the one-process call draws.
    mine.prompt_seeds.push_back(
        options.prompt_seeds.empty()
            ? detail::unsplitmix64(detail::splitmix64(options.seed) ^ static_cast<uint64_t>(p))
            : options.prompt_seeds[static_cast<size_t>(p)]);
  }
  std::vector<Generation> local;
  if (end > begin) {
    local = generate(
        model, std::vector<std::vector<int64_t>>(prompts.begin() + begin, prompts.begin() + end),
        mine, nullptr, progress);
  }
  // Packed as int64: prompt (global), sample, stopped_at_eos, token count, tokens.
  std::vector<int64_t> packed;
  for (const auto& g : local) {
    packed.insert(packed.end(), {g.prompt_index + begin, g.sample_index, g.stopped_at_eos ? 1 : 0,
                                 static_cast<int64_t>(g.token_ids.size())});
    packed.insert(packed.end(), g.token_ids.begin(), g.token_ids.end());
  }
  const auto parts =
      group.gather(std::string(reinterpret_cast<const char*>(packed.data()), packed.size() * 8));
  std::vector<Generation> all;
  for (const auto& bytes : parts) {
    std::vector<int64_t> v(bytes.size() / 8);
    std::memcpy(v.data(), bytes.data(), v.size() * 8);
    for (size_t at = 0; at + 4 <= v.size();) {
      Generation g;
      g.prompt_index = v[at];
      g.sample_index = v[at + 1];
      g.stopped_at_eos = v[at + 2] != 0;
      const auto count = static_cast<size_t>(v[at + 3]);
      DESTEIN_CHECK_IO(at + 4 + count <= v.size(),
                       "self-induction: a rank sent a truncated list of generations");
      g.token_ids.assign(v.begin() + static_cast<int64_t>(at + 4),
                         v.begin() + static_cast<int64_t>(at + 4 + count));
      at += 4 + count;
      all.push_back(std::move(g));
    }
  }
  return all;
}

}  // namespace

std::vector<SteeringPair> self_induce_pairs(const Model& model, const Tokenizer& tokenizer,
                                            const std::vector<SteeringPair>& seeds,
                                            const SelfInductionOptions& o, ToxicityScorer* scorer,
                                            SelfInductionReport* report_out,
                                            const GenerationProgress& progress,
                                            const ProcessGroup* group) {
  DESTEIN_CHECK_ARG(o.num_targets > 0 && o.few_shot >= 0,
                    "self-induction: num_targets must be > 0 and few_shot >= 0");
  const size_t needed = static_cast<size_t>(o.num_targets + o.few_shot);
  DESTEIN_CHECK_ARG(seeds.size() >= needed,
                    "self-induction: {} seed pairs are too few for {} targets + {} demonstrations",
                    seeds.size(), o.num_targets, o.few_shot);
  // Targets and a disjoint pool of demonstrations, both drawn by the seed.
  std::vector<SteeringPair> drawn = sample_pairs(seeds, needed, o.seed);
  std::vector<SteeringPair> targets(drawn.begin(), drawn.begin() + o.num_targets);
  std::vector<SteeringPair> pool(drawn.begin() + o.num_targets, drawn.end());

  std::vector<std::vector<int64_t>> prompts;
  std::vector<int64_t> target_of;  // prompt -> target
  const int64_t max_positions = model.config().max_positions;
  int64_t shortened = 0, too_long = 0;
  std::vector<std::vector<SteeringPair>> demos_of;
  std::vector<bool> detoxify_of;
  for (int64_t i = 0; i < o.num_targets; ++i) {
    const bool detoxify = o.direction == InductionDirection::kDetoxify ||
                          (o.direction == InductionDirection::kBoth && i % 2 == 0);
    std::vector<SteeringPair> demos = pool;
    if (!demos.empty()) {
      // Rotate the pool per target so that prompts differ without re-sampling.
      std::rotate(
          demos.begin(),
          demos.begin() + static_cast<int64_t>(detail::splitmix64(o.seed ^ i) % demos.size()),
          demos.end());
    }
    const std::string& source = detoxify ? targets[i].toxic : targets[i].nontoxic;
    std::vector<int64_t> ids =
        tokenizer.encode_prompt(induction_prompt(demos, source, detoxify, o));
    // A small context (a model trained here has 128 positions) cannot hold every
    // demonstration: drop them from the end until prompt and rewrite fit.
    while (static_cast<int64_t>(ids.size()) + o.generation.max_new_tokens > max_positions &&
           !demos.empty()) {
      demos.pop_back();
      ++shortened;
      ids = tokenizer.encode_prompt(induction_prompt(demos, source, detoxify, o));
    }
    if (static_cast<int64_t>(ids.size()) + o.generation.max_new_tokens > max_positions) {
      ++too_long;
      continue;
    }
    prompts.push_back(std::move(ids));
    target_of.push_back(i);
    demos_of.push_back(std::move(demos));
    detoxify_of.push_back(detoxify);
  }
  const bool sharded = group && group->size() > 1;
  std::vector<Generation> gens =
      sharded ? generate_over_ranks(model, prompts, o.generation, progress, *group)
              : generate(model, prompts, o.generation, nullptr, progress);
  if (sharded && !group->is_root()) return {};

  SelfInductionReport report;
  report.filtered = scorer != nullptr;
  report.demonstrations_dropped = shortened;
  report.targets_too_long = too_long;
  std::vector<SteeringPair> candidates;
  std::set<std::pair<std::string, std::string>> seen;
  for (const auto& g : gens) {
    ++report.generated;
    const auto& target =
        targets[static_cast<size_t>(target_of[static_cast<size_t>(g.prompt_index)])];
    const bool detoxify = detoxify_of[g.prompt_index];
    std::string rewrite = clean_pair_text(
        first_line(tokenizer.decode_continuation(prompts[g.prompt_index], g.token_ids)));
    if (rewrite.empty()) {
      ++report.empty;
      continue;
    }
    SteeringPair p;
    p.toxic = detoxify ? target.toxic : rewrite;
    p.nontoxic = detoxify ? rewrite : target.nontoxic;
    if (p.toxic == p.nontoxic) {
      ++report.unchanged;
      continue;
    }
    if (!seen.insert({p.toxic, p.nontoxic}).second) {
      ++report.duplicates;
      continue;
    }
    nlohmann::json demos = nlohmann::json::array();
    for (const auto& d : demos_of[g.prompt_index]) demos.push_back(d.provenance);
    p.provenance = {{"method", "self-induced"},
                    {"direction", detoxify ? "detoxify" : "toxify"},
                    {"seed_pair", target.provenance},
                    {"demonstrations", demos},
                    {"model", o.model_name},
                    {"sample", g.sample_index},
                    {"sampling",
                     {{"do_sample", o.generation.do_sample},
                      {"temperature", o.generation.temperature},
                      {"top_p", o.generation.top_p},
                      {"top_k", o.generation.top_k},
                      {"max_new_tokens", o.generation.max_new_tokens},
                      {"seed", o.generation.seed}}},
                    {"filter", scorer ? scorer->name() : "none (unfiltered)"}};
    candidates.push_back(std::move(p));
  }

  std::vector<SteeringPair> kept;
  if (!scorer) {
    kept = std::move(candidates);
  } else {
    std::vector<std::string> texts;
    for (const auto& p : candidates) {
      texts.push_back(p.toxic);
      texts.push_back(p.nontoxic);
    }
    auto scores = scorer->score(texts);
    DESTEIN_CHECK_IO(scores.size() == texts.size(), "scorer {} returned {} scores for {} texts",
                     scorer->name(), scores.size(), texts.size());
    for (size_t i = 0; i < candidates.size(); ++i) {
      const auto& st = scores[2 * i];
      const auto& sn = scores[2 * i + 1];
      if (!st || !sn) {
        ++report.unscored;
        continue;
      }
      if (*st < o.toxic_min) {
        ++report.rejected_toxic;
        continue;
      }
      if (*sn >= o.nontoxic_max) {
        ++report.rejected_nontoxic;
        continue;
      }
      candidates[i].provenance["scores"] = {{"toxic", *st}, {"nontoxic", *sn}};
      candidates[i].provenance["thresholds"] = {{"toxic_min", o.toxic_min},
                                                {"nontoxic_max", o.nontoxic_max}};
      kept.push_back(std::move(candidates[i]));
    }
  }
  report.kept = static_cast<int64_t>(kept.size());
  if (report_out) *report_out = report;
  return kept;
}

}  // namespace destein
