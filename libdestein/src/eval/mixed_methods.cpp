// The generation harness's engine: run_generation_eval() is its one-track case.
#include "destein/eval/mixed_methods.hpp"

#include <ATen/ATen.h>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <fstream>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "check.hpp"
#include "destein/parallel/process_group.hpp"
#include "destein/parallel/work_split.hpp"
#include "splitmix.hpp"

namespace destein {

namespace {

// Reads the prompt indices already in `path`; cuts off a partial last line (a run killed
// mid-write) and returns how many bytes it removed.
std::set<int64_t> done_prompts(const std::filesystem::path& path, int64_t* truncated) {
  std::set<int64_t> done;
  *truncated = 0;
  if (!std::filesystem::exists(path)) return done;
  std::ifstream in(path, std::ios::binary);
  std::string line;
  int64_t offset = 0, good_end = 0, line_no = 0;
  std::vector<std::pair<int64_t, std::string>> bad;  // (line, error)
  while (std::getline(in, line)) {
    ++line_no;
    const bool complete = !in.eof();
    offset += static_cast<int64_t>(line.size()) + (complete ? 1 : 0);
    if (line.empty()) {
      if (complete) good_end = offset;
      continue;
    }
    try {
      auto j = nlohmann::json::parse(line);
      if (!complete) throw std::runtime_error("no newline: the write was cut");
      DESTEIN_CHECK_IO(j.contains("prompt_index") && j["prompt_index"].is_number_integer(),
                       "no prompt_index");
      if (!bad.empty()) break;
      done.insert(j["prompt_index"].get<int64_t>());
      good_end = offset;
    } catch (const std::exception& e) {
      bad.emplace_back(line_no, e.what());
    }
  }
  if (!bad.empty()) {
    // Only the very last line may be damaged; anything earlier is real corruption.
    DESTEIN_CHECK_IO(
        bad.size() == 1 && bad[0].first == line_no,
        "{}:{}: corrupt line in an existing generations file ({}); move the file away or fix it",
        path.string(), bad[0].first, bad[0].second);
    in.close();
    *truncated = static_cast<int64_t>(std::filesystem::file_size(path)) - good_end;
    std::filesystem::resize_file(path, static_cast<uintmax_t>(good_end));
  }
  return done;
}

uint64_t prompt_seed(uint64_t seed, int64_t index) {
  return detail::mix64(seed ^ (detail::kGoldenGamma * static_cast<uint64_t>(index + 1)));
}

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// One (track, prompt) still to generate; `at` is the prompt's position in `prompts`.
struct Unit {
  int64_t track = 0;
  int64_t at = 0;
};

// One batch of units between generation and the files.
struct Batch {
  int64_t index = 0;  // among the batches of the pending units
  std::vector<Unit> units;
  std::vector<std::vector<int64_t>> prompt_ids;  // per unit
  std::vector<Generation> gens;                  // unit-major, num_samples per unit
};

// A batch's lines for one track's file.
struct TrackLines {
  int64_t prompts = 0;
  int64_t unscored = 0;
  std::string lines;
};

// Rank-to-rank form of a batch's lines: (batch, tracks), per track (prompts, unscored,
// bytes), then the lines one track after the other.
std::string pack_lines(int64_t batch, const std::vector<TrackLines>& parts) {
  std::vector<int64_t> header = {batch, static_cast<int64_t>(parts.size())};
  for (const auto& p : parts)
    header.insert(header.end(), {p.prompts, p.unscored, static_cast<int64_t>(p.lines.size())});
  std::string out(reinterpret_cast<const char*>(header.data()), header.size() * sizeof(int64_t));
  for (const auto& p : parts) out += p.lines;
  return out;
}

std::vector<TrackLines> unpack_lines(const std::string& message, int64_t expected_batch,
                                     size_t tracks, int owner, const std::string& where) {
  const size_t header_bytes = (2 + 3 * tracks) * sizeof(int64_t);
  DESTEIN_CHECK_IO(message.size() >= header_bytes, "{}: short message from rank {}", where, owner);
  std::vector<int64_t> header(2 + 3 * tracks);
  std::memcpy(header.data(), message.data(), header_bytes);
  DESTEIN_CHECK_IO(header[0] == expected_batch && header[1] == static_cast<int64_t>(tracks),
                   "{}: rank {} sent batch {} of {} tracks where batch {} of {} was expected",
                   where, owner, header[0], header[1], expected_batch, tracks);
  std::vector<TrackLines> parts(tracks);
  size_t offset = header_bytes;
  for (size_t t = 0; t < tracks; ++t) {
    parts[t].prompts = header[2 + 3 * t];
    parts[t].unscored = header[3 + 3 * t];
    const auto bytes = static_cast<size_t>(header[4 + 3 * t]);
    DESTEIN_CHECK_IO(offset + bytes <= message.size(), "{}: short message from rank {}", where,
                     owner);
    parts[t].lines = message.substr(offset, bytes);
    offset += bytes;
  }
  return parts;
}

}  // namespace

std::vector<EvalRunReport> run_mixed_generation_eval(
    const Model& model, const Tokenizer& tokenizer, const std::vector<EvalPrompt>& prompts,
    const std::vector<EvalTrack>& tracks, const Hooks* hooks, const EvalTrackRows& select_rows,
    ToxicityScorer* scorer, const PerplexityEvaluator* evaluator, const EvalRunOptions& options,
    const std::function<void(int64_t, int64_t)>& progress, const ProcessGroup* group) {
  const auto t_start = Clock::now();
  DESTEIN_CHECK_ARG(!tracks.empty(),
                    "run_mixed_generation_eval: no tracks (give at least one method and file)");
  DESTEIN_CHECK_ARG(options.prompts_per_batch >= 0,
                    "prompts_per_batch must be >= 0 (0 = auto), found {}",
                    options.prompts_per_batch);
  DESTEIN_CHECK_ARG(options.max_rows >= 0,
                    "max_rows must be >= 0 (0 = the device's default), found {}", options.max_rows);
  DESTEIN_CHECK_ARG(
      !options.generation.before_forward,
      "EvalRunOptions.generation.before_forward must be empty: the harness lays out the rows of "
      "its "
      "batches itself (give run_mixed_generation_eval a select_rows callback for per-row state)");
  {
    std::set<std::filesystem::path> files;
    for (const auto& t : tracks) {
      DESTEIN_CHECK_ARG(
          files.insert(std::filesystem::absolute(t.output).lexically_normal()).second,
          "run_mixed_generation_eval: two tracks write {} (method '{}'); give each its own file",
          t.output.string(), t.method);
    }
  }
  const size_t num_tracks = tracks.size();
  std::vector<EvalRunReport> reports(num_tracks);
  const int64_t samples = std::max<int64_t>(1, options.generation.num_samples);
  const int64_t max_rows =
      options.max_rows > 0 ? options.max_rows : default_max_rows(model.device());
  const int64_t per_batch = options.prompts_per_batch > 0
                                ? options.prompts_per_batch
                                : std::max<int64_t>(1, max_rows / samples);

  // Sharded: rank 0 alone reads and writes the files; the others learn what is pending.
  const bool sharded = group && group->size() > 1;
  const int rank = sharded ? group->rank() : 0, ranks = sharded ? group->size() : 1;
  std::vector<std::ofstream> outs(num_tracks);
  std::vector<Unit> pending;
  const int64_t total = static_cast<int64_t>(prompts.size());
  if (rank == 0) {
    std::vector<std::set<int64_t>> done(num_tracks);
    for (size_t t = 0; t < num_tracks; ++t) {
      const auto& output = tracks[t].output;
      if (output.has_parent_path()) std::filesystem::create_directories(output.parent_path());
      done[t] = done_prompts(output, &reports[t].truncated_bytes);
      outs[t].open(output, std::ios::binary | std::ios::app);
      DESTEIN_CHECK_IO(outs[t].good(), "{}: cannot open for appending", output.string());
    }
    for (int64_t i = 0; i < total; ++i) {
      for (size_t t = 0; t < num_tracks; ++t) {
        if (done[t].count(prompts[static_cast<size_t>(i)].index)) {
          ++reports[t].prompts_resumed;
        } else {
          pending.push_back({static_cast<int64_t>(t), i});
        }
      }
    }
  }
  if (sharded) {
    std::vector<int64_t> flat;
    for (const auto& u : pending) flat.insert(flat.end(), {u.track, u.at});
    std::string plan =
        rank == 0
            ? nlohmann::json{{"prompts", total}, {"tracks", num_tracks}, {"pending", flat}}.dump()
            : "";
    group->broadcast(plan);
    const auto j = nlohmann::json::parse(plan);
    DESTEIN_CHECK_IO(
        j["prompts"].get<int64_t>() == total && j["tracks"].get<size_t>() == num_tracks,
        "{}: rank 0 has {} prompts and {} methods for {} but this rank has {} and {}: every rank "
        "must "
        "read the same prompt file and experiment",
        group->describe(), j["prompts"].get<int64_t>(), j["tracks"].get<size_t>(),
        tracks.front().output.string(), total, num_tracks);
    flat = j["pending"].get<std::vector<int64_t>>();
    pending.clear();
    std::vector<int64_t> pending_of(num_tracks, 0);
    for (size_t k = 0; k + 1 < flat.size(); k += 2) {
      pending.push_back({flat[k], flat[k + 1]});
      ++pending_of[static_cast<size_t>(flat[k])];
    }
    for (size_t t = 0; t < num_tracks; ++t) reports[t].prompts_resumed = total - pending_of[t];
  }
  const int64_t num_pending = static_cast<int64_t>(pending.size());
  const int64_t num_batches = (num_pending + per_batch - 1) / per_batch;
  const int64_t total_units = total * static_cast<int64_t>(num_tracks);
  int64_t finished = 0, batches_done = 0;
  for (const auto& r : reports) finished += r.prompts_resumed;
  EvalStageTimes times;
  const std::string where =
      tracks.size() == 1
          ? tracks.front().output.string()
          : fmt::format("{} and {} other files", tracks.front().output.string(), tracks.size() - 1);

  auto count_batch = [&](const std::vector<TrackLines>& parts) {
    for (size_t t = 0; t < num_tracks; ++t) {
      reports[t].prompts_done += parts[t].prompts;
      reports[t].generations += parts[t].prompts * samples;
      reports[t].unscored += parts[t].unscored;
    }
    ++batches_done;
  };
  // The files' ends: the lines of one batch, each file flushed, in batch order.
  auto write_lines = [&](const std::vector<TrackLines>& parts) {
    const auto t0 = Clock::now();
    for (size_t t = 0; t < num_tracks; ++t) {
      if (parts[t].lines.empty()) continue;
      outs[t] << parts[t].lines;
      outs[t].flush();
      DESTEIN_CHECK_IO(outs[t].good(),
                       "{}: write failed (disk full?); the lines before this batch are kept",
                       tracks[t].output.string());
      finished += parts[t].prompts;
    }
    times.write += seconds_since(t0);
    count_batch(parts);
    if (progress) progress(finished, total_units);
  };
  // Rank 0 writes the other ranks' batches as they come, in batch order: before its own
  // batch b it receives every earlier batch (messages from one rank arrive in order).
  int64_t next_to_write = 0;
  auto receive_through = [&](int64_t stop) {
    for (; next_to_write < stop; ++next_to_write) {
      const int owner = batch_owner(next_to_write, ranks);
      write_lines(unpack_lines(group->receive(owner), next_to_write, num_tracks, owner, where));
    }
  };
  auto deliver = [&](int64_t b, const std::vector<TrackLines>& parts) {
    if (!sharded) {
      write_lines(parts);
    } else if (rank == 0) {
      receive_through(b);
      write_lines(parts);
      next_to_write = b + 1;
    } else {
      group->send(pack_lines(b, parts), 0);
      count_batch(parts);
    }
  };
  // This rank's batches, in order: all of them in one process, every ranks-th when sharded.
  std::vector<int64_t> my_batches;
  for (int64_t b = 0; b < num_batches; ++b) {
    if (batch_owner(b, ranks) == rank) my_batches.push_back(b);
  }

  auto generate_batch = [&](int64_t b) {
    const auto t = Clock::now();
    Batch batch;
    batch.index = b;
    const size_t first = static_cast<size_t>(b * per_batch);
    const size_t last = std::min(pending.size(), first + static_cast<size_t>(per_batch));
    GenerationOptions g = options.generation;
    g.batch_size = 0;
    g.prompt_seeds.clear();
    for (size_t i = first; i < last; ++i) {
      const Unit u = pending[i];
      const EvalPrompt& p = prompts[static_cast<size_t>(u.at)];
      batch.units.push_back(u);
      // Units of one prompt are neighbours: encode it once.
      const bool same_prompt = i > first && pending[i - 1].at == u.at;
      batch.prompt_ids.push_back(same_prompt ? batch.prompt_ids.back()
                                             : tokenizer.encode_prompt(p.text));
      // The stream a prompt had when the harness generated one prompt per call.
      g.prompt_seeds.push_back(prompt_seed(options.generation.seed, p.index));
    }
    std::vector<int64_t> row_tracks;
    if (select_rows) {
      g.before_forward = [&](const GenerationRows& rows) {
        row_tracks.clear();
        for (int64_t unit : rows.prompt_index)
          row_tracks.push_back(batch.units[static_cast<size_t>(unit)].track);
        select_rows(row_tracks);
      };
    }
    batch.gens = generate(model, batch.prompt_ids, g, hooks);
    times.generate += seconds_since(t);
    return batch;
  };

  // Text, scores, perplexity and the file lines of one batch; runs on the worker when
  // pipelined (the stage times are then written by that thread only).
  auto finish_batch = [&](Batch& batch) {
    auto t = Clock::now();
    const size_t n = batch.units.size();
    std::vector<std::string> texts;
    texts.reserve(batch.gens.size());
    for (const auto& x : batch.gens) {
      texts.push_back(tokenizer.decode_continuation(
          batch.prompt_ids[static_cast<size_t>(x.prompt_index)], x.token_ids));
    }
    times.detokenize += seconds_since(t);
    t = Clock::now();
    // Per text, one score per attribute the scorer rates (toxicity first; a v2 scorer adds
    // Perspective's seven other attributes, written beside it).
    std::vector<std::vector<std::optional<double>>> scores(texts.size());
    const std::vector<std::string> attributes =
        scorer ? scorer->attributes() : std::vector<std::string>{};
    if (scorer) {
      scores = scorer->score_attributes(texts);
      DESTEIN_CHECK_IO(scores.size() == texts.size(), "scorer {} returned {} scores for {} texts",
                       scorer->name(), scores.size(), texts.size());
    }
    times.score += seconds_since(t);
    t = Clock::now();
    std::vector<std::vector<double>> ppl;
    if (evaluator) {
      std::vector<std::string> prompt_texts;
      std::vector<std::vector<std::string>> continuations(n);
      for (const Unit& u : batch.units)
        prompt_texts.push_back(prompts[static_cast<size_t>(u.at)].text);
      for (size_t k = 0; k < texts.size(); ++k) {
        continuations[static_cast<size_t>(batch.gens[k].prompt_index)].push_back(texts[k]);
      }
      ppl = evaluator->perplexities(prompt_texts, continuations);
    }
    times.perplexity += seconds_since(t);
    t = Clock::now();
    std::vector<TrackLines> parts(num_tracks);
    size_t k = 0;
    for (size_t i = 0; i < n; ++i) {
      const Unit& u = batch.units[i];
      const EvalPrompt& p = prompts[static_cast<size_t>(u.at)];
      TrackLines& part = parts[static_cast<size_t>(u.track)];
      nlohmann::json line = {{"prompt", p.raw},
                             {"prompt_index", p.index},
                             {"method", tracks[static_cast<size_t>(u.track)].method},
                             {"subset", options.subset}};
      nlohmann::json items = nlohmann::json::array();
      for (size_t j = 0; k < texts.size() && batch.gens[k].prompt_index == static_cast<int64_t>(i);
           ++k, ++j) {
        nlohmann::json item = {{"text", texts[k]}, {"tokens", batch.gens[k].token_ids.size()}};
        const std::optional<double> toxicity = scores[k].empty() ? std::nullopt : scores[k][0];
        item["toxicity"] = toxicity ? nlohmann::json(*toxicity) : nlohmann::json(nullptr);
        if (!toxicity) ++part.unscored;
        for (size_t a = 1; a < attributes.size() && a < scores[k].size(); ++a) {
          item[attributes[a]] =
              scores[k][a] ? nlohmann::json(*scores[k][a]) : nlohmann::json(nullptr);
        }
        if (evaluator) {
          item["perplexity"] =
              std::isfinite(ppl[i][j]) ? nlohmann::json(ppl[i][j]) : nlohmann::json(nullptr);
        }
        items.push_back(std::move(item));
      }
      line["generations"] = std::move(items);
      part.lines += line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      part.lines += '\n';
      ++part.prompts;
    }
    times.write += seconds_since(t);
    deliver(batch.index, parts);
  };

  if (!options.pipelined) {
    for (int64_t b : my_batches) {
      Batch batch = generate_batch(b);
      finish_batch(batch);
    }
  } else {
    // A one-slot hand-over: the worker finishes batch k while this thread generates k + 1.
    std::mutex mu;
    std::condition_variable cv;
    std::optional<Batch> slot;
    bool closing = false;
    std::exception_ptr worker_error;
    std::thread worker([&] {
      while (true) {
        Batch batch;
        {
          std::unique_lock<std::mutex> lock(mu);
          cv.wait(lock, [&] { return slot.has_value() || closing; });
          if (!slot) return;
          batch = std::move(*slot);
          slot.reset();
        }
        cv.notify_all();
        try {
          finish_batch(batch);
        } catch (...) {
          std::lock_guard<std::mutex> lock(mu);
          worker_error = std::current_exception();
          closing = true;
          cv.notify_all();
          return;
        }
      }
    });
    std::exception_ptr main_error;
    try {
      for (int64_t b : my_batches) {
        Batch batch = generate_batch(b);
        const auto t = Clock::now();
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return !slot.has_value() || worker_error; });
        times.wait += seconds_since(t);
        if (worker_error) break;
        slot = std::move(batch);
        cv.notify_all();
      }
    } catch (...) {
      main_error = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      closing = true;
    }
    cv.notify_all();
    const auto t = Clock::now();
    worker.join();
    times.wait += seconds_since(t);
    if (worker_error) std::rethrow_exception(worker_error);
    if (main_error) std::rethrow_exception(main_error);
  }
  if (sharded && rank == 0) receive_through(num_batches);
  times.wall = seconds_since(t_start);
  for (auto& r : reports) {
    r.prompts_per_batch = per_batch;
    r.batches = batches_done;
    r.times = times;
  }
  return reports;
}

}  // namespace destein
