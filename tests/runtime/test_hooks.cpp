// Hook points: names, capture, edit, removal, padding information, and that every code
// path (prefill and cached decode, every family) runs them.
#include <catch2/catch.hpp>

#include "destein/runtime/hooks.hpp"
#include "destein/runtime/model.hpp"
#include "test_support.hpp"

using namespace destein;
using Catch::Matchers::Contains;
using destein::test::fixture;
using destein::test::max_abs_diff;

namespace {
at::Tensor ids_of(std::vector<int64_t> ids) { return at::tensor(ids, at::kLong).unsqueeze(0); }
}  // namespace

TEST_CASE("hook point names", "[hooks]") {
  CHECK(hook_point_name(3, HookSite::kAttnZ) == "blocks.3.attn.hook_z");
  CHECK(hook_point_name(0, HookSite::kAttnOut) == "blocks.0.hook_attn_out");
  CHECK(hook_point_names(2).size() == 10);
  Hooks hooks;
  CHECK(hooks.empty());
  auto noop = [](const at::Tensor&, const HookContext&) {};
  CHECK_THROWS_WITH(hooks.observe("block.0.hook_z", noop), Contains("expected blocks.{i}"));
  CHECK_THROWS_WITH(hooks.observe("blocks.x.hook_attn_out", noop), Contains("'x' is not a number"));
  CHECK_THROWS_WITH(hooks.observe("blocks.0.hook_z", noop), Contains("unknown point 'hook_z'"));
  auto h = hooks.observe("blocks.1.attn.hook_z", noop);
  CHECK(hooks.has(1, HookSite::kAttnZ));
  CHECK_FALSE(hooks.has(0, HookSite::kAttnZ));
  CHECK_FALSE(hooks.has(1, HookSite::kAttnOut));
  h.remove();
  CHECK(hooks.empty());
}

TEST_CASE("captured activations have the documented shapes and agree with the weights", "[hooks]") {
  Checkpoint ckpt = load_checkpoint(fixture("gpt2.pt"));
  auto model = build_model(ckpt);
  Hooks hooks;
  std::map<std::string, at::Tensor> seen;
  std::vector<HookHandle> handles;
  for (const auto& name : hook_point_names(2)) {
    handles.push_back(hooks.observe(
        name, [&seen, name](const at::Tensor& x, const HookContext&) { seen[name] = x.clone(); }));
  }
  ForwardOptions fo;
  fo.hooks = &hooks;
  at::Tensor with_hooks = model->forward(ids_of({5, 17, 42, 8}), fo).logits;
  REQUIRE(seen.size() == 10);
  CHECK(seen["blocks.0.attn.hook_z"].sizes() == c10::IntArrayRef({1, 4, 4, 8}));
  CHECK(seen["blocks.1.hook_attn_out"].sizes() == c10::IntArrayRef({1, 4, 32}));
  // hook_attn_out is hook_z through GPT-2's Conv1D output projection: z W + b.
  at::Tensor z = seen["blocks.1.attn.hook_z"].reshape({1, 4, 32});
  at::Tensor expect = at::matmul(z, ckpt.tensors.at("transformer.h.1.attn.c_proj.weight")) +
                      ckpt.tensors.at("transformer.h.1.attn.c_proj.bias");
  CHECK(max_abs_diff(seen["blocks.1.hook_attn_out"], expect) < 1e-5);
  // The residual stream adds up: post = pre + attn_out + mlp_out, and post(i) = pre(i+1).
  CHECK(max_abs_diff(seen["blocks.0.hook_resid_post"], seen["blocks.0.hook_resid_pre"] +
                                                           seen["blocks.0.hook_attn_out"] +
                                                           seen["blocks.0.hook_mlp_out"]) < 1e-5);
  CHECK(at::equal(seen["blocks.0.hook_resid_post"], seen["blocks.1.hook_resid_pre"]));
  // Observing changes nothing.
  CHECK(at::equal(with_hooks, model->forward(ids_of({5, 17, 42, 8})).logits));
}

