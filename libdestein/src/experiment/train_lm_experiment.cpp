#include "experiment/train_lm_experiment.hpp"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "check.hpp"
#include "destein/runtime/checkpoint.hpp"
#include "destein/runtime/device.hpp"
#include "destein/runtime/generate.hpp"
#include "destein/runtime/model.hpp"
#include "destein/text/tokenizer.hpp"
#include "experiment/progress.hpp"
#include "experiment/stop_request.hpp"
#include "experiment/train_lm_model_card.hpp"
#include "io/data_folder.hpp"
#include "io/file_io.hpp"
#include "io/output_lock.hpp"
#include "train/lm_corpus.hpp"
#include "train/lm_training.hpp"
#include "train/scorer_data.hpp"

namespace destein {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

[[noreturn]] void bad_key(const ConfigNode& node, const std::string& key, const std::string& what) {
  throw std::invalid_argument(
      fmt::format("{}: key {}: {}", node.where(key), node.path_of(key), what));
}

// The settings that decide the corpus and the tokenizer: a cached corpus is reused only
// when they are unchanged.
json corpus_settings(const TrainLmExperiment& c, const fs::path& data_dir) {
  json j = {{"data_dir", fs::absolute(data_dir).lexically_normal().string()},
            {"sources", c.sources},
            {"heldout_fraction", c.heldout_fraction},
            {"split_seed", c.split_seed},
            {"rtp_min_chars", c.rtp_min_chars},
            {"toxic_keep_fraction", c.toxic_keep_fraction},
            {"max_documents_per_source", c.max_documents},
            {"tokenizer",
             {{"vocab_size", c.vocab_size},
              {"model_type", c.tokenizer_type},
              {"character_coverage", c.character_coverage},
              {"input_sentence_size", c.input_sentence_size},
              {"seed", c.tokenizer_seed}}}};
  // Only when set, so that the corpora of earlier runs are still reused.
  if (c.corpus_label != "all") j["label"] = c.corpus_label;
  if (!c.init_from.empty()) {
    j["tokenizer"] = {{"from", file_fnv1a64(fs::path(c.init_from) / "tokenizer.model")}};
  }
  return j;
}

// The model folder a fine-tuning run starts from: its weights, shape and tokenizer.
struct InitialModel {
  GptShape shape;
  std::map<std::string, at::Tensor> weights;
  json identity;
  fs::path tokenizer;
};

InitialModel load_initial_model(const std::string& folder) {
  const fs::path dir(folder);
  InitialModel init;
  init.tokenizer = dir / "tokenizer.model";
  DESTEIN_CHECK_IO(fs::is_regular_file(init.tokenizer),
                   "init_from {}: no tokenizer.model there (a folder written by destein train-lm "
                   "export, e.g. models/tiny-lm)",
                   folder);
  Checkpoint ckpt = load_checkpoint(dir);
  const json& raw = ckpt.config.raw;
  DESTEIN_CHECK_IO(raw.value("model_type", "") == "gpt2",
                   "init_from {}: model_type '{}'; train-lm fine-tunes GPT-2 models only", folder,
                   raw.value("model_type", ""));
  init.shape.vocab_size = raw.at("vocab_size").get<int64_t>();
  init.shape.context = raw.at("n_positions").get<int64_t>();
  init.shape.d_model = raw.at("n_embd").get<int64_t>();
  init.shape.n_layers = raw.at("n_layer").get<int64_t>();
  init.shape.n_heads = raw.at("n_head").get<int64_t>();
  if (raw.contains("n_inner") && raw["n_inner"].is_number())
    init.shape.d_ff = raw["n_inner"].get<int64_t>();
  init.shape.norm_eps = raw.value("layer_norm_epsilon", init.shape.norm_eps);
  init.weights = std::move(ckpt.tensors);
  const fs::path weights = fs::is_regular_file(dir / "model.pt") ? dir / "model.pt" : dir;
  init.identity = {{"path", folder}, {"fnv1a64", file_fnv1a64(weights)}};
  return init;
}

int64_t count_words(const std::string& text) {
  int64_t n = 0;
  bool in_word = false;
  for (char ch : text) {
    const bool space = ch == ' ';
    if (!space && !in_word) ++n;
    in_word = !space;
  }
  return n;
}

// Stage 1: documents -> corpus/train.txt, corpus/heldout.txt (one per line) + report.
json prepare_corpus(const TrainLmExperiment& c, const fs::path& data_dir, const fs::path& dir) {
  const fs::path report_path = dir / "report.json";
  const json settings = corpus_settings(c, data_dir);
  if (fs::is_regular_file(report_path)) {
    json report = read_json_file(report_path);
    if (report.value("settings", json()) == settings) {
      fmt::print(stderr, "corpus: reusing {}\n", dir.string());
      return report;
    }
    throw std::runtime_error(fmt::format(
        "{} was prepared with other corpus or tokenizer settings than {}: train into a new output "
        "folder, or delete {} to rebuild it",
        report_path.string(), c.config_path, dir.parent_path().string()));
  }
  fs::create_directories(dir);
  std::vector<LmDocument> docs;
  json per_source = json::object();
  for (const auto& name : c.sources) {
    auto part = load_lm_source(data_dir, name);
    if (c.max_documents > 0 && static_cast<int64_t>(part.size()) > c.max_documents)
      part.resize(c.max_documents);
    int64_t words = 0;
    for (const auto& d : part) words += count_words(d.text);
    per_source[name] = {{"documents_read", part.size()}, {"words_read", words}};
    fmt::print(stderr, "corpus: {:<26} {:>8} documents {:>10} words\n", name, part.size(), words);
    for (auto& d : part) docs.push_back(std::move(d));
  }
  if (c.corpus_label != "all") {
    const int wanted = c.corpus_label == "toxic" ? 1 : 0;
    const size_t before = docs.size();
    docs.erase(std::remove_if(docs.begin(), docs.end(),
                              [&](const LmDocument& d) { return d.label != wanted; }),
               docs.end());
    fmt::print(stderr, "corpus: kept the {} documents labelled {} of {}\n", docs.size(),
               c.corpus_label, before);
    DESTEIN_CHECK_ARG(!docs.empty(),
                      "{}: corpus.label {} keeps no document: list labelled sources (e.g. olid, "
                      "davidson_hate_offensive, toxic_spans, detox_civil_comments_dev)",
                      c.config_path, c.corpus_label);
  }
  const int64_t duplicates = remove_duplicate_documents(docs);
  const int64_t toxic_dropped = thin_toxic_documents(docs, c.toxic_keep_fraction, c.split_seed);
  if (c.toxic_keep_fraction < 1.0) {
    fmt::print(stderr, "corpus: kept {:.0f}% of the documents labelled toxic: {} dropped\n",
               100 * c.toxic_keep_fraction, toxic_dropped);
  }
  const auto rtp_texts = load_rtp_prompt_texts(data_dir);
  PromptOverlapFilter filter(rtp_texts, static_cast<size_t>(c.rtp_min_chars));
  const auto t0 = std::chrono::steady_clock::now();
  OverlapReport overlap = filter.remove_overlaps(docs);
  const double overlap_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  fmt::print(
      stderr,
      "corpus: {} duplicate documents dropped; RTP overlap: {} of {} documents contain one of {} "
      "prompts ({} prompts under {} characters not searched; {:.1f} s)\n",
      duplicates, overlap.documents_removed, overlap.documents_checked, overlap.prompts_checked,
      overlap.prompts_too_short, c.rtp_min_chars, overlap_seconds);
  json matches = json::array();
  for (const auto& [prompt, source] : overlap.matches) {
    matches.push_back({{"prompt", prompt}, {"source", source}});
    fmt::print(stderr, "  removed a {} document containing the RTP prompt \"{}\"\n", source,
               prompt);
  }
  DocumentSplit split = split_documents(docs, c.heldout_fraction, c.split_seed);
  for (auto [name, part] :
       {std::pair{"train", &split.train}, std::pair{"heldout", &split.heldout}}) {
    std::string text;
    json counts = json::object();
    for (const auto& d : *part) {
      text += d.text;
      text += '\n';
      auto& entry = counts[d.source];
      if (entry.is_null()) entry = {{"documents", 0}, {"words", 0}};
      entry["documents"] = entry["documents"].get<int64_t>() + 1;
      entry["words"] = entry["words"].get<int64_t>() + count_words(d.text);
    }
    write_text_file(dir / fmt::format("{}.txt", name), text);
    for (auto& [source, entry] : counts.items()) per_source[source][name] = entry;
  }
  json report = {{"settings", settings},
                 {"sources", per_source},
                 {"duplicates_removed", duplicates},
                 {"toxic_labelled_dropped", toxic_dropped},
                 {"train_documents", split.train.size()},
                 {"heldout_documents", split.heldout.size()},
                 {"rtp_overlap",
                  {{"rtp_prompts_read", rtp_texts.size()},
                   {"prompts_checked", overlap.prompts_checked},
                   {"prompts_too_short", overlap.prompts_too_short},
                   {"min_chars", c.rtp_min_chars},
                   {"documents_checked", overlap.documents_checked},
                   {"documents_removed", overlap.documents_removed},
                   {"matches", matches}}}};
  write_text_file(report_path, report.dump(2) + "\n");  // last: marks the stage complete
  return report;
}

// Stage 2: the SentencePiece model, trained on the training documents only.
fs::path prepare_tokenizer(const TrainLmExperiment& c, const fs::path& out, int threads) {
  const fs::path model = out / "tokenizer.model";
  if (fs::is_regular_file(model)) {
    fmt::print(stderr, "tokenizer: reusing {}\n", model.string());
    return model;
  }
  if (!c.init_from.empty()) {
    // Fine-tuning keeps the model's own tokenizer, byte for byte.
    fs::copy_file(fs::path(c.init_from) / "tokenizer.model", out / "tokenizer.model.tmp",
                  fs::copy_options::overwrite_existing);
    fs::rename(out / "tokenizer.model.tmp", model);
    fmt::print(stderr, "tokenizer: {}'s\n", c.init_from);
    return model;
  }
  const fs::path prefix = out / "tokenizer.tmp";
  fmt::print(stderr, "tokenizer: training a {}-piece SentencePiece {} model ...\n", c.vocab_size,
             c.tokenizer_type);
  // <s> = 1 starts every document and every prompt, </s> = 2 ends documents; no padding id.
  train_sentencepiece(fmt::format(
      "--input={} --model_prefix={} --vocab_size={} --model_type={} --character_coverage={} "
      "--byte_fallback=true --split_digits=true --input_sentence_size={} "
      "--shuffle_input_sentence=true "
      "--max_sentence_length=16384 --random_seed={} --num_threads={} --unk_id=0 --bos_id=1 "
      "--eos_id=2 "
      "--pad_id=-1 --minloglevel=1",
      (out / "corpus" / "train.txt").string(), prefix.string(), c.vocab_size, c.tokenizer_type,
      c.character_coverage, c.input_sentence_size, c.tokenizer_seed, std::max(1, threads)));
  fs::rename(prefix.string() + ".vocab", out / "tokenizer.vocab");
  fs::rename(prefix.string() + ".model", model);
  return model;
}

std::vector<int32_t> read_tokens(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in.good())
    throw std::runtime_error(fmt::format("cannot open '{}' for reading", path.string()));
  const auto bytes = fs::file_size(path);
  if (bytes % sizeof(int32_t) != 0) {
    throw std::runtime_error(
        fmt::format("{}: {} bytes is not a whole number of int32 tokens (truncated?); "
                    "delete it to re-tokenize",
                    path.string(), bytes));
  }
  std::vector<int32_t> ids(bytes / sizeof(int32_t));
  in.read(reinterpret_cast<char*>(ids.data()), static_cast<std::streamsize>(bytes));
  if (!in.good()) throw std::runtime_error(fmt::format("failed reading '{}'", path.string()));
  return ids;
}

