// Texts per second of the Hugging Face encoder classifiers (HfClassifierScorer) at a
// base-size shape with random weights, batch 64, on real texts.
//
//   classifier_throughput --fixtures DIR [--data-dir DIR] [--texts 128] [--batch 64]
//                         [--device cpu] [--threads 0]
//
// DIR is the build's tests/fixtures/encoders (ctest's make_fixtures writes it): its
// tokenizer files are used as they are, and each architecture's config.json is written at
// base size (BERT-base / RoBERTa-base: hidden 768, 12 layers, 12 heads, FFN 3072;
// DistilBERT-base: 6 such layers; DeBERTa-v3-base: 12 such layers, 256 position buckets,
// shared keys) with random weights. The vocabulary stays the fixture's
// (about 1,000 tokens): an embedding lookup costs the same for any vocabulary size, and
// the encoder layers are the whole cost. Texts: RealToxicityPrompts 1k prompts, as the
// harness scores prompts + continuations of about this length.
#include <ATen/ATen.h>
#include <fmt/format.h>

#include <chrono>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "args.hpp"
#include "destein/runtime/device.hpp"
#include "destein/score/hf_classifier.hpp"
#include "io/data_folder.hpp"
#include "io/safetensors.hpp"
#include "train/scorer_data.hpp"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Random tensors under the names and shapes of `type`'s checkpoint at base size.
std::map<std::string, at::Tensor> base_weights(const std::string& type, int64_t vocab,
                                               int64_t positions, int64_t layers, int64_t labels) {
  const int64_t D = 768, F = 3072;
  std::map<std::string, at::Tensor> w;
  auto lin = [&](const std::string& name, int64_t out, int64_t in) {
    w[name + ".weight"] = at::randn({out, in}) * 0.02;
    w[name + ".bias"] = at::zeros({out});
  };
  auto norm = [&](const std::string& name) {
    w[name + ".weight"] = at::ones({D});
    w[name + ".bias"] = at::zeros({D});
  };
  if (type == "deberta-v3") {
    // DeBERTa-v3-base: shared attention keys, 256 position buckets, no absolute positions.
    w["deberta.embeddings.word_embeddings.weight"] = at::randn({vocab, D}) * 0.02;
    norm("deberta.embeddings.LayerNorm");
    w["deberta.encoder.rel_embeddings.weight"] = at::randn({2 * 256, D}) * 0.02;
    norm("deberta.encoder.LayerNorm");
    for (int64_t i = 0; i < layers; ++i) {
      const std::string p = fmt::format("deberta.encoder.layer.{}.", i);
      for (const char* n : {"attention.self.query_proj", "attention.self.key_proj",
                            "attention.self.value_proj", "attention.output.dense"}) {
        lin(p + n, D, D);
      }
      norm(p + "attention.output.LayerNorm");
      lin(p + "intermediate.dense", F, D);
      lin(p + "output.dense", D, F);
      norm(p + "output.LayerNorm");
    }
    lin("pooler.dense", D, D);
    lin("classifier", labels, D);
    return w;
  }
  if (type == "distilbert") {
    w["distilbert.embeddings.word_embeddings.weight"] = at::randn({vocab, D}) * 0.02;
    w["distilbert.embeddings.position_embeddings.weight"] = at::randn({positions, D}) * 0.02;
    norm("distilbert.embeddings.LayerNorm");
    for (int64_t i = 0; i < layers; ++i) {
      const std::string p = fmt::format("distilbert.transformer.layer.{}.", i);
      for (const char* n : {"q_lin", "k_lin", "v_lin", "out_lin"}) lin(p + "attention." + n, D, D);
      norm(p + "sa_layer_norm");
      lin(p + "ffn.lin1", F, D);
      lin(p + "ffn.lin2", D, F);
      norm(p + "output_layer_norm");
    }
    lin("pre_classifier", D, D);
    lin("classifier", labels, D);
    return w;
  }
  const std::string base = type + ".";
  w[base + "embeddings.word_embeddings.weight"] = at::randn({vocab, D}) * 0.02;
  w[base + "embeddings.position_embeddings.weight"] = at::randn({positions, D}) * 0.02;
  w[base + "embeddings.token_type_embeddings.weight"] =
      at::randn({type == "bert" ? 2 : 1, D}) * 0.02;
  norm(base + "embeddings.LayerNorm");
  for (int64_t i = 0; i < layers; ++i) {
    const std::string p = fmt::format("{}encoder.layer.{}.", base, i);
    for (const char* n : {"attention.self.query", "attention.self.key", "attention.self.value",
                          "attention.output.dense"}) {
      lin(p + n, D, D);
    }
    norm(p + "attention.output.LayerNorm");
    lin(p + "intermediate.dense", F, D);
    lin(p + "output.dense", D, F);
    norm(p + "output.LayerNorm");
  }
  if (type == "bert") {
    lin("bert.pooler.dense", D, D);
    lin("classifier", labels, D);
  } else {
    lin("classifier.dense", D, D);
    lin("classifier.out_proj", labels, D);
  }
  return w;
}

