#include "experiment/bench_settings.hpp"

#include <fmt/format.h>

#include "io/file_io.hpp"

namespace destein {

namespace {

bool is_default_window(const BenchSteeringEntry& e) {
  return e.steering.positions == SteeringPositions::kAll &&
         e.steering.gate == SteeringGate::kNone && e.steering.gate_threshold == 0;
}

nlohmann::json entry_settings(const BenchSteeringEntry& e) {
  nlohmann::json j = {
      {"vectors", file_identity(e.vectors)}, {"mode", steering_mode_name(e.steering.mode)},
      {"alpha", e.steering.alpha},           {"layer_start", e.steering.layer_start},
      {"layer_end", e.steering.layer_end},   {"top_k_heads", e.steering.top_k_heads}};
  // Only settings beyond the paper's are written, so that runs from before them resume.
  if (!is_default_window(e)) {
    j["positions"] = steering_positions_name(e.steering.positions);
    j["gate"] = steering_gate_name(e.steering.gate);
    j["gate_threshold"] = e.steering.gate_threshold;
  }
  return j;
}

nlohmann::json method_settings(const BenchMethod& m) {
  if (!m.decoding.kind.empty()) {
    // Only for these methods, so that the settings of every other method stay as they were.
    const DecodingMethod& d = m.decoding;
    nlohmann::json j = {{"method", d.kind}};
    if (d.kind == "dexperts") {
      j["expert"] = file_identity(d.expert);
      j["anti_expert"] = file_identity(d.anti_expert);
      j["alpha"] = d.alpha;
      j["filter_p"] = d.filter_p;
    } else if (d.kind == "self-debias") {
      j["lambda"] = d.lambda;
      j["prefixes"] = d.prefixes.empty() ? self_debias_prefixes() : d.prefixes;
    } else {
      j["words"] = file_identity(d.words);
    }
    return j;
  }
  if (m.steering.empty()) {
    const SteeringOptions none;
    return {{"vectors", nullptr},
            {"mode", "none"},
            {"alpha", 0.0},
            {"layer_start", none.layer_start},
            {"layer_end", none.layer_end},
            {"top_k_heads", none.top_k_heads}};
  }
  nlohmann::json j = entry_settings(m.steering.front());
  if (m.steering.size() > 1) {
    j["then"] = nlohmann::json::array();
    for (size_t i = 1; i < m.steering.size(); ++i) {
      j["then"].push_back(entry_settings(m.steering[i]));
    }
  }
  return j;
}

// The keys of a prompt set that decide which prompts it holds; `exclude` only when given,
// so that files written before the key existed still resume.
nlohmann::json prompt_set_settings(const BenchPromptSet& set) {
  nlohmann::json j = {
      {"path", set.path}, {"subset", set.options.subset}, {"limit", set.options.limit}};
  if (!set.exclude.empty()) j["exclude"] = set.exclude;
  return j;
}

}  // namespace

nlohmann::json file_identity(const std::string& path) {
  namespace fs = std::filesystem;
  if (path.empty()) return nullptr;
  std::error_code ec;
  fs::path p(path);
  if (fs::is_directory(p)) {
    for (const char* name : {"model.pt", "model.safetensors", "model.safetensors.index.json"}) {
      if (fs::is_regular_file(p / name)) {
        p /= name;
        break;
      }
    }
  }
  const auto size = fs::file_size(p, ec);
  if (ec) return path;
  nlohmann::json id = {{"path", path}, {"bytes", size}};
  if (size <= (64u << 20)) id["fnv1a64"] = file_fnv1a64(p);
  return id;
}

nlohmann::json bench_scorer_settings(const BenchScorer& s) {
  const nlohmann::json file =
      s.kind == "perspective" ? nlohmann::json(nullptr) : file_identity(s.path);
  nlohmann::json j = {{"kind", s.kind}, {"file", file}};
  // Only for this kind, so that the settings of runs scored by the others stay as they were.
  if (s.kind == "hf-classifier") j["label"] = s.label;
  return j;
}

nlohmann::json bench_run_settings(const BenchExperiment& c, const BenchMethod& m,
                                  const BenchPromptSet& set) {
  const auto& g = c.generation;
  return {
      {"model", file_identity(c.model.model)},
      {"dtype", c.model.dtype},
      {"tokenizer", c.model.tokenizer},
      {"prompts", prompt_set_settings(set)},
      {"method", method_settings(m)},
      {"generation",
       {{"samples", g.num_samples},
        {"max_new_tokens", g.max_new_tokens},
        {"do_sample", g.do_sample},
        {"temperature", g.temperature},
        {"top_k", g.top_k},
        {"top_p", g.top_p},
        {"seed", g.seed}}},
      {"scorer", bench_scorer_settings(c.scorer)},
      {"perplexity", {{"enabled", c.perplexity}, {"evaluator", file_identity(c.evaluator.model)}}}};
}

void check_resume_settings(const std::filesystem::path& generations,
                           const nlohmann::json& settings) {
  namespace fs = std::filesystem;
  const fs::path settings_file = generations.string() + ".settings.json";
  const bool has_lines = fs::exists(generations) && fs::file_size(generations) > 0;
  if (has_lines && fs::exists(settings_file)) {
    const nlohmann::json before = read_json_file(settings_file);
    if (const auto diff = first_json_difference(settings, before)) {
      throw std::runtime_error(fmt::format(
          "{} was generated with other settings ({}); resuming would mix two experiments. Use "
          "another output folder or method name, or delete the file to regenerate it",
          generations.string(), *diff));
    }
    return;
  }
  fs::create_directories(generations.parent_path());
  write_text_file(settings_file, settings.dump(2) + "\n");
}

}  // namespace destein