// Stage 3: [BOS] document [EOS] for every document of a split, as one int32 stream. The
// cache is reused only when `<tokens>.json` says it came from this tokenizer and text.
std::vector<int32_t> prepare_tokens(const fs::path& text_file, const fs::path& token_file,
                                    const Tokenizer& tok, const fs::path& tokenizer_file) {
  const fs::path stamp_file = token_file.string() + ".json";
  const nlohmann::json stamp = {{"tokenizer", file_fnv1a64(tokenizer_file)},
                                {"text", file_fnv1a64(text_file)}};
  if (fs::is_regular_file(token_file) && fs::is_regular_file(stamp_file) &&
      read_json_file(stamp_file) == stamp) {
    return read_tokens(token_file);
  }
  std::ifstream in(text_file, std::ios::binary);
  if (!in.good())
    throw std::runtime_error(fmt::format("cannot open '{}' for reading", text_file.string()));
  const int64_t bos = *tok.bos_id(), eos = *tok.eos_id();
  std::vector<int32_t> ids;
  std::string line;
  const auto total = static_cast<int64_t>(fs::file_size(text_file));
  ProgressBar bar("tokenize " + text_file.filename().string(), total, "bytes");
  int64_t done = 0;
  while (std::getline(in, line)) {
    done += static_cast<int64_t>(line.size()) + 1;
    ids.push_back(static_cast<int32_t>(bos));
    for (int64_t id : tok.encode(line)) ids.push_back(static_cast<int32_t>(id));
    ids.push_back(static_cast<int32_t>(eos));
    if ((done & 0xffff) < static_cast<int64_t>(line.size()) + 1) bar.update(done);
  }
  bar.update(total);
  bar.finish();
  write_file_atomically(token_file, [&](const fs::path& tmp) {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(ids.data()),
              static_cast<std::streamsize>(ids.size() * sizeof(int32_t)));
    out.close();
    if (!out.good())
      throw std::runtime_error(fmt::format("failed writing '{}' (disk full?)", tmp.string()));
  });
  write_text_file(stamp_file, stamp.dump(2) + "\n");
  return ids;
}

