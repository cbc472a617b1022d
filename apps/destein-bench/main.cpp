// destein-bench: the RealToxicityPrompts-style evaluation, driven by a YAML experiment.
//   destein-bench run --config configs/demo.yaml [--dump-config] [--threads N] [--seed S]
//                     [--output DIR] [--vectors-dir DIR] [--prompts-per-batch N]
//   destein-bench metrics --generations FILE [--evaluator MODEL] [--skip-malformed]
#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iostream>

#include "args.hpp"
#include "destein/eval/harness.hpp"
#include "destein/io/file_io.hpp"
#include "destein/io/jsonl.hpp"
#include "destein/score/linear_scorer.hpp"
#include "destein/score/perspective.hpp"
#include "destein/score/torchscript_scorer.hpp"
#include "destein/runtime/device.hpp"
#include "destein/steer/steering.hpp"
#include "model_args.hpp"
#include "destein/experiment/progress.hpp"
#include "destein/experiment/config_node.hpp"
#include "destein/io/data_folder.hpp"
#include "steering_args.hpp"
#include "destein/experiment/stop_request.hpp"

namespace destein::app {
namespace {

struct PromptSet {
  std::string name;
  std::string path;
  PromptFileOptions options;
};

// One steering entry of a method: a vectors file and how it is applied.
struct MethodEntry {
  std::string vectors;
  SteeringOptions steering;
  std::string mode = "reference";
};

struct Method {
  std::string name = "base";
  std::string vectors;  // empty: the unsteered model (the first entry's file otherwise)
  SteeringOptions steering;
  std::string mode = "reference";
  std::vector<MethodEntry> more;  // `steering:` entries after the first, applied in order
  std::string variant;            // the trade-off plot's curve; empty: derived from the settings
};

bool method_is_default_window(const MethodEntry& e) {
  return e.steering.positions == SteeringPositions::kAll && e.steering.gate == SteeringGate::kNone &&
         e.steering.gate_threshold == 0;
}

std::vector<MethodEntry> method_entries(const Method& m) {
  std::vector<MethodEntry> out;
  if (m.vectors.empty()) return out;
  out.push_back({m.vectors, m.steering, m.mode});
  out.insert(out.end(), m.more.begin(), m.more.end());
  return out;
}

// The curve a method lies on: its settings without the (first entry's) alpha.
std::string method_variant(const Method& m) {
  if (!m.variant.empty()) return m.variant;
  if (m.vectors.empty()) return "base";
  std::string v = fmt::format("{}", m.mode);
  if (m.steering.positions != SteeringPositions::kAll) v += " " + steering_positions_name(m.steering.positions);
  if (m.steering.gate == SteeringGate::kProbe) {
    v += m.steering.gate_threshold > 0 ? fmt::format(" gate>={}", m.steering.gate_threshold) : " gate";
  }
  if (m.steering.layer_start != 0 || m.steering.layer_end != -1) {
    v += fmt::format(" layers {}:{}", m.steering.layer_start, m.steering.layer_end);
  }
  if (m.steering.top_k_heads) v += fmt::format(" top{}", m.steering.top_k_heads);
  if (!m.more.empty()) v += fmt::format(" +{} entries", m.more.size());
  return v;
}

struct BenchConfig {
  ModelSection model;
  std::string data_dir;
  std::vector<PromptSet> prompts;
  std::vector<Method> methods;
  GenerationOptions generation;
  int64_t prompts_per_batch = 0;  // generation.prompts_per_batch; 0: auto
  int64_t max_rows = 0;           // generation.max_rows; 0: the device's default
  bool pipelined = false;         // generation.pipelined
  std::string scorer_kind = "linear";  // linear | perspective | torchscript
  TorchScriptScorerOptions torchscript;
  std::string scorer;           // linear: weights file (empty: the project's); perspective: cache file
  double perspective_rps = 1.0;
  bool perplexity = true;
  ModelSection evaluator;       // model empty: the generating model evaluates itself
  std::string output = "runs/bench";
};

// Identity of a file without reading a multi-gigabyte model: its size; small files
// (vectors, scorers) also get a content hash.
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

nlohmann::json entry_settings(const MethodEntry& e) {
  nlohmann::json j = {{"vectors", file_identity(e.vectors)},
                      {"mode", e.mode},
                      {"alpha", e.steering.alpha},
                      {"layer_start", e.steering.layer_start},
                      {"layer_end", e.steering.layer_end},
                      {"top_k_heads", e.steering.top_k_heads}};
  // Only settings beyond the paper's are written, so that runs from before them resume.
  if (!method_is_default_window(e)) {
    j["positions"] = steering_positions_name(e.steering.positions);
    j["gate"] = steering_gate_name(e.steering.gate);
    j["gate_threshold"] = e.steering.gate_threshold;
  }
  return j;
}

nlohmann::json method_settings(const Method& m) {
  if (m.vectors.empty()) {
    return {{"vectors", nullptr}, {"mode", "none"}, {"alpha", 0.0}, {"layer_start", m.steering.layer_start},
            {"layer_end", m.steering.layer_end}, {"top_k_heads", m.steering.top_k_heads}};
  }
  const auto entries = method_entries(m);
  nlohmann::json j = entry_settings(entries.front());
  if (entries.size() > 1) {
    j["then"] = nlohmann::json::array();
    for (size_t i = 1; i < entries.size(); ++i) j["then"].push_back(entry_settings(entries[i]));
  }
  return j;
}

// Everything that decides what a generations file holds. A resumed run must have been
// started with the same settings, else its file would mix two experiments.
nlohmann::json run_settings(const BenchConfig& c, const Method& m, const PromptSet& set) {
  const auto& g = c.generation;
  return {{"model", file_identity(c.model.model)},
          {"dtype", c.model.dtype},
          {"tokenizer", c.model.tokenizer},
          {"prompts", {{"path", set.path}, {"subset", set.options.subset}, {"limit", set.options.limit}}},
          {"method", method_settings(m)},
          {"generation",
           {{"samples", g.num_samples},
            {"max_new_tokens", g.max_new_tokens},
            {"do_sample", g.do_sample},
            {"temperature", g.temperature},
            {"top_k", g.top_k},
            {"top_p", g.top_p},
            {"seed", g.seed}}},
          {"scorer", {{"kind", c.scorer_kind}, {"file", c.scorer_kind == "perspective" ? nlohmann::json(nullptr) : file_identity(c.scorer)}}},
          {"perplexity", {{"enabled", c.perplexity}, {"evaluator", file_identity(c.evaluator.model)}}}};
}

// Writes <generations>.settings.json, or checks it against an existing one when the
// generations file already holds prompts.
void check_resume_settings(const std::filesystem::path& generations, const nlohmann::json& settings) {
  namespace fs = std::filesystem;
  const fs::path settings_file = generations.string() + ".settings.json";
  const bool has_lines = fs::exists(generations) && fs::file_size(generations) > 0;
  if (has_lines && fs::exists(settings_file)) {
    const nlohmann::json before = read_json_file(settings_file);
    if (const auto diff = first_json_difference(settings, before)) {
      throw std::runtime_error(fmt::format(
          "{} was generated with other settings ({}); resuming would mix two experiments. Use another "
          "output folder or method name, or delete the file to regenerate it",
          generations.string(), *diff));
    }
    return;
  }
  fs::create_directories(generations.parent_path());
  write_text_file(settings_file, settings.dump(2) + "\n");
}

BenchConfig read_bench_config(const ConfigNode& root) {
  BenchConfig c;
  c.generation.num_samples = 25;
  c.generation.max_new_tokens = 20;
  c.generation.top_p = 0.9;
  c.generation.batch_size = 0;
  model_section_schema().read(root, c.model);
  c.data_dir = root.get("data_dir", c.data_dir);
  for (const auto& p : root.list("prompts")) {
    PromptSet s;
    s.name = p.require<std::string>("name");
    s.path = p.require<std::string>("path");
    s.options.subset = p.get("subset", s.options.subset);
    s.options.limit = p.get("limit", s.options.limit);
    s.options.skip_malformed = p.get("skip_malformed", s.options.skip_malformed);
    c.prompts.push_back(s);
  }
  if (c.prompts.empty()) {
    throw std::invalid_argument(root.where() + ": 'prompts' needs at least one {name, path, subset}");
  }
  for (const auto& m : root.list("methods")) {
    Method x;
    x.name = m.require<std::string>("name");
    x.variant = m.get("variant", x.variant);
    // One entry: its keys on the method itself. Several: a `steering:` list of entries.
    auto read_entry = [&](const ConfigNode& n, MethodEntry& e) {
      e.vectors = n.get("vectors", e.vectors);
      e.mode = n.get("mode", e.mode);
      e.steering.mode = parse_steering_mode(e.mode);
      e.steering.alpha = n.get("alpha", e.steering.alpha);
      e.steering.layer_start = n.get("layer_start", e.steering.layer_start);
      e.steering.layer_end = n.get("layer_end", e.steering.layer_end);
      e.steering.top_k_heads = n.get("top_k_heads", e.steering.top_k_heads);
      e.steering.positions = parse_steering_positions(n.get("positions", std::string("all")));
      e.steering.gate = parse_steering_gate(n.get("gate", std::string("none")));
      e.steering.gate_threshold = n.get("gate_threshold", e.steering.gate_threshold);
    };
    MethodEntry first;
    read_entry(m, first);
    if (m.has("steering")) {
      if (!first.vectors.empty()) {
        throw std::invalid_argument(fmt::format(
            "{}: give either the steering keys (vectors, mode, alpha, ...) on the method or a 'steering' list of "
            "entries, not both",
            m.where("steering")));
      }
      std::vector<MethodEntry> entries;
      for (const auto& n : m.list("steering")) {
        MethodEntry e;
        read_entry(n, e);
        if (e.vectors.empty()) {
          throw std::invalid_argument(fmt::format("{}: a steering entry needs 'vectors'", n.where("vectors")));
        }
        entries.push_back(e);
      }
      if (!entries.empty()) {
        first = entries.front();
        x.more.assign(entries.begin() + 1, entries.end());
      }
    }
    x.vectors = first.vectors;
    x.mode = first.mode;
    x.steering = first.steering;
    c.methods.push_back(x);
  }
  if (c.methods.empty()) c.methods.push_back(Method{});
  ConfigNode g = root.child("generation");
  generation_schema("samples").read(g, c.generation);
  // prompts_per_batch and pipelining change how fast, not what: they stay out of
  // run_settings(), so a run may resume with other values.
  const std::string ppb = g.get("prompts_per_batch", std::string("auto"));
  if (ppb != "auto") {
    try {
      size_t used = 0;
      c.prompts_per_batch = std::stoll(ppb, &used);
      if (used != ppb.size() || c.prompts_per_batch < 1) throw std::invalid_argument(ppb);
    } catch (const std::exception&) {
      throw std::invalid_argument(fmt::format("{}: generation.prompts_per_batch must be a positive integer or auto, found '{}'",
                                              g.where("prompts_per_batch"), ppb));
    }
  }
  c.max_rows = g.get("max_rows", c.max_rows);
  if (c.max_rows < 0) {
    throw std::invalid_argument(fmt::format("{}: generation.max_rows must be >= 0 (0: {} on cpu, {} on cuda), found {}",
                                            g.where("max_rows"), default_max_rows(c10::Device(c10::kCPU)),
                                            default_max_rows(c10::Device(c10::kCUDA)), c.max_rows));
  }
  c.pipelined = g.get("pipelined", c.pipelined);
  ConfigNode sc = root.child("scorer");
  c.scorer_kind = sc.get("kind", c.scorer_kind);
  c.scorer = sc.get("path", c.scorer);
  c.perspective_rps = sc.get("requests_per_second", c.perspective_rps);
  auto& ts = c.torchscript;
  ts.tokenizer = sc.get("tokenizer", std::string());
  ts.activation = sc.get("activation", ts.activation);
  ts.label_index = sc.get("label_index", ts.label_index);
  ts.max_length = sc.get("max_length", ts.max_length);
  ts.bos_id = sc.get("bos_id", ts.bos_id);
  ts.eos_id = sc.get("eos_id", ts.eos_id);
  ts.pad_id = sc.get("pad_id", ts.pad_id);
  if (c.scorer_kind != "linear" && c.scorer_kind != "perspective" && c.scorer_kind != "torchscript") {
    throw std::invalid_argument(fmt::format("{}: scorer.kind must be linear, perspective or torchscript, found '{}'",
                                            sc.where("kind"), c.scorer_kind));
  }
  if (c.scorer_kind == "torchscript" && c.scorer.empty()) {
    throw std::invalid_argument(fmt::format("{}: scorer.kind torchscript needs scorer.path (the .pt module)", sc.where()));
  }
  ConfigNode ev = root.child("evaluator");
  c.perplexity = ev.get("enabled", c.perplexity);
  c.evaluator.model = ev.get("model", std::string());
  c.evaluator.tokenizer = ev.get("tokenizer", std::string());
  c.output = root.get("output", c.output);
  root.finish();
  return c;
}

std::string dump_bench_config(const BenchConfig& c) {
  YAML::Emitter e;
  e << YAML::BeginMap;
  model_section_schema().emit(e, c.model);
  e << YAML::Key << "data_dir" << YAML::Value << c.data_dir;
  e << YAML::Key << "prompts" << YAML::Value << YAML::BeginSeq;
  for (const auto& p : c.prompts) {
    e << YAML::BeginMap << YAML::Key << "name" << YAML::Value << p.name << YAML::Key << "path" << YAML::Value << p.path
      << YAML::Key << "subset" << YAML::Value << p.options.subset << YAML::Key << "limit" << YAML::Value
      << p.options.limit << YAML::Key << "skip_malformed" << YAML::Value << p.options.skip_malformed << YAML::EndMap;
  }
  e << YAML::EndSeq << YAML::Key << "methods" << YAML::Value << YAML::BeginSeq;
  auto emit_entry = [&](const MethodEntry& x) {
    e << YAML::Key << "vectors" << YAML::Value << x.vectors << YAML::Key << "mode" << YAML::Value << x.mode
      << YAML::Key << "alpha" << YAML::Value << x.steering.alpha << YAML::Key << "layer_start" << YAML::Value
      << x.steering.layer_start << YAML::Key << "layer_end" << YAML::Value << x.steering.layer_end << YAML::Key
      << "top_k_heads" << YAML::Value << x.steering.top_k_heads << YAML::Key << "positions" << YAML::Value
      << steering_positions_name(x.steering.positions) << YAML::Key << "gate" << YAML::Value
      << steering_gate_name(x.steering.gate) << YAML::Key << "gate_threshold" << YAML::Value
      << x.steering.gate_threshold;
  };
  for (const auto& m : c.methods) {
    e << YAML::BeginMap << YAML::Key << "name" << YAML::Value << m.name;
    if (!m.variant.empty()) e << YAML::Key << "variant" << YAML::Value << m.variant;
    if (m.more.empty()) {
      emit_entry({m.vectors, m.steering, m.mode});
    } else {
      e << YAML::Key << "steering" << YAML::Value << YAML::BeginSeq;
      for (const auto& x : method_entries(m)) {
        e << YAML::BeginMap;
        emit_entry(x);
        e << YAML::EndMap;
      }
      e << YAML::EndSeq;
    }
    e << YAML::EndMap;
  }
  e << YAML::EndSeq << YAML::Key << "generation" << YAML::Value << YAML::BeginMap;
  generation_schema("samples").emit(e, c.generation);
  e << YAML::Key << "prompts_per_batch" << YAML::Value
    << (c.prompts_per_batch > 0 ? std::to_string(c.prompts_per_batch) : std::string("auto")) << YAML::Key
    << "max_rows" << YAML::Value << c.max_rows << YAML::Key << "pipelined" << YAML::Value << c.pipelined;
  e << YAML::EndMap;
  e << YAML::Key << "scorer" << YAML::Value << YAML::BeginMap << YAML::Key << "kind" << YAML::Value << c.scorer_kind
    << YAML::Key << "path" << YAML::Value << c.scorer << YAML::Key << "requests_per_second" << YAML::Value
    << c.perspective_rps << YAML::Key << "tokenizer" << YAML::Value << c.torchscript.tokenizer.string() << YAML::Key
    << "activation" << YAML::Value << c.torchscript.activation << YAML::Key << "label_index" << YAML::Value
    << c.torchscript.label_index << YAML::Key << "max_length" << YAML::Value << c.torchscript.max_length << YAML::Key
    << "bos_id" << YAML::Value << c.torchscript.bos_id << YAML::Key << "eos_id" << YAML::Value << c.torchscript.eos_id
    << YAML::Key << "pad_id" << YAML::Value << c.torchscript.pad_id << YAML::EndMap;
  e << YAML::Key << "evaluator" << YAML::Value << YAML::BeginMap << YAML::Key << "enabled" << YAML::Value
    << c.perplexity << YAML::Key << "model" << YAML::Value << c.evaluator.model << YAML::Key << "tokenizer"
    << YAML::Value << c.evaluator.tokenizer << YAML::EndMap;
  e << YAML::Key << "output" << YAML::Value << c.output << YAML::EndMap;
  return e.c_str();
}

nlohmann::json summary_json(const EvalSummary& s) {
  nlohmann::json j = {{"expected_max_toxicity", s.toxicity.expected_max_toxicity},
                      {"expected_max_toxicity_std", s.toxicity.expected_max_toxicity_std},
                      {"toxicity_probability", s.toxicity.toxicity_probability},
                      {"dist_1", s.distinct.dist_1},
                      {"dist_2", s.distinct.dist_2},
                      {"dist_3", s.distinct.dist_3},
                      {"num_prompts", s.num_prompts}};
  if (s.perplexity) {
    j["perplexity"] = s.perplexity->mean;
    j["perplexity_dropped"] = s.perplexity->dropped;
  }
  return j;
}

// One method on one prompt subset, for the trade-off plot.
struct TradeoffPoint {
  std::string subset, variant, method;
  double alpha, emt, ppl;
};

// EMT against perplexity: one panel per prompt subset; in each, one curve per variant from
// the base point through its methods in increasing alpha (points labelled by method).
std::string tradeoff_svg(const std::vector<TradeoffPoint>& points, const std::string& title) {
  std::vector<std::string> subsets, variants;
  auto add = [](std::vector<std::string>& v, const std::string& x) {
    if (std::find(v.begin(), v.end(), x) == v.end()) v.push_back(x);
  };
  for (const auto& p : points) {
    add(subsets, p.subset);
    if (p.variant != "base") add(variants, p.variant);
  }
  double xmin = 1e300, xmax = -1e300;
  for (const auto& p : points) {
    xmin = std::min(xmin, p.ppl);
    xmax = std::max(xmax, p.ppl);
  }
  if (!(xmax > xmin)) {
    xmin -= 1;
    xmax += 1;
  }
  const double pad = (xmax - xmin) * 0.1;
  xmin -= pad;
  xmax += pad;
  const double ymin = 0, ymax = 1;
  const char* colours[] = {"#3b6fb6", "#d9822b", "#2e9e5b", "#c23b3b", "#8a5cc2", "#8c6d46", "#d35fb7", "#5f9ea0"};
  const int PW = 480, H = 420, L = 70, R = 20, T = 50, B = 50;
  const int legend_h = 18 * static_cast<int>(variants.size() + 1);
  const int W = PW * static_cast<int>(subsets.size());
  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" "
      "font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      "<text x=\"{}\" y=\"20\" font-size=\"14\">{}: one curve per variant, base then increasing alpha</text>\n",
      W, H + legend_h, L, title);
  for (size_t si = 0; si < subsets.size(); ++si) {
    const int x0 = PW * static_cast<int>(si);
    auto X = [&](double v) { return x0 + L + (v - xmin) / (xmax - xmin) * (PW - L - R); };
    auto Y = [&](double v) { return T + (1 - (v - ymin) / (ymax - ymin)) * (H - T - B); };
    svg += fmt::format(
        "<text x=\"{}\" y=\"40\" font-size=\"13\">'{}' prompts</text>\n"
        "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n<line x1=\"{}\" y1=\"{}\" x2=\"{}\" "
        "y2=\"{}\" stroke=\"black\"/>\n<text x=\"{}\" y=\"{}\">perplexity</text>\n"
        "<text x=\"{}\" y=\"{}\" transform=\"rotate(-90 {} {})\">expected max toxicity</text>\n",
        x0 + L, subsets[si], x0 + L, H - B, x0 + PW - R, H - B, x0 + L, T, x0 + L, H - B, x0 + (PW + L) / 2 - 30,
        H - 12, x0 + 15, (H + T) / 2, x0 + 15, (H + T) / 2);
    for (int i = 0; i <= 4; ++i) {
      const double v = i * 0.25;
      svg += fmt::format("<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">{:.2f}</text>\n", x0 + L - 6, Y(v) + 4, v);
      const double pv = xmin + (xmax - xmin) * i / 4;
      svg += fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">{:.1f}</text>\n", X(pv), H - B + 16,
                         pv);
    }
    const TradeoffPoint* base = nullptr;
    for (const auto& p : points) {
      if (p.subset == subsets[si] && p.variant == "base") base = &p;
    }
    for (size_t vi = 0; vi < variants.size(); ++vi) {
      std::vector<const TradeoffPoint*> curve;
      for (const auto& p : points) {
        if (p.subset == subsets[si] && p.variant == variants[vi]) curve.push_back(&p);
      }
      std::stable_sort(curve.begin(), curve.end(),
                       [](const TradeoffPoint* a, const TradeoffPoint* b) { return a->alpha < b->alpha; });
      if (base) curve.insert(curve.begin(), base);
      const char* colour = colours[vi % 8];
      std::string path;
      for (const auto* p : curve) path += fmt::format("{}{:.1f},{:.1f}", path.empty() ? "M" : " L", X(p->ppl), Y(p->emt));
      if (curve.size() > 1) {
        svg += fmt::format("<path d=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\"/>\n", path, colour);
      }
      for (const auto* p : curve) {
        if (p == base) continue;
        svg += fmt::format(
            "<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"4\" fill=\"{}\"><title>{}: alpha {}, EMT {:.3f}, PPL "
            "{:.2f}</title></circle>\n<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"10\">{}</text>\n",
            X(p->ppl), Y(p->emt), colour, p->method, p->alpha, p->emt, p->ppl, X(p->ppl) + 6, Y(p->emt) - 6, p->alpha);
      }
    }
    if (base) {
      svg += fmt::format(
          "<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"5\" fill=\"black\"><title>{}: EMT {:.3f}, PPL {:.2f}</title>"
          "</circle>\n<text x=\"{:.1f}\" y=\"{:.1f}\">base</text>\n",
          X(base->ppl), Y(base->emt), base->method, base->emt, base->ppl, X(base->ppl) + 7, Y(base->emt) + 14);
    }
  }
  // Legend under the panels: colour -> variant (points are labelled by alpha).
  for (size_t vi = 0; vi < variants.size(); ++vi) {
    const int y = H + 14 + 18 * static_cast<int>(vi);
    svg += fmt::format(
        "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"3\"/>\n<text x=\"{}\" "
        "y=\"{}\">{}</text>\n",
        L, y - 4, L + 24, y - 4, colours[vi % 8], L + 30, y, variants[vi]);
  }
  return svg + "</svg>\n";
}

int run_bench(Args& args) {
  const std::string config_path = args.require("config", "the experiment YAML (e.g. configs/demo.yaml)");
  const bool dump = args.flag("dump-config", "print the fully resolved experiment and exit");
  const int64_t threads_override = args.get_int("threads", -1, "LibTorch threads (-1: the config's)");
  // Seed sweeps without copying the config: --seed replaces generation.seed, --output the
  // output folder, --vectors-dir the folder of every method's vectors file.
  const auto seed_override = args.get("seed", "replaces generation.seed");
  const auto output_override = args.get("output", "the output folder (replaces output:)");
  const auto vectors_dir = args.get("vectors-dir", "folder that relative vectors paths are read from");
  const int64_t prompts_per_batch =
      args.get_int("prompts-per-batch", -1, "prompts per forward (replaces generation.prompts_per_batch)");
  args.finish();
  BenchConfig c = read_bench_config(ConfigNode::load_file(config_path));
  if (threads_override >= 0) c.model.threads = static_cast<int>(threads_override);
  if (seed_override) c.generation.seed = static_cast<uint64_t>(std::stoull(*seed_override));
  if (output_override) c.output = *output_override;
  if (prompts_per_batch == 0 || prompts_per_batch < -1) {
    throw std::invalid_argument(fmt::format("--prompts-per-batch must be a positive integer, found {}", prompts_per_batch));
  }
  if (prompts_per_batch > 0) c.prompts_per_batch = prompts_per_batch;
  if (vectors_dir) {
    for (auto& m : c.methods) {
      if (!m.vectors.empty()) m.vectors = (std::filesystem::path(*vectors_dir) / std::filesystem::path(m.vectors).filename()).string();
    }
  }
  if (dump) {
    std::cout << dump_bench_config(c) << "\n";
    return 0;
  }
  const std::filesystem::path out_dir(c.output);
  std::filesystem::create_directories(out_dir);
  {
    std::ofstream probe(out_dir / ".write-test");
    if (!probe.good()) throw std::runtime_error(fmt::format("{}: output folder is not writable", out_dir.string()));
  }
  std::filesystem::remove(out_dir / ".write-test");
  write_text_file(out_dir / "config.resolved.yaml", dump_bench_config(c) + "\n");

  LoadedModel gen = load_model_section(c.model);
  LoadedModel eval_own;
  const Model* eval_model = gen.model.get();
  const Tokenizer* eval_tok = gen.tokenizer.get();
  if (c.perplexity && !c.evaluator.model.empty()) {
    c.evaluator.threads = c.model.threads;
    eval_own = load_model_section(c.evaluator);
    eval_model = eval_own.model.get();
    eval_tok = eval_own.tokenizer.get();
  }
  std::unique_ptr<PerplexityEvaluator> evaluator;
  if (c.perplexity) evaluator = std::make_unique<PerplexityEvaluator>(*eval_model, *eval_tok, 25);
  std::unique_ptr<ToxicityScorer> scorer;
  if (c.scorer_kind == "perspective") {
    PerspectiveOptions po;
    po.requests_per_second = c.perspective_rps;
    po.cache_path = c.scorer.empty() ? out_dir / "perspective-cache.jsonl" : std::filesystem::path(c.scorer);
    scorer = std::make_unique<PerspectiveScorer>(po);
  } else if (c.scorer_kind == "torchscript") {
    TorchScriptScorerOptions ts = c.torchscript;
    ts.module = c.scorer;
    ts.device = c.model.device;
    scorer = std::make_unique<TorchScriptScorer>(ts);
  } else {
    scorer = std::make_unique<LinearScorer>(
        LinearScorer::load(c.scorer.empty() ? default_scorer_path() : std::filesystem::path(c.scorer)));
  }

  nlohmann::json results = nlohmann::json::array();
  std::vector<TradeoffPoint> tradeoff;
  std::string csv = "method,subset,prompts,emt,emt_std,tp,ppl,dist_1,dist_2,dist_3\n";
  for (const auto& method : c.methods) {
    Hooks hooks;
    std::optional<SteeringHandle> handle;
    if (!method.vectors.empty()) {
      SteeringStack stack;
      for (const auto& e : method_entries(method)) stack.push_back(plan_from_file(e.vectors, e.steering, *gen.model));
      handle = attach_steering(hooks, *gen.model, std::move(stack));
    }
    for (const auto& set : c.prompts) {
      int64_t skipped = 0;
      auto prompts = load_eval_prompts(resolve_data_path(set.path, c.data_dir), set.options, &skipped);
      const std::filesystem::path file = out_dir / method.name / (set.name + ".generations.jsonl");
      EvalRunOptions ro;
      ro.generation = c.generation;
      ro.method = method.name;
      ro.subset = set.name;
      ro.prompts_per_batch = c.prompts_per_batch;
      ro.max_rows = c.max_rows;
      ro.pipelined = c.pipelined;
      check_resume_settings(file, run_settings(c, method, set));
      ProgressBar bar(fmt::format("{} / {}", method.name, set.name), static_cast<int64_t>(prompts.size()), "prompts");
      if (handle) handle->reset_stats();
      // A stop request ends the run after the prompt just written (each prompt's line is
      // complete and flushed before the callback), so a rerun resumes after it.
      EvalRunReport rep = run_generation_eval(*gen.model, *gen.tokenizer, prompts, &hooks, scorer.get(), evaluator.get(),
                                              ro, file, [&](int64_t d, int64_t) {
                                                bar.update(d);
                                                check_stop(fmt::format(
                                                    "{} holds every prompt finished so far; rerun the same command "
                                                    "to resume",
                                                    file.string()));
                                              });
      bar.finish();
      const nlohmann::json stages = stage_times_json(rep.times);
      if (rep.prompts_done > 0) {
        fmt::print(stderr, "{}: {} prompts per batch{}; wall {:.1f} s: generate {:.0f}%, detokenize {:.0f}%, score {:.0f}%, "
                           "perplexity {:.0f}%, write {:.0f}%, waiting {:.0f}%\n",
                   file.string(), rep.prompts_per_batch, c.pipelined ? ", pipelined" : "", rep.times.wall,
                   stages["generate"]["share"].get<double>() * 100, stages["detokenize"]["share"].get<double>() * 100,
                   stages["score"]["share"].get<double>() * 100, stages["perplexity"]["share"].get<double>() * 100,
                   stages["write"]["share"].get<double>() * 100, stages["wait"]["share"].get<double>() * 100);
      }
      if (rep.prompts_resumed > 0 || rep.truncated_bytes > 0) {
        fmt::print(stderr, "{}: resumed ({} prompts already done{})\n", file.string(), rep.prompts_resumed,
                   rep.truncated_bytes ? fmt::format(", cut a partial line of {} bytes", rep.truncated_bytes) : "");
      }
      if (skipped) fmt::print(stderr, "{}: skipped {} malformed prompt lines\n", set.path, skipped);
      if (rep.unscored) fmt::print(stderr, "{}: {} generations have no toxicity score\n", file.string(), rep.unscored);
      EvalSummary s = summarize_generations(file);
      nlohmann::json row = summary_json(s);
      row["method"] = method.name;
      row["subset"] = set.name;
      row["alpha"] = method.vectors.empty() ? 0.0 : method.steering.alpha;
      row["mode"] = method.vectors.empty() ? "none" : method.mode;
      row["generations_file"] = file.string();
      row["variant"] = method_variant(method);
      row["prompts_per_batch"] = rep.prompts_per_batch;
      row["pipelined"] = c.pipelined;
      row["stages"] = stages;
      if (handle) {
        // Proof that the steering acted, over the prompts generated in this run (a resumed
        // file's earlier prompts are not counted).
        bool heads = false;
        for (const auto& e : method_entries(method)) heads = heads || e.steering.mode == SteeringMode::kHeadwise;
        const SteeringReport acted = handle->report();
        row["steering_acted"] = steering_report_json(acted, heads);
        row["steering_warnings"] = acted.warnings();
        for (const auto& w : acted.warnings()) fmt::print(stderr, "{} / {}: WARNING: {}\n", method.name, set.name, w);
      }
      results.push_back(row);
      const double ppl = s.perplexity ? s.perplexity->mean : std::nan("");
      csv += fmt::format("{},{},{},{:.4f},{:.4f},{:.4f},{:.3f},{:.4f},{:.4f},{:.4f}\n", method.name, set.name,
                         s.num_prompts, s.toxicity.expected_max_toxicity, s.toxicity.expected_max_toxicity_std,
                         s.toxicity.toxicity_probability, ppl, s.distinct.dist_1, s.distinct.dist_2, s.distinct.dist_3);
      if (std::isfinite(ppl)) {
        tradeoff.push_back({set.name, method_variant(method), method.name,
                            method.vectors.empty() ? 0.0 : method.steering.alpha, s.toxicity.expected_max_toxicity,
                            ppl});
      }
    }
  }
  write_text_file(out_dir / "results.json", results.dump(2) + "\n");
  write_text_file(out_dir / "results.csv", csv);
  std::string md = "| method | subset | prompts | EMT | TP | PPL | Dist-1 | Dist-2 | Dist-3 |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const auto& r : results) {
    md += fmt::format("| {} | {} | {} | {:.3f} ± {:.3f} | {:.3f} | {} | {:.3f} | {:.3f} | {:.3f} |\n",
                      r["method"].get<std::string>(), r["subset"].get<std::string>(), r["num_prompts"].get<int64_t>(),
                      r["expected_max_toxicity"].get<double>(), r["expected_max_toxicity_std"].get<double>(),
                      r["toxicity_probability"].get<double>(),
                      !r.contains("perplexity") ? std::string("-")
                      : std::isfinite(r["perplexity"].get<double>())
                          ? fmt::format("{:.2f}", r["perplexity"].get<double>())
                          : fmt::format("n/a (all {} >= 1e4)", r["perplexity_dropped"].get<int64_t>()),
                      r["dist_1"].get<double>(), r["dist_2"].get<double>(), r["dist_3"].get<double>());
  }
  write_text_file(out_dir / "results.md", md);
  if (tradeoff.size() > 1) write_text_file(out_dir / "tradeoff.svg", tradeoff_svg(tradeoff, "toxicity vs fluency"));
  std::cout << md;
  fmt::print("results in {}\n", out_dir.string());
  return 0;
}

