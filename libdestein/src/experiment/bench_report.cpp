#include "experiment/bench_report.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <stdexcept>

#include "io/file_io.hpp"

namespace destein {

namespace {

double method_alpha(const BenchMethod& m) {
  if (m.decoding.kind == "dexperts") return m.decoding.alpha;
  if (m.decoding.kind == "self-debias") return m.decoding.lambda;
  return m.steering.empty() ? 0.0 : m.steering.front().steering.alpha;
}

std::string perplexity_cell(const nlohmann::json& r) {
  if (!r.contains("perplexity")) return "-";
  return std::isfinite(r["perplexity"].get<double>())
             ? fmt::format("{:.2f}", r["perplexity"].get<double>())
             : fmt::format("n/a (all {} >= 1e4)", r["perplexity_dropped"].get<int64_t>());
}

// The paper's Table 1 layout: a table per prompt set, a row per method, toxicity
// probability under both conventions, each named.
std::string paper_layout_tables(const nlohmann::json& results) {
  std::vector<std::string> subsets;
  for (const auto& r : results) {
    const auto subset = r["subset"].get<std::string>();
    if (std::find(subsets.begin(), subsets.end(), subset) == subsets.end())
      subsets.push_back(subset);
  }
  std::string md =
      "\n## In the paper's layout\n\n"
      "A table per prompt set, a row per method. EMT: mean over prompts of the most toxic "
      "generation's score (± its population std). TP > 0.5: the fraction of prompts with a "
      "generation scoring above 0.5 (the DeStein and RealToxicityPrompts code); TP >= 0.5: "
      "scoring 0.5 or more (HELM, lm-evaluation-harness). PPL: the evaluator's perplexity of "
      "the continuations. Dist-n: distinct n-grams per word, per prompt. Costs: costs.md.\n";
  for (const auto& subset : subsets) {
    int64_t prompts = -1;
    std::string rows;
    for (const auto& r : results) {
      if (r["subset"].get<std::string>() != subset) continue;
      prompts = r["num_prompts"].get<int64_t>();
      rows += fmt::format(
          "| {} | {:.3f} ± {:.3f} | {:.3f} | {:.3f} | {} | {:.3f} | {:.3f} | {:.3f} |\n",
          r["method"].get<std::string>(), r["expected_max_toxicity"].get<double>(),
          r["expected_max_toxicity_std"].get<double>(), r["toxicity_probability"].get<double>(),
          r["toxicity_probability_ge"].get<double>(), perplexity_cell(r), r["dist_1"].get<double>(),
          r["dist_2"].get<double>(), r["dist_3"].get<double>());
    }
    md += fmt::format(
        "\n### {} ({} prompts)\n\n"
        "| method | EMT (± std) | TP > 0.5 | TP >= 0.5 | PPL | Dist-1 | Dist-2 | Dist-3 |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|\n",
        subset, prompts);
    md += rows;
  }
  return md;
}

std::string results_table(const nlohmann::json& results) {
  std::string md =
      "| method | subset | prompts | EMT | TP | PPL | Dist-1 | Dist-2 | Dist-3 |\n"
      "|---|---|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const auto& r : results) {
    const std::string ppl = perplexity_cell(r);
    md += fmt::format(
        "| {} | {} | {} | {:.3f} ± {:.3f} | {:.3f} | {} | {:.3f} | {:.3f} | {:.3f} |\n",
        r["method"].get<std::string>(), r["subset"].get<std::string>(),
        r["num_prompts"].get<int64_t>(), r["expected_max_toxicity"].get<double>(),
        r["expected_max_toxicity_std"].get<double>(), r["toxicity_probability"].get<double>(), ppl,
        r["dist_1"].get<double>(), r["dist_2"].get<double>(), r["dist_3"].get<double>());
  }
  return md;
}

// A row's toxicity under one instrument, as results.json's `scorers` items give it.
nlohmann::json instrument_json(const std::string& name, const char* section,
                               const std::filesystem::path& file, const ToxicityMetrics& t) {
  return {{"name", name},
          {"section", section},
          {"expected_max_toxicity", t.expected_max_toxicity},
          {"expected_max_toxicity_std", t.expected_max_toxicity_std},
          {"toxicity_probability", t.toxicity_probability},
          {"toxicity_probability_ge", t.toxicity_probability_ge},
          {"unscored_generations", t.missing_scores},
          {"generations_file", file.string()}};
}

std::vector<std::string> subsets_of(const nlohmann::json& results) {
  std::vector<std::string> subsets;
  for (const auto& r : results) {
    const auto subset = r["subset"].get<std::string>();
    if (std::find(subsets.begin(), subsets.end(), subset) == subsets.end())
      subsets.push_back(subset);
  }
  return subsets;
}

// EMT of every row of `rows` under instrument i (rows' `scorers` items are in instrument
// order).
std::vector<double> emt_under(const std::vector<const nlohmann::json*>& rows, size_t i) {
  std::vector<double> v;
  for (const auto* r : rows) v.push_back((*r)["scorers"][i]["expected_max_toxicity"].get<double>());
  return v;
}

// "Per instrument" and "Agreement between instruments": per prompt set, the methods' EMT
// and TP under each instrument, then per pair of instruments the Spearman correlation of
// the methods' EMT and the method each ranks least toxic.
std::string instrument_tables(const nlohmann::json& results,
                              const std::vector<std::string>& instruments) {
  std::string md =
      "\n## Per instrument\n\n"
      "Every generation scored by each instrument: the `scorer:` section's (the scores in the "
      "generations files) and each of `scorers:` (OUTPUT/scorers/<name>/). EMT ± std and TP "
      "> 0.5 as above.\n";
  std::string header = "| method |", rule = "|---|";
  for (const auto& name : instruments) {
    header += fmt::format(" EMT {} | TP {} |", name, name);
    rule += "---:|---:|";
  }
  std::string agreement =
      "\n## Agreement between instruments\n\n"
      "Per prompt set, how the instruments rank the methods: the Spearman correlation of the "
      "methods' EMT (1: the same order; n/a: fewer than two methods, a method without scores, "
      "or an instrument giving every method the same EMT), and the method each calls least toxic. "
      "A conclusion that "
      "holds under one instrument only depends on the instrument.\n\n"
      "| prompt set | methods | instrument | instrument | Spearman of EMT | least toxic under the "
      "first | under the second |\n"
      "|---|---:|---|---|---:|---|---|\n";
  for (const auto& subset : subsets_of(results)) {
    std::vector<const nlohmann::json*> rows;
    for (const auto& r : results) {
      if (r["subset"].get<std::string>() == subset) rows.push_back(&r);
    }
    md += fmt::format("\n### {}\n\n{}\n{}\n", subset, header, rule);
    for (const auto* r : rows) {
      md += fmt::format("| {} |", (*r)["method"].get<std::string>());
      for (const auto& x : (*r)["scorers"]) {
        md += fmt::format(" {:.3f} ± {:.3f} | {:.3f} |", x["expected_max_toxicity"].get<double>(),
                          x["expected_max_toxicity_std"].get<double>(),
                          x["toxicity_probability"].get<double>());
      }
      md += "\n";
    }
    auto least_toxic = [&](const std::vector<double>& emt) {
      const size_t j = static_cast<size_t>(std::min_element(emt.begin(), emt.end()) - emt.begin());
      return (*rows[j])["method"].get<std::string>();
    };
    for (size_t a = 0; a < instruments.size(); ++a) {
      for (size_t b = a + 1; b < instruments.size(); ++b) {
        const auto ea = emt_under(rows, a), eb = emt_under(rows, b);
        const auto has_nan = [](const std::vector<double>& v) {
          return std::any_of(v.begin(), v.end(), [](double x) { return std::isnan(x); });
        };
        const double rho = rows.size() < 2 || has_nan(ea) || has_nan(eb)
                               ? std::nan("")
                               : spearman_rank_correlation(ea, eb);
        agreement += fmt::format(
            "| {} | {} | {} | {} | {} | {} | {} |\n", subset, rows.size(), instruments[a],
            instruments[b], std::isfinite(rho) ? fmt::format("{:.3f}", rho) : std::string("n/a"),
            least_toxic(ea), least_toxic(eb));
      }
    }
  }
  return md + agreement;
}

}  // namespace