// Weights as they will be stored, plus reference logits computed by the training forward
// from those very (rounded) weights: `destein verify` on the export then checks the
// inference runtime against the trainer.
std::map<std::string, at::Tensor> export_weights(const Gpt2Trainable& model, c10::ScalarType dtype,
                                                 const std::vector<int32_t>& heldout,
                                                 ReferenceLogits& reference) {
  at::NoGradGuard no_grad;
  std::map<std::string, at::Tensor> stored;
  for (const auto& [name, t] : model.parameters()) stored[name] = t.detach().to(dtype).contiguous();
  Gpt2Trainable rounded(model.shape(), stored);
  reference.source =
      fmt::format("destein train-lm training forward ({} weights)", dtype_name(dtype));
  for (int64_t len : {int64_t{8}, int64_t{24}, std::min<int64_t>(64, model.shape().context)}) {
    std::vector<int64_t> ids(heldout.begin(), heldout.begin() + len);
    at::Tensor logits =
        rounded.logits(at::tensor(ids, at::kLong).unsqueeze(0)).select(1, len - 1).squeeze(0);
    logits = logits.contiguous();
    reference.inputs.push_back(ids);
    reference.last_logits.emplace_back(logits.data_ptr<float>(),
                                       logits.data_ptr<float>() + logits.numel());
  }
  return stored;
}

