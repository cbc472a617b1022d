// The generation harness's engine, as stages: the generations files are resumed
// (generations_file), the pending units dealt into batches, each batch generated, then
// turned into text, scored, measured and rendered into lines (generation_lines) on a
// second thread when pipelined (pipeline), and its lines written in batch order
// (generation_sink, ordered on rank 0 when sharded). run_generation_eval() is its
// one-track case.
#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <set>

#include "check.hpp"
#include "destein/eval/harness.hpp"
#include "eval/generation_lines.hpp"
#include "eval/generation_sink.hpp"
#include "eval/generations_file.hpp"
#include "eval/pipeline.hpp"
#include "parallel/process_group.hpp"
#include "parallel/work_split.hpp"
#include "splitmix.hpp"

namespace destein {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// The stream a prompt had when the harness generated one prompt per call.
uint64_t prompt_seed(uint64_t seed, int64_t index) {
  return detail::mix64(seed ^ (detail::kGoldenGamma * static_cast<uint64_t>(index + 1)));
}

// What a run_mixed_generation_eval() call works on, for the stages below.
struct EvalInputs {
  const Model& model;
  const Tokenizer& tokenizer;
  const std::vector<EvalPrompt>& prompts;
  const std::vector<EvalTrack>& tracks;
  const Hooks* hooks;
  const EvalTrackRows& select_rows;
  ToxicityScorer* scorer;
  const PerplexityEvaluator* evaluator;
  const EvalRunOptions& options;
};

void check_eval_call(const std::vector<EvalTrack>& tracks, const EvalRunOptions& options) {
  DESTEIN_CHECK_ARG(!tracks.empty(),
                    "run_mixed_generation_eval: no tracks (give at least one method and file)");
  DESTEIN_CHECK_ARG(options.prompts_per_batch >= 0,
                    "prompts_per_batch must be >= 0 (0 = auto), found {}",
                    options.prompts_per_batch);
  DESTEIN_CHECK_ARG(options.max_rows >= 0,
                    "max_rows must be >= 0 (0 = the device's default), found {}", options.max_rows);
  DESTEIN_CHECK_ARG(!options.generation.before_forward,
                    "EvalRunOptions.generation.before_forward must be empty: the harness lays "
                    "out the rows of its batches itself (give run_mixed_generation_eval a "
                    "select_rows callback for per-row state)");
  std::set<std::filesystem::path> files;
  for (const auto& t : tracks) {
    DESTEIN_CHECK_ARG(
        files.insert(std::filesystem::absolute(t.output).lexically_normal()).second,
        "run_mixed_generation_eval: two tracks write {} (method '{}'); give each its own file",
        t.output.string(), t.method);
  }
}

// Rank 0 (or one process): opens every track's file and lists the units still to do,
// prompt by prompt (every track of prompt 0, then of prompt 1, ...).
std::vector<EvalUnit> resume_tracks(const EvalInputs& in, std::vector<GenerationsFile>* files,
                                    std::vector<EvalRunReport>* reports) {
  for (size_t t = 0; t < in.tracks.size(); ++t) {
    files->emplace_back(in.tracks[t].output);
    (*reports)[t].truncated_bytes = files->back().truncated_bytes();
  }
  std::vector<EvalUnit> pending;
  for (size_t i = 0; i < in.prompts.size(); ++i) {
    for (size_t t = 0; t < in.tracks.size(); ++t) {
      if ((*files)[t].done().count(in.prompts[i].index)) {
        ++(*reports)[t].prompts_resumed;
      } else {
        pending.push_back({static_cast<int64_t>(t), static_cast<int64_t>(i)});
      }
    }
  }
  return pending;
}

// Sharded: rank 0's pending units, as every rank learns them; each rank's reports count
// the resumed prompts.
std::vector<EvalUnit> share_pending(const EvalInputs& in, const ProcessGroup& group,
                                    const std::vector<EvalUnit>& pending,
                                    std::vector<EvalRunReport>* reports) {
  const int64_t total = static_cast<int64_t>(in.prompts.size());
  const size_t num_tracks = in.tracks.size();
  std::vector<int64_t> flat;
  for (const auto& u : pending) flat.insert(flat.end(), {u.track, u.at});
  std::string plan =
      group.is_root()
          ? nlohmann::json{{"prompts", total}, {"tracks", num_tracks}, {"pending", flat}}.dump()
          : "";
  group.broadcast(plan);
  const auto j = nlohmann::json::parse(plan);
  DESTEIN_CHECK_IO(
      j["prompts"].get<int64_t>() == total && j["tracks"].get<size_t>() == num_tracks,
      "{}: rank 0 has {} prompts and {} methods for {} but this rank has {} and {}: every rank "
      "must read the same prompt file and experiment",
      group.describe(), j["prompts"].get<int64_t>(), j["tracks"].get<size_t>(),
      in.tracks.front().output.string(), total, num_tracks);
  flat = j["pending"].get<std::vector<int64_t>>();
  std::vector<EvalUnit> shared;
  std::vector<int64_t> pending_of(num_tracks, 0);
  for (size_t k = 0; k + 1 < flat.size(); k += 2) {
    shared.push_back({flat[k], flat[k + 1]});
    ++pending_of[static_cast<size_t>(flat[k])];
  }
  for (size_t t = 0; t < num_tracks; ++t) (*reports)[t].prompts_resumed = total - pending_of[t];
  return shared;
}

// Stage 1, on the calling thread: units [first, last) of `pending` through the model.
EvalBatch generate_batch(const EvalInputs& in, const std::vector<EvalUnit>& pending, size_t first,
                         size_t last, int64_t index, EvalStageTimes* times) {
  const auto t = Clock::now();
  EvalBatch batch;
  batch.index = index;
  GenerationOptions g = in.options.generation;
  g.batch_size = 0;
  g.prompt_seeds.clear();
  for (size_t i = first; i < last; ++i) {
    const EvalUnit u = pending[i];
    const EvalPrompt& p = in.prompts[static_cast<size_t>(u.at)];
    batch.units.push_back(u);
    // Units of one prompt are neighbours: encode it once.
    const bool same_prompt = i > first && pending[i - 1].at == u.at;
    batch.prompt_ids.push_back(same_prompt ? batch.prompt_ids.back()
                                           : in.tokenizer.encode_prompt(p.text));
    g.prompt_seeds.push_back(prompt_seed(in.options.generation.seed, p.index));
  }
  std::vector<int64_t> row_tracks;
  if (in.select_rows) {
    g.before_forward = [&](const GenerationRows& rows) {
      row_tracks.clear();
      for (int64_t unit : rows.prompt_index)
        row_tracks.push_back(batch.units[static_cast<size_t>(unit)].track);
      in.select_rows(row_tracks);
    };
  }
  batch.gens = generate(in.model, batch.prompt_ids, g, in.hooks);
  times->generate += seconds_since(t);
  return batch;
}

// Stage 2 (the worker's when pipelined): text, scores and perplexity of a batch.
void measure_batch(const EvalInputs& in, EvalBatch* batch, EvalStageTimes* times) {
  auto t = Clock::now();
  batch->texts.reserve(batch->gens.size());
  for (const auto& x : batch->gens) {
    batch->texts.push_back(in.tokenizer.decode_continuation(
        batch->prompt_ids[static_cast<size_t>(x.prompt_index)], x.token_ids));
  }
  times->detokenize += seconds_since(t);
  t = Clock::now();
  batch->scores.assign(batch->texts.size(), {});
  if (in.scorer) {
    batch->attributes = in.scorer->attributes();
    batch->scores = in.scorer->score_attributes(batch->texts);
    DESTEIN_CHECK_IO(batch->scores.size() == batch->texts.size(),
                     "scorer {} returned {} scores for {} texts", in.scorer->name(),
                     batch->scores.size(), batch->texts.size());
  }
  times->score += seconds_since(t);
  t = Clock::now();
  if (in.evaluator) {
    std::vector<std::string> prompt_texts;
    std::vector<std::vector<std::string>> continuations(batch->units.size());
    for (const EvalUnit& u : batch->units)
      prompt_texts.push_back(in.prompts[static_cast<size_t>(u.at)].text);
    for (size_t k = 0; k < batch->texts.size(); ++k) {
      const auto unit = static_cast<size_t>(batch->gens[k].prompt_index);
      continuations[unit].push_back(batch->texts[k]);
    }
    batch->perplexity = in.evaluator->perplexities(prompt_texts, continuations);
  }
  times->perplexity += seconds_since(t);
}

}  // namespace

