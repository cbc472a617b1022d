#include "destein/experiment/vectors_experiment.hpp"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <optional>

#include "destein/runtime/device.hpp"
#include "destein/steer/activations.hpp"
#include "destein/steer/steering_vectors.hpp"
#include "experiment/experiment_schemas.hpp"
#include "experiment/progress.hpp"
#include "experiment/stop_request.hpp"
#include "io/data_folder.hpp"
#include "io/output_lock.hpp"
#include "parallel/process_group.hpp"
#include "parallel/work_split.hpp"

namespace destein {

Schema<VectorsExperiment> vectors_experiment_schema() {
  using E = VectorsExperiment;
  Schema<E> pairs;
  pairs.field("path", &E::pairs_path)
      .field("format", &E::pairs_format)
      .field("num_pairs", &E::num_pairs)
      .field("seed", &E::seed)
      .field("first_neutral_only", &E::first_neutral_only)
      .field("toxic_prefix", [](E& e) -> std::string& { return e.prefixes.toxic; })
      .field("nontoxic_prefix", [](E& e) -> std::string& { return e.prefixes.nontoxic; });
  Schema<E> probes;
  probes.field("enabled", &E::probes)
      .field("split", [](E& e) -> std::string& { return e.probe.split; })
      .field("folds", [](E& e) -> int& { return e.probe.folds; })
      .field("l2", [](E& e) -> double& { return e.probe.l2; })
      .field("shuffle", [](E& e) -> bool& { return e.probe.shuffle; })
      .field("seed", [](E& e) -> uint64_t& { return e.probe.seed; })
      .field("test_fraction", [](E& e) -> double& { return e.probe.test_fraction; })
      .field("standardize", [](E& e) -> bool& { return e.probe.standardize; });
  Schema<E> s;
  s.include(&E::model, model_section_schema())
      .field("data_dir", &E::data_dir)
      .section(
          "pairs", [](E& e) -> E& { return e; }, pairs)
      .field("site", &E::site)
      .field("last_k", &E::last_k)
      .field("batch_size", &E::batch_size)
      .section(
          "probes", [](E& e) -> E& { return e; }, probes)
      .field("output", &E::output)
      .field("heatmap", &E::heatmap)
      .check([](const E& e, const ConfigNode& node) {
        try {
          parse_steering_site(e.site);
        } catch (const std::exception& ex) {
          throw std::invalid_argument(
              fmt::format("{}: key site: {}", node.where("site"), ex.what()));
        }
        if (e.pairs_format != "auto" && e.pairs_format != "jsonl" &&
            e.pairs_format != "paradetox") {
          throw std::invalid_argument(
              fmt::format("{}: pairs.format must be auto, jsonl or paradetox, found '{}'",
                          node.where(), e.pairs_format));
        }
      });
  return s;
}

VectorsExperiment load_vectors_experiment(const std::filesystem::path& yaml) {
  return vectors_experiment_schema().load(ConfigNode::load_file(yaml));
}

std::string dump_vectors_experiment(const VectorsExperiment& e) {
  return vectors_experiment_schema().dump(e);
}

namespace {

// The pairs the directions come from: a sample of the pair file (a JSONL file of ours, or
// the ParaDetox TSV), noted in the report.
std::vector<SteeringPair> load_vector_pairs(const VectorsExperiment& c, bool writer,
                                            VectorsRunReport* report) {
  report->pairs_source = resolve_data_path(c.pairs_path, c.data_dir);
  PairLoadOptions load;
  load.first_neutral_only = c.first_neutral_only;
  std::vector<SteeringPair> all = load_pair_file(report->pairs_source, c.pairs_format, load);
  // num_pairs 0: every pair of the file (a self-induced set is already the sample).
  const size_t wanted = c.num_pairs > 0 ? static_cast<size_t>(c.num_pairs) : all.size();
  if (wanted > all.size()) {
    throw std::invalid_argument(
        fmt::format("pairs.num_pairs is {} but {} holds {} pairs (0 takes them all)", c.num_pairs,
                    report->pairs_source.string(), all.size()));
  }
  std::vector<SteeringPair> pairs = sample_pairs(all, wanted, c.seed);
  report->pairs_available = static_cast<int64_t>(all.size());
  report->pairs_used = static_cast<int64_t>(pairs.size());
  if (writer) {
    fmt::print(stderr, "pairs: {} sampled from {} in {} (seed {})\n", pairs.size(), all.size(),
               report->pairs_source.string(), c.seed);
  }
  return pairs;
}

// (n, L, H, Dh) activations of both sides of every pair.
struct PairActivations {
  at::Tensor toxic, nontoxic;
};

// Sharded: rank 0 concatenates the ranks' blocks in rank order; the others return false.
bool gather_activations(PairActivations* acts, const ProcessGroup& group, int64_t num_pairs,
                        const std::vector<int64_t>& site_shape) {
  // Both sides' (n, L, H, Dh) float32 blocks as raw bytes.
  auto bytes = [](const at::Tensor& t) {
    const at::Tensor c = t.to(at::kCPU, at::kFloat).contiguous();
    return std::string(reinterpret_cast<const char*>(c.data_ptr<float>()),
                       static_cast<size_t>(c.numel()) * 4);
  };
  const std::string block = bytes(acts->toxic) + bytes(acts->nontoxic);
  const auto parts = group.gather(block);
  if (!group.is_root()) return false;
  std::vector<at::Tensor> toxic_parts, nontoxic_parts;
  const int64_t per_pair = site_shape[0] * site_shape[1] * site_shape[2];
  for (const auto& part : parts) {
    const int64_t n = static_cast<int64_t>(part.size() / 4) / (2 * per_pair);
    at::Tensor t = at::empty({2, n, site_shape[0], site_shape[1], site_shape[2]}, at::kFloat);
    std::memcpy(t.data_ptr<float>(), part.data(), part.size());
    toxic_parts.push_back(t[0]);
    nontoxic_parts.push_back(t[1]);
  }
  acts->toxic = at::cat(toxic_parts);
  acts->nontoxic = at::cat(nontoxic_parts);
  if (acts->toxic.size(0) != num_pairs) {
    throw std::runtime_error(
        fmt::format("vectors: the ranks returned activations of {} pairs, expected {}",
                    acts->toxic.size(0), num_pairs));
  }
  return true;
}

// This rank's activations (sharded: its block of whole batches, so that its batches are
// the ones a single process forms), then, on rank 0, every rank's. False on the other
// ranks of a sharded run.
bool capture_pair_activations(const VectorsExperiment& c, const LoadedModel& loaded,
                              const std::vector<SteeringPair>& pairs,
                              const ActivationOptions& aopts, const ProcessGroup* group,
                              PairActivations* acts) {
  const bool sharded = group && group->size() > 1;
  const bool writer = !sharded || group->is_root();
  const int64_t num_pairs = static_cast<int64_t>(pairs.size());
  const int64_t per_batch = std::max<int64_t>(1, c.batch_size);
  int64_t first = 0, last = num_pairs;
  if (sharded) {
    const auto [b0, b1] =
        shard_range((num_pairs + per_batch - 1) / per_batch, group->rank(), group->size());
    first = std::min(num_pairs, b0 * per_batch);
    last = std::min(num_pairs, b1 * per_batch);
  }
  std::vector<std::vector<int64_t>> toxic_ids, nontoxic_ids;
  for (int64_t i = first; i < last; ++i) {
    const auto& p = pairs[static_cast<size_t>(i)];
    toxic_ids.push_back(
        loaded.tokenizer->encode_prompt(steering_input_text(c.prefixes.toxic, p.toxic)));
    nontoxic_ids.push_back(
        loaded.tokenizer->encode_prompt(steering_input_text(c.prefixes.nontoxic, p.nontoxic)));
  }
  const int64_t mine = last - first;
  std::optional<ProgressBar> bar;
  if (writer) {
    bar.emplace(sharded ? "activations (rank 0's share)" : "activations", 2 * mine, "texts");
  }
  // Vectors are written in one go at the end: a stop request between batches drops the
  // activations computed so far and writes nothing.
  const std::string resume = fmt::format(
      "nothing was written ({} comes out at the end); rerun the same command", c.output);
  const auto& cfg = loaded.model->config();
  const std::vector<int64_t> site_shape = {cfg.n_layers, cfg.n_heads, cfg.head_dim};
  acts->toxic = at::empty({0, site_shape[0], site_shape[1], site_shape[2]}, at::kFloat);
  acts->nontoxic = acts->toxic;
  if (mine > 0) {
    acts->toxic =
        capture_site_activations(*loaded.model, toxic_ids, aopts, [&](int64_t done, int64_t) {
          if (bar) bar->update(done);
          check_stop(resume);
        });
    acts->nontoxic =
        capture_site_activations(*loaded.model, nontoxic_ids, aopts, [&](int64_t done, int64_t) {
          if (bar) bar->update(mine + done);
          check_stop(resume);
        });
  }
  if (bar) bar->finish();
  if (!sharded) return true;
  return gather_activations(acts, *group, num_pairs, site_shape);
}

// The per-head probes (held-out accuracies, and the gate's probes refitted on every pair)
// into `v`, and their heatmap beside the vectors.
void add_probes(const VectorsExperiment& c, const ModelConfig& cfg,
                const std::vector<SteeringPair>& pairs, PairActivations* acts,
                const std::filesystem::path& stem, SteeringVectors* v, VectorsRunReport* report) {
  acts->toxic = acts->toxic.contiguous();
  acts->nontoxic = acts->nontoxic.contiguous();
  const float* toxic = acts->toxic.data_ptr<float>();
  const float* nontoxic = acts->nontoxic.data_ptr<float>();
  ProbeOptions popts = c.probe;
  popts.threads = std::max(1, threads());
  // Paraphrases of one toxic text stay on one side.
  popts.groups = pair_groups_by_toxic_text(pairs);
  ProbeResults r =
      train_probes(toxic, nontoxic, v->num_pairs, cfg.n_layers, cfg.n_heads, cfg.head_dim, popts);
  v->probe_accuracy = at::tensor(r.accuracy).view({cfg.n_layers, cfg.n_heads});
  // The probes the gate runs: refitted on every pair (the accuracies above are held out).
  GateProbes gp = fit_gate_probes(toxic, nontoxic, v->num_pairs, cfg.n_layers, cfg.n_heads,
                                  cfg.head_dim, popts);
  const std::vector<int64_t> lhf = {cfg.n_layers, cfg.n_heads, cfg.head_dim};
  v->probe_weight = at::tensor(gp.weight).view(lhf);
  v->probe_bias = at::tensor(gp.bias).view({cfg.n_layers, cfg.n_heads});
  v->probe_feature_mean = at::tensor(gp.feature_mean).view(lhf);
  v->probe_feature_scale = at::tensor(gp.feature_scale).view(lhf);
  v->extra_metadata["probe_l2"] = fmt::format("{}", popts.l2);
  v->extra_metadata["probe_standardize"] = popts.standardize ? "true" : "false";
  v->extra_metadata["gate_probes_fit"] = "all pairs";
  if (gp.unconverged_fits) {
    fmt::print(stderr, "gate probes: {} fits did not converge\n", gp.unconverged_fits);
  }
  v->extra_metadata["probe_split"] = popts.split;
  v->extra_metadata["probe_test_samples"] = std::to_string(r.test_samples);
  report->heatmap = c.heatmap.empty() ? stem.string() + ".probes.svg" : c.heatmap;
  write_probe_heatmap_svg(report->heatmap, r,
                          fmt::format("{}: probe accuracy by head ({} pairs, {})", cfg.model_type,
                                      v->num_pairs, popts.split));
  report->probe_mean_accuracy = v->probe_accuracy.mean().item<float>();
  report->probe_best_accuracy = v->probe_accuracy.max().item<float>();
}

}  // namespace

VectorsRunReport run_vectors_experiment(const VectorsExperiment& c, const ProcessGroup* group) {
  const bool sharded = group && group->size() > 1;
  const bool writer = !sharded || group->is_root();
  OutputLock lock;
  if (writer) lock = lock_output_file(c.output);
  VectorsRunReport report;
  const std::vector<SteeringPair> pairs = load_vector_pairs(c, writer, &report);
  LoadedModel loaded = load_model_section(group ? place_on_rank(c.model, *group) : c.model);
  ActivationOptions aopts;
  aopts.site = parse_steering_site(c.site);
  aopts.last_k = c.last_k;
  aopts.batch_size = c.batch_size;
  PairActivations acts;
  if (!capture_pair_activations(c, loaded, pairs, aopts, group, &acts)) return report;

  const ModelConfig& cfg = loaded.model->config();
  SteeringVectors v;
  v.directions = directions_from_activations(acts.toxic, acts.nontoxic);
  v.site = aopts.site;
  v.last_k = c.last_k;
  v.num_pairs = static_cast<int64_t>(pairs.size());
  v.pair_hash = pair_set_hash(pairs);
  v.toxic_prefix = c.prefixes.toxic;
  v.nontoxic_prefix = c.prefixes.nontoxic;
  v.model_type = cfg.model_type;
  v.extra_metadata["model"] = c.model.model;
  v.extra_metadata["pairs_source"] = report.pairs_source.string();
  v.extra_metadata["pairs_seed"] = std::to_string(c.seed);

  const std::filesystem::path out(c.output);
  if (out.has_parent_path()) std::filesystem::create_directories(out.parent_path());
  std::filesystem::path stem = out;
  stem.replace_extension();
  if (c.probes) add_probes(c, cfg, pairs, &acts, stem, &v, &report);
  save_steering_vectors(out, v);
  report.vectors = out;
  report.pairs = stem.string() + ".pairs.jsonl";
  write_pairs_jsonl(report.pairs, pairs);
  report.site = steering_site_name(v.site);
  report.layers = v.layers();
  report.heads = v.heads();
  report.head_dim = v.head_dim();
  return report;
}

}  // namespace destein
