// MPT beyond the per-family invariants of test_model/test_checkpoint/test_hooks (which run
// the three MPT fixtures too): steered logits against the method's formulas applied by
// hand in the PyTorch reference, the Hugging Face folder formats MPT ships in, and every
// MPT option we do not run being refused by name.
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "destein/runtime/checkpoint.hpp"
#include "destein/runtime/model.hpp"
#include "destein/steer/activations.hpp"
#include "destein/steer/steering.hpp"
#include "test_support.hpp"

using namespace destein;
using Catch::Matchers::Contains;
using destein::test::fixture;
using destein::test::max_abs_diff;
using nlohmann::json;

namespace {

at::Tensor tensor_of(const json& nested) {
  std::vector<float> flat;
  std::vector<int64_t> shape;
  const json* level = &nested;
  while (level->is_array()) {
    shape.push_back(static_cast<int64_t>(level->size()));
    level = &(*level)[0];
  }
  std::function<void(const json&)> walk = [&](const json& j) {
    if (j.is_array()) {
      for (const auto& e : j) walk(e);
    } else {
      flat.push_back(j.get<float>());
    }
  };
  walk(nested);
  return at::tensor(flat).view(shape);
}

json mpt_config() {
  Checkpoint ckpt = load_checkpoint(fixture("mpt.pt"));
  return ckpt.config.raw;
}

}  // namespace

TEST_CASE("steered MPT equals the PyTorch reference with the intervention applied by hand",
          "[mpt][steering]") {
  std::ifstream in(fixture("mpt_steering.json"));
  REQUIRE(in.good());
  const json all = json::parse(in);
  for (const char* name : {"mpt", "mpt_qkln"}) {
    INFO("model " << name);
    const json& spec = all.at(name);
    auto model = load_model(fixture(std::string(name) + ".pt"));
    at::Tensor ids =
        at::tensor(spec.at("input_ids").get<std::vector<int64_t>>(), at::kLong).unsqueeze(0);
    at::Tensor plain = model->forward(ids).logits[0][-1];
    for (const auto& c : spec.at("cases")) {
      const std::string mode = c.at("mode"), site = c.at("site");
      INFO(mode << " at " << site);
      SteeringVectors v;
      v.directions = tensor_of(spec.at("directions"));
      v.probe_accuracy = tensor_of(spec.at("probe_accuracy"));
      v.site = parse_steering_site(site);
      v.model_type = "mpt";
      SteeringOptions o;
      o.mode = parse_steering_mode(mode);
      o.alpha = spec.at("alpha").get<double>();
      Hooks hooks;
      auto handle = attach_steering(hooks, *model, v, o);
      ForwardOptions fo;
      fo.hooks = &hooks;
      at::Tensor steered = model->forward(ids, fo).logits[0][-1];
      at::Tensor expected = tensor_of(c.at("last_logits"));
      INFO("max |diff| " << max_abs_diff(steered, expected));
      CHECK(max_abs_diff(steered, expected) < 1e-4);
      CHECK(max_abs_diff(steered, plain) > 1e-2);  // the steering did something
    }
  }
}

TEST_CASE("MPT loads from a sharded safetensors folder and a torch.save .bin like the archive",
          "[mpt][checkpoint]") {
  auto archive = load_model(fixture("mpt.pt"));
  at::Tensor ids = at::tensor({5, 17, 42, 8, 1}, at::kLong).unsqueeze(0);
  at::Tensor expected = archive->forward(ids).logits;
  for (const char* folder : {"mpt_sharded", "mpt_bin"}) {
    INFO(folder);
    auto model = load_model(fixture(folder));
    CHECK(model->config().model_type == "mpt");
    CHECK(max_abs_diff(model->forward(ids).logits, expected) == 0.0);
  }
  // A .bin that is not a zip archive (the legacy torch.save format) is refused by name.
  const auto dir = destein::test::temp_dir("mpt_legacy_bin");
  std::ofstream(dir / "config.json") << mpt_config().dump();
  std::ofstream(dir / "pytorch_model.bin", std::ios::binary)
      << std::string("\x80\x02\x8a\x0alegacy", 10);
  CHECK_THROWS_WITH(load_checkpoint(dir),
                    Contains("pytorch_model.bin") && Contains("not a zip file"));
  // torch.save(model.state_dict()) pickles an OrderedDict: refused with the way out.
  CHECK_THROWS_WITH(load_checkpoint(fixture("mpt_bin_ordered")), Contains("pytorch_model.bin") &&
                                                                     Contains("OrderedDict") &&
                                                                     Contains("torch.save(dict("));
}

