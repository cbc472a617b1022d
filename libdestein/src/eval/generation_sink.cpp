#include "eval/generation_sink.hpp"

#include <chrono>
#include <utility>

#include "check.hpp"
#include "parallel/process_group.hpp"
#include "parallel/work_split.hpp"

namespace destein {

GenerationSink::GenerationSink(std::vector<GenerationsFile>* files, const ProcessGroup* group,
                               std::vector<EvalRunReport>* reports, int64_t samples,
                               int64_t total_units, std::function<void(int64_t, int64_t)> progress,
                               std::string where)
    : files_(files),
      group_(group && group->size() > 1 ? group : nullptr),
      reports_(reports),
      samples_(samples),
      total_units_(total_units),
      progress_(std::move(progress)),
      where_(std::move(where)) {
  for (const auto& r : *reports_) finished_ += r.prompts_resumed;
}

void GenerationSink::deliver(int64_t batch, const std::vector<TrackLines>& parts) {
  if (!group_) {
    write(parts);
  } else if (group_->is_root()) {
    receive_through(batch);
    write(parts);
    next_to_write_ = batch + 1;
  } else {
    group_->send(encode_track_lines(batch, parts), 0);
    count(parts);
  }
}

void GenerationSink::finish(int64_t num_batches) {
  if (group_ && group_->is_root()) receive_through(num_batches);
}

// Before rank 0's own batch `stop` come every earlier batch (messages from one rank
// arrive in order).
void GenerationSink::receive_through(int64_t stop) {
  for (; next_to_write_ < stop; ++next_to_write_) {
    const int owner = batch_owner(next_to_write_, group_->size());
    write(
        decode_track_lines(group_->receive(owner), next_to_write_, files_->size(), owner, where_));
  }
}

void GenerationSink::write(const std::vector<TrackLines>& parts) {
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t t = 0; t < parts.size(); ++t) {
    if (parts[t].lines.empty()) continue;
    (*files_)[t].append(parts[t].lines);
    finished_ += parts[t].prompts;
  }
  write_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  count(parts);
  if (progress_) progress_(finished_, total_units_);
}

void GenerationSink::count(const std::vector<TrackLines>& parts) {
  for (size_t t = 0; t < parts.size(); ++t) {
    auto& r = (*reports_)[t];
    r.prompts_done += parts[t].prompts;
    r.generations += parts[t].prompts * samples_;
    r.unscored += parts[t].unscored;
  }
  ++batches_;
}

std::string encode_track_lines(int64_t batch, const std::vector<TrackLines>& parts) {
  nlohmann::json tracks = nlohmann::json::array();
  for (const auto& p : parts) tracks.push_back({p.prompts, p.unscored, p.lines});
  const nlohmann::json message = {{"batch", batch}, {"tracks", std::move(tracks)}};
  const std::vector<uint8_t> bytes = nlohmann::json::to_cbor(message);
  return std::string(bytes.begin(), bytes.end());
}

std::vector<TrackLines> decode_track_lines(const std::string& message, int64_t expected_batch,
                                           size_t tracks, int sender, const std::string& where) {
  const auto j = nlohmann::json::from_cbor(message, true, false);  // discarded when malformed
  DESTEIN_CHECK_IO(j.is_object() && j.contains("batch") && j["batch"].is_number_integer() &&
                       j.contains("tracks") && j["tracks"].is_array(),
                   "{}: unreadable message from rank {}", where, sender);
  const auto& parts_json = j["tracks"];
  DESTEIN_CHECK_IO(j["batch"].get<int64_t>() == expected_batch && parts_json.size() == tracks,
                   "{}: rank {} sent batch {} of {} tracks where batch {} of {} was expected",
                   where, sender, j["batch"].get<int64_t>(), parts_json.size(), expected_batch,
                   tracks);
  std::vector<TrackLines> parts(tracks);
  for (size_t t = 0; t < tracks; ++t) {
    const auto& p = parts_json[t];
    DESTEIN_CHECK_IO(p.is_array() && p.size() == 3 && p[0].is_number_integer() &&
                         p[1].is_number_integer() && p[2].is_string(),
                     "{}: unreadable message from rank {} (track {})", where, sender, t);
    parts[t].prompts = p[0].get<int64_t>();
    parts[t].unscored = p[1].get<int64_t>();
    parts[t].lines = p[2].get<std::string>();
  }
  return parts;
}

}  // namespace destein
