// Checkpoint loading (archives, safetensors folders), the forward pass of every family
// against the independent PyTorch reference, and every bad-input error.
#include <torch/script.h>
#include <catch2/catch.hpp>

#include <fstream>

#include "destein/runtime/checkpoint.hpp"
#include "destein/runtime/model.hpp"
#include "io/safetensors.hpp"
#include "test_support.hpp"

using namespace destein;
using Catch::Matchers::Contains;
using destein::test::fixture;

TEST_CASE("every family matches the reference implementation's logits", "[checkpoint][model]") {
  for (const char* family : destein::test::kFamilies) {
    INFO("family " << family);
    Checkpoint ckpt = load_checkpoint(fixture(std::string(family) + ".pt"));
    REQUIRE(ckpt.reference.has_value());
    REQUIRE(ckpt.reference->inputs.size() == 3);
    auto model = build_model(ckpt);
    VerifyReport r = verify_against_reference(*model, ckpt, 1e-4, 1e-5);
    INFO("max |diff| " << r.max_abs_diff);
    CHECK(r.passed);
    CHECK(r.argmax_agrees);
    CHECK(r.max_abs_diff < 1e-4);
  }
}

TEST_CASE("a perturbed weight is caught by verify", "[checkpoint]") {
  Checkpoint ckpt = load_checkpoint(fixture("llama.pt"));
  ckpt.tensors["model.layers.1.mlp.down_proj.weight"] += 0.01;
  auto model = build_model(ckpt);
  VerifyReport r = verify_against_reference(*model, ckpt, 1e-4, 1e-5);
  CHECK_FALSE(r.passed);
  CHECK(r.max_abs_diff > 1e-3);
}

TEST_CASE("Hugging Face folders (safetensors, sharded) load like the archive", "[checkpoint]") {
  auto archive = load_model(fixture("gpt2.pt"));
  at::Tensor ids = at::tensor({5, 17, 42, 8, 1}, at::kLong).unsqueeze(0);
  at::Tensor expected = archive->forward(ids).logits;
  for (const char* folder : {"gpt2_hf", "gpt2_sharded"}) {
    INFO(folder);
    auto model = load_model(fixture(folder));
    CHECK(model->config().model_type == "gpt2");
    CHECK(destein::test::max_abs_diff(model->forward(ids).logits, expected) == 0.0);
  }
}

TEST_CASE("bfloat16 storage loads and computes in float32", "[checkpoint]") {
  Checkpoint ckpt = load_checkpoint(fixture("llama_bf16.pt"));
  CHECK(ckpt.tensors.at("model.norm.weight").scalar_type() == at::kBFloat16);
  auto model = build_model(ckpt);
  CHECK(model->dtype() == at::kFloat);
  // bf16 weights differ from the f32 originals by ~0.4%: logits stay close, not equal.
  Checkpoint f32 = load_checkpoint(fixture("llama.pt"));
  at::Tensor ref = at::tensor(f32.reference->last_logits[1]);
  at::Tensor ids = at::tensor(f32.reference->inputs[1], at::kLong).unsqueeze(0);
  at::Tensor ours =
      model->forward(ids, {{}, nullptr, nullptr, LogitsFor::kLast}).logits.reshape({-1});
  CHECK(destein::test::max_abs_diff(ours, ref) < 0.05 * ref.abs().max().item<double>());
}

TEST_CASE("bfloat16 compute runs and stays close to float32", "[checkpoint]") {
  ModelOptions opts;
  opts.dtype = at::kBFloat16;
  auto model = load_model(fixture("gpt2.pt"), opts);
  auto f32 = load_model(fixture("gpt2.pt"));
  at::Tensor ids = at::tensor({5, 17, 42}, at::kLong).unsqueeze(0);
  at::Tensor a = model->forward(ids).logits, b = f32->forward(ids).logits;
  CHECK(a.scalar_type() == at::kFloat);
  CHECK(destein::test::max_abs_diff(a, b) < 0.1 * b.abs().max().item<double>());
}

TEST_CASE("save_checkpoint round-trips weights, config and reference", "[checkpoint]") {
  Checkpoint ckpt = load_checkpoint(fixture("opt.pt"));
  auto dir = destein::test::temp_dir("roundtrip");
  save_checkpoint(dir / "opt.pt", ckpt.config.raw, ckpt.tensors, ckpt.reference);
  Checkpoint again = load_checkpoint(dir / "opt.pt");
  REQUIRE(again.tensors.size() == ckpt.tensors.size());
  for (const auto& [name, t] : ckpt.tensors) {
    INFO(name);
    CHECK(at::equal(again.tensors.at(name), t));
  }
  CHECK(again.config.raw == ckpt.config.raw);
  REQUIRE(again.reference.has_value());
  CHECK(again.reference->last_logits == ckpt.reference->last_logits);
  auto model = build_model(again);
  CHECK(verify_against_reference(*model, again, 1e-4, 1e-5).passed);
}