TEST_CASE("MPT's ALiBi slopes follow gen_slopes for any head count", "[mpt]") {
  // With all q, k = 0 (Wqkv rows of q and k zeroed) every score is the ALiBi bias alone, so
  // the attention weights of head h at the last of T positions are softmax(s_h (j - T + 1)):
  // with v = identity-like values the z of each head recovers its slope. Hand values of
  // MosaicML's gen_slopes for 6 heads (H' = 8): 2^-2, 2^-4, 2^-6, 2^-8, 2^-1, 2^-3.
  Checkpoint ckpt = load_checkpoint(fixture("mpt.pt"));
  const int64_t d = ckpt.config.d_model, H = ckpt.config.n_heads, Dh = d / H;
  REQUIRE(H == 6);
  for (int64_t l = 0; l < ckpt.config.n_layers; ++l) {
    at::Tensor& w =
        ckpt.tensors.at("transformer.blocks." + std::to_string(l) + ".attn.Wqkv.weight");
    w = w.clone();
    w.narrow(0, 0, 2 * d).zero_();
  }
  auto model = build_model(ckpt);
  Hooks hooks;
  at::Tensor z;
  auto h = hooks.observe("blocks.0.attn.hook_z",
                         [&](const at::Tensor& x, const HookContext&) { z = x.clone(); });
  ForwardOptions fo;
  fo.hooks = &hooks;
  // Two positions: weights (e^-s, 1) / (1 + e^-s) on values v0, v1, so
  // z_h = v0 + (v1 - v0) / (1 + e^-s_h) and s_h = -log(1 / t - 1), t = (z - v0) / (v1 - v0).
  at::Tensor ids = at::tensor({5, 17}, at::kLong).unsqueeze(0);
  at::Tensor values;
  auto hv = hooks.observe("blocks.0.hook_resid_pre", [&](const at::Tensor& x, const HookContext&) {
    at::Tensor hn = at::layer_norm(x, {d}, ckpt.tensors.at("transformer.blocks.0.norm_1.weight"));
    values = at::matmul(
        hn, ckpt.tensors.at("transformer.blocks.0.attn.Wqkv.weight").narrow(0, 2 * d, d).t());
  });
  model->forward(ids, fo);
  const std::vector<double> expected = {0.25, 0.0625, 0.015625, 0.00390625, 0.5, 0.125};
  for (int64_t head = 0; head < H; ++head) {
    at::Tensor v0 = values[0][0].narrow(0, head * Dh, Dh).to(at::kDouble);
    at::Tensor v1 = values[0][1].narrow(0, head * Dh, Dh).to(at::kDouble);
    at::Tensor zh = z[0][1][head].to(at::kDouble);
    const int64_t i = (v1 - v0).abs().argmax().item<int64_t>();
    const double t = ((zh[i] - v0[i]) / (v1[i] - v0[i])).item<double>();
    const double slope = -std::log(1.0 / t - 1.0);
    INFO("head " << head << " slope " << slope);
    CHECK(slope == Approx(expected[static_cast<size_t>(head)]).margin(1e-4));
  }
}

