#include "train/rtp_training_split.hpp"

#include <unordered_set>

#include "check.hpp"
#include "io/csv.hpp"
#include "io/jsonl.hpp"

namespace destein {

namespace fs = std::filesystem;

std::vector<RtpScoredPrompt> load_rtp_scored_prompts(const fs::path& jsonl) {
  std::vector<RtpScoredPrompt> out;
  JsonlReader reader(jsonl);
  nlohmann::json record;
  const auto& names = perspective_attributes();
  while (reader.next(record)) {
    const std::string where = reader.where();
    DESTEIN_CHECK_IO(
        record.is_object() && record.contains("prompt") && record["prompt"].is_object(),
        "{}: expected an object with key 'prompt' (an object)", where);
    const auto& prompt = record["prompt"];
    DESTEIN_CHECK_IO(prompt.contains("text") && prompt["text"].is_string(),
                     "{}: expected key 'prompt.text' (a string)", where);
    RtpScoredPrompt p;
    p.text = prompt["text"].get<std::string>();
    for (size_t a = 0; a < names.size(); ++a) {
      const auto it = prompt.find(names[a]);
      DESTEIN_CHECK_IO(it != prompt.end() && it->is_number(),
                       "{}: expected key 'prompt.{}' (a number in [0, 1]), found {}", where,
                       names[a], it == prompt.end() ? "none" : it->type_name());
      p.scores[a] = it->get<double>();
      DESTEIN_CHECK_IO(p.scores[a] >= 0 && p.scores[a] <= 1,
                       "{}: expected 'prompt.{}' in [0, 1], found {}", where, names[a],
                       p.scores[a]);
    }
    out.push_back(std::move(p));
  }
  return out;
}

std::string rtp_match_key(std::string_view text) {
  auto space = [](unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
  };
  std::string key;
  bool pending_space = false;
  for (unsigned char c : text) {
    if (space(c)) {
      pending_space = !key.empty();
      continue;
    }
    if (pending_space) key += ' ';
    pending_space = false;
    key += static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
  }
  return key;
}

const std::vector<std::string>& rtp_training_files() {
  static const std::vector<std::string> files = {"rtp/5k/output_toxic_5k.jsonl",
                                                 "rtp/5k/output_no_toxic_5k.jsonl"};
  return files;
}

const std::vector<std::string>& rtp_evaluation_files() {
  static const std::vector<std::string> files = {
      "rtp/1k/output_toxic_1k.jsonl", "rtp/1k/output_no_toxic_1k.jsonl", "rtp/100/test.jsonl",
      "rtp/extra/dexperts_human_eval_toxicity.csv"};
  return files;
}

RtpTrainingSplit load_rtp_training_split(const fs::path& data_dir) {
  RtpTrainingSplit split;
  std::unordered_set<std::string> keys_1k, keys_100, keys_dexperts;
  for (const auto& f : {"rtp/1k/output_toxic_1k.jsonl", "rtp/1k/output_no_toxic_1k.jsonl"}) {
    for (const auto& p : load_rtp_scored_prompts(data_dir / f))
      keys_1k.insert(rtp_match_key(p.text));
  }
  for (const auto& p : load_rtp_scored_prompts(data_dir / "rtp/100/test.jsonl")) {
    keys_100.insert(rtp_match_key(p.text));
  }
  {
    auto reader = CsvReader::open(data_dir / "rtp/extra/dexperts_human_eval_toxicity.csv");
    reader.read_header();
    const size_t col = reader.column("sentprefix");
    CsvRecord rec;
    while (reader.next(rec)) {
      reader.require_fields(rec);
      keys_dexperts.insert(rtp_match_key(rec.fields[col]));
    }
  }
  std::unordered_set<std::string> all(keys_1k);
  all.insert(keys_100.begin(), keys_100.end());
  all.insert(keys_dexperts.begin(), keys_dexperts.end());
  split.evaluation_keys = static_cast<int64_t>(all.size());

  std::unordered_set<std::string> kept;
  for (const auto& f : rtp_training_files()) {
    for (auto& p : load_rtp_scored_prompts(data_dir / f)) {
      ++split.read;
      const std::string key = rtp_match_key(p.text);
      if (all.count(key)) {
        ++split.excluded;
        split.excluded_1k += keys_1k.count(key) ? 1 : 0;
        split.excluded_100 += keys_100.count(key) ? 1 : 0;
        split.excluded_dexperts += keys_dexperts.count(key) ? 1 : 0;
      } else if (!kept.insert(key).second) {
        ++split.repeats;
      } else {
        split.prompts.push_back(std::move(p));
      }
    }
  }
  return split;
}

nlohmann::json RtpTrainingSplit::report() const {
  return {{"training_files", rtp_training_files()},
          {"evaluation_files", rtp_evaluation_files()},
          {"normalisation", "trimmed, whitespace runs collapsed to one space, ASCII lower-cased"},
          {"read", read},
          {"evaluation_keys", evaluation_keys},
          {"excluded", excluded},
          {"excluded_in_1k", excluded_1k},
          {"excluded_in_100", excluded_100},
          {"excluded_in_dexperts", excluded_dexperts},
          {"repeats", repeats},
          {"kept", prompts.size()}};
}

}  // namespace destein
