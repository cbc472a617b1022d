// `destein vectors --config FILE`: steering pairs -> site activations -> directions and
// per-head probes -> a vectors file (+ probe heatmap and the pairs used).
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <iostream>

#include "commands.hpp"
#include "destein/steer/activations.hpp"
#include "destein/runtime/model.hpp"
#include "destein/steer/pairs.hpp"
#include "destein/steer/probes.hpp"
#include "destein/runtime/device.hpp"
#include "destein/steer/steering_vectors.hpp"
#include "destein/text/tokenizer.hpp"
#include "model_args.hpp"
#include "progress.hpp"
#include "stop_signal.hpp"
#include "yaml_config.hpp"

namespace destein::app {
namespace {

struct VectorsConfig {
  ModelSection model;
  std::string data_dir;           // empty: $DESTEIN_DATA or ../shared/data
  std::string pairs_path = "paradetox/paradetox.tsv";
  std::string pairs_format = "auto";  // auto | jsonl | paradetox
  int64_t num_pairs = 20;
  uint64_t seed = 0;
  bool first_neutral_only = false;
  PairPrefixes prefixes;
  std::string site = "attn_out";
  int64_t last_k = 8;
  int64_t batch_size = 8;
  bool probes = true;
  ProbeOptions probe;
  std::string output = "runs/vectors.safetensors";
  std::string heatmap;            // empty: <output without extension>.probes.svg
};

VectorsConfig read_vectors_config(const ConfigNode& root) {
  VectorsConfig c;
  c.model = read_model_section(root);
  c.data_dir = root.get("data_dir", c.data_dir);
  ConfigNode pairs = root.child("pairs");
  c.pairs_path = pairs.get("path", c.pairs_path);
  c.pairs_format = pairs.get("format", c.pairs_format);
  c.num_pairs = pairs.get("num_pairs", c.num_pairs);
  c.seed = pairs.get("seed", c.seed);
  c.first_neutral_only = pairs.get("first_neutral_only", c.first_neutral_only);
  c.prefixes.toxic = pairs.get("toxic_prefix", c.prefixes.toxic);
  c.prefixes.nontoxic = pairs.get("nontoxic_prefix", c.prefixes.nontoxic);
  c.site = root.get("site", c.site);
  c.last_k = root.get("last_k", c.last_k);
  c.batch_size = root.get("batch_size", c.batch_size);
  ConfigNode probes = root.child("probes");
  c.probes = probes.get("enabled", c.probes);
  c.probe.split = probes.get("split", c.probe.split);
  c.probe.folds = probes.get("folds", c.probe.folds);
  c.probe.l2 = probes.get("l2", c.probe.l2);
  c.probe.shuffle = probes.get("shuffle", c.probe.shuffle);
  c.probe.seed = probes.get("seed", c.probe.seed);
  c.probe.test_fraction = probes.get("test_fraction", c.probe.test_fraction);
  c.output = root.get("output", c.output);
  c.heatmap = root.get("heatmap", c.heatmap);
  root.finish();
  parse_steering_site(c.site);  // reject a bad site before any work
  if (c.pairs_format != "auto" && c.pairs_format != "jsonl" && c.pairs_format != "paradetox") {
    throw std::invalid_argument(fmt::format("{}: pairs.format must be auto, jsonl or paradetox, found '{}'",
                                            root.where(), c.pairs_format));
  }
  return c;
}

std::string dump_vectors_config(const VectorsConfig& c) {
  YAML::Emitter e;
  e << YAML::BeginMap;
  emit_model_section(e, c.model);
  e << YAML::Key << "data_dir" << YAML::Value << c.data_dir;
  e << YAML::Key << "pairs" << YAML::Value << YAML::BeginMap;
  e << YAML::Key << "path" << YAML::Value << c.pairs_path << YAML::Key << "format" << YAML::Value << c.pairs_format;
  e << YAML::Key << "num_pairs" << YAML::Value << c.num_pairs << YAML::Key << "seed" << YAML::Value << c.seed;
  e << YAML::Key << "first_neutral_only" << YAML::Value << c.first_neutral_only;
  e << YAML::Key << "toxic_prefix" << YAML::Value << YAML::DoubleQuoted << c.prefixes.toxic;
  e << YAML::Key << "nontoxic_prefix" << YAML::Value << YAML::DoubleQuoted << c.prefixes.nontoxic << YAML::EndMap;
  e << YAML::Key << "site" << YAML::Value << c.site << YAML::Key << "last_k" << YAML::Value << c.last_k;
  e << YAML::Key << "batch_size" << YAML::Value << c.batch_size;
  e << YAML::Key << "probes" << YAML::Value << YAML::BeginMap;
  e << YAML::Key << "enabled" << YAML::Value << c.probes << YAML::Key << "split" << YAML::Value << c.probe.split;
  e << YAML::Key << "folds" << YAML::Value << c.probe.folds << YAML::Key << "l2" << YAML::Value << c.probe.l2;
  e << YAML::Key << "shuffle" << YAML::Value << c.probe.shuffle << YAML::Key << "seed" << YAML::Value << c.probe.seed;
  e << YAML::Key << "test_fraction" << YAML::Value << c.probe.test_fraction << YAML::EndMap;
  e << YAML::Key << "output" << YAML::Value << c.output << YAML::Key << "heatmap" << YAML::Value << c.heatmap;
  e << YAML::EndMap;
  return e.c_str();
}

int run_vectors(Args& args) {
  const std::string config_path = args.require("config");
  const bool dump = args.flag("dump-config");
  auto output_override = args.get("output");
  auto pairs_override = args.get("pairs");
  const int64_t threads_override = args.get_int("threads", -1);
  args.finish();
  VectorsConfig c = read_vectors_config(ConfigNode::load_file(config_path));
  if (output_override) c.output = *output_override;
  if (pairs_override) c.pairs_path = *pairs_override;
  if (threads_override >= 0) c.model.threads = static_cast<int>(threads_override);
  if (dump) {
    std::cout << dump_vectors_config(c) << "\n";
    return 0;
  }

  // Pairs: a JSONL file of ours, or the ParaDetox TSV.
  const std::filesystem::path pairs_file = resolve_data_path(c.pairs_path, c.data_dir);
  PairLoadOptions load;
  load.first_neutral_only = c.first_neutral_only;
  std::vector<SteeringPair> all = load_pair_file(pairs_file, c.pairs_format, load);
  // num_pairs 0: every pair of the file (a self-induced set is already the sample).
  const size_t wanted = c.num_pairs > 0 ? static_cast<size_t>(c.num_pairs) : all.size();
  if (wanted > all.size()) {
    throw std::invalid_argument(fmt::format("{}: pairs.num_pairs is {} but {} holds {} pairs (0 takes them all)",
                                            config_path, c.num_pairs, pairs_file.string(), all.size()));
  }
  std::vector<SteeringPair> pairs = sample_pairs(all, wanted, c.seed);
  fmt::print(stderr, "pairs: {} sampled from {} in {} (seed {})\n", pairs.size(), all.size(), pairs_file.string(),
             c.seed);

  LoadedModel loaded = load_model_section(c.model);
  const auto& model = loaded.model;
  const auto& tok = loaded.tokenizer;

  std::vector<std::vector<int64_t>> toxic_ids, nontoxic_ids;
  for (const auto& p : pairs) {
    toxic_ids.push_back(tok->encode_prompt(steering_input_text(c.prefixes.toxic, p.toxic)));
    nontoxic_ids.push_back(tok->encode_prompt(steering_input_text(c.prefixes.nontoxic, p.nontoxic)));
  }
  ActivationOptions aopts;
  aopts.site = parse_steering_site(c.site);
  aopts.last_k = c.last_k;
  aopts.batch_size = c.batch_size;
  ProgressBar bar("activations", static_cast<int64_t>(2 * pairs.size()), "texts");
  // Vectors are written in one go at the end: a stop request between batches drops the
  // activations computed so far and writes nothing.
  const std::string resume = fmt::format("nothing was written ({} comes out at the end); rerun the same command",
                                         c.output);
  at::Tensor toxic = capture_site_activations(*model, toxic_ids, aopts, [&](int64_t done, int64_t) {
    bar.update(done);
    check_stop(resume);
  });
  at::Tensor nontoxic = capture_site_activations(*model, nontoxic_ids, aopts, [&](int64_t done, int64_t) {
    bar.update(static_cast<int64_t>(pairs.size()) + done);
    check_stop(resume);
  });
  bar.finish();

  SteeringVectors v;
  v.directions = directions_from_activations(toxic, nontoxic);
  v.site = aopts.site;
  v.last_k = c.last_k;
  v.num_pairs = static_cast<int64_t>(pairs.size());
  v.pair_hash = pair_set_hash(pairs);
  v.toxic_prefix = c.prefixes.toxic;
  v.nontoxic_prefix = c.prefixes.nontoxic;
  v.model_type = model->config().model_type;
  v.extra_metadata["model"] = c.model.model;
  v.extra_metadata["pairs_source"] = pairs_file.string();
  v.extra_metadata["pairs_seed"] = std::to_string(c.seed);

  const std::filesystem::path out(c.output);
  if (out.has_parent_path()) std::filesystem::create_directories(out.parent_path());
  std::filesystem::path stem = out;
  stem.replace_extension();
  if (c.probes) {
    toxic = toxic.contiguous();
    nontoxic = nontoxic.contiguous();
    const auto& cfg = model->config();
    ProbeOptions popts = c.probe;
    popts.threads = std::max(1, threads());
    popts.groups = pair_groups_by_toxic_text(pairs);  // paraphrases of one toxic text stay on one side
    ProbeResults r = train_probes(toxic.data_ptr<float>(), nontoxic.data_ptr<float>(), v.num_pairs, cfg.n_layers,
                                  cfg.n_heads, cfg.head_dim, popts);
    v.probe_accuracy = at::tensor(r.accuracy).view({cfg.n_layers, cfg.n_heads});
    v.extra_metadata["probe_split"] = popts.split;
    v.extra_metadata["probe_test_samples"] = std::to_string(r.test_samples);
    const std::string heatmap = c.heatmap.empty() ? stem.string() + ".probes.svg" : c.heatmap;
    write_probe_heatmap_svg(heatmap, r,
                            fmt::format("{}: probe accuracy by head ({} pairs, {})", cfg.model_type, v.num_pairs,
                                        popts.split));
    fmt::print(stderr, "probes: mean accuracy {:.3f}, best {:.3f}; heatmap {}\n",
               v.probe_accuracy.mean().item<float>(), v.probe_accuracy.max().item<float>(), heatmap);
  }
  save_steering_vectors(out, v);
  write_pairs_jsonl(stem.string() + ".pairs.jsonl", pairs);
  fmt::print("wrote {} (directions {} x {} x {}, site {}, {} pairs) and {}\n", out.string(), v.layers(), v.heads(),
             v.head_dim(), steering_site_name(v.site), v.num_pairs, stem.string() + ".pairs.jsonl");
  return 0;
}

}  // namespace

DESTEIN_COMMAND(vectors_cmd, "vectors", "compute head-wise steering directions and probes (--config FILE [--pairs FILE] [--output FILE])",
                run_vectors);

}  // namespace destein::app
