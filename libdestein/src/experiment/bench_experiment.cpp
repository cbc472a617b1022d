#include "destein/experiment/bench_experiment.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <set>

#include "destein/eval/mixed_methods.hpp"
#include "destein/experiment/progress.hpp"
#include "destein/experiment/stop_request.hpp"
#include "destein/io/data_folder.hpp"
#include "destein/io/file_io.hpp"
#include "destein/io/output_lock.hpp"
#include "destein/score/attribute_scorer.hpp"
#include "destein/score/linear_scorer.hpp"
#include "destein/score/perspective.hpp"

namespace destein {

namespace {

bool is_default_window(const BenchSteeringEntry& e) {
  return e.steering.positions == SteeringPositions::kAll && e.steering.gate == SteeringGate::kNone &&
         e.steering.gate_threshold == 0;
}

int64_t parse_prompts_per_batch(const std::string& text) {
  if (text == "auto") return 0;
  size_t used = 0;
  int64_t n = 0;
  try {
    n = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || n < 1) {
    throw std::invalid_argument(fmt::format("expected a positive integer or auto, found '{}'", text));
  }
  return n;
}

double method_alpha(const BenchMethod& m) { return m.steering.empty() ? 0.0 : m.steering.front().steering.alpha; }

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

nlohmann::json entry_settings(const BenchSteeringEntry& e) {
  nlohmann::json j = {{"vectors", file_identity(e.vectors)},
                      {"mode", steering_mode_name(e.steering.mode)},
                      {"alpha", e.steering.alpha},
                      {"layer_start", e.steering.layer_start},
                      {"layer_end", e.steering.layer_end},
                      {"top_k_heads", e.steering.top_k_heads}};
  // Only settings beyond the paper's are written, so that runs from before them resume.
  if (!is_default_window(e)) {
    j["positions"] = steering_positions_name(e.steering.positions);
    j["gate"] = steering_gate_name(e.steering.gate);
    j["gate_threshold"] = e.steering.gate_threshold;
  }
  return j;
}

nlohmann::json method_settings(const BenchMethod& m) {
  if (m.steering.empty()) {
    const SteeringOptions none;
    return {{"vectors", nullptr}, {"mode", "none"}, {"alpha", 0.0}, {"layer_start", none.layer_start},
            {"layer_end", none.layer_end}, {"top_k_heads", none.top_k_heads}};
  }
  nlohmann::json j = entry_settings(m.steering.front());
  if (m.steering.size() > 1) {
    j["then"] = nlohmann::json::array();
    for (size_t i = 1; i < m.steering.size(); ++i) j["then"].push_back(entry_settings(m.steering[i]));
  }
  return j;
}

// The keys of a prompt set that decide which prompts it holds; `exclude` only when given,
// so that files written before the key existed still resume.
nlohmann::json prompt_set_settings(const BenchPromptSet& set) {
  nlohmann::json j = {{"path", set.path}, {"subset", set.options.subset}, {"limit", set.options.limit}};
  if (!set.exclude.empty()) j["exclude"] = set.exclude;
  return j;
}

// Where a method's generations on a prompt set go, in both the apart and the mixed pass.
std::filesystem::path generations_path(const std::filesystem::path& out_dir, const BenchMethod& method,
                                       const BenchPromptSet& set) {
  return out_dir / method.name / (set.name + ".generations.jsonl");
}

// The harness options an experiment gives a prompt set (the method is set per run).
EvalRunOptions eval_run_options(const BenchExperiment& c, const BenchPromptSet& set) {
  EvalRunOptions ro;
  ro.generation = c.generation;
  ro.subset = set.name;
  ro.prompts_per_batch = c.prompts_per_batch;
  ro.max_rows = c.max_rows;
  ro.pipelined = c.pipelined;
  return ro;
}

// Everything that decides what a generations file holds. A resumed run must have been
// started with the same settings, else its file would mix two experiments.
nlohmann::json run_settings(const BenchExperiment& c, const BenchMethod& m, const BenchPromptSet& set) {
  const auto& g = c.generation;
  return {{"model", file_identity(c.model.model)},
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

// One method on one prompt subset, for the trade-off plot.
struct TradeoffPoint {
  std::string subset, variant, method;
  double alpha, emt, ppl;
};

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

// A rank's steering statistics travel as JSON: the means with the positions they are
// means over, so that rank 0 can weigh them.
nlohmann::json steering_stats_json(const SteeringReport& r) {
  auto values = [](const std::vector<double>& v) {
    nlohmann::json a = nlohmann::json::array();
    for (double x : v) a.push_back(std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(nullptr));
    return a;
  };
  nlohmann::json out = nlohmann::json::array();
  for (const auto& e : r.entries) {
    out.push_back({{"prompt_layer", values(e.prompt_layer_mean)},
                   {"generated_layer", values(e.generated_layer_mean)},
                   {"prompt_head", values(e.prompt_head_mean)},
                   {"generated_head", values(e.generated_head_mean)},
                   {"prompt_positions", e.prompt_positions},
                   {"generated_positions", e.generated_positions},
                   {"generated_not_edited", e.generated_not_edited}});
  }
  return out;
}

// The statistics over every rank's prompts: counts add up, means are weighted by the
// positions they average (equal to a one-process run's up to rounding, as they already
// are across batch layouts, since each forward sums its positions in one go).
SteeringReport merge_steering_stats(SteeringReport mine, const std::vector<std::string>& ranks) {
  for (size_t i = 0; i < mine.entries.size(); ++i) {
    auto& e = mine.entries[i];
    int64_t positions[2] = {0, 0};
    bool any_generated = false, all_not_edited = true;
    std::vector<double>* means[4] = {&e.prompt_layer_mean, &e.generated_layer_mean, &e.prompt_head_mean,
                                     &e.generated_head_mean};
    const char* keys[4] = {"prompt_layer", "generated_layer", "prompt_head", "generated_head"};
    std::vector<double> sums[4];
    for (int m = 0; m < 4; ++m) sums[m].assign(means[m]->size(), 0.0);
    for (const auto& bytes : ranks) {
      const nlohmann::json r = nlohmann::json::parse(bytes).at(i);
      const int64_t n[2] = {r["prompt_positions"].get<int64_t>(), r["generated_positions"].get<int64_t>()};
      for (int m = 0; m < 4; ++m) {
        const auto& v = r[keys[m]];
        for (size_t k = 0; k < sums[m].size(); ++k) {
          if (v[k].is_number()) sums[m][k] += v[k].get<double>() * static_cast<double>(n[m % 2]);
        }
      }
      positions[0] += n[0];
      positions[1] += n[1];
      if (n[1] > 0) {
        any_generated = true;
        all_not_edited = all_not_edited && r["generated_not_edited"].get<bool>();
      }
    }
    for (int m = 0; m < 4; ++m) {
      const double n = static_cast<double>(positions[m % 2]);
      for (size_t k = 0; k < sums[m].size(); ++k) (*means[m])[k] = n > 0 ? sums[m][k] / n : std::nan("");
    }
    e.prompt_positions = positions[0];
    e.generated_positions = positions[1];
    e.generated_not_edited = any_generated && all_not_edited;
  }
  return mine;
}

// One outcome of a mix_methods run: what run_generation_eval and the method's steering
// handle would have given for this (method, prompt set).
struct MixedOutcome {
  EvalRunReport report;
  std::optional<SteeringReport> acted;
};

// mix_methods: per prompt set, every method's units in shared batches, each row steered by
// its method through one controller; outcomes by (method, prompt set).
std::map<std::pair<size_t, size_t>, MixedOutcome> run_methods_mixed(
    const BenchExperiment& c, const BenchExperiment& experiment, const std::filesystem::path& out_dir,
    const Model& model, const Tokenizer& tokenizer, ToxicityScorer* scorer, const PerplexityEvaluator* perplexity,
    const ProcessGroup* group) {
  const bool sharded = group && group->size() > 1;
  const bool writer = !sharded || group->is_root();
  std::map<std::pair<size_t, size_t>, MixedOutcome> mixed;
  Hooks hooks;
  SteeringController control(hooks, model.config(), model.device());
  std::vector<SteeringStack> stacks;
  bool any_steering = false;
  for (const auto& method : c.methods) {
    SteeringStack stack;
    for (const auto& e : method.steering) stack.push_back(load_steering_plan(e.vectors, e.steering, model));
    any_steering = any_steering || !stack.empty();
    stacks.push_back(std::move(stack));
  }
  for (size_t si = 0; si < c.prompts.size(); ++si) {
    const BenchPromptSet& set = c.prompts[si];
    int64_t skipped = 0;
    auto prompts = load_bench_prompt_set(set, c.data_dir, &skipped);
    std::vector<EvalTrack> tracks;
    for (const auto& method : c.methods) {
      tracks.push_back({method.name, generations_path(out_dir, method, set)});
      if (writer) check_resume_settings(tracks.back().output, run_settings(experiment, method, set));
    }
    EvalRunOptions ro = eval_run_options(c, set);
    std::optional<ProgressBar> bar;
    const int64_t units = static_cast<int64_t>(prompts.size() * c.methods.size());
    if (writer) bar.emplace(fmt::format("{} methods / {}", c.methods.size(), set.name), units, "units");
    control.reset_stats();
    std::vector<int64_t> rows_set;
    auto select_rows = [&](const std::vector<int64_t>& row_tracks) {
      if (row_tracks == rows_set) return;  // decode steps repeat the layout of the step before
      rows_set = row_tracks;
      std::vector<SteeringStack> rows;
      for (int64_t t : row_tracks) rows.push_back(stacks[static_cast<size_t>(t)]);
      control.set_rows(std::move(rows));
    };
    const EvalTrackRows steer_rows = any_steering ? EvalTrackRows(select_rows) : EvalTrackRows{};
    auto reps = run_mixed_generation_eval(
        model, tokenizer, prompts, tracks, &hooks, steer_rows, scorer, perplexity, ro,
        [&](int64_t d, int64_t) {
          bar->update(d);
          check_stop(fmt::format("{} and the other methods' files hold every prompt finished so far; rerun the "
                                 "same command to resume",
                                 tracks.front().output.string()));
        },
        group);
    if (bar) bar->finish();
    for (size_t mi = 0; mi < c.methods.size(); ++mi) {
      MixedOutcome& outcome = mixed[{mi, si}];
      outcome.report = reps[mi];
      if (stacks[mi].empty()) continue;
      outcome.acted = control.report(stacks[mi]);
      if (sharded) {
        const auto parts = group->gather(steering_stats_json(*outcome.acted).dump());
        if (writer) outcome.acted = merge_steering_stats(*outcome.acted, parts);
      }
    }
  }
  return mixed;
}

Schema<BenchSteeringEntry> steering_entry_schema() {
  using E = BenchSteeringEntry;
  Schema<E> s;
  s.field("vectors", &E::vectors)
      .field_as("mode", [](E& e) -> SteeringMode& { return e.steering.mode; }, parse_steering_mode, steering_mode_name)
      .field("alpha", [](E& e) -> double& { return e.steering.alpha; })
      .field("layer_start", [](E& e) -> int64_t& { return e.steering.layer_start; })
      .field("layer_end", [](E& e) -> int64_t& { return e.steering.layer_end; })
      .field("top_k_heads", [](E& e) -> int64_t& { return e.steering.top_k_heads; })
      .field_as("positions", [](E& e) -> SteeringPositions& { return e.steering.positions; },
                parse_steering_positions, steering_positions_name)
      .field_as("gate", [](E& e) -> SteeringGate& { return e.steering.gate; }, parse_steering_gate,
                steering_gate_name)
      .field("gate_threshold", [](E& e) -> double& { return e.steering.gate_threshold; });
  return s;
}

Schema<BenchMethod> method_schema() {
  const Schema<BenchSteeringEntry> entry = steering_entry_schema();
  Schema<BenchMethod> s;
  s.field("name", &BenchMethod::name).required().field("variant", &BenchMethod::variant);
  // One entry: its keys on the method itself. Several: a `steering:` list of entries.
  s.custom(
      [entry](const ConfigNode& node, BenchMethod& m) {
        BenchSteeringEntry first;
        entry.read(node, first);
        m.steering.clear();
        if (node.has("steering")) {
          if (!first.vectors.empty()) {
            throw std::invalid_argument(fmt::format(
                "{}: give either the steering keys (vectors, mode, alpha, ...) on the method or a 'steering' list of "
                "entries, not both",
                node.where("steering")));
          }
          for (const auto& n : node.list("steering")) {
            BenchSteeringEntry e;
            entry.read(n, e);
            if (e.vectors.empty()) {
              throw std::invalid_argument(fmt::format("{}: a steering entry needs 'vectors'", n.where("vectors")));
            }
            m.steering.push_back(e);
          }
        } else if (!first.vectors.empty()) {
          m.steering.push_back(first);
        }
      },
      [entry](YAML::Emitter& e, const BenchMethod& m) {
        if (m.steering.size() == 1) {
          entry.emit(e, m.steering.front());
        } else if (m.steering.size() > 1) {
          e << YAML::Key << "steering" << YAML::Value << YAML::BeginSeq;
          for (const auto& x : m.steering) {
            e << YAML::BeginMap;
            entry.emit(e, x);
            e << YAML::EndMap;
          }
          e << YAML::EndSeq;
        }
      });
  return s;
}

}  // namespace

BenchExperiment::BenchExperiment() {
  generation.num_samples = 25;
  generation.max_new_tokens = 20;
  generation.top_p = 0.9;
  generation.batch_size = 0;
}

Schema<BenchExperiment> bench_experiment_schema() {
  using E = BenchExperiment;
  Schema<BenchPromptSet> prompt;
  prompt.field("name", &BenchPromptSet::name).required()
      .field("path", &BenchPromptSet::path).required()
      .field("subset", [](BenchPromptSet& p) -> std::string& { return p.options.subset; })
      .field("limit", [](BenchPromptSet& p) -> int64_t& { return p.options.limit; })
      .field("skip_malformed", [](BenchPromptSet& p) -> bool& { return p.options.skip_malformed; })
      .field("exclude", &BenchPromptSet::exclude);
  Schema<E> scorer;
  scorer.field("kind", &E::scorer_kind)
      .field("path", &E::scorer)
      .field("requests_per_second", &E::perspective_rps)
      .field_as("tokenizer", [](E& e) -> std::filesystem::path& { return e.torchscript.tokenizer; },
                [](const std::string& s) { return std::filesystem::path(s); },
                [](const std::filesystem::path& p) { return p.string(); })
      .field("activation", [](E& e) -> std::string& { return e.torchscript.activation; })
      .field("label_index", [](E& e) -> int64_t& { return e.torchscript.label_index; })
      .field("max_length", [](E& e) -> int64_t& { return e.torchscript.max_length; })
      .field("bos_id", [](E& e) -> int64_t& { return e.torchscript.bos_id; })
      .field("eos_id", [](E& e) -> int64_t& { return e.torchscript.eos_id; })
      .field("pad_id", [](E& e) -> int64_t& { return e.torchscript.pad_id; })
      .check([](const E& c, const ConfigNode& n) {
        if (c.scorer_kind != "linear" && c.scorer_kind != "perspective" && c.scorer_kind != "torchscript") {
          throw std::invalid_argument(fmt::format(
              "{}: scorer.kind must be linear, perspective or torchscript, found '{}'", n.where("kind"), c.scorer_kind));
        }
        if (c.scorer_kind == "torchscript" && c.scorer.empty()) {
          throw std::invalid_argument(
              fmt::format("{}: scorer.kind torchscript needs scorer.path (the .pt module)", n.where()));
        }
      });
  Schema<E> generation;
  generation.include(&E::generation, generation_schema("samples"))
      .field_as("prompts_per_batch", [](E& e) -> int64_t& { return e.prompts_per_batch; }, parse_prompts_per_batch,
                [](int64_t n) { return n > 0 ? std::to_string(n) : std::string("auto"); })
      .field("max_rows", &E::max_rows)
      .field("pipelined", &E::pipelined)
      .field("mix_methods", &E::mix_methods)
      .check([](const E& c, const ConfigNode& n) {
        if (c.max_rows < 0) {
          throw std::invalid_argument(fmt::format(
              "{}: generation.max_rows must be >= 0 (0: {} on cpu, {} on cuda), found {}", n.where("max_rows"),
              default_max_rows(c10::Device(c10::kCPU)), default_max_rows(c10::Device(c10::kCUDA)), c.max_rows));
        }
      });
  Schema<E> evaluator;
  evaluator.field("enabled", &E::perplexity)
      .field("model", [](E& e) -> std::string& { return e.evaluator.model; })
      .field("tokenizer", [](E& e) -> std::string& { return e.evaluator.tokenizer; });
  Schema<E> s;
  s.include(&E::model, model_section_schema())
      .field("data_dir", &E::data_dir)
      .list("prompts", &E::prompts, prompt)
      .list("methods", &E::methods, method_schema())
      .section("generation", [](E& e) -> E& { return e; }, generation)
      .section("scorer", [](E& e) -> E& { return e; }, scorer)
      .section("evaluator", [](E& e) -> E& { return e; }, evaluator)
      .field("output", &E::output)
      .check([](const E& c, const ConfigNode& n) {
        if (c.prompts.empty()) {
          throw std::invalid_argument(n.where() + ": 'prompts' needs at least one {name, path, subset}");
        }
        if (c.methods.empty()) throw std::invalid_argument(n.where("methods") + ": 'methods' is an empty list");
      });
  return s;
}

std::vector<EvalPrompt> load_bench_prompt_set(const BenchPromptSet& set, const std::string& data_dir,
                                              int64_t* skipped) {
  if (set.exclude.empty()) return load_eval_prompts(resolve_data_path(set.path, data_dir), set.options, skipped);
  std::set<std::string> excluded;
  for (const auto& path : set.exclude) {
    PromptFileOptions all;
    all.skip_malformed = set.options.skip_malformed;
    for (auto& p : load_eval_prompts(resolve_data_path(path, data_dir), all)) excluded.insert(std::move(p.text));
  }
  // The limit counts the prompts that remain, so it applies after the exclusion.
  PromptFileOptions unlimited = set.options;
  unlimited.limit = 0;
  std::vector<EvalPrompt> kept;
  for (auto& p : load_eval_prompts(resolve_data_path(set.path, data_dir), unlimited, skipped)) {
    if (excluded.count(p.text)) continue;
    kept.push_back(std::move(p));
    if (set.options.limit > 0 && static_cast<int64_t>(kept.size()) >= set.options.limit) break;
  }
  return kept;
}

BenchExperiment load_bench_experiment(const std::filesystem::path& yaml) {
  return bench_experiment_schema().load(ConfigNode::load_file(yaml));
}

std::string dump_bench_experiment(const BenchExperiment& e) { return bench_experiment_schema().dump(e); }

std::string bench_method_variant(const BenchMethod& m) {
  if (!m.variant.empty()) return m.variant;
  if (m.steering.empty()) return "base";
  const SteeringOptions& o = m.steering.front().steering;
  std::string v = steering_mode_name(o.mode);
  if (o.positions != SteeringPositions::kAll) v += " " + steering_positions_name(o.positions);
  if (o.gate == SteeringGate::kProbe) v += o.gate_threshold > 0 ? fmt::format(" gate>={}", o.gate_threshold) : " gate";
  if (o.layer_start != 0 || o.layer_end != -1) v += fmt::format(" layers {}:{}", o.layer_start, o.layer_end);
  if (o.top_k_heads) v += fmt::format(" top{}", o.top_k_heads);
  if (m.steering.size() > 1) v += fmt::format(" +{} entries", m.steering.size() - 1);
  return v;
}

BenchRunReport run_bench_experiment(const BenchExperiment& experiment, const ProcessGroup* group) {
  const bool sharded = group && group->size() > 1;
  const bool writer = !sharded || group->is_root();
  const std::filesystem::path out_dir(experiment.output);
  OutputLock lock;
  if (writer) {
    lock = lock_output_folder(out_dir);
    write_text_file(out_dir / "config.resolved.yaml", dump_bench_experiment(experiment) + "\n");
  }
  BenchExperiment c = experiment;
  if (sharded) {
    if (c.scorer_kind == "perspective") {
      throw std::invalid_argument(
          "scorer.kind perspective runs on one process (one cache file, one request rate per API key): run this "
          "experiment without mpirun, or score with the linear or torchscript scorer");
    }
    c.model = place_on_rank(c.model, *group);
    c.evaluator = place_on_rank(c.evaluator, *group);
  }

  LoadedModel gen = load_model_section(c.model);
  LoadedModel eval_own;
  const Model* eval_model = gen.model.get();
  const Tokenizer* eval_tok = gen.tokenizer.get();
  if (c.perplexity && !c.evaluator.model.empty()) {
    ModelSection evaluator = c.evaluator;
    evaluator.threads = c.model.threads;
    eval_own = load_model_section(evaluator);
    eval_model = eval_own.model.get();
    eval_tok = eval_own.tokenizer.get();
  }
  std::unique_ptr<PerplexityEvaluator> perplexity;
  if (c.perplexity) perplexity = std::make_unique<PerplexityEvaluator>(*eval_model, *eval_tok, 25);
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
    scorer = load_offline_scorer(c.scorer.empty() ? default_scorer_path() : std::filesystem::path(c.scorer));
  }

  // mix_methods: every prompt set's methods go through the model together first; the loop
  // below then reports each (method, set) from these outcomes, as if it had run apart.
  std::map<std::pair<size_t, size_t>, MixedOutcome> mixed;
  if (c.mix_methods) {
    mixed = run_methods_mixed(c, experiment, out_dir, *gen.model, *gen.tokenizer, scorer.get(), perplexity.get(),
                              group);
  }

  nlohmann::json results = nlohmann::json::array();
  std::vector<TradeoffPoint> tradeoff;
  std::string csv = "method,subset,prompts,emt,emt_std,tp,ppl,dist_1,dist_2,dist_3\n";
  for (const auto& method : c.methods) {
    Hooks hooks;
    std::optional<SteeringHandle> handle;
    if (!method.steering.empty() && !c.mix_methods) {
      SteeringStack stack;
      for (const auto& e : method.steering) stack.push_back(load_steering_plan(e.vectors, e.steering, *gen.model));
      handle = attach_steering(hooks, *gen.model, std::move(stack));
    }
    for (const auto& set : c.prompts) {
      int64_t skipped = 0;
      auto prompts = load_bench_prompt_set(set, c.data_dir, &skipped);
      const std::filesystem::path file = generations_path(out_dir, method, set);
      const std::string label = fmt::format("{} / {}", method.name, set.name);
      EvalRunOptions ro = eval_run_options(c, set);
      ro.method = method.name;
      // The settings are the experiment's as written, not a rank's device placement.
      if (writer) check_resume_settings(file, run_settings(experiment, method, set));
      std::optional<ProgressBar> bar;
      if (writer && !c.mix_methods) bar.emplace(label, static_cast<int64_t>(prompts.size()), "prompts");
      if (handle) handle->reset_stats();
      const auto mixed_outcome = mixed.find({static_cast<size_t>(&method - c.methods.data()),
                                             static_cast<size_t>(&set - c.prompts.data())});
      // A stop request ends the run after the prompts just written (each line is complete
      // and flushed before the callback), so a rerun resumes after them.
      EvalRunReport rep;
      std::optional<SteeringReport> acted;
      if (mixed_outcome != mixed.end()) {
        rep = mixed_outcome->second.report;
        acted = mixed_outcome->second.acted;
      } else {
        rep = run_generation_eval(
            *gen.model, *gen.tokenizer, prompts, &hooks, scorer.get(), perplexity.get(), ro, file,
            [&](int64_t d, int64_t) {
              bar->update(d);
              check_stop(fmt::format("{} holds every prompt finished so far; rerun the same command to resume",
                                     file.string()));
            },
            group);
      }
      if (handle) {
        acted = handle->report();
        if (sharded) {
          const auto parts = group->gather(steering_stats_json(*acted).dump());
          if (writer) acted = merge_steering_stats(*acted, parts);
        }
      }
      if (!writer) continue;
      if (bar) bar->finish();
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
      nlohmann::json row = eval_summary_json(s);
      row["method"] = method.name;
      row["subset"] = set.name;
      row["alpha"] = method_alpha(method);
      row["mode"] = method.steering.empty() ? "none" : steering_mode_name(method.steering.front().steering.mode);
      row["generations_file"] = file.string();
      row["variant"] = bench_method_variant(method);
      row["prompts_per_batch"] = rep.prompts_per_batch;
      row["pipelined"] = c.pipelined;
      row["stages"] = stages;
      if (acted) {
        // Proof that the steering acted, over the prompts generated in this run (a resumed
        // file's earlier prompts are not counted).
        bool heads = false;
        for (const auto& e : method.steering) heads = heads || e.steering.mode == SteeringMode::kHeadwise;
        row["steering_acted"] = steering_report_json(*acted, heads);
        row["steering_warnings"] = acted->warnings();
        for (const auto& w : acted->warnings()) fmt::print(stderr, "{}: WARNING: {}\n", label, w);
      }
      results.push_back(row);
      const double ppl = s.perplexity ? s.perplexity->mean : std::nan("");
      csv += fmt::format("{},{},{},{:.4f},{:.4f},{:.4f},{:.3f},{:.4f},{:.4f},{:.4f}\n", method.name, set.name,
                         s.num_prompts, s.toxicity.expected_max_toxicity, s.toxicity.expected_max_toxicity_std,
                         s.toxicity.toxicity_probability, ppl, s.distinct.dist_1, s.distinct.dist_2, s.distinct.dist_3);
      if (std::isfinite(ppl)) {
        tradeoff.push_back({set.name, bench_method_variant(method), method.name, method_alpha(method),
                            s.toxicity.expected_max_toxicity, ppl});
      }
    }
  }
  if (!writer) return {};
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
  return {results, md, out_dir};
}

}  // namespace destein