TEST_CASE("edits change the output in every family, identity edits change nothing", "[hooks]") {
  for (const char* family : destein::test::kFamilies) {
    INFO("family " << family);
    auto model = load_model(fixture(std::string(family) + ".pt"));
    at::Tensor ids = ids_of({5, 17, 42, 8, 11});
    at::Tensor base = model->forward(ids).logits;
    for (const char* point :
         {"blocks.0.attn.hook_z", "blocks.1.hook_attn_out", "blocks.0.hook_mlp_out",
          "blocks.1.hook_resid_pre", "blocks.1.hook_resid_post"}) {
      INFO("point " << point);
      Hooks hooks;
      ForwardOptions fo;
      fo.hooks = &hooks;
      {
        auto h =
            hooks.edit(point, [](const at::Tensor& x, const HookContext&) { return x.clone(); });
        CHECK(at::equal(model->forward(ids, fo).logits, base));
      }
      CHECK(hooks.empty());  // the handle went out of scope
      // Not an affine map of the whole vector: a final LayerNorm would undo that.
      auto h = hooks.edit(point, [](const at::Tensor& x, const HookContext&) {
        return x + at::arange(x.size(-1), x.options()) * 0.05;
      });
      CHECK(max_abs_diff(model->forward(ids, fo).logits, base) > 1e-3);
    }
  }
}

TEST_CASE("hooks run on the cached decode path with padding information", "[hooks][cache]") {
  auto model = load_model(fixture("llama.pt"));
  Hooks hooks;
  std::vector<std::tuple<int64_t, int64_t, at::Tensor>> calls;  // (T, past, token_mask)
  auto h = hooks.observe("blocks.1.attn.hook_z", [&](const at::Tensor& z, const HookContext& ctx) {
    CHECK(ctx.layer == 1);
    CHECK(ctx.site == HookSite::kAttnZ);
    calls.emplace_back(z.size(1), ctx.past_length, ctx.token_mask.clone());
  });
  at::Tensor ids = at::tensor({0, 0, 5, 17, 9, 8, 7, 6}, at::kLong).view({2, 4});
  at::Tensor mask = at::tensor({0, 0, 1, 1, 1, 1, 1, 1}, at::kLong).view({2, 4});
  KVCache cache = model->make_cache(2, 5);
  ForwardOptions fo;
  fo.cache = &cache;
  fo.hooks = &hooks;
  fo.attention_mask = mask;
  model->forward(ids, fo);
  fo.attention_mask = at::ones({2, 5}, at::kLong);
  fo.attention_mask[0][0] = 0;
  fo.attention_mask[0][1] = 0;
  model->forward(at::tensor({3, 4}, at::kLong).view({2, 1}), fo);
  REQUIRE(calls.size() == 2);
  CHECK(std::get<0>(calls[0]) == 4);
  CHECK(std::get<1>(calls[0]) == 0);
  CHECK(at::equal(std::get<2>(calls[0]), mask.ne(0)));
  CHECK(std::get<0>(calls[1]) == 1);
  CHECK(std::get<1>(calls[1]) == 4);
  CHECK(std::get<2>(calls[1]).all().item<bool>());
}

TEST_CASE("wildcards, ordering, removal and bad edits", "[hooks]") {
  auto model = load_model(fixture("opt.pt"));
  at::Tensor ids = ids_of({5, 6, 7});
  Hooks hooks;
  std::vector<int64_t> layers;
  auto all = hooks.observe(
      "blocks.*.hook_attn_out",
      [&](const at::Tensor&, const HookContext& ctx) { layers.push_back(ctx.layer); });
  ForwardOptions fo;
  fo.hooks = &hooks;
  model->forward(ids, fo);
  CHECK(layers == std::vector<int64_t>{0, 1});
  all.remove();
  CHECK_FALSE(all.active());
  layers.clear();
  model->forward(ids, fo);
  CHECK(layers.empty());

  // Editors chain in registration order; observers see the edited activation.
  at::Tensor observed;
  auto e1 = hooks.edit("blocks.0.hook_mlp_out",
                       [](const at::Tensor& x, const HookContext&) { return x * 0; });
  auto e2 = hooks.edit("blocks.0.hook_mlp_out",
                       [](const at::Tensor& x, const HookContext&) { return x + 2; });
  auto e3 = hooks.observe("blocks.0.hook_mlp_out",
                          [&](const at::Tensor& x, const HookContext&) { observed = x.clone(); });
  model->forward(ids, fo);
  CHECK(at::equal(observed, at::full_like(observed, 2)));
  e1.remove();
  e2.remove();
  e3.remove();

  auto bad = hooks.edit("blocks.0.attn.hook_z",
                        [](const at::Tensor& x, const HookContext&) { return x.sum(-1); });
  CHECK_THROWS_WITH(model->forward(ids, fo),
                    Contains("blocks.0.attn.hook_z") && Contains("expected shape"));
  bad.remove();
  auto beyond =
      hooks.observe("blocks.7.hook_mlp_out", [](const at::Tensor&, const HookContext&) {});
  CHECK_THROWS_WITH(model->forward(ids, fo), Contains("layer 7"));
}