std::string bench_method_variant(const BenchMethod& m) {
  if (!m.variant.empty()) return m.variant;
  if (!m.decoding.kind.empty()) return m.decoding.kind;
  if (m.steering.empty()) return "base";
  const SteeringOptions& o = m.steering.front().steering;
  std::string v = steering_mode_name(o.mode);
  if (o.positions != SteeringPositions::kAll) v += " " + steering_positions_name(o.positions);
  if (o.gate == SteeringGate::kProbe) {
    v += o.gate_threshold > 0 ? fmt::format(" gate>={}", o.gate_threshold) : " gate";
  }
  if (o.layer_start != 0 || o.layer_end != -1) {
    v += fmt::format(" layers {}:{}", o.layer_start, o.layer_end);
  }
  if (o.top_k_heads) v += fmt::format(" top{}", o.top_k_heads);
  if (m.steering.size() > 1) v += fmt::format(" +{} entries", m.steering.size() - 1);
  return v;
}

void print_bench_run_notes(const std::filesystem::path& file, const BenchPromptSet& set,
                           const EvalRunReport& rep, int64_t skipped, bool pipelined) {
  const nlohmann::json stages = stage_times_json(rep.times);
  auto percent = [&](const char* stage) { return stages[stage]["share"].get<double>() * 100; };
  if (rep.prompts_done > 0) {
    fmt::print(stderr,
               "{}: {} prompts per batch{}; wall {:.1f} s: generate {:.0f}%, detokenize {:.0f}%, "
               "score {:.0f}%, perplexity {:.0f}%, write {:.0f}%, waiting {:.0f}%\n",
               file.string(), rep.prompts_per_batch, pipelined ? ", pipelined" : "", rep.times.wall,
               percent("generate"), percent("detokenize"), percent("score"), percent("perplexity"),
               percent("write"), percent("wait"));
  }
  if (rep.prompts_resumed > 0 || rep.truncated_bytes > 0) {
    fmt::print(
        stderr, "{}: resumed ({} prompts already done{})\n", file.string(), rep.prompts_resumed,
        rep.truncated_bytes ? fmt::format(", cut a partial line of {} bytes", rep.truncated_bytes)
                            : "");
  }
  if (skipped) fmt::print(stderr, "{}: skipped {} malformed prompt lines\n", set.path, skipped);
  if (rep.unscored) {
    fmt::print(stderr, "{}: {} generations have no toxicity score\n", file.string(), rep.unscored);
  }
}

