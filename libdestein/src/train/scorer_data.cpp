#include "train/scorer_data.hpp"

#include <cstdlib>
#include <fstream>
#include <map>

#include "check.hpp"
#include "io/csv.hpp"
#include "io/jsonl.hpp"

namespace destein {

namespace {

namespace fs = std::filesystem;

const std::vector<LabeledSetSpec> kSets = {
    {"detox_civil_comments_dev",
     {"classifier/detox_civil_comments/dev_toxic", "classifier/detox_civil_comments/dev_normal"},
     LabeledSetRole::kTrain,
     "file name: *_toxic = 1, *_normal = 0"},
    {"davidson_hate_offensive",
     {"classifier/davidson_hate_offensive/labeled_data.csv"},
     LabeledSetRole::kTrain,
     "class 0 (hate) or 1 (offensive) = 1, class 2 (neither) = 0"},
    {"olid",
     {"classifier/olid/olid-training-v1.0.tsv"},
     LabeledSetRole::kTrain,
     "subtask_a: OFF = 1, NOT = 0"},
    {"toxic_spans",
     {"classifier/toxic_spans/comments.csv", "classifier/toxic_spans/annotations.csv"},
     LabeledSetRole::kTrain,
     "majority of the annotators' 'not toxic': False = 1, True = 0, ties left out"},
    {"paradetox",
     {"paradetox/paradetox.tsv"},
     LabeledSetRole::kTrain,
     "column toxic = 1, each non-empty neutral1..3 = 0"},
    {"paradetox_cannot_rewrite",
     {"paradetox/paradetox_cannot_rewrite.tsv"},
     LabeledSetRole::kTrain,
     "reasons with toxic_content and not not_toxic = 1, not_toxic and not toxic_content = 0, "
     "others left out"},
    {"lexicons",
     {"lexicons/list_of_naughty_and_bad_words.txt", "lexicons/condbert_toxic_words.txt"},
     LabeledSetRole::kTrain,
     "every entry (a word or phrase) = 1"},
    {"detox_civil_comments_test",
     {"classifier/detox_civil_comments/test_10k_toxic",
      "classifier/detox_civil_comments/test_10k_normal"},
     LabeledSetRole::kHeldOut,
     "file name: *_toxic = 1, *_normal = 0"},
    {"wiki_toxicity_nonfuzzed",
     {"classifier/wiki_toxicity_nonfuzzed/toxicity_nonfuzzed_testset.csv"},
     LabeledSetRole::kHeldOut,
     "toxic: True = 1, False = 0"},
    {"jigsaw2018_sample",
     {"classifier/jigsaw2018_sample/test_examples.csv"},
     LabeledSetRole::kHeldOut,
     "column toxic: 1 = 1, 0 = 0"},
    {"hatecheck",
     {"classifier/hatecheck/test_suite_cases.csv"},
     LabeledSetRole::kHeldOut,
     "label_gold: hateful = 1, non-hateful = 0"},
    {"toxigen",
     {"classifier/toxigen/toxigen_prompt_sentences.tsv"},
     LabeledSetRole::kHeldOut,
     "label: hate = 1, neutral = 0"},
};

// Maps a field to a label through `table`; an unknown value is an error naming the place.
int label_of(const std::string& value, const std::map<std::string, int>& table,
             const std::string& where, const std::string& column) {
  auto it = table.find(value);
  if (it != table.end()) return it->second;
  std::string known;
  for (const auto& [k, v] : table) known += (known.empty() ? "'" : ", '") + k + "'";
  DESTEIN_CHECK_IO(false, "{}: column '{}': expected one of {}, found '{}'", where, column, known,
                   value);
  return 0;
}

void load_lines(const fs::path& path, int label, const std::string& source,
                std::vector<LabeledText>& out) {
  std::ifstream in(path, std::ios::binary);
  DESTEIN_CHECK_IO(in.good(), "cannot open '{}' for reading", path.string());
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    out.push_back({line, label, source});
  }
  DESTEIN_CHECK_IO(!in.bad(), "error while reading '{}'", path.string());
}

// Reads a delimited file with a header and calls fn(reader, record, column indices) for
// each row, after checking that the row has every requested column.
template <typename Fn>
void for_each_row(const fs::path& path, CsvOptions options, const std::vector<std::string>& columns,
                  Fn&& fn) {
  auto reader = CsvReader::open(path, options);
  reader.read_header();
  std::vector<size_t> index;
  size_t needed = 0;
  for (const auto& c : columns) {
    index.push_back(reader.column(c));
    needed = std::max(needed, index.back() + 1);
  }
  CsvRecord record;
  while (reader.next(record)) {
    reader.require_fields(record, needed);
    fn(reader, record, index);
  }
}

std::vector<LabeledText> load_toxic_spans(const fs::path& comments, const fs::path& annotations,
                                          const std::string& source) {
  // Per comment: annotators who said "not toxic" minus those who did not.
  std::map<std::string, int> vote;
  for_each_row(annotations, {}, {"comment_id", "not toxic"},
               [&](const CsvReader& r, const CsvRecord& rec, const std::vector<size_t>& i) {
                 int not_toxic = label_of(rec.fields[i[1]], {{"True", 1}, {"False", 0}},
                                          r.where(rec), "not toxic");
                 vote[rec.fields[i[0]]] += not_toxic ? 1 : -1;
               });
  std::vector<LabeledText> out;
  for_each_row(comments, {}, {"comment_id", "comment_text"},
               [&](const CsvReader&, const CsvRecord& rec, const std::vector<size_t>& i) {
                 auto it = vote.find(rec.fields[i[0]]);
                 if (it == vote.end() || it->second == 0) return;
                 out.push_back({rec.fields[i[1]], it->second < 0 ? 1 : 0, source});
               });
  return out;
}

std::vector<LabeledText> load_cannot_rewrite(const fs::path& path, const std::string& source) {
  CsvOptions tsv;
  tsv.separator = '\t';
  std::vector<LabeledText> out;
  for_each_row(path, tsv, {"INPUT:toxic_comment", "OUTPUT:reasons"},
               [&](const CsvReader& r, const CsvRecord& rec, const std::vector<size_t>& i) {
                 std::string text = rec.fields[i[0]];
                 // The raw file quotes every comment twice over: """text""".
                 if (text.size() >= 2 && text.front() == '"' && text.back() == '"') {
                   text = text.substr(1, text.size() - 2);
                 }
                 nlohmann::json reasons;
                 try {
                   reasons = nlohmann::json::parse(rec.fields[i[1]]);
                 } catch (const nlohmann::json::exception&) {
                   DESTEIN_CHECK_IO(false,
                                    "{}: column 'OUTPUT:reasons': expected a JSON object, found "
                                    "'{}'",
                                    r.where(rec), rec.fields[i[1]]);
                 }
                 DESTEIN_CHECK_IO(reasons.is_object(),
                                  "{}: column 'OUTPUT:reasons': expected a JSON object, found '{}'",
                                  r.where(rec), rec.fields[i[1]]);
                 const bool toxic = reasons.value("toxic_content", false);
                 const bool not_toxic = reasons.value("not_toxic", false);
                 if (toxic != not_toxic) out.push_back({text, toxic ? 1 : 0, source});
               });
  return out;
}

}  // namespace