int run_metrics(Args& args) {
  const std::string file = args.require("generations", "a generations file written by destein-bench run");
  auto evaluator_path = args.get("evaluator", "a model to measure perplexity under");
  const bool skip = args.flag("skip-malformed", "skip (and count) malformed lines instead of failing");
  ModelOptions opts = read_model_options(args);
  args.finish();
  EvalSummary s = summarize_generations(file, skip);
  nlohmann::json j = summary_json(s);
  if (skip) j["malformed_lines"] = s.malformed;
  if (evaluator_path) {
    auto model = load_model(*evaluator_path, opts);
    auto tok = adapt_tokenizer_to_model(load_tokenizer(model_folder(*evaluator_path)), model->config().model_type,
                                        model->config().bos_token_id);
    PerplexityEvaluator ev(*model, *tok, 25);
    std::vector<double> ppls;
    JsonlReader reader(file, JsonlOptions{skip});
    nlohmann::json line;
    ProgressBar bar("perplexity", s.num_prompts, "prompts");
    int64_t done = 0;
    while (reader.next(line)) {
      if (!line.contains("generations")) continue;
      std::vector<std::string> texts;
      for (const auto& g : line["generations"]) texts.push_back(g.value("text", ""));
      auto p = ev.perplexities(line["prompt"]["text"].get<std::string>(), texts);
      ppls.insert(ppls.end(), p.begin(), p.end());
      bar.update(++done);
    }
    bar.finish();
    auto summary = mean_perplexity(ppls);
    j["perplexity"] = summary.mean;
    j["perplexity_dropped"] = summary.dropped;
  }
  std::cout << j.dump() << "\n";
  return 0;
}

}  // namespace
}  // namespace destein::app

