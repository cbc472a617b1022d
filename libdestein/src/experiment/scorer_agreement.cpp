#include "experiment/scorer_agreement.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <set>

#include "io/csv.hpp"
#include "score/scorer_eval.hpp"
#include "train/rtp_training_split.hpp"

namespace destein {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Scores of every attribute the scorer rates; a missing score is an error here, since the
// figures would silently change with it.
std::vector<std::vector<double>> score_all(ToxicityScorer& scorer,
                                           const std::vector<std::string>& texts) {
  std::vector<std::vector<double>> out;
  const auto scores = scorer.score_attributes(texts);
  for (size_t i = 0; i < scores.size(); ++i) {
    std::vector<double> row;
    for (const auto& v : scores[i]) {
      if (!v)
        throw std::runtime_error(
            fmt::format("scorer {} gave no score for text {}", scorer.name(), i));
      row.push_back(*v);
    }
    out.push_back(std::move(row));
  }
  return out;
}

json toxicity_figures(const std::vector<double>& ours, const std::vector<double>& perspective) {
  std::vector<int> label;
  int64_t positives = 0;
  for (double v : perspective) {
    label.push_back(v >= 0.5 ? 1 : 0);
    positives += label.back();
  }
  return {{"perspective_toxic", positives},
          {"auc_vs_perspective_0.5", roc_auc(ours, label)},
          {"accuracy_at_0.5", accuracy_at(ours, label, 0.5)},
          {"pearson", pearson(ours, perspective)}};
}

}  // namespace

json rtp_agreement(ToxicityScorer& scorer, const std::vector<fs::path>& files) {
  std::vector<std::string> texts;
  std::vector<std::array<double, kNumAttributes>> perspective;
  json file_list = json::array();
  for (const auto& f : files) {
    for (auto& p : load_rtp_scored_prompts(f)) {
      texts.push_back(std::move(p.text));
      perspective.push_back(p.scores);
    }
    file_list.push_back(f.filename().string());
  }
  const auto names = scorer.attributes();
  const auto ours = score_all(scorer, texts);
  json attrs = json::object();
  std::vector<double> tox_ours, tox_persp;
  for (size_t a = 0; a < names.size(); ++a) {
    const int index = attribute_index(names[a]);
    std::vector<double> x, y;
    std::vector<int> label;
    int64_t positives = 0;
    for (size_t i = 0; i < texts.size(); ++i) {
      x.push_back(ours[i][a]);
      y.push_back(perspective[i][static_cast<size_t>(index)]);
      label.push_back(y.back() >= 0.5 ? 1 : 0);
      positives += label.back();
    }
    json r = {{"pearson", pearson(x, y)}, {"perspective_positive", positives}};
    if (positives > 0 && positives < static_cast<int64_t>(label.size())) {
      r["auc_vs_perspective_0.5"] = roc_auc(x, label);
    }
    attrs[names[a]] = r;
    if (index == 0) tox_ours = x, tox_persp = y;
  }
  if (tox_ours.empty())
    throw std::runtime_error(fmt::format("scorer {} rates no toxicity", scorer.name()));
  json result = {{"files", file_list}, {"prompts", texts.size()}};
  result.update(toxicity_figures(tox_ours, tox_persp));
  result["attributes"] = attrs;
  return result;
}

json dexperts_agreement(ToxicityScorer& scorer, const fs::path& csv_path) {
  auto reader = CsvReader::open(csv_path);
  reader.read_header();
  const size_t cols[2][3] = {
      {reader.column("senta"), reader.column("toxa"), reader.column("sourcea")},
      {reader.column("sentb"), reader.column("toxb"), reader.column("sourceb")}};
  std::set<std::string> seen;                              // overall: each text once
  std::set<std::pair<std::string, std::string>> seen_sys;  // per system: each text once
  std::vector<std::string> texts;
  std::vector<double> perspective;
  std::map<std::string, std::vector<std::pair<std::string, double>>> by_system;
  CsvRecord rec;
  while (reader.next(rec)) {
    reader.require_fields(rec);
    for (const auto& c : cols) {
      const std::string& text = rec.fields[c[0]];
      const std::string& tox = rec.fields[c[1]];
      const std::string& system = rec.fields[c[2]];
      if (tox.empty()) continue;
      double value = 0;
      try {
        size_t used = 0;
        value = std::stod(tox, &used);
        if (used != tox.size()) throw std::invalid_argument("trailing");
      } catch (const std::exception&) {
        throw std::runtime_error(
            fmt::format("{}: expected a Perspective score, found '{}'", reader.where(rec), tox));
      }
      if (!(value >= 0 && value <= 1)) {
        throw std::runtime_error(fmt::format(
            "{}: expected a Perspective score in [0, 1], found '{}'", reader.where(rec), tox));
      }
      if (seen_sys.insert({system, text}).second) by_system[system].emplace_back(text, value);
      if (!seen.insert(text).second) continue;
      texts.push_back(text);
      perspective.push_back(value);
    }
  }
  std::vector<double> ours;
  for (const auto& v : scorer.score(texts)) {
    if (!v) throw std::runtime_error(fmt::format("scorer {} gave no score", scorer.name()));
    ours.push_back(*v);
  }
  json result = {{"files", {csv_path.filename().string()}}, {"continuations", texts.size()}};
  result.update(toxicity_figures(ours, perspective));

  json systems = json::object();
  std::vector<std::tuple<double, double, std::string>> means;  // (perspective, ours, name)
  for (const auto& [system, items] : by_system) {
    std::vector<std::string> t;
    std::vector<double> p;
    for (const auto& [text, v] : items) t.push_back(text), p.push_back(v);
    std::vector<double> o;
    for (const auto& v : scorer.score(t)) o.push_back(v.value_or(0.0));
    double mp = 0, mo = 0;
    int64_t toxic = 0;
    for (size_t i = 0; i < p.size(); ++i) mp += p[i], mo += o[i], toxic += p[i] >= 0.5;
    mp /= static_cast<double>(p.size());
    mo /= static_cast<double>(p.size());
    json s = {{"continuations", p.size()},
              {"perspective_mean", mp},
              {"ours_mean", mo},
              {"perspective_toxic", toxic}};
    if (p.size() >= 2) s["pearson"] = pearson(o, p);
    systems[system] = s;
    means.emplace_back(mp, mo, system);
  }
  auto rank = [&](bool by_ours) {
    auto m = means;
    std::sort(m.begin(), m.end(), [&](const auto& a, const auto& b) {
      return by_ours ? std::get<1>(a) > std::get<1>(b) : std::get<0>(a) > std::get<0>(b);
    });
    std::vector<std::string> names;
    for (const auto& x : m) names.push_back(std::get<2>(x));
    return names;
  };
  result["systems"] = systems;
  result["perspective_rank"] = rank(false);
  result["our_rank"] = rank(true);
  result["same_rank"] = result["perspective_rank"] == result["our_rank"];
  return result;
}

}  // namespace destein