const std::vector<LabeledSetSpec>& labeled_sets() { return kSets; }

const LabeledSetSpec& labeled_set(std::string_view name) {
  for (const auto& spec : kSets) {
    if (spec.name == name) return spec;
  }
  std::string known;
  for (const auto& spec : kSets) known += (known.empty() ? "" : ", ") + spec.name;
  DESTEIN_CHECK_ARG(false, "unknown labelled set '{}': expected one of {}{}", name, known,
                    name.rfind("rtp", 0) == 0 ? " (rtp/ is evaluation material, never a labelled "
                                                "set for training)"
                                              : "");
  return kSets.front();
}

std::vector<LabeledText> load_labeled_set(const fs::path& data_dir, std::string_view name) {
  const LabeledSetSpec& spec = labeled_set(name);
  std::vector<fs::path> files;
  for (const auto& f : spec.files) {
    fs::path p = data_dir / f;
    DESTEIN_CHECK_IO(fs::is_regular_file(p), "set '{}': expected the file '{}', found none{}",
                     spec.name, p.string(),
                     fs::is_directory(data_dir) ? "" : " (the data folder does not exist)");
    files.push_back(p);
  }
  std::vector<LabeledText> out;
  const std::string& source = spec.name;
  CsvOptions csv;
  CsvOptions tsv;
  tsv.separator = '\t';
  CsvOptions raw_tsv = tsv;  // written without quoting
  raw_tsv.quoting = false;

  if (name == "detox_civil_comments_dev" || name == "detox_civil_comments_test") {
    load_lines(files[0], 1, source, out);
    load_lines(files[1], 0, source, out);
  } else if (name == "lexicons") {
    load_lines(files[0], 1, source, out);
    load_lines(files[1], 1, source, out);
  } else if (name == "davidson_hate_offensive") {
    for_each_row(files[0], csv, {"class", "tweet"},
                 [&](const CsvReader& r, const CsvRecord& rec, const std::vector<size_t>& i) {
                   int label = label_of(rec.fields[i[0]], {{"0", 1}, {"1", 1}, {"2", 0}},
                                        r.where(rec), "class");
                   out.push_back({rec.fields[i[1]], label, source});
                 });
  } else if (name == "olid") {
    for_each_row(files[0], raw_tsv, {"tweet", "subtask_a"},
                 [&](const CsvReader& r, const CsvRecord& rec, const std::vector<size_t>& i) {
                   int label = label_of(rec.fields[i[1]], {{"OFF", 1}, {"NOT", 0}}, r.where(rec),
                                        "subtask_a");
                   out.push_back({sanitize_utf8(rec.fields[i[0]]), label, source});
                 });
  } else if (name == "toxic_spans") {
    out = load_toxic_spans(files[0], files[1], source);
  } else if (name == "paradetox") {
    for_each_row(files[0], tsv, {"toxic", "neutral1", "neutral2", "neutral3"},
                 [&](const CsvReader&, const CsvRecord& rec, const std::vector<size_t>& i) {
                   out.push_back({rec.fields[i[0]], 1, source});
                   for (size_t k = 1; k < 4; ++k) {
                     if (!rec.fields[i[k]].empty()) out.push_back({rec.fields[i[k]], 0, source});
                   }
                 });
  } else if (name == "paradetox_cannot_rewrite") {
    out = load_cannot_rewrite(files[0], source);
  } else if (name == "wiki_toxicity_nonfuzzed") {
    for_each_row(files[0], csv, {"comment", "toxic"},
                 [&](const CsvReader& r, const CsvRecord& rec, const std::vector<size_t>& i) {
                   int label = label_of(rec.fields[i[1]], {{"True", 1}, {"False", 0}}, r.where(rec),
                                        "toxic");
                   out.push_back({rec.fields[i[0]], label, source});
                 });
  } else if (name == "jigsaw2018_sample") {
    for_each_row(
        files[0], csv, {"comment_text", "toxic"},
        [&](const CsvReader& r, const CsvRecord& rec, const std::vector<size_t>& i) {
          int label = label_of(rec.fields[i[1]], {{"1", 1}, {"0", 0}}, r.where(rec), "toxic");
          out.push_back({rec.fields[i[0]], label, source});
        });
  } else if (name == "hatecheck") {
    for_each_row(files[0], csv, {"test_case", "label_gold"},
                 [&](const CsvReader& r, const CsvRecord& rec, const std::vector<size_t>& i) {
                   int label = label_of(rec.fields[i[1]], {{"hateful", 1}, {"non-hateful", 0}},
                                        r.where(rec), "label_gold");
                   out.push_back({rec.fields[i[0]], label, source});
                 });
  } else if (name == "toxigen") {
    for_each_row(files[0], raw_tsv, {"label", "text"},
                 [&](const CsvReader& r, const CsvRecord& rec, const std::vector<size_t>& i) {
                   int label = label_of(rec.fields[i[0]], {{"hate", 1}, {"neutral", 0}},
                                        r.where(rec), "label");
                   out.push_back({rec.fields[i[1]], label, source});
                 });
  }
  return out;
}

