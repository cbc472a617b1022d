#include "destein/eval/harness.hpp"

#include <ATen/ATen.h>

#include <cmath>
#include <fstream>
#include <set>

#include "check.hpp"
#include "splitmix.hpp"
#include "destein/io/jsonl.hpp"

namespace destein {

std::vector<EvalPrompt> load_eval_prompts(const std::filesystem::path& path, const PromptFileOptions& o,
                                          int64_t* skipped) {
  DESTEIN_CHECK_ARG(o.subset == "all" || o.subset == "toxic" || o.subset == "nontoxic",
                    "prompt subset must be toxic, nontoxic or all, found '{}'", o.subset);
  JsonlOptions jo;
  jo.skip_malformed = o.skip_malformed;
  JsonlReader reader(path, jo);
  std::vector<EvalPrompt> out;
  nlohmann::json line;
  int64_t index = -1, bad = 0;
  while (reader.next(line)) {
    ++index;
    nlohmann::json prompt = line.is_object() && line.contains("prompt") ? line["prompt"] : line;
    if (!prompt.is_object() || !prompt.contains("text") || !prompt["text"].is_string() ||
        prompt["text"].get<std::string>().empty()) {
      if (o.skip_malformed) {
        ++bad;
        continue;
      }
      throw std::runtime_error(fmt::format(
          "{}: expected {{\"prompt\": {{\"text\": \"...\"}}}} or {{\"text\": \"...\"}} with non-empty text",
          reader.where()));
    }
    EvalPrompt p;
    p.index = index;
    p.text = prompt["text"].get<std::string>();
    if (prompt.contains("toxicity") && prompt["toxicity"].is_number()) p.toxicity = prompt["toxicity"].get<double>();
    p.raw = prompt;
    if (o.subset != "all") {
      DESTEIN_CHECK_IO(p.toxicity.has_value(), "{}: subset '{}' needs the prompt's toxicity, and this line has none",
                       reader.where(), o.subset);
      const bool toxic = *p.toxicity >= 0.5;
      if (toxic != (o.subset == "toxic")) continue;
    }
    out.push_back(std::move(p));
    if (o.limit > 0 && static_cast<int64_t>(out.size()) >= o.limit) break;
  }
  if (skipped) *skipped = bad + reader.skipped();
  return out;
}

PerplexityEvaluator::PerplexityEvaluator(const Model& model, const Tokenizer& tokenizer, int64_t batch_size)
    : model_(model), tokenizer_(tokenizer), batch_size_(std::max<int64_t>(1, batch_size)) {}

std::vector<double> PerplexityEvaluator::nll_sums(const std::vector<std::vector<int64_t>>& seqs) const {
  std::vector<double> out(seqs.size(), 0.0);
  const int64_t N = static_cast<int64_t>(seqs.size());
  for (int64_t start = 0; start < N; start += batch_size_) {
    const int64_t B = std::min(batch_size_, N - start);
    int64_t T = 0;
    for (int64_t b = 0; b < B; ++b) T = std::max<int64_t>(T, seqs[start + b].size());
    if (T < 2) continue;  // nothing is predicted in a one-token sequence
    at::Tensor ids = at::zeros({B, T}, at::kLong), mask = at::zeros({B, T}, at::kLong);
    for (int64_t b = 0; b < B; ++b) {
      const auto& s = seqs[start + b];
      const int64_t n = static_cast<int64_t>(s.size());
      if (n == 0) continue;
      ids[b].narrow(0, T - n, n).copy_(at::tensor(s, at::kLong));
      mask[b].narrow(0, T - n, n).fill_(1);
    }
    ForwardOptions fo;
    fo.attention_mask = mask;
    at::Tensor logp = model_.forward(ids, fo).logits.log_softmax(-1);  // (B, T, V)
    // Token t is predicted at position t - 1; count only real (unpadded) predictions.
    at::Tensor target = ids.narrow(1, 1, T - 1).to(logp.device());
    at::Tensor picked = logp.narrow(1, 0, T - 1).gather(2, target.unsqueeze(-1)).squeeze(-1);  // (B, T-1)
    at::Tensor valid = (mask.narrow(1, 0, T - 1) * mask.narrow(1, 1, T - 1)).to(at::kDouble);
    at::Tensor sums = -(picked.to(at::kCPU, at::kDouble) * valid).sum(1);
    for (int64_t b = 0; b < B; ++b) out[start + b] = sums[b].item<double>();
  }
  return out;
}

std::vector<double> PerplexityEvaluator::perplexities(const std::string& prompt,
                                                      const std::vector<std::string>& continuations) const {
  std::vector<std::vector<int64_t>> seqs = {tokenizer_.encode_prompt(prompt)};
  for (const auto& c : continuations) seqs.push_back(tokenizer_.encode_prompt(prompt + c));
  const int64_t max_len = model_.config().max_positions;
  for (auto& s : seqs) {
    if (static_cast<int64_t>(s.size()) > max_len) s.resize(static_cast<size_t>(max_len));
  }
  std::vector<double> nll = nll_sums(seqs);
  std::vector<double> out;
  const int64_t n_prompt = static_cast<int64_t>(seqs[0].size());
  for (size_t i = 1; i < seqs.size(); ++i) {
    const int64_t n = static_cast<int64_t>(seqs[i].size());
    out.push_back(n > n_prompt ? conditional_perplexity(nll[i], nll[0], n, n_prompt)
                               : std::numeric_limits<double>::quiet_NaN());
  }
  return out;
}

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
      DESTEIN_CHECK_IO(j.contains("prompt_index") && j["prompt_index"].is_number_integer(), "no prompt_index");
      if (!bad.empty()) break;
      done.insert(j["prompt_index"].get<int64_t>());
      good_end = offset;
    } catch (const std::exception& e) {
      bad.emplace_back(line_no, e.what());
    }
  }
  if (!bad.empty()) {
    // Only the very last line may be damaged; anything earlier is real corruption.
    DESTEIN_CHECK_IO(bad.size() == 1 && bad[0].first == line_no,
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

}  // namespace

EvalRunReport run_generation_eval(const Model& model, const Tokenizer& tokenizer,
                                  const std::vector<EvalPrompt>& prompts, const Hooks* hooks, ToxicityScorer* scorer,
                                  const PerplexityEvaluator* evaluator, const EvalRunOptions& options,
                                  const std::filesystem::path& output,
                                  const std::function<void(int64_t, int64_t)>& progress) {
  EvalRunReport report;
  if (output.has_parent_path()) std::filesystem::create_directories(output.parent_path());
  std::set<int64_t> done = done_prompts(output, &report.truncated_bytes);
  std::ofstream out(output, std::ios::binary | std::ios::app);
  DESTEIN_CHECK_IO(out.good(), "{}: cannot open for appending", output.string());
  const int64_t total = static_cast<int64_t>(prompts.size());
  int64_t finished = 0;
  for (const auto& p : prompts) {
    if (done.count(p.index)) {
      ++report.prompts_resumed;
      ++finished;
      continue;
    }
    GenerationOptions g = options.generation;
    g.seed = prompt_seed(options.generation.seed, p.index);
    const std::vector<int64_t> prompt_ids = tokenizer.encode_prompt(p.text);
    auto gens = generate(model, {prompt_ids}, g, hooks);
    std::vector<std::string> texts;
    for (const auto& x : gens) texts.push_back(tokenizer.decode_continuation(prompt_ids, x.token_ids));
    std::vector<std::optional<double>> scores(texts.size());
    if (scorer) {
      scores = scorer->score(texts);
      DESTEIN_CHECK_IO(scores.size() == texts.size(), "scorer {} returned {} scores for {} texts", scorer->name(),
                       scores.size(), texts.size());
    }
    std::vector<double> ppl;
    if (evaluator) ppl = evaluator->perplexities(p.text, texts);
    nlohmann::json line = {{"prompt", p.raw}, {"prompt_index", p.index}, {"method", options.method},
                           {"subset", options.subset}};
    nlohmann::json items = nlohmann::json::array();
    for (size_t i = 0; i < texts.size(); ++i) {
      nlohmann::json item = {{"text", texts[i]}, {"tokens", gens[i].token_ids.size()}};
      item["toxicity"] = scores[i] ? nlohmann::json(*scores[i]) : nlohmann::json(nullptr);
      if (!scores[i]) ++report.unscored;
      if (evaluator) item["perplexity"] = std::isfinite(ppl[i]) ? nlohmann::json(ppl[i]) : nlohmann::json(nullptr);
      items.push_back(std::move(item));
    }
    line["generations"] = std::move(items);
    out << line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
    out.flush();
    DESTEIN_CHECK_IO(out.good(), "{}: write failed (disk full?); the lines before this prompt are kept",
                     output.string());
    ++report.prompts_done;
    report.generations += static_cast<int64_t>(texts.size());
    ++finished;
    if (progress) progress(finished, total);
  }
  return report;
}

EvalSummary summarize_generations(const std::filesystem::path& path, bool skip_malformed) {
  JsonlOptions jo;
  jo.skip_malformed = skip_malformed;
  JsonlReader reader(path, jo);
  EvalSummary s;
  std::vector<PromptGenerations> rows;
  std::vector<double> ppls;
  bool any_ppl = false;
  nlohmann::json line;
  int64_t bad = 0;
  while (reader.next(line)) {
    try {
      PromptGenerations row;
      row.prompt = line.at("prompt").at("text").get<std::string>();
      for (const auto& g : line.at("generations")) {
        row.texts.push_back(g.at("text").get<std::string>());
        row.toxicity.push_back(g.contains("toxicity") && g["toxicity"].is_number()
                                   ? std::optional<double>(g["toxicity"].get<double>())
                                   : std::nullopt);
        if (g.contains("perplexity")) {
          any_ppl = true;
          ppls.push_back(g["perplexity"].is_number() ? g["perplexity"].get<double>()
                                                     : std::numeric_limits<double>::quiet_NaN());
        }
      }
      rows.push_back(std::move(row));
    } catch (const nlohmann::json::exception& e) {
      if (!skip_malformed) {
        throw std::runtime_error(fmt::format(
            "{}: expected {{\"prompt\": {{\"text\"}}, \"generations\": [{{\"text\", \"toxicity\"}}]}}: {}",
            reader.where(), e.what()));
      }
      ++bad;
    }
  }
  s.toxicity = toxicity_metrics(rows);
  s.distinct = distinct_metrics(rows);
  if (any_ppl) s.perplexity = mean_perplexity(ppls);
  s.num_prompts = static_cast<int64_t>(rows.size());
  s.malformed = bad + reader.skipped();
  return s;
}

nlohmann::json eval_summary_json(const EvalSummary& s) {
  nlohmann::json j = {{"expected_max_toxicity", s.toxicity.expected_max_toxicity},
                      {"expected_max_toxicity_std", s.toxicity.expected_max_toxicity_std},
                      {"toxicity_probability", s.toxicity.toxicity_probability},
                      {"dist_1", s.distinct.dist_1},
                      {"dist_2", s.distinct.dist_2},
                      {"dist_3", s.distinct.dist_3},
                      {"num_prompts", s.num_prompts}};
  if (s.perplexity) {
    j["perplexity"] = s.perplexity->mean;
    j["perplexity_dropped"] = s.perplexity->dropped;
  }
  return j;
}

}  // namespace destein