// Continuations of the card's sample prompts from the exported checkpoint, through the
// inference runtime (" ⏎" marks one that ended with </s>).
std::vector<std::pair<std::string, std::vector<std::string>>> sample_continuations(
    const TrainLmExperiment& c, const fs::path& checkpoint, const Tokenizer& tok,
    int threads_used) {
  ModelOptions mopts;
  mopts.threads = threads_used;
  auto model = load_model(checkpoint, mopts);
  GenerationOptions g;
  g.max_new_tokens = c.sample_tokens;
  g.num_samples = c.samples_per_prompt;
  g.top_p = 0.9;
  g.seed = c.sample_seed;
  std::vector<std::vector<int64_t>> prompt_ids;
  for (const auto& p : c.sample_prompts) prompt_ids.push_back(tok.encode_prompt(p));
  auto gens = generate(*model, prompt_ids, g);
  std::vector<std::pair<std::string, std::vector<std::string>>> samples;
  for (size_t i = 0; i < c.sample_prompts.size(); ++i) samples.push_back({c.sample_prompts[i], {}});
  for (const auto& gen : gens) {
    const std::string text =
        tok.decode_continuation(prompt_ids[static_cast<size_t>(gen.prompt_index)], gen.token_ids);
    samples[static_cast<size_t>(gen.prompt_index)].second.push_back(
        text + (gen.stopped_at_eos ? " ⏎" : ""));
  }
  return samples;
}