TEST_CASE("MPT options destein does not run are refused by name", "[mpt][errors]") {
  const json base = mpt_config();
  auto refused = [&](const std::function<void(json&)>& change) {
    json c = base;
    change(c);
    return c;
  };
  auto parse = [](const json& c) { return ModelConfig::from_hf_json(c, "mpt/config.json"); };
  REQUIRE_NOTHROW(parse(base));
  REQUIRE_THROWS_WITH(parse(refused([](json& c) { c["attn_config"]["prefix_lm"] = true; })),
                      Contains("prefix_lm") && Contains("mpt/config.json"));
  REQUIRE_THROWS_WITH(
      parse(refused([](json& c) { c["attn_config"]["attn_uses_sequence_id"] = true; })),
      Contains("attn_uses_sequence_id"));
  REQUIRE_THROWS_WITH(parse(refused([](json& c) { c["attn_config"]["rope"] = true; })),
                      Contains("rope"));
  REQUIRE_THROWS_WITH(parse(refused([](json& c) { c["attn_config"]["qk_gn"] = true; })),
                      Contains("qk_gn"));
  REQUIRE_THROWS_WITH(
      parse(refused([](json& c) { c["attn_config"]["attn_type"] = "grouped_query_attention"; })),
      Contains("attn_type") && Contains("grouped_query_attention"));
  REQUIRE_THROWS_WITH(parse(refused([](json& c) { c["attn_config"]["sliding_window_size"] = 16; })),
                      Contains("sliding_window_size"));
  REQUIRE_THROWS_WITH(parse(refused([](json& c) { c["norm_type"] = "rmsnorm"; })),
                      Contains("norm_type") && Contains("rmsnorm"));
  REQUIRE_THROWS_WITH(parse(refused([](json& c) {
                        c["ffn_config"] = {{"ffn_type", "mptglu"}};
                      })),
                      Contains("ffn_type") && Contains("mptglu"));
  REQUIRE_THROWS_WITH(
      parse(refused([](json& c) {
        c["ffn_config"] = {{"ffn_type", "mptmlp"}, {"ffn_act_fn", {{"name", "silu"}}}};
      })),
      Contains("ffn_act_fn"));
  REQUIRE_THROWS_WITH(parse(refused([](json& c) { c["fc_type"] = "te"; })), Contains("fc_type"));
  REQUIRE_THROWS_WITH(parse(refused([](json& c) { c["logit_scale"] = "inv_d_model"; })),
                      Contains("logit_scale") && Contains("inv_d_model"));
  REQUIRE_THROWS_WITH(parse(refused([](json& c) {
                        c["block_overrides"] = {{"order", json::array()}};
                      })),
                      Contains("block_overrides"));
  // Hugging Face and MosaicML disagree on these defaults: a config must state them.
  REQUIRE_THROWS_WITH(parse(refused([](json& c) { c.erase("no_bias"); })), Contains("no_bias"));
  REQUIRE_THROWS_WITH(parse(refused([](json& c) { c["attn_config"].erase("alibi"); })),
                      Contains("alibi"));
  REQUIRE_THROWS_WITH(parse(refused([](json& c) { c.erase("attn_config"); })),
                      Contains("attn_config"));
  REQUIRE_THROWS_WITH(parse(refused([](json& c) { c["expansion_ratio"] = 1.01; })),
                      Contains("expansion_ratio"));
  // Options that change nothing at inference are accepted.
  REQUIRE_NOTHROW(parse(refused([](json& c) {
    c["attn_config"]["attn_impl"] = "flash";
    c["emb_pdrop"] = 0.1;
    c["attn_config"]["clip_qkv"] = nullptr;
  })));
  // A weight the config promises but the checkpoint lacks names the parameter.
  Checkpoint ckpt = load_checkpoint(fixture("mpt.pt"));
  ckpt.config.qk_ln = true;
  REQUIRE_THROWS_WITH(build_model(ckpt), Contains("transformer.blocks.0.attn.q_ln.weight"));
}
