// The YAML form of a bench experiment (configs/demo.yaml): one table-driven mapping onto
// BenchExperiment, with the checks that need more than one key.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <map>
#include <set>

#include "destein/experiment/bench_experiment.hpp"
#include "destein/score/scorer_factory.hpp"
#include "experiment/experiment_schemas.hpp"

namespace destein {

namespace {

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
    throw std::invalid_argument(
        fmt::format("expected a positive integer or auto, found '{}'", text));
  }
  return n;
}

Schema<BenchSteeringEntry> steering_entry_schema() {
  using E = BenchSteeringEntry;
  Schema<E> s;
  s.field("vectors", &E::vectors)
      .field_as(
          "mode", [](E& e) -> SteeringMode& { return e.steering.mode; }, parse_steering_mode,
          steering_mode_name)
      .field("alpha", [](E& e) -> double& { return e.steering.alpha; })
      .field("layer_start", [](E& e) -> int64_t& { return e.steering.layer_start; })
      .field("layer_end", [](E& e) -> int64_t& { return e.steering.layer_end; })
      .field("top_k_heads", [](E& e) -> int64_t& { return e.steering.top_k_heads; })
      .field_as(
          "positions", [](E& e) -> SteeringPositions& { return e.steering.positions; },
          parse_steering_positions, steering_positions_name)
      .field_as(
          "gate", [](E& e) -> SteeringGate& { return e.steering.gate; }, parse_steering_gate,
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
        if (node.has("method")) {
          read_decoding_method(node, m.decoding);
          return;
        }
        BenchSteeringEntry first;
        entry.read(node, first);
        m.steering.clear();
        if (node.has("steering")) {
          if (!first.vectors.empty()) {
            throw std::invalid_argument(
                fmt::format("{}: give either the steering keys (vectors, mode, alpha, ...) on the "
                            "method or a 'steering' list of entries, not both",
                            node.where("steering")));
          }
          for (const auto& n : node.list("steering")) {
            BenchSteeringEntry e;
            entry.read(n, e);
            if (e.vectors.empty()) {
              throw std::invalid_argument(
                  fmt::format("{}: a steering entry needs 'vectors'", n.where("vectors")));
            }
            m.steering.push_back(e);
          }
        } else if (!first.vectors.empty()) {
          m.steering.push_back(first);
        }
      },
      [entry](YAML::Emitter& e, const BenchMethod& m) {
        if (!m.decoding.kind.empty()) {
          emit_decoding_method(e, m.decoding);
          return;
        }
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

// The keys of `scorer:`, and of each `scorers:` item (`listed`: with its required name).
Schema<BenchScorer> scorer_schema(bool listed) {
  using S = BenchScorer;
  const std::string where = listed ? "scorers[]" : "scorer";
  Schema<S> s;
  if (listed) s.field("name", &S::name).required();
  s.field("kind", &S::kind)
      .field("path", &S::path)
      .field("requests_per_second", &S::requests_per_second)
      .field_as(
          "tokenizer", [](S& e) -> std::filesystem::path& { return e.torchscript.tokenizer; },
          [](const std::string& t) { return std::filesystem::path(t); },
          [](const std::filesystem::path& p) { return p.string(); })
      .field("activation", [](S& e) -> std::string& { return e.torchscript.activation; })
      .field("label_index", [](S& e) -> int64_t& { return e.torchscript.label_index; })
      .field("max_length", [](S& e) -> int64_t& { return e.torchscript.max_length; })
      .field("bos_id", [](S& e) -> int64_t& { return e.torchscript.bos_id; })
      .field("eos_id", [](S& e) -> int64_t& { return e.torchscript.eos_id; })
      .field("pad_id", [](S& e) -> int64_t& { return e.torchscript.pad_id; })
      .field("label", &S::label)
      .check([where](const S& c, const ConfigNode& n) {
        const auto& kinds = toxicity_scorer_kinds();
        if (std::find(kinds.begin(), kinds.end(), c.kind) == kinds.end()) {
          throw std::invalid_argument(fmt::format("{}: {}.kind must be one of {}, found '{}'",
                                                  n.where("kind"), where, fmt::join(kinds, ", "),
                                                  c.kind));
        }
        if (c.kind == "torchscript" && c.path.empty()) {
          throw std::invalid_argument(fmt::format(
              "{}: {}.kind torchscript needs {}.path (the .pt module)", n.where(), where, where));
        }
        if (c.kind == "hf-classifier" && c.path.empty()) {
          throw std::invalid_argument(
              fmt::format("{}: {}.kind hf-classifier needs {}.path (the classifier folder)",
                          n.where(), where, where));
        }
        if (!c.label.empty() && c.kind != "hf-classifier") {
          throw std::invalid_argument(fmt::format("{}: {}.label is for kind hf-classifier, not {}",
                                                  n.where("label"), where, c.kind));
        }
      });
  return s;
}

// A `scorers:` item's name is a folder name and a table column: non-empty, one path
// component, unique.
void check_scorer_names(const std::vector<BenchScorer>& scorers, const ConfigNode& n) {
  std::set<std::string> seen;
  for (const auto& s : scorers) {
    if (s.name.empty() || s.name == "." || s.name == ".." ||
        s.name.find_first_of("/\\") != std::string::npos) {
      throw std::invalid_argument(fmt::format(
          "{}: each scorers item needs a 'name' usable as a folder name (no '/'), found '{}'",
          n.where("scorers"), s.name));
    }
    if (!seen.insert(s.name).second) {
      throw std::invalid_argument(
          fmt::format("{}: two scorers are named '{}'", n.where("scorers"), s.name));
    }
  }
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
  prompt.field("name", &BenchPromptSet::name)
      .required()
      .field("path", &BenchPromptSet::path)
      .required()
      .field("subset", [](BenchPromptSet& p) -> std::string& { return p.options.subset; })
      .field("limit", [](BenchPromptSet& p) -> int64_t& { return p.options.limit; })
      .field("skip_malformed", [](BenchPromptSet& p) -> bool& { return p.options.skip_malformed; })
      .field("exclude", &BenchPromptSet::exclude);
  Schema<E> generation;
  generation.include(&E::generation, generation_schema("samples"))
      .field_as(
          "prompts_per_batch", [](E& e) -> int64_t& { return e.prompts_per_batch; },
          parse_prompts_per_batch,
          [](int64_t n) { return n > 0 ? std::to_string(n) : std::string("auto"); })
      .field("max_rows", &E::max_rows)
      .field("pipelined", &E::pipelined)
      .field("mix_methods", &E::mix_methods)
      .check([](const E& c, const ConfigNode& n) {
        if (c.max_rows < 0) {
          throw std::invalid_argument(fmt::format(
              "{}: generation.max_rows must be >= 0 (0: {} on cpu, {} on cuda), found {}",
              n.where("max_rows"), default_max_rows(c10::Device(c10::kCPU)),
              default_max_rows(c10::Device(c10::kCUDA)), c.max_rows));
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
      .section(
          "generation", [](E& e) -> E& { return e; }, generation)
      .section("scorer", &E::scorer, scorer_schema(false))
      .list("scorers", &E::scorers, scorer_schema(true))
      .section(
          "evaluator", [](E& e) -> E& { return e; }, evaluator)
      .field("output", &E::output)
      .check([](const E& c, const ConfigNode& n) {
        if (c.prompts.empty()) {
          throw std::invalid_argument(n.where() +
                                      ": 'prompts' needs at least one {name, path, subset}");
        }
        if (c.methods.empty())
          throw std::invalid_argument(n.where("methods") + ": 'methods' is an empty list");
        check_scorer_names(c.scorers, n);
        for (const auto& m : c.methods) {
          if (c.mix_methods && !m.decoding.kind.empty()) {
            throw std::invalid_argument(fmt::format(
                "{}: method '{}' ({}) cannot run with generation.mix_methods: its logits "
                "processors apply to every row of a batch; set mix_methods: false",
                n.where("methods"), m.name, m.decoding.kind));
          }
        }
      });
  return s;
}

BenchExperiment load_bench_experiment(const std::filesystem::path& yaml) {
  return bench_experiment_schema().load(ConfigNode::load_file(yaml));
}

std::string dump_bench_experiment(const BenchExperiment& e) {
  return bench_experiment_schema().dump(e);
}

void read_decoding_method(const ConfigNode& node, DecodingMethod& d) {
  d = DecodingMethod{};
  d.kind = node.require<std::string>("method");
  const std::string where = node.where("method");
  const auto& kinds = decoding_method_kinds();
  if (std::find(kinds.begin(), kinds.end(), d.kind) == kinds.end()) {
    throw std::invalid_argument(
        fmt::format("{}: unknown method '{}' (known: {})", where, d.kind, fmt::join(kinds, ", ")));
  }
  const std::map<std::string, std::vector<std::string>> keys_of = {
      {"dexperts", {"expert", "anti_expert", "alpha", "filter_p"}},
      {"self-debias", {"lambda", "prefixes"}},
      {"word-filter", {"words"}}};
  for (const auto& [kind, keys] : keys_of) {
    if (kind == d.kind) continue;
    for (const auto& key : keys) {
      if (node.has(key)) {
        throw std::invalid_argument(fmt::format("{}: '{}' belongs to method {}, not {}",
                                                node.where(key), key, kind, d.kind));
      }
    }
  }
  for (const char* key : {"vectors", "steering", "mode"}) {
    if (node.has(key)) {
      throw std::invalid_argument(fmt::format(
          "{}: a method '{}' entry does not take steering keys; give steering its own entry",
          node.where(key), d.kind));
    }
  }
  d.expert = node.get<std::string>("expert", d.expert);
  d.anti_expert = node.get<std::string>("anti_expert", d.anti_expert);
  d.alpha = node.get<double>("alpha", d.alpha);
  d.filter_p = node.get<double>("filter_p", d.filter_p);
  d.lambda = node.get<double>("lambda", d.lambda);
  d.prefixes = node.get<std::vector<std::string>>("prefixes", d.prefixes);
  d.words = node.get<std::string>("words", d.words);
  check_decoding_method(d, where);
}

void emit_decoding_method(YAML::Emitter& e, const DecodingMethod& d) {
  e << YAML::Key << "method" << YAML::Value << d.kind;
  if (d.kind == "dexperts") {
    e << YAML::Key << "expert" << YAML::Value << d.expert;
    e << YAML::Key << "anti_expert" << YAML::Value << d.anti_expert;
    e << YAML::Key << "alpha" << YAML::Value << d.alpha;
    e << YAML::Key << "filter_p" << YAML::Value << d.filter_p;
  } else if (d.kind == "self-debias") {
    e << YAML::Key << "lambda" << YAML::Value << d.lambda;
    if (!d.prefixes.empty()) e << YAML::Key << "prefixes" << YAML::Value << d.prefixes;
  } else {
    e << YAML::Key << "words" << YAML::Value << d.words;
  }
}

}  // namespace destein