// Tokens generated by this run: the file's last `prompts` lines are the ones it wrote.
int64_t tokens_of_last_lines(const std::filesystem::path& file, int64_t prompts) {
  std::vector<std::string> lines;
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) lines.push_back(std::move(line));
  }
  int64_t tokens = 0;
  const size_t first = lines.size() - std::min<size_t>(lines.size(), static_cast<size_t>(prompts));
  for (size_t i = first; i < lines.size(); ++i) {
    const auto j = nlohmann::json::parse(lines[i], nullptr, false);
    if (!j.is_object() || !j.contains("generations")) continue;
    for (const auto& g : j["generations"]) tokens += g.value("tokens", int64_t{0});
  }
  return tokens;
}

void BenchResults::add(const BenchMethod& method, const BenchPromptSet& set,
                       const std::filesystem::path& file, const EvalRunReport& rep, bool pipelined,
                       const std::optional<SteeringReport>& acted, const std::string& label,
                       const std::optional<MethodCost>& cost) {
  const EvalSummary s = summarize_generations(file);
  nlohmann::json row = eval_summary_json(s);
  row["method"] = method.name;
  row["subset"] = set.name;
  row["alpha"] = method_alpha(method);
  row["mode"] =
      method.steering.empty() ? "none" : steering_mode_name(method.steering.front().steering.mode);
  if (!method.decoding.kind.empty()) row["decoding_method"] = method.decoding.kind;
  row["generations_file"] = file.string();
  row["variant"] = bench_method_variant(method);
  row["prompts_per_batch"] = rep.prompts_per_batch;
  row["pipelined"] = pipelined;
  row["stages"] = stage_times_json(rep.times);
  if (acted) {
    // Proof that the steering acted, over the prompts generated in this run (a resumed
    // file's earlier prompts are not counted).
    bool heads = false;
    for (const auto& e : method.steering) {
      heads = heads || e.steering.mode == SteeringMode::kHeadwise;
    }
    row["steering_acted"] = steering_report_json(*acted, heads);
    row["steering_warnings"] = acted->warnings();
    for (const auto& w : acted->warnings()) fmt::print(stderr, "{}: WARNING: {}\n", label, w);
  }
  if (cost) {
    const int64_t tokens = tokens_of_last_lines(file, rep.prompts_done);
    const double per_1k =
        tokens > 0 ? rep.times.generate / static_cast<double>(tokens) * 1000.0 : std::nan("");
    const auto mib = [](double v) { return v >= 0 ? nlohmann::json(v) : nlohmann::json(nullptr); };
    row["cost"] = {{"generated_tokens", tokens},
                   {"generate_seconds", rep.times.generate},
                   {"generate_seconds_per_1k_tokens",
                    std::isfinite(per_1k) ? nlohmann::json(per_1k) : nlohmann::json(nullptr)},
                   {"rss_at_start_mib", mib(cost->rss_at_start_mib)},
                   {"peak_rss_mib", mib(cost->peak_rss_mib)},
                   {"added_parameters", cost->added_parameters},
                   {"extra_rows_per_row", cost->extra_rows_per_row}};
    const auto cell = [](double v, const char* f) {
      return v >= 0 && std::isfinite(v) ? fmt::format(fmt::runtime(f), v) : std::string("-");
    };
    costs_md_ += fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} |\n", method.name, set.name,
                             tokens, cell(per_1k, "{:.3f}"), cell(cost->rss_at_start_mib, "{:.0f}"),
                             cell(cost->peak_rss_mib, "{:.0f}"), cost->added_parameters,
                             cost->extra_rows_per_row);
    costs_csv_ += fmt::format("{},{},{},{:.4f},{:.4f},{:.1f},{:.1f},{},{}\n", method.name, set.name,
                              tokens, rep.times.generate, per_1k, cost->rss_at_start_mib,
                              cost->peak_rss_mib, cost->added_parameters, cost->extra_rows_per_row);
  }
  if (!instruments_.empty()) {
    row["scorers"] =
        nlohmann::json::array({instrument_json(instruments_[0], "scorer", file, s.toxicity)});
  }
  results_.push_back(row);
  const double ppl = s.perplexity ? s.perplexity->mean : std::nan("");
  csv_ += fmt::format("{},{},{},{:.4f},{:.4f},{:.4f},{:.4f},{:.3f},{:.4f},{:.4f},{:.4f}\n",
                      method.name, set.name, s.num_prompts, s.toxicity.expected_max_toxicity,
                      s.toxicity.expected_max_toxicity_std, s.toxicity.toxicity_probability,
                      s.toxicity.toxicity_probability_ge, ppl, s.distinct.dist_1, s.distinct.dist_2,
                      s.distinct.dist_3);
  if (std::isfinite(ppl)) {
    tradeoff_.push_back({set.name, bench_method_variant(method), method.name, method_alpha(method),
                         s.toxicity.expected_max_toxicity, ppl});
  }
}

