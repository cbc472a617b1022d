#include "steer/steering_stats_merge.hpp"

#include <cmath>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace destein {

namespace {

// A rank's statistics travel as JSON: the means with the positions they are means over,
// so that rank 0 can weigh them.
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

// Entry `i` of `mine` over every rank's statistics (`ranks`: each rank's JSON).
void merge_entry(SteeringReport::Entry* e, size_t i, const std::vector<nlohmann::json>& ranks) {
  int64_t positions[2] = {0, 0};  // prompt, generated
  bool any_generated = false, all_not_edited = true;
  std::vector<double>* means[4] = {&e->prompt_layer_mean, &e->generated_layer_mean,
                                   &e->prompt_head_mean, &e->generated_head_mean};
  const char* keys[4] = {"prompt_layer", "generated_layer", "prompt_head", "generated_head"};
  std::vector<double> sums[4];
  for (int m = 0; m < 4; ++m) sums[m].assign(means[m]->size(), 0.0);
  for (const auto& rank : ranks) {
    const nlohmann::json& r = rank.at(i);
    const int64_t n[2] = {r["prompt_positions"].get<int64_t>(),
                          r["generated_positions"].get<int64_t>()};
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
    for (size_t k = 0; k < sums[m].size(); ++k) {
      (*means[m])[k] = n > 0 ? sums[m][k] / n : std::nan("");
    }
  }
  e->prompt_positions = positions[0];
  e->generated_positions = positions[1];
  e->generated_not_edited = any_generated && all_not_edited;
}

}  // namespace

SteeringReport gather_steering_stats(const SteeringReport& mine, const ProcessGroup& group) {
  const auto parts = group.gather(steering_stats_json(mine).dump());
  if (!group.is_root()) return mine;
  std::vector<nlohmann::json> ranks;
  for (const auto& bytes : parts) ranks.push_back(nlohmann::json::parse(bytes));
  SteeringReport merged = mine;
  for (size_t i = 0; i < merged.entries.size(); ++i) merge_entry(&merged.entries[i], i, ranks);
  return merged;
}

}  // namespace destein