std::vector<RtpPrompt> load_rtp_prompts(const fs::path& jsonl) {
  std::vector<RtpPrompt> out;
  JsonlReader reader(jsonl);
  nlohmann::json record;
  while (reader.next(record)) {
    const std::string where = reader.where();
    DESTEIN_CHECK_IO(
        record.is_object() && record.contains("prompt") && record["prompt"].is_object(),
        "{}: expected an object with key 'prompt' (an object), found {}", where,
        record.is_object() && record.contains("prompt") ? record["prompt"].type_name()
                                                        : "no key 'prompt'");
    const auto& prompt = record["prompt"];
    DESTEIN_CHECK_IO(prompt.contains("text") && prompt["text"].is_string(),
                     "{}: expected key 'prompt.text' (a string)", where);
    DESTEIN_CHECK_IO(prompt.contains("toxicity") && prompt["toxicity"].is_number(),
                     "{}: expected key 'prompt.toxicity' (a number), found {}", where,
                     prompt.contains("toxicity") ? prompt["toxicity"].type_name() : "none");
    out.push_back({prompt["text"].get<std::string>(), prompt["toxicity"].get<double>()});
  }
  return out;
}

std::string record_text(const nlohmann::json& record, const std::string& where) {
  if (record.is_object()) {
    auto it = record.find("text");
    if (it != record.end()) {
      DESTEIN_CHECK_IO(it->is_string(), "{}: key 'text': expected a string, found {}", where,
                       it->type_name());
      return it->get<std::string>();
    }
    auto prompt = record.find("prompt");
    if (prompt != record.end() && prompt->is_object()) {
      auto t = prompt->find("text");
      DESTEIN_CHECK_IO(t != prompt->end() && t->is_string(),
                       "{}: key 'prompt.text': expected a string, found {}", where,
                       t == prompt->end() ? "none" : t->type_name());
      return t->get<std::string>();
    }
  }
  DESTEIN_CHECK_IO(false,
                   "{}: expected an object with key 'text' or 'prompt.text' (a string), found {}",
                   where, record.is_object() ? "neither key" : record.type_name());
  return {};
}

std::string sanitize_utf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  const size_t n = text.size();
  for (size_t i = 0; i < n;) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    size_t len = c < 0x80           ? 1
                 : (c >> 5) == 0x6  ? 2
                 : (c >> 4) == 0xE  ? 3
                 : (c >> 3) == 0x1E ? 4
                                    : 0;
    bool ok = len > 0 && i + len <= n;
    for (size_t k = 1; ok && k < len; ++k) {
      ok = (static_cast<unsigned char>(text[i + k]) & 0xC0) == 0x80;
    }
    if (ok && len > 1) {
      // Reject overlong forms, surrogates and code points above U+10FFFF.
      uint32_t cp = c & (0x7F >> len);
      for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (text[i + k] & 0x3F);
      static const uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
      ok = cp >= kMin[len] && cp <= 0x10FFFF && (cp < 0xD800 || cp > 0xDFFF);
    }
    if (ok) {
      out.append(text.substr(i, len));
      i += len;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

}  // namespace destein
