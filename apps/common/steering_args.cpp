#include "steering_args.hpp"

#include <fmt/format.h>

#include <cmath>
#include <sstream>

namespace destein::app {

void parse_layer_range(const std::string& text, SteeringOptions& options, const std::string& what) {
  auto colon = text.find(':');
  try {
    if (colon == std::string::npos) throw std::invalid_argument("no colon");
    options.layer_start = colon == 0 ? 0 : std::stoll(text.substr(0, colon));
    options.layer_end = colon + 1 == text.size() ? -1 : std::stoll(text.substr(colon + 1));
  } catch (const std::exception&) {
    throw std::invalid_argument(fmt::format(
        "{}: expected START:END (end exclusive, either may be empty), found '{}'", what, text));
  }
}

namespace {

double parse_number(const std::string& text, const std::string& what) {
  try {
    size_t used = 0;
    const double v = std::stod(text, &used);
    if (used == text.size()) return v;
  } catch (const std::exception&) {
  }
  throw std::invalid_argument(fmt::format("{}: expected a number, found '{}'", what, text));
}

// One --compose entry: "vectors=F,alpha=0.3,positions=generated".
SteeringEntrySpec parse_entry(const std::string& spec, const std::string& default_vectors,
                              int index) {
  SteeringEntrySpec e;
  e.vectors_path = default_vectors;
  const std::string where = fmt::format("--compose entry {} ('{}')", index + 1, spec);
  std::stringstream items(spec);
  std::string item;
  while (std::getline(items, item, ',')) {
    if (item.empty()) continue;
    const auto eq = item.find('=');
    if (eq == std::string::npos) {
      throw std::invalid_argument(fmt::format("{}: '{}' is not key=value", where, item));
    }
    const std::string key = item.substr(0, eq), value = item.substr(eq + 1);
    const std::string what = where + " key " + key;
    if (key == "vectors")
      e.vectors_path = value;
    else if (key == "mode")
      e.options.mode = parse_steering_mode(value);
    else if (key == "alpha")
      e.options.alpha = parse_number(value, what);
    else if (key == "layers")
      parse_layer_range(value, e.options, what);
    else if (key == "top_k_heads")
      e.options.top_k_heads = static_cast<int64_t>(parse_number(value, what));
    else if (key == "positions")
      e.options.positions = parse_steering_positions(value);
    else if (key == "gate")
      e.options.gate = parse_steering_gate(value);
    else if (key == "gate_threshold")
      e.options.gate_threshold = parse_number(value, what);
    else
      throw std::invalid_argument(
          fmt::format("{}: unknown key '{}' (vectors, mode, alpha, layers, top_k_heads, positions, "
                      "gate, gate_threshold)",
                      where, key));
  }
  if (e.vectors_path.empty())
    throw std::invalid_argument(where + ": no vectors (give vectors=FILE or --vectors)");
  return e;
}

}  // namespace

SteeringArgs read_steering_args(Args& args, bool alpha_taken) {
  SteeringArgs s;
  s.vectors_path = args.get("vectors");
  auto mode = args.get("mode");
  auto alpha = alpha_taken ? std::nullopt : args.get("alpha");
  auto layers = args.get("layers");
  auto positions = args.get("positions");
  auto gate = args.get("gate");
  auto gate_threshold = args.get("gate-threshold");
  auto compose = args.get("compose");
  const int64_t top_k = args.get_int("top-k-heads", 0);
  if (!s.vectors_path &&
      (mode || alpha || layers || top_k || positions || gate || gate_threshold || compose)) {
    throw std::invalid_argument(
        "--mode, --alpha, --layers, --top-k-heads, --positions, --gate, --gate-threshold and "
        "--compose need "
        "--vectors FILE");
  }
  if (mode) s.options.mode = parse_steering_mode(*mode);
  if (alpha) s.options.alpha = args.get_double("alpha", 0.4);
  s.options.top_k_heads = top_k;
  if (layers) parse_layer_range(*layers, s.options, "--layers");
  if (positions) s.options.positions = parse_steering_positions(*positions);
  if (gate) s.options.gate = parse_steering_gate(*gate);
  if (gate_threshold) s.options.gate_threshold = args.get_double("gate-threshold", 0);
  if (compose) {
    std::stringstream entries(*compose);
    std::string entry;
    int index = 0;
    while (std::getline(entries, entry, ';')) {
      if (!entry.empty()) s.more.push_back(parse_entry(entry, *s.vectors_path, index++));
    }
  }
  return s;
}

std::optional<SteeringHandle> attach_from_args(const SteeringArgs& steering, Hooks& hooks,
                                               const Model& model) {
  if (!steering.vectors_path) return std::nullopt;
  SteeringStack stack{load_steering_plan(*steering.vectors_path, steering.options, model)};
  for (const auto& e : steering.more)
    stack.push_back(load_steering_plan(e.vectors_path, e.options, model));
  return attach_steering(hooks, model, std::move(stack));
}

std::string steering_report_text(const SteeringReport& report) {
  std::string out;
  for (const auto& e : report.entries) {
    out += fmt::format("{}: {} prompt and {} generated positions\n", e.label, e.prompt_positions,
                       e.generated_positions);
    out += "  layer  prompt |edit|  generated |edit|\n";
    for (size_t i = 0; i < e.layers.size(); ++i) {
      auto show = [](double v) {
        return std::isfinite(v) ? fmt::format("{:.4g}", v) : std::string("-");
      };
      out += fmt::format("  {:>5}  {:>13}  {:>16}\n", e.layers[i], show(e.prompt_layer_mean[i]),
                         show(e.generated_layer_mean[i]));
      if (e.mode == SteeringMode::kHeadwise) {
        std::string p, g;
        for (int64_t h = 0; h < e.heads; ++h) {
          p += fmt::format(" {}", show(e.prompt_head_mean[i * size_t(e.heads) + size_t(h)]));
          g += fmt::format(" {}", show(e.generated_head_mean[i * size_t(e.heads) + size_t(h)]));
        }
        out += fmt::format("         heads prompt:{}\n         heads generated:{}\n", p, g);
      }
    }
  }
  for (const auto& w : report.warnings()) out += "WARNING: " + w + "\n";
  return out;
}

}  // namespace destein::app