TEST_CASE("safetensors round trip, metadata and dtypes", "[checkpoint][safetensors]") {
  auto dir = destein::test::temp_dir("safetensors");
  std::map<std::string, at::Tensor> tensors = {{"a", at::randn({3, 4})},
                                               {"b", at::arange(6, at::kLong).view({2, 3})},
                                               {"c", at::randn({5}).to(at::kHalf)},
                                               {"d", at::randn({2, 2}).to(at::kBFloat16)},
                                               {"scalar", at::scalar_tensor(3.5)}};
  write_safetensors(dir / "x.safetensors", tensors, {{"format", "test/1"}, {"note", "hi"}});
  SafetensorsFile f = read_safetensors(dir / "x.safetensors");
  CHECK(f.metadata.at("format") == "test/1");
  REQUIRE(f.tensors.size() == tensors.size());
  for (const auto& [name, t] : tensors) {
    INFO(name);
    CHECK(f.tensors.at(name).scalar_type() == t.scalar_type());
    CHECK(at::equal(f.tensors.at(name), t));
  }
  // Truncated: the header promises more data than the file holds.
  auto size = std::filesystem::file_size(dir / "x.safetensors");
  std::filesystem::resize_file(dir / "x.safetensors", size - 10);
  CHECK_THROWS_WITH(read_safetensors(dir / "x.safetensors"),
                    Contains("x.safetensors") && Contains("truncated"));
  std::ofstream(dir / "junk.safetensors") << "this is not a safetensors file at all";
  CHECK_THROWS_WITH(read_safetensors(dir / "junk.safetensors"), Contains("junk.safetensors"));
}

namespace {
Checkpoint gpt2_without(const std::string& name) {
  Checkpoint c = load_checkpoint(fixture("gpt2.pt"));
  c.tensors.erase(name);
  return c;
}
}  // namespace

TEST_CASE("bad checkpoints give errors naming the file, key or parameter", "[checkpoint][errors]") {
  auto dir = destein::test::temp_dir("bad_checkpoints");
  CHECK_THROWS_WITH(load_checkpoint(dir / "missing.pt"),
                    Contains("missing.pt") && Contains("no such file"));

  std::ofstream(dir / "text.pt") << "not an archive";
  CHECK_THROWS_WITH(load_checkpoint(dir / "text.pt"),
                    Contains("text.pt") && Contains("not a TorchScript archive"));

  {  // truncated archive: the first half of a real one
    std::ifstream in(fixture("gpt2.pt"), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::ofstream(dir / "truncated.pt", std::ios::binary) << bytes.substr(0, bytes.size() / 2);
    CHECK_THROWS_WITH(load_checkpoint(dir / "truncated.pt"), Contains("truncated.pt"));
  }
  {  // an archive without config.json
    torch::jit::Module m(c10::QualifiedName("__torch__.Empty"));
    m.register_parameter("w", at::ones({2}), false);
    m.save((dir / "noconfig.pt").string());
    CHECK_THROWS_WITH(load_checkpoint(dir / "noconfig.pt"),
                      Contains("noconfig.pt") && Contains("config.json"));
  }
  {  // unknown model_type
    Checkpoint c = load_checkpoint(fixture("gpt2.pt"));
    auto cfg = c.config.raw;
    cfg["model_type"] = "bert";
    save_checkpoint(dir / "bert.pt", cfg, c.tensors);
    CHECK_THROWS_WITH(load_checkpoint(dir / "bert.pt"), Contains("bert") && Contains("model_type"));
  }
  {  // a config without a required key
    Checkpoint c = load_checkpoint(fixture("llama.pt"));
    auto cfg = c.config.raw;
    cfg.erase("intermediate_size");
    save_checkpoint(dir / "nokey.pt", cfg, c.tensors);
    CHECK_THROWS_WITH(load_checkpoint(dir / "nokey.pt"), Contains("intermediate_size"));
  }
  // A missing parameter is named, with the expected shape.
  CHECK_THROWS_WITH(
      build_model(gpt2_without("transformer.h.1.mlp.c_fc.bias")),
      Contains("transformer.h.1.mlp.c_fc.bias") && Contains("missing") && Contains("[128]"));
  {  // a wrongly shaped parameter: expected and found shapes
    Checkpoint c = load_checkpoint(fixture("gpt2.pt"));
    c.tensors["transformer.h.0.attn.c_attn.weight"] = at::zeros({32, 95});
    CHECK_THROWS_WITH(build_model(c), Contains("transformer.h.0.attn.c_attn.weight") &&
                                          Contains("[32, 95]") && Contains("[32, 96]"));
  }
  // A folder with nothing usable.
  CHECK_THROWS_WITH(load_checkpoint(dir), Contains("config.json"));
}

TEST_CASE("bad forward inputs are errors, not crashes", "[model][errors]") {
  auto model = load_model(fixture("gpt2.pt"));  // vocabulary 97, 64 positions
  CHECK_THROWS_WITH(model->forward(at::tensor({5, 97}, at::kLong).unsqueeze(0)),
                    Contains("97") && Contains("outside the vocabulary"));
  CHECK_THROWS_WITH(model->forward(at::tensor({-1}, at::kLong).unsqueeze(0)), Contains("-1"));
  CHECK_THROWS_WITH(model->forward(at::ones({1, 65}, at::kLong)),
                    Contains("position") && Contains("64"));
  CHECK_THROWS_WITH(model->forward(at::ones({1, 3}, at::kFloat)), Contains("integer"));
  ForwardOptions bad_mask;
  bad_mask.attention_mask = at::ones({1, 2}, at::kLong);
  CHECK_THROWS_WITH(model->forward(at::ones({1, 3}, at::kLong), bad_mask),
                    Contains("attention_mask"));
  KVCache small = model->make_cache(1, 2);
  ForwardOptions with_cache;
  with_cache.cache = &small;
  CHECK_THROWS_WITH(model->forward(at::ones({1, 3}, at::kLong), with_cache), Contains("capacity"));
}
