// Private: what a bench run reports: its notes on stderr, results.json / .csv / .md and
// the trade-off plot.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "destein/experiment/bench_experiment.hpp"
#include "experiment/tradeoff_plot.hpp"

namespace destein {

/// Prints what a (method, prompt set) run did to stderr: stage shares, resuming, skipped
/// prompt lines, unscored generations.
void print_bench_run_notes(const std::filesystem::path& file, const BenchPromptSet& set,
                           const EvalRunReport& report, int64_t skipped_prompts, bool pipelined);

/// What a (method, prompt set) cost in this run, measured around its generation (a
/// method run apart; mix_methods shares batches, so it has none).
struct MethodCost {
  double rss_at_start_mib = -1;    ///< resident memory when the method started (model loaded)
  double peak_rss_mib = -1;        ///< the process's peak while it ran; -1: not measurable
  int64_t added_parameters = 0;    ///< steering vectors' numbers, or the experts' parameters
  int64_t extra_rows_per_row = 0;  ///< forward rows run beside each batch row
};

/// The results of a bench run as they come, one (method, prompt set) after the other.
class BenchResults {
 public:
  /// Adds the row of `method` on `set`: the summary of its generations `file`, the run's
  /// report and, for a steered method, the proof that the steering acted (`acted`; its
  /// warnings also go to stderr, prefixed by `label`).
  void add(const BenchMethod& method, const BenchPromptSet& set, const std::filesystem::path& file,
           const EvalRunReport& report, bool pipelined, const std::optional<SteeringReport>& acted,
           const std::string& label, const std::optional<MethodCost>& cost = std::nullopt);

  /// The instruments of the run: the `scorer:` section's (`primary`, its label in the
  /// tables) and the `scorers:` list's names, in order. Call before add() when the run has
  /// a `scorers:` list; without it the files are as they were before the list existed.
  void set_instruments(const std::string& primary, const std::vector<std::string>& listed);

  /// Adds to the row added last its toxicity under the listed instrument `name`, read from
  /// `rescored` (its generations scored again by that instrument).
  void add_instrument_scores(const std::string& name, const std::filesystem::path& rescored);

  /// Writes results.json, results.csv, results.md, costs.md, costs.csv and, with two
  /// points or more of measured perplexity, tradeoff.svg into `out_dir`; with
  /// instruments also scorers.csv, and results.md gains EMT and TP per instrument and
  /// their agreement.
  BenchRunReport write(const std::filesystem::path& out_dir) const;

 private:
  nlohmann::json results_ = nlohmann::json::array();
  std::string csv_ = "method,subset,prompts,emt,emt_std,tp,tp_ge,ppl,dist_1,dist_2,dist_3\n";
  std::vector<TradeoffPoint> tradeoff_;
  std::string costs_md_, costs_csv_;
  std::vector<std::string> instruments_;  // [0]: the scorer: section's label; empty: none
};

}  // namespace destein