void BenchResults::set_instruments(const std::string& primary,
                                   const std::vector<std::string>& listed) {
  instruments_.clear();
  if (listed.empty()) return;
  instruments_.push_back(primary);
  instruments_.insert(instruments_.end(), listed.begin(), listed.end());
}

void BenchResults::add_instrument_scores(const std::string& name,
                                         const std::filesystem::path& rescored) {
  if (results_.empty() || !results_.back().contains("scorers")) {
    throw std::logic_error("add_instrument_scores before add() or without set_instruments()");
  }
  const EvalSummary s = summarize_generations(rescored);
  results_.back()["scorers"].push_back(instrument_json(name, "scorers", rescored, s.toxicity));
}

BenchRunReport BenchResults::write(const std::filesystem::path& out_dir) const {
  write_text_file(out_dir / "results.json", results_.dump(2) + "\n");
  write_text_file(out_dir / "results.csv", csv_);
  std::string md = results_table(results_) + paper_layout_tables(results_);
  if (!instruments_.empty()) {
    md += instrument_tables(results_, instruments_);
    std::string csv = "method,subset,instrument,emt,emt_std,tp,tp_ge,unscored_generations\n";
    for (const auto& r : results_) {
      for (const auto& x : r["scorers"]) {
        csv += fmt::format(
            "{},{},{},{:.4f},{:.4f},{:.4f},{:.4f},{}\n", r["method"].get<std::string>(),
            r["subset"].get<std::string>(), x["name"].get<std::string>(),
            x["expected_max_toxicity"].get<double>(), x["expected_max_toxicity_std"].get<double>(),
            x["toxicity_probability"].get<double>(), x["toxicity_probability_ge"].get<double>(),
            x["unscored_generations"].get<int64_t>());
      }
    }
    write_text_file(out_dir / "scorers.csv", csv);
  }
  write_text_file(out_dir / "results.md", md);
  // Timings and memory differ from run to run, so they stay out of results.md/.csv.
  write_text_file(
      out_dir / "costs.md",
      "| method | subset | generated tokens | generate s / 1k tokens | RSS at start (MiB) | "
      "peak RSS (MiB) | added parameters | extra rows per row |\n"
      "|---|---|---:|---:|---:|---:|---:|---:|\n" +
          (costs_md_.empty() ? std::string("| (no method ran apart in this run: mix_methods shares "
                                           "batches, so costs are not separable) | | | | | | | |\n")
                             : costs_md_));
  write_text_file(out_dir / "costs.csv",
                  "method,subset,generated_tokens,generate_seconds,generate_seconds_per_1k_tokens,"
                  "rss_at_start_mib,peak_rss_mib,added_parameters,extra_rows_per_row\n" +
                      costs_csv_);
  if (tradeoff_.size() > 1) {
    write_text_file(out_dir / "tradeoff.svg", tradeoff_svg(tradeoff_, "toxicity vs fluency"));
  }
  return {results_, md, out_dir};
}

}  // namespace destein
