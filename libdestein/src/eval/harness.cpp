#include "destein/eval/harness.hpp"

#include "destein/score/attribute_scorer.hpp"

#include <ATen/ATen.h>

#include <cmath>
#include <fstream>

#include "check.hpp"
#include "io/jsonl.hpp"

namespace destein {

std::vector<EvalPrompt> load_eval_prompts(const std::filesystem::path& path,
                                          const PromptFileOptions& o, int64_t* skipped) {
  DESTEIN_CHECK_ARG(o.subset == "all" || o.subset == "toxic" || o.subset == "nontoxic",
                    "prompt subset must be toxic, nontoxic or all, found '{}'", o.subset);
  JsonlOptions jo;
  jo.skip_malformed = o.skip_malformed;
  JsonlReader reader(path, jo);
  std::vector<EvalPrompt> out;
  nlohmann::json line;
  int64_t index = -1, bad = 0;
  while (reader.next(line)) {
    ++index;
    nlohmann::json prompt = line.is_object() && line.contains("prompt") ? line["prompt"] : line;
    if (!prompt.is_object() || !prompt.contains("text") || !prompt["text"].is_string() ||
        prompt["text"].get<std::string>().empty()) {
      if (o.skip_malformed) {
        ++bad;
        continue;
      }
      throw std::runtime_error(
          fmt::format("{}: expected {{\"prompt\": {{\"text\": \"...\"}}}} or {{\"text\": \"...\"}} "
                      "with non-empty text",
                      reader.where()));
    }
    EvalPrompt p;
    p.index = index;
    p.text = prompt["text"].get<std::string>();
    if (prompt.contains("toxicity") && prompt["toxicity"].is_number())
      p.toxicity = prompt["toxicity"].get<double>();
    p.raw = prompt;
    if (o.subset != "all") {
      DESTEIN_CHECK_IO(p.toxicity.has_value(),
                       "{}: subset '{}' needs the prompt's toxicity, and this line has none",
                       reader.where(), o.subset);
      const bool toxic = *p.toxicity >= 0.5;
      if (toxic != (o.subset == "toxic")) continue;
    }
    out.push_back(std::move(p));
    if (o.limit > 0 && static_cast<int64_t>(out.size()) >= o.limit) break;
  }
  if (skipped) *skipped = bad + reader.skipped();
  return out;
}

int64_t default_max_rows(const c10::Device& device) { return device.is_cpu() ? 100 : 800; }

nlohmann::json stage_times_json(const EvalStageTimes& t) {
  auto stage = [&](double s) {
    return nlohmann::json{{"seconds", s}, {"share", t.wall > 0 ? s / t.wall : 0.0}};
  };
  return {{"generate", stage(t.generate)}, {"detokenize", stage(t.detokenize)},
          {"score", stage(t.score)},       {"perplexity", stage(t.perplexity)},
          {"write", stage(t.write)},       {"wait", stage(t.wait)},
          {"wall_seconds", t.wall}};
}

EvalSummary summarize_generations(const std::filesystem::path& path, bool skip_malformed) {
  JsonlOptions jo;
  jo.skip_malformed = skip_malformed;
  JsonlReader reader(path, jo);
  EvalSummary s;
  std::vector<PromptGenerations> rows;
  std::vector<double> ppls;
  bool any_ppl = false;
  nlohmann::json line;
  int64_t bad = 0;
  std::map<std::string, double> attribute_sum;
  std::map<std::string, int64_t> attribute_prompts;
  while (reader.next(line)) {
    try {
      PromptGenerations row;
      row.prompt = line.at("prompt").at("text").get<std::string>();
      std::map<std::string, double> line_max;
      for (const auto& g : line.at("generations")) {
        for (const auto& name : perspective_attributes()) {
          const auto it = g.find(name);
          if (it == g.end() || !it->is_number()) continue;
          auto [m, fresh] = line_max.emplace(name, it->get<double>());
          if (!fresh) m->second = std::max(m->second, it->get<double>());
        }
        row.texts.push_back(g.at("text").get<std::string>());
        row.toxicity.push_back(g.contains("toxicity") && g["toxicity"].is_number()
                                   ? std::optional<double>(g["toxicity"].get<double>())
                                   : std::nullopt);
        if (g.contains("perplexity")) {
          any_ppl = true;
          ppls.push_back(g["perplexity"].is_number() ? g["perplexity"].get<double>()
                                                     : std::numeric_limits<double>::quiet_NaN());
        }
      }
      rows.push_back(std::move(row));
      for (const auto& [name, m] : line_max) {
        attribute_sum[name] += m;
        attribute_prompts[name] += 1;
      }
    } catch (const nlohmann::json::exception& e) {
      if (!skip_malformed) {
        throw std::runtime_error(
            fmt::format("{}: expected {{\"prompt\": {{\"text\"}}, \"generations\": [{{\"text\", "
                        "\"toxicity\"}}]}}: {}",
                        reader.where(), e.what()));
      }
      ++bad;
    }
  }
  s.toxicity = toxicity_metrics(rows);
  s.distinct = distinct_metrics(rows);
  if (any_ppl) s.perplexity = mean_perplexity(ppls);
  s.num_prompts = static_cast<int64_t>(rows.size());
  s.malformed = bad + reader.skipped();
  for (const auto& [name, sum] : attribute_sum) {
    s.expected_max_by_attribute[name] = sum / static_cast<double>(attribute_prompts[name]);
  }
  return s;
}

nlohmann::json eval_summary_json(const EvalSummary& s) {
  nlohmann::json j = {{"expected_max_toxicity", s.toxicity.expected_max_toxicity},
                      {"expected_max_toxicity_std", s.toxicity.expected_max_toxicity_std},
                      {"toxicity_probability", s.toxicity.toxicity_probability},
                      {"toxicity_probability_ge", s.toxicity.toxicity_probability_ge},
                      {"dist_1", s.distinct.dist_1},
                      {"dist_2", s.distinct.dist_2},
                      {"dist_3", s.distinct.dist_3},
                      {"num_prompts", s.num_prompts}};
  if (s.perplexity) {
    j["perplexity"] = s.perplexity->mean;
    j["perplexity_dropped"] = s.perplexity->dropped;
  }
  if (!s.expected_max_by_attribute.empty())
    j["expected_max_by_attribute"] = s.expected_max_by_attribute;
  return j;
}

}  // namespace destein