std::vector<EvalRunReport> run_mixed_generation_eval(
    const Model& model, const Tokenizer& tokenizer, const std::vector<EvalPrompt>& prompts,
    const std::vector<EvalTrack>& tracks, const Hooks* hooks, const EvalTrackRows& select_rows,
    ToxicityScorer* scorer, const PerplexityEvaluator* evaluator, const EvalRunOptions& options,
    const std::function<void(int64_t, int64_t)>& progress, const ProcessGroup* group) {
  const auto t_start = Clock::now();
  check_eval_call(tracks, options);
  const EvalInputs in{model,       tokenizer, prompts,   tracks, hooks,
                      select_rows, scorer,    evaluator, options};
  const int64_t samples = std::max<int64_t>(1, options.generation.num_samples);
  const int64_t max_rows =
      options.max_rows > 0 ? options.max_rows : default_max_rows(model.device());
  const int64_t per_batch = options.prompts_per_batch > 0
                                ? options.prompts_per_batch
                                : std::max<int64_t>(1, max_rows / samples);

  // Sharded: rank 0 alone reads and writes the files; the others learn what is pending.
  const bool sharded = group && group->size() > 1;
  const int rank = sharded ? group->rank() : 0, ranks = sharded ? group->size() : 1;
  std::vector<EvalRunReport> reports(tracks.size());
  std::vector<GenerationsFile> files;
  std::vector<EvalUnit> pending;
  if (rank == 0) pending = resume_tracks(in, &files, &reports);
  if (sharded) pending = share_pending(in, *group, pending, &reports);

  const std::string where =
      tracks.size() == 1
          ? tracks.front().output.string()
          : fmt::format("{} and {} other files", tracks.front().output.string(), tracks.size() - 1);
  GenerationSink sink(&files, group, &reports, samples,
                      static_cast<int64_t>(prompts.size() * tracks.size()), progress, where);
  // This rank's batches, in order: all of them in one process, every ranks-th when sharded.
  const int64_t num_batches = (static_cast<int64_t>(pending.size()) + per_batch - 1) / per_batch;
  std::vector<int64_t> my_batches;
  for (int64_t b = 0; b < num_batches; ++b) {
    if (batch_owner(b, ranks) == rank) my_batches.push_back(b);
  }
  EvalStageTimes times;
  run_pipeline(
      static_cast<int64_t>(my_batches.size()),
      [&](int64_t k) {
        const int64_t b = my_batches[static_cast<size_t>(k)];
        const size_t first = static_cast<size_t>(b * per_batch);
        const size_t last = std::min(pending.size(), first + static_cast<size_t>(per_batch));
        return generate_batch(in, pending, first, last, b, &times);
      },
      [&](EvalBatch& batch) {
        measure_batch(in, &batch, &times);
        const auto t = Clock::now();
        const auto parts = render_track_lines(batch, prompts, tracks, options.subset);
        times.write += seconds_since(t);
        sink.deliver(batch.index, parts);
      },
      options.pipelined, &times.wait);
  sink.finish(num_batches);
  times.write += sink.write_seconds();
  times.wall = seconds_since(t_start);
  for (auto& r : reports) {
    r.prompts_per_batch = per_batch;
    r.batches = sink.batches();
    r.times = times;
  }
  return reports;
}

EvalRunReport run_generation_eval(const Model& model, const Tokenizer& tokenizer,
                                  const std::vector<EvalPrompt>& prompts, const Hooks* hooks,
                                  ToxicityScorer* scorer, const PerplexityEvaluator* evaluator,
                                  const EvalRunOptions& options,
                                  const std::filesystem::path& output,
                                  const std::function<void(int64_t, int64_t)>& progress,
                                  const ProcessGroup* group) {
  return run_mixed_generation_eval(model, tokenizer, prompts, {EvalTrack{options.method, output}},
                                   hooks, {}, scorer, evaluator, options, progress, group)
      .front();
}

}  // namespace destein