// The export folder: the model in the export dtype beside its tokenizer, its held-out loss
// and samples, training.json and the model card. Returns the exported held-out loss.
double export_trained_model(const TrainLmExperiment& c, LmTrainer& trainer,
                            const LmTrainResult& result, const json& report, const Tokenizer& tok,
                            const fs::path& tok_path, const std::vector<int32_t>& train_ids,
                            const std::vector<int32_t>& heldout_ids, int threads_used) {
  const auto bos = tok.bos_id(), eos = tok.eos_id();
  const fs::path ex(c.export_dir);
  fs::create_directories(ex);
  const c10::ScalarType dtype = parse_dtype(c.export_dtype);
  ReferenceLogits ex_reference;
  auto stored = export_weights(trainer.model(), dtype, heldout_ids, ex_reference);
  save_checkpoint(ex / "model.pt", gpt2_hf_config(c.train.shape, bos, eos), stored, ex_reference);
  fs::copy_file(tok_path, ex / "tokenizer.model", fs::copy_options::overwrite_existing);

  // Held-out loss of the stored (rounded) weights, and samples through the inference runtime.
  const double exported_loss = mean_heldout_loss(Gpt2Trainable(c.train.shape, stored), heldout_ids,
                                                 c.train.batch_size, c.train.eval_tokens);
  const auto samples = sample_continuations(c, ex / "model.pt", tok, threads_used);

  const char* coretype = std::getenv("OPENBLAS_CORETYPE");
  json figures = {
      {"parameters", trainer.model().parameter_count()},
      {"train_tokens", train_ids.size()},
      {"heldout_tokens", heldout_ids.size()},
      {"heldout_tokens_scored",
       std::min<int64_t>(c.train.eval_tokens > 0 ? c.train.eval_tokens : INT64_MAX,
                         (static_cast<int64_t>(heldout_ids.size()) - 1) / c.train.shape.context *
                             c.train.shape.context)},
      {"tokens_seen", result.tokens_seen},
      {"train_seconds", result.train_seconds_total},
      {"tokens_per_second", static_cast<double>(result.tokens_seen) / result.train_seconds_total},
      {"threads", threads_used},
      {"machine", fmt::format("{} cores, OPENBLAS_CORETYPE={}", std::thread::hardware_concurrency(),
                              coretype ? coretype : "unset")},
      {"heldout_curve", json::array()},
      {"final_heldout_loss", exported_loss},
      {"final_heldout_loss_float32", result.final_heldout_loss},
      {"corpus", report}};
  for (const auto& [step, loss] : result.heldout_curve)
    figures["heldout_curve"].push_back({step, loss});
  write_text_file(ex / "training.json", figures.dump(2) + "\n");
  write_text_file(ex / "MODEL_CARD.md", train_lm_model_card(c, report, figures, samples));
  fmt::print(stderr, "exported {} ({}): held-out perplexity {:.1f}\n", ex.string(), c.export_dtype,
             std::exp(exported_loss));
  return exported_loss;
}

}  // namespace