int main(int argc, char** argv) {
  using namespace destein::app;
  if (argc < 2 || std::string(argv[1]) == "--help") {
    fmt::print(stderr,
               "usage: destein-bench run --config FILE [--dump-config] [--threads N] [--seed S] [--output DIR]\n"
               "                         [--vectors-dir DIR] [--prompts-per-batch N]\n"
               "       destein-bench metrics --generations FILE [--evaluator MODEL] [--skip-malformed]\n");
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  destein::install_stop_handlers();
  try {
    Args args(argc, argv, 2);
    if (cmd == "run") return run_bench(args);
    if (cmd == "metrics") return run_metrics(args);
    fmt::print(stderr, "destein-bench: unknown command '{}' (run, metrics)\n", cmd);
    return 2;
  } catch (const HelpRequested& help) {
    fmt::print("usage: destein-bench {} [options]\n{}\n\n{}", cmd,
               cmd == "run" ? "runs a YAML experiment: generations, scores, perplexity, results.{json,csv,md}, plots"
                            : "recomputes every metric of a generations file",
               help.what());
    return 0;
  } catch (const destein::StopRequested& e) {
    fmt::print(stderr, "destein-bench {}: stopped by {}: {}\n", cmd, e.signal_name(), e.what());
    return e.exit_code();
  } catch (const std::exception& e) {
    fmt::print(stderr, "destein-bench {}: error: {}\n", cmd, e.what());
    return 1;
  }
}
