#include "destein/steer/steering_vectors.hpp"

#include <ATen/ATen.h>
#include <fmt/ranges.h>

#include "check.hpp"
#include "io/safetensors.hpp"

namespace destein {

// The site names live with the file that records them (the vectors file reader needs
// nothing else of activations.cpp, which the vectors fuzzer relies on).
SteeringSite parse_steering_site(const std::string& name) {
  if (name == "attn_out" || name == "hook_attn_out") return SteeringSite::kAttnOut;
  if (name == "hook_z" || name == "attn.hook_z" || name == "z") return SteeringSite::kHookZ;
  throw std::invalid_argument(
      fmt::format("unknown steering site '{}': expected attn_out or hook_z", name));
}

std::string steering_site_name(SteeringSite site) {
  return site == SteeringSite::kAttnOut ? "attn_out" : "hook_z";
}

at::Tensor directions_from_activations(const at::Tensor& toxic, const at::Tensor& nontoxic) {
  DESTEIN_CHECK_ARG(toxic.dim() == 4 && toxic.sizes() == nontoxic.sizes(),
                    "directions: toxic {} and non-toxic {} activations must both be (N, L, H, Dh)",
                    c10::str(toxic.sizes()), c10::str(nontoxic.sizes()));
  return (toxic.to(at::kFloat) - nontoxic.to(at::kFloat)).sum(0);
}

void save_steering_vectors(const std::filesystem::path& path, const SteeringVectors& v) {
  DESTEIN_CHECK_ARG(v.directions.defined() && v.directions.dim() == 3,
                    "save_steering_vectors: directions must be (L, H, Dh)");
  std::map<std::string, at::Tensor> tensors = {
      {"directions", v.directions.to(at::kFloat).contiguous()}};
  if (v.probe_accuracy.defined()) {
    DESTEIN_CHECK_ARG(v.probe_accuracy.sizes() == v.directions.sizes().slice(0, 2),
                      "save_steering_vectors: probe_accuracy {} must be (L, H) = {}",
                      c10::str(v.probe_accuracy.sizes()),
                      c10::str(v.directions.sizes().slice(0, 2)));
    tensors["probe_accuracy"] = v.probe_accuracy.to(at::kFloat).contiguous();
  }
  const bool any_probe = v.probe_weight.defined() || v.probe_bias.defined() ||
                         v.probe_feature_mean.defined() || v.probe_feature_scale.defined();
  if (any_probe) {
    const auto lh = v.directions.sizes().slice(0, 2);
    const auto lhf = v.directions.sizes();
    auto check = [&](const at::Tensor& t, const char* name, c10::IntArrayRef want) {
      DESTEIN_CHECK_ARG(
          t.defined() && t.sizes() == want,
          "save_steering_vectors: {} {} must be {} (gate probes: give all four tensors or none)",
          name, t.defined() ? c10::str(t.sizes()) : "undefined", c10::str(want));
      tensors[name] = t.to(at::kFloat).contiguous();
    };
    check(v.probe_weight, "probe_weight", lhf);
    check(v.probe_bias, "probe_bias", lh);
    check(v.probe_feature_mean, "probe_feature_mean", lhf);
    check(v.probe_feature_scale, "probe_feature_scale", lhf);
  }
  std::map<std::string, std::string> meta = v.extra_metadata;
  meta["format"] = kSteeringVectorsFormat;
  meta["site"] = steering_site_name(v.site);
  meta["last_k"] = std::to_string(v.last_k);
  meta["num_pairs"] = std::to_string(v.num_pairs);
  meta["pair_hash"] = v.pair_hash;
  meta["toxic_prefix"] = v.toxic_prefix;
  meta["nontoxic_prefix"] = v.nontoxic_prefix;
  meta["model_type"] = v.model_type;
  meta["layers"] = std::to_string(v.layers());
  meta["heads"] = std::to_string(v.heads());
  meta["head_dim"] = std::to_string(v.head_dim());
  write_safetensors(path, tensors, meta);
}

namespace {
int64_t parse_int(const std::map<std::string, std::string>& meta, const std::string& key,
                  int64_t fallback, const std::string& file) {
  auto it = meta.find(key);
  if (it == meta.end() || it->second.empty()) return fallback;
  // Whole string, non-negative: "12abc" or "-3" is a damaged file, not 12 or -3.
  size_t used = 0;
  long long value = -1;
  try {
    value = std::stoll(it->second, &used);
  } catch (const std::exception&) {
  }
  DESTEIN_CHECK_IO(value >= 0 && used == it->second.size(),
                   "{}: metadata '{}' = '{}' is not a non-negative integer", file, key, it->second);
  return value;
}
}  // namespace

SteeringVectors load_steering_vectors(const std::filesystem::path& path) {
  const std::string file = path.string();
  DESTEIN_CHECK_IO(std::filesystem::exists(path), "{}: no such vectors file", file);
  SafetensorsFile f = read_safetensors(path);
  auto format = f.metadata.find("format");
  DESTEIN_CHECK_IO(format != f.metadata.end() && (format->second == kSteeringVectorsFormat ||
                                                  format->second == kSteeringVectorsFormatV1),
                   "{}: not a destein vectors file (metadata format = '{}', expected '{}' or '{}')",
                   file, format == f.metadata.end() ? "" : format->second, kSteeringVectorsFormat,
                   kSteeringVectorsFormatV1);
  auto site = f.metadata.find("site");
  DESTEIN_CHECK_IO(site != f.metadata.end(), "{}: metadata has no 'site' (attn_out or hook_z)",
                   file);
  SteeringVectors v;
  try {
    v.site = parse_steering_site(site->second);
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(fmt::format("{}: {}", file, e.what()));
  }
  auto dir = f.tensors.find("directions");
  DESTEIN_CHECK_IO(dir != f.tensors.end(), "{}: no 'directions' tensor", file);
  DESTEIN_CHECK_IO(dir->second.dim() == 3, "{}: 'directions' has shape {}, expected (L, H, Dh)",
                   file, c10::str(dir->second.sizes()));
  v.directions = dir->second.to(at::kFloat);
  auto acc = f.tensors.find("probe_accuracy");
  if (acc != f.tensors.end()) {
    DESTEIN_CHECK_IO(acc->second.sizes() == v.directions.sizes().slice(0, 2),
                     "{}: 'probe_accuracy' has shape {}, expected (L, H) = {}", file,
                     c10::str(acc->second.sizes()), c10::str(v.directions.sizes().slice(0, 2)));
    v.probe_accuracy = acc->second.to(at::kFloat);
    DESTEIN_CHECK_IO(at::isfinite(v.probe_accuracy).all().item<bool>(),
                     "{}: 'probe_accuracy' holds NaN or inf", file);
  }
  {
    const char* names[] = {"probe_weight", "probe_bias", "probe_feature_mean",
                           "probe_feature_scale"};
    at::Tensor* slots[] = {&v.probe_weight, &v.probe_bias, &v.probe_feature_mean,
                           &v.probe_feature_scale};
    int found = 0;
    for (int i = 0; i < 4; ++i) found += f.tensors.count(names[i]) ? 1 : 0;
    DESTEIN_CHECK_IO(
        found == 0 || found == 4,
        "{}: holds {} of the 4 gate probe tensors (probe_weight, probe_bias, probe_feature_mean, "
        "probe_feature_scale); expected all or none",
        file, found);
    for (int i = 0; found == 4 && i < 4; ++i) {
      const at::Tensor& t = f.tensors.at(names[i]);
      const auto want = i == 1 ? v.directions.sizes().slice(0, 2) : v.directions.sizes();
      DESTEIN_CHECK_IO(t.sizes() == want, "{}: '{}' has shape {}, expected {}", file, names[i],
                       c10::str(t.sizes()), c10::str(want));
      *slots[i] = t.to(at::kFloat);
      DESTEIN_CHECK_IO(at::isfinite(*slots[i]).all().item<bool>(), "{}: '{}' holds NaN or inf",
                       file, names[i]);
    }
    if (found == 4) {
      DESTEIN_CHECK_IO((v.probe_feature_scale > 0).all().item<bool>(),
                       "{}: 'probe_feature_scale' holds values <= 0", file);
    }
  }
  at::Tensor finite = at::isfinite(v.directions).all(-1);  // (L, H)
  if (!finite.all().item<bool>()) {
    at::Tensor first = at::nonzero(finite.logical_not())[0];
    throw std::runtime_error(fmt::format("{}: the direction of layer {} head {} holds NaN or inf",
                                         file, first[0].item<int64_t>(), first[1].item<int64_t>()));
  }
  at::Tensor norms = v.directions.norm(2, -1);  // (L, H)
  if (!(norms > 0).all().item<bool>()) {
    at::Tensor first = at::nonzero(norms <= 0)[0];
    throw std::runtime_error(fmt::format("{}: the direction of layer {} head {} is all zeros", file,
                                         first[0].item<int64_t>(), first[1].item<int64_t>()));
  }
  v.last_k = parse_int(f.metadata, "last_k", 8, file);
  v.num_pairs = parse_int(f.metadata, "num_pairs", 0, file);
  for (const auto& [k, val] : f.metadata) {
    if (k == "pair_hash")
      v.pair_hash = val;
    else if (k == "toxic_prefix")
      v.toxic_prefix = val;
    else if (k == "nontoxic_prefix")
      v.nontoxic_prefix = val;
    else if (k == "model_type")
      v.model_type = val;
    else if (k != "format" && k != "site" && k != "last_k" && k != "num_pairs" && k != "layers" &&
             k != "heads" && k != "head_dim")
      v.extra_metadata[k] = val;
  }
  return v;
}

void check_vectors_match_model(const SteeringVectors& v, const ModelConfig& c,
                               const std::string& name) {
  // The attn_out site cuts the hidden state into heads; Qwen3 and Gemma have
  // heads x head_dim != hidden size, where only hook_z has heads.
  DESTEIN_CHECK_ARG(v.site != SteeringSite::kAttnOut || c.n_heads * c.head_dim == c.d_model,
                    "{}: site attn_out needs heads x head_dim = hidden size, and this {} model has "
                    "{} x {} != {}; "
                    "use site hook_z",
                    name, c.model_type, c.n_heads, c.head_dim, c.d_model);
  std::vector<std::string> diffs;
  if (v.layers() != c.n_layers)
    diffs.push_back(fmt::format("layers {} vs {}", v.layers(), c.n_layers));
  if (v.heads() != c.n_heads) diffs.push_back(fmt::format("heads {} vs {}", v.heads(), c.n_heads));
  if (v.head_dim() != c.head_dim)
    diffs.push_back(fmt::format("head dim {} vs {}", v.head_dim(), c.head_dim));
  if (!v.model_type.empty() && v.model_type != c.model_type) {
    diffs.push_back(fmt::format("model_type {} vs {}", v.model_type, c.model_type));
  }
  DESTEIN_CHECK_ARG(diffs.empty(),
                    "{} do not fit this model ({}): {} (vectors vs model); compute vectors "
                    "for this model with `destein vectors`",
                    name, c.model_type, fmt::join(diffs, ", "));
}

}  // namespace destein