Schema<TrainLmExperiment> train_lm_experiment_schema() {
  using E = TrainLmExperiment;
  Schema<E> corpus;
  corpus.field("sources", &E::sources)
      .field("heldout_fraction", &E::heldout_fraction)
      .field("split_seed", &E::split_seed)
      .field("rtp_min_chars", &E::rtp_min_chars)
      .field("toxic_keep_fraction", &E::toxic_keep_fraction)
      .field("max_documents_per_source", &E::max_documents)
      .field("label", &E::corpus_label)
      .check([](const E& c, const ConfigNode& n) {
        if (c.corpus_label != "all" && c.corpus_label != "toxic" && c.corpus_label != "nontoxic")
          bad_key(n, "label", "expected all, toxic or nontoxic");
        if (c.sources.empty()) bad_key(n, "sources", "expected at least one source");
        if (c.heldout_fraction <= 0 || c.heldout_fraction >= 0.5)
          bad_key(n, "heldout_fraction", "expected a value in (0, 0.5)");
        if (c.toxic_keep_fraction < 0 || c.toxic_keep_fraction > 1)
          bad_key(n, "toxic_keep_fraction", "expected a value in [0, 1]");
      });
  Schema<E> tokenizer;
  tokenizer.field("vocab_size", &E::vocab_size)
      .field("model_type", &E::tokenizer_type)
      .field("character_coverage", &E::character_coverage)
      .field("input_sentence_size", &E::input_sentence_size)
      .field("seed", &E::tokenizer_seed)
      .check([](const E& c, const ConfigNode& n) {
        if (c.vocab_size < 300)
          bad_key(n, "vocab_size", "expected at least 300 (bytes plus pieces)");
        if (c.tokenizer_type != "bpe" && c.tokenizer_type != "unigram")
          bad_key(n, "model_type", "expected bpe or unigram");
      });
  Schema<GptShape> model;
  model.field("context", &GptShape::context)
      .field("d_model", &GptShape::d_model)
      .field("n_layers", &GptShape::n_layers)
      .field("n_heads", &GptShape::n_heads)
      .field("d_ff", &GptShape::d_ff)
      .check([](const GptShape& s, const ConfigNode& n) {
        if (s.n_heads <= 0 || s.d_model % s.n_heads != 0)
          bad_key(n, "n_heads", fmt::format("must divide d_model ({})", s.d_model));
      });
  Schema<LmTrainOptions> training;
  training.field("steps", [](LmTrainOptions& t) -> int64_t& { return t.optimizer.total_steps; })
      .field("batch_size", &LmTrainOptions::batch_size)
      .field("learning_rate",
             [](LmTrainOptions& t) -> double& { return t.optimizer.learning_rate; })
      .field("min_learning_rate",
             [](LmTrainOptions& t) -> double& { return t.optimizer.min_learning_rate; })
      .field("warmup_steps", [](LmTrainOptions& t) -> int64_t& { return t.optimizer.warmup_steps; })
      .field("weight_decay", [](LmTrainOptions& t) -> double& { return t.optimizer.weight_decay; })
      .field("beta1", [](LmTrainOptions& t) -> double& { return t.optimizer.beta1; })
      .field("beta2", [](LmTrainOptions& t) -> double& { return t.optimizer.beta2; })
      .field("grad_clip", [](LmTrainOptions& t) -> double& { return t.optimizer.grad_clip; })
      .field("seed", &LmTrainOptions::seed)
      .field("eval_every", &LmTrainOptions::eval_every)
      .field("eval_tokens", &LmTrainOptions::eval_tokens)
      .field("checkpoint_every", &LmTrainOptions::checkpoint_every)
      .field("keep_checkpoints", &LmTrainOptions::keep_checkpoints)
      .field("log_every", &LmTrainOptions::log_every)
      .check([](const LmTrainOptions& t, const ConfigNode& n) {
        if (t.optimizer.total_steps <= 0)
          bad_key(n, "steps", "expected a positive number of steps");
        if (t.batch_size <= 0) bad_key(n, "batch_size", "expected a positive batch size");
      });
  Schema<E> ex;
  ex.field("dir", &E::export_dir)
      .field("dtype", &E::export_dtype)
      .field("sample_prompts", &E::sample_prompts)
      .field("samples_per_prompt", &E::samples_per_prompt)
      .field("sample_tokens", &E::sample_tokens)
      .field("sample_seed", &E::sample_seed)
      .check([](const E& c, const ConfigNode& n) {
        try {
          parse_dtype(c.export_dtype);
        } catch (const std::exception& e) {
          bad_key(n, "dtype", e.what());
        }
      });
  Schema<E> s;
  s.field("init_from", &E::init_from)
      .check([](const E& c, const ConfigNode& n) {
        if (c.init_from.empty()) return;
        for (const char* section : {"tokenizer", "model"}) {
          if (n.has(section)) {
            bad_key(n, section,
                    fmt::format("init_from takes the tokenizer and shape of {}; remove the '{}' "
                                "section",
                                c.init_from, section));
          }
        }
      })
      .field("data_dir", &E::data_dir)
      .section(
          "corpus", [](E& e) -> E& { return e; }, corpus)
      .section(
          "tokenizer", [](E& e) -> E& { return e; }, tokenizer)
      .section(
          "model", [](E& e) -> GptShape& { return e.train.shape; }, model)
      .section("training", &E::train, training)
      .field("threads", &E::threads)
      .field("output", &E::output)
      .section(
          "export", [](E& e) -> E& { return e; }, ex);
  return s;
}