json read_json(const fs::path& p) {
  std::ifstream in(p);
  if (!in)
    throw std::runtime_error(
        fmt::format("{}: cannot open (run ctest -R make_fixtures first)", p.string()));
  return json::parse(in);
}

int run(destein::app::Args& args) {
  const fs::path fixtures = args.require("fixtures", "the build's tests/fixtures/encoders");
  const std::string data_opt = args.get_or("data-dir", "", "the data folder");
  const int64_t n_texts = args.get_int("texts", 128, "texts scored per architecture");
  const int64_t batch = args.get_int("batch", 64, "texts per forward pass");
  const std::string device = args.get_or("device", "cpu", "cpu or cuda");
  const int64_t threads = args.get_int("threads", 0, "intra-op threads (0: LibTorch's default)");
  args.finish();
  if (threads > 0) destein::set_threads(static_cast<int>(threads));
  at::manual_seed(26);

  std::vector<std::string> texts;
  const fs::path data = destein::resolve_data_dir(data_opt);
  for (const char* f : {"rtp/1k/output_toxic_1k.jsonl", "rtp/1k/output_no_toxic_1k.jsonl"}) {
    for (auto& p : destein::load_rtp_prompts(data / f)) texts.push_back(std::move(p.text));
  }
  texts.resize(static_cast<size_t>(std::min<int64_t>(n_texts, static_cast<int64_t>(texts.size()))));

  const fs::path work = fs::temp_directory_path() / "destein_classifier_throughput";
  fmt::print(
      "| architecture | layers | texts | batch | device | mean tokens | texts/s "
      "|\n|---|---:|---:|---:|---|---:|---:|\n");
  for (const std::string type : {"bert", "roberta", "distilbert", "deberta-v3"}) {
    const fs::path dir = work / type;
    fs::remove_all(dir);
    fs::create_directories(dir);
    for (const auto& e : fs::directory_iterator(fixtures / type)) {
      const std::string name = e.path().filename().string();
      if (name != "model.safetensors" && name != "config.json" && name != "reference.json" &&
          name != "hf_ids.json") {
        fs::copy(e.path(), dir / name);
      }
    }
    json config = read_json(fixtures / type / "config.json");
    const int64_t vocab = config["vocab_size"];
    const int64_t labels = static_cast<int64_t>(config["id2label"].size());
    const int64_t layers = type == "distilbert" ? 6 : 12;
    const int64_t positions = type == "roberta" ? 514 : 512;
    if (type == "deberta-v3") {
      config["hidden_size"] = 768;
      config["intermediate_size"] = 3072;
      config["num_hidden_layers"] = layers;
      config["num_attention_heads"] = 12;
      config["pooler_hidden_size"] = 768;
      config["position_buckets"] = 256;
      config["max_relative_positions"] = -1;
    } else if (type == "distilbert") {
      config["dim"] = 768;
      config["hidden_dim"] = 3072;
      config["n_layers"] = layers;
      config["n_heads"] = 12;
    } else {
      config["hidden_size"] = 768;
      config["intermediate_size"] = 3072;
      config["num_hidden_layers"] = layers;
      config["num_attention_heads"] = 12;
    }
    config["max_position_embeddings"] = positions;
    std::ofstream(dir / "config.json") << config.dump(1);
    // The limit is the model's 512 tokens, not the tiny fixture's.
    json tok_config = read_json(dir / "tokenizer_config.json");
    tok_config["model_max_length"] = 512;
    std::ofstream(dir / "tokenizer_config.json") << tok_config.dump(1);
    destein::write_safetensors(dir / "model.safetensors",
                               base_weights(type, vocab, positions, layers, labels));

    destein::HfClassifierOptions o;
    o.folder = dir;
    o.label = config["id2label"]["1"];
    o.batch_size = batch;
    o.device = device;
    destein::HfClassifierScorer scorer(o);
    double tokens = 0;
    for (const auto& t : texts) tokens += static_cast<double>(scorer.input_ids(t).size());
    const std::vector<std::string> warm(texts.begin(),
                                        texts.begin() + std::min<size_t>(texts.size(), 8));
    scorer.score(warm);
    // The better of two passes: this machine's other work slows one pass or the other.
    double secs = 1e30;
    for (int pass = 0; pass < 2; ++pass) {
      const auto t0 = std::chrono::steady_clock::now();
      const auto scores = scorer.score(texts);
      secs = std::min(secs,
                      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    fmt::print("| {} | {} | {} | {} | {} | {:.1f} | {:.1f} |\n", type, layers, texts.size(), batch,
               device, tokens / static_cast<double>(texts.size()),
               static_cast<double>(texts.size()) / secs);
    fs::remove_all(dir);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    destein::app::Args args(argc, argv);
    return run(args);
  } catch (const std::exception& e) {
    fmt::print(stderr, "classifier_throughput: error: {}\n", e.what());
    return 1;
  }
}