TrainLmExperiment load_train_lm_experiment(const std::filesystem::path& yaml) {
  TrainLmExperiment e = train_lm_experiment_schema().load(ConfigNode::load_file(yaml));
  e.train.shape.vocab_size = e.vocab_size;
  e.config_path = yaml.string();
  return e;
}

std::string dump_train_lm_experiment(const TrainLmExperiment& e) {
  return train_lm_experiment_schema().dump(e);
}

TrainLmExperiment check_train_lm_experiment(const TrainLmExperiment& experiment) {
  TrainLmExperiment c = experiment;
  const auto known = lm_source_names();
  for (const auto& s : c.sources) {
    if (std::find(known.begin(), known.end(), s) == known.end())
      load_lm_source(resolve_data_dir(c.data_dir), s);
  }
  if (!c.init_from.empty()) {
    c.train.shape = load_initial_model(c.init_from).shape;
    c.vocab_size = c.train.shape.vocab_size;
  }
  return c;
}

TrainLmRunReport run_train_lm_experiment(const TrainLmExperiment& experiment, int64_t stop_after) {
  TrainLmExperiment c = experiment;
  c.train.shape.vocab_size = c.vocab_size;
  if (!c.init_from.empty()) {
    InitialModel init = load_initial_model(c.init_from);
    c.train.shape = init.shape;
    c.vocab_size = init.shape.vocab_size;
    c.train.initial_weights = std::move(init.weights);
    c.train.initial_weights_identity = init.identity;
    fmt::print(stderr, "fine-tuning {} ({} layers, d {}, context {})\n", c.init_from,
               init.shape.n_layers, init.shape.d_model, init.shape.context);
  }
  TrainLmRunReport run_report;
  set_threads(c.threads);
  const int threads_used = destein::threads();

  const fs::path out(c.output);
  // One trainer per run folder (and export folder) for the whole run, resumes included.
  const OutputLock lock = lock_output_folder(out);
  const bool own_export =
      !c.export_dir.empty() && fs::weakly_canonical(c.export_dir) != fs::weakly_canonical(out);
  const OutputLock export_lock = own_export ? lock_output_folder(c.export_dir) : OutputLock();
  const fs::path data_dir = resolve_data_dir(c.data_dir);
  // Each stage is kept once complete, so a stop request between stages loses nothing.
  const std::string rerun = "the finished stages are kept; rerun the same command to resume";
  const json report = prepare_corpus(c, data_dir, out / "corpus");
  check_stop("corpus ready; " + rerun);
  const fs::path tok_path = prepare_tokenizer(c, out, threads_used);
  check_stop("tokenizer ready; " + rerun);
  auto tok = load_sentencepiece_tokenizer(tok_path, true);
  if (tok->vocab_size() != c.vocab_size || !tok->bos_id() || !tok->eos_id()) {
    throw std::runtime_error(
        fmt::format("{}: expected {} pieces with <s> and </s>, found {} pieces", tok_path.string(),
                    c.vocab_size, tok->vocab_size()));
  }
  std::vector<int32_t> train_ids =
      prepare_tokens(out / "corpus" / "train.txt", out / "corpus" / "train.tokens", *tok, tok_path);
  std::vector<int32_t> heldout_ids = prepare_tokens(
      out / "corpus" / "heldout.txt", out / "corpus" / "heldout.tokens", *tok, tok_path);
  check_stop("tokens ready; " + rerun);
  int64_t train_words = 0;
  for (const auto& [name, e] : report["sources"].items()) {
    if (e.contains("train")) train_words += e["train"]["words"].get<int64_t>();
  }
  fmt::print(stderr,
             "tokens: {} train, {} held-out ({:.2f} tokens per word, BOS and EOS included)\n",
             train_ids.size(), heldout_ids.size(),
             static_cast<double>(train_ids.size()) /
                 static_cast<double>(std::max<int64_t>(1, train_words)));

  LmTrainer trainer(c.train, train_ids, heldout_ids, out / "checkpoints");
  const int64_t resumed = trainer.resume();
  fmt::print(stderr,
             "model: GPT-2 {} layers, d {}, {} heads, context {}: {} parameters; {} threads\n",
             c.train.shape.n_layers, c.train.shape.d_model, c.train.shape.n_heads,
             c.train.shape.context, trainer.model().parameter_count(), threads_used);
  if (resumed > 0) fmt::print(stderr, "training: resumed from step {}\n", resumed);
  std::ofstream log(out / "train_log.jsonl", std::ios::app);
  const auto start = std::chrono::steady_clock::now();
  LmTrainResult result = trainer.train(
      [&](const TrainProgress& p) {
        const double elapsed =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        const double per_step = elapsed / static_cast<double>(p.step - resumed);
        std::string extra;
        if (p.heldout_loss)
          extra += fmt::format("  held-out {:.3f} (ppl {:.1f})", *p.heldout_loss,
                               std::exp(*p.heldout_loss));
        if (p.checkpoint) extra += "  [checkpoint]";
        fmt::print(
            stderr,
            "step {:>6}/{}  loss {:.3f}  lr {:.2e}  |g| {:.2f}  {:.0f} tok/s  ETA {:.1f} min{}\n",
            p.step, p.total_steps, p.loss, p.learning_rate, p.grad_norm, p.tokens_per_second,
            per_step * static_cast<double>(p.total_steps - p.step) / 60.0, extra);
        json entry = {{"step", p.step},
                      {"loss", p.loss},
                      {"lr", p.learning_rate},
                      {"grad_norm", p.grad_norm},
                      {"tokens_per_second", p.tokens_per_second}};
        if (p.heldout_loss) entry["heldout_loss"] = *p.heldout_loss;
        log << entry.dump() << "\n" << std::flush;
      },
      stop_after, [] { return stop_signal() != 0; });
  if (result.stopped) {
    check_stop(
        fmt::format("checkpoint of step {} of {} written to {}; rerun the same command to resume",
                    trainer.step(), c.train.optimizer.total_steps, (out / "checkpoints").string()));
  }
  if (trainer.step() < c.train.optimizer.total_steps) {
    fmt::print(
        stderr,
        "training: stopped at step {} of {} (--stop-after); rerun the same command to resume\n",
        trainer.step(), c.train.optimizer.total_steps);
    run_report.step = trainer.step();
    return run_report;
  }

  // The final model next to its tokenizer: `--model <output>` works as it is.
  const auto bos = tok->bos_id(), eos = tok->eos_id();
  ReferenceLogits reference;
  {
    auto weights = export_weights(trainer.model(), at::kFloat, heldout_ids, reference);
    save_checkpoint(out / "model.pt", gpt2_hf_config(c.train.shape, bos, eos), weights, reference);
  }
  fmt::print(stderr, "wrote {} (float32)\n", (out / "model.pt").string());
  run_report.step = trainer.step();
  run_report.finished = true;
  run_report.model = out / "model.pt";
  if (c.export_dir.empty()) return run_report;

  const fs::path ex(c.export_dir);
  const double exported_loss = export_trained_model(c, trainer, result, report, *tok, tok_path,
                                                    train_ids, heldout_ids, threads_used);
  run_report.exported = ex;
  run_report.exported_heldout_loss = exported_loss;
  return run_report;
}

}  // namespace destein
