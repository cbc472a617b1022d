// Steering beyond the paper: position windows, the probe gate, composition, per-row
// steering and the acted report, against hand-computed cases and independent routes.
#include <catch2/catch.hpp>

#include <cmath>
#include <functional>

#include "destein/runtime/generate.hpp"
#include "destein/steer/probes.hpp"
#include "destein/steer/steering.hpp"
#include "io/safetensors.hpp"
#include "runtime/hook_runner.hpp"
#include "test_support.hpp"

using namespace destein;
using Catch::Matchers::Contains;
using destein::test::fixture;
using destein::test::max_abs_diff;

namespace {

SteeringVectors random_vectors(const ModelConfig& c, SteeringSite site, bool gate_probes,
                               uint64_t seed) {
  at::manual_seed(seed);
  SteeringVectors v;
  v.directions = at::randn({c.n_layers, c.n_heads, c.head_dim});
  v.probe_accuracy = 0.6 + 0.4 * at::rand({c.n_layers, c.n_heads});
  if (gate_probes) {
    v.probe_weight = at::randn({c.n_layers, c.n_heads, c.head_dim});
    v.probe_bias = at::randn({c.n_layers, c.n_heads});
    v.probe_feature_mean = 0.1 * at::randn({c.n_layers, c.n_heads, c.head_dim});
    v.probe_feature_scale = 0.5 + at::rand({c.n_layers, c.n_heads, c.head_dim});
  }
  v.site = site;
  v.model_type = c.model_type;
  return v;
}

// One layer, two heads of two dimensions: small enough to compute by hand.
ModelConfig tiny_config() {
  ModelConfig c;
  c.n_layers = 1;
  c.n_heads = 2;
  c.head_dim = 2;
  c.d_model = 4;
  return c;
}

// Head 0 direction (0, 1), head 1 direction (1, 0); probes as given.
SteeringVectors hand_vectors(double bias0, double bias1) {
  SteeringVectors v;
  v.directions = at::tensor({0.f, 1.f, 1.f, 0.f}).view({1, 2, 2});
  v.probe_weight = at::tensor({2.f, 0.f, 0.f, 0.f}).view({1, 2, 2});
  v.probe_bias = at::tensor({float(bias0), float(bias1)}).view({1, 2});
  v.probe_feature_mean = at::zeros({1, 2, 2});
  v.probe_feature_scale = at::ones({1, 2, 2});
  v.site = SteeringSite::kAttnOut;
  return v;
}

double sigmoid(double z) { return 1.0 / (1.0 + std::exp(-z)); }

std::vector<int64_t> greedy_loop(const Model& model, const std::vector<int64_t>& prompt, int steps,
                                 const Hooks* prompt_hooks, const Hooks* decode_hooks) {
  // Cached decoding written out: the prompt pass with one set of hooks, each step with another.
  KVCache cache = model.make_cache(1, static_cast<int64_t>(prompt.size()) + steps + 1);
  ForwardOptions fo;
  fo.cache = &cache;
  fo.logits = LogitsFor::kLast;
  fo.hooks = prompt_hooks;
  std::vector<int64_t> out;
  at::Tensor logits = model.forward(at::tensor(prompt, at::kLong).unsqueeze(0), fo).logits;
  fo.hooks = decode_hooks;
  for (int i = 0; i < steps; ++i) {
    out.push_back(logits[0][-1].argmax().item<int64_t>());
    logits = model.forward(at::tensor({out.back()}, at::kLong).view({1, 1}), fo).logits;
  }
  return out;
}

}  // namespace

TEST_CASE(
    "position windows: generated leaves a prompt-only forward bit-identical, prompt equals all",
    "[steering][windows]") {
  auto model = load_model(fixture("gpt2.pt"));
  const auto& c = model->config();
  at::Tensor ids = at::tensor({5, 17, 42, 8, 11, 3}, at::kLong).unsqueeze(0);
  at::Tensor base = model->forward(ids).logits;
  for (SteeringSite site : {SteeringSite::kAttnOut, SteeringSite::kHookZ}) {
    for (SteeringMode mode : {SteeringMode::kReference, SteeringMode::kHeadwise}) {
      INFO(steering_site_name(site) << " " << steering_mode_name(mode));
      SteeringVectors v = random_vectors(c, site, false, 21);
      SteeringOptions o;
      o.mode = mode;
      o.alpha = 0.7;
      Hooks hooks;
      ForwardOptions fo;
      fo.hooks = &hooks;
      at::Tensor all;
      {
        auto h = attach_steering(hooks, *model, v, o);
        all = model->forward(ids, fo).logits;
      }
      CHECK(max_abs_diff(all, base) > 1e-3);
      o.positions = SteeringPositions::kGenerated;
      {
        auto h = attach_steering(hooks, *model, v, o);
        CHECK(at::equal(model->forward(ids, fo).logits, base));
        const auto report = h.report();
        REQUIRE(report.entries.size() == 1);
        CHECK(report.entries[0].prompt_positions == 6);
        CHECK(report.entries[0].prompt_layer_mean[0] == 0);
      }
      o.positions = SteeringPositions::kPrompt;
      {
        auto h = attach_steering(hooks, *model, v, o);
        CHECK(at::equal(model->forward(ids, fo).logits, all));
      }
    }
  }
}

TEST_CASE("position windows in cached generation equal a hand-written decode loop",
          "[steering][windows][generate]") {
  auto model = load_model(fixture("gpt2.pt"));
  SteeringVectors v = random_vectors(model->config(), SteeringSite::kAttnOut, false, 4);
  GenerationOptions g;
  g.do_sample = false;
  g.max_new_tokens = 6;
  g.stop_at_eos = false;
  const std::vector<int64_t> prompt = {5, 17, 42};
  SteeringOptions o;
  o.alpha = 0.9;
  Hooks all_hooks;  // the whole-run steering, used by hand for one phase at a time
  auto all = attach_steering(all_hooks, *model, v, o);
  Hooks none;
  for (SteeringPositions window : {SteeringPositions::kGenerated, SteeringPositions::kPrompt}) {
    INFO("positions " << steering_positions_name(window));
    o.positions = window;
    Hooks hooks;
    auto h = attach_steering(hooks, *model, v, o);
    auto steered = generate(*model, {prompt}, g, &hooks);
    const bool gen = window == SteeringPositions::kGenerated;
    CHECK(steered[0].token_ids ==
          greedy_loop(*model, prompt, 6, gen ? &none : &all_hooks, gen ? &all_hooks : &none));
    // The acted report: edits only where the window is; generate() feeds the last token
    // back only when another is needed, so 5 decode calls of one position.
    const auto e = h.report().entries.at(0);
    CHECK(e.prompt_positions == 3);
    CHECK(e.generated_positions == 5);
    for (size_t i = 0; i < e.layers.size(); ++i) {
      CHECK((e.prompt_layer_mean[i] > 0) == !gen);
      CHECK((e.generated_layer_mean[i] > 0) == gen);
    }
    CHECK_FALSE(e.generated_not_edited);
  }
}

TEST_CASE(
    "the probe gate against a hand-computed case: closed = base, open = ungated, soft between",
    "[steering][gate]") {
  const ModelConfig c = tiny_config();
  const double p0 = sigmoid(1.0), p1 = 0.75;
  // x: one position, head 0 = (1, 0), head 1 = (0, 2).
  at::Tensor x = at::tensor({1.f, 0.f, 0.f, 2.f}).view({1, 1, 4});
  SteeringOptions o;
  o.alpha = 1.0;
  for (SteeringMode mode : {SteeringMode::kReference, SteeringMode::kHeadwise}) {
    INFO(steering_mode_name(mode));
    o.mode = mode;
    o.gate = SteeringGate::kNone;
    // The ungated edit by hand.
    std::vector<double> edited;
    if (mode == SteeringMode::kReference) {
      // a = (0, 1, 1, 0)/sqrt2, |x| = sqrt5: v = x/|x| - a = (1/sqrt5, -1/sqrt2, -1/sqrt2, 2/sqrt5),
      // x' = |x| v/|v|.
      const double n = std::sqrt(5.0), r = 1 / std::sqrt(2.0);
      std::vector<double> u = {1 / n, 0 - r, 0 - r, 2 / n};
      double vn = 0;
      for (double t : u) vn += t * t;
      vn = std::sqrt(vn);
      for (double t : u) edited.push_back(n * t / vn);
    } else {
      // head 0: u = (1, 0), a = (0, 1), cos 0: v = (1, -1), x' = (1, -1)/sqrt2.
      // head 1: u = (0, 1), a = (1, 0), cos 0: v = (-1, 1), x' = 2 (-1, 1)/sqrt2.
      const double r = 1 / std::sqrt(2.0);
      edited = {r, -r, -2 * r, 2 * r};
    }
    SteeringVectors v = hand_vectors(-1.0, std::log(3.0));  // z0 = 2 * 1 - 1 = 1, z1 = ln 3
    at::Tensor ungated = SteeringPlan(v, c, o).apply(0, x);
    for (int i = 0; i < 4; ++i)
      CHECK(ungated.flatten()[i].item<double>() == Approx(edited[size_t(i)]).margin(1e-6));

    o.gate = SteeringGate::kProbe;
    SteeringPlan soft(v, c, o);
    at::Tensor g = soft.gate(0, x);
    CHECK(g[0][0][0].item<double>() == Approx(p0).margin(1e-6));
    CHECK(g[0][0][1].item<double>() == Approx(p1).margin(1e-6));
    at::Tensor out = soft.apply(0, x).flatten();
    const double xs[4] = {1, 0, 0, 2};
    for (int i = 0; i < 4; ++i) {
      const double p = i < 2 ? p0 : p1;
      CHECK(out[i].item<double>() == Approx(xs[i] + p * (edited[size_t(i)] - xs[i])).margin(1e-6));
    }
    CHECK(max_abs_diff(soft.apply(0, x), soft.apply_naive(0, x)) < 1e-6);
    // Standardised features: mean (0.5, 0), scale (0.5, 1) gives the same z0 = 2 (1 - 0.5)/0.5 - 1.
    SteeringVectors vs = v;
    vs.probe_feature_mean = at::tensor({0.5f, 0.f, 0.f, 0.f}).view({1, 2, 2});
    vs.probe_feature_scale = at::tensor({0.5f, 1.f, 1.f, 1.f}).view({1, 2, 2});
    vs.probe_bias = at::tensor({-1.f, float(std::log(3.0))}).view({1, 2});
    CHECK(SteeringPlan(vs, c, o).gate(0, x)[0][0][0].item<double>() == Approx(p0).margin(1e-6));

    // Hard gate at 0.74: head 0 (0.731) stays, head 1 (0.75) takes the edit as is.
    o.gate_threshold = 0.74;
    at::Tensor hard = SteeringPlan(v, c, o).apply(0, x).flatten();
    CHECK(hard[0].item<float>() == 1.f);
    CHECK(hard[1].item<float>() == 0.f);
    CHECK(at::equal(hard.narrow(0, 2, 2), ungated.flatten().narrow(0, 2, 2)));
    CHECK(max_abs_diff(SteeringPlan(v, c, o).apply(0, x), SteeringPlan(v, c, o).apply_naive(0, x)) <
          1e-6);
    o.gate_threshold = 0;

    // Closed gate: base bit for bit. Open gate: the ungated edit.
    CHECK(at::equal(SteeringPlan(hand_vectors(-1e4, -1e4), c, o).apply(0, x), x));
    CHECK(max_abs_diff(SteeringPlan(hand_vectors(1e4, 1e4), c, o).apply(0, x), ungated) < 1e-6);
  }
}

TEST_CASE("the probe gate on a model: fast equals naive, closed gate is base, alpha 0 a no-op",
          "[steering][gate]") {
  auto model = load_model(fixture("llama.pt"));
  const auto& c = model->config();
  at::Tensor ids = at::tensor({5, 17, 42, 8, 11, 3}, at::kLong).unsqueeze(0);
  at::Tensor base = model->forward(ids).logits;
  for (SteeringSite site : {SteeringSite::kAttnOut, SteeringSite::kHookZ}) {
    for (SteeringMode mode : {SteeringMode::kReference, SteeringMode::kHeadwise}) {
      INFO(steering_site_name(site) << " " << steering_mode_name(mode));
      SteeringVectors v = random_vectors(c, site, true, 7);
      SteeringOptions o;
      o.mode = mode;
      o.alpha = 0.8;
      o.gate = SteeringGate::kProbe;
      at::Tensor x = site == SteeringSite::kHookZ ? at::randn({2, 5, c.n_heads, c.head_dim})
                                                  : at::randn({2, 5, c.d_model});
      at::Tensor mask = at::rand({2, 5}) > 0.5;
      for (double threshold : {0.0, 0.5}) {
        o.gate_threshold = threshold;
        SteeringPlan plan(v, c, o);
        for (int64_t l = 0; l < c.n_layers; ++l) {
          CHECK(max_abs_diff(plan.apply(l, x), plan.apply_naive(l, x)) < 1e-5);
          at::Tensor masked = plan.apply(l, x, mask);
          CHECK(max_abs_diff(masked, plan.apply_naive(l, x, mask)) < 1e-5);
          // Positions outside the mask come back bit for bit.
          at::Tensor keep = mask.logical_not();
          CHECK(at::equal(masked.index({keep}), x.index({keep})));
        }
      }
      o.gate_threshold = 0;
      Hooks hooks;
      ForwardOptions fo;
      fo.hooks = &hooks;
      SteeringVectors closed = v;
      closed.probe_bias = at::full({c.n_layers, c.n_heads}, -1e4);
      {
        auto h = attach_steering(hooks, *model, closed, o);
        CHECK(at::equal(model->forward(ids, fo).logits, base));
      }
      {
        o.alpha = 0;
        auto h = attach_steering(hooks, *model, v, o);
        CHECK(at::equal(model->forward(ids, fo).logits, base));
        o.alpha = 0.8;
      }
      auto h = attach_steering(hooks, *model, v, o);
      CHECK(max_abs_diff(model->forward(ids, fo).logits, base) > 1e-4);
    }
  }
  // Gate probe without probes in the vectors: a clear error.
  SteeringVectors plain = random_vectors(c, SteeringSite::kAttnOut, false, 1);
  SteeringOptions o;
  o.gate = SteeringGate::kProbe;
  CHECK_THROWS_WITH(SteeringPlan(plain, c, o), Contains("gate: probe needs the per-head probes"));
  o.gate_threshold = 1.5;
  CHECK_THROWS_WITH(SteeringPlan(random_vectors(c, SteeringSite::kAttnOut, true, 1), c, o),
                    Contains("[0, 1)"));
  CHECK_THROWS_WITH(parse_steering_gate("always"), Contains("none or probe"));
  CHECK_THROWS_WITH(parse_steering_positions("decode"), Contains("all, prompt or generated"));
}

TEST_CASE("composition equals applying the entries one after the other by hand",
          "[steering][compose]") {
  auto model = load_model(fixture("gpt2.pt"));
  const auto& c = model->config();
  at::Tensor ids = at::tensor({5, 17, 42, 8, 11, 3}, at::kLong).unsqueeze(0);
  SteeringVectors va = random_vectors(c, SteeringSite::kAttnOut, true, 1);
  SteeringVectors vb = random_vectors(c, SteeringSite::kAttnOut, true, 2);
  SteeringOptions oa, ob;
  oa.alpha = 0.5;
  ob.mode = SteeringMode::kHeadwise;
  ob.alpha = 0.7;
  ob.gate = SteeringGate::kProbe;
  ob.layer_start = 1;
  auto a = make_steering_plan(*model, va, oa);
  auto b = make_steering_plan(*model, vb, ob);
  ForwardOptions fo;
  Hooks by_hand;
  std::vector<HookHandle> hs;
  for (int64_t l = 0; l < c.n_layers; ++l) {
    hs.push_back(by_hand.edit(hook_point_name(l, HookSite::kAttnOut),
                              [&, l](const at::Tensor& x, const HookContext&) {
                                at::Tensor y = a->apply_naive(l, x);
                                return b->steers(l) ? b->apply_naive(l, y) : y;
                              }));
  }
  fo.hooks = &by_hand;
  at::Tensor expected = model->forward(ids, fo).logits;
  Hooks hooks;
  fo.hooks = &hooks;
  at::Tensor composed, reversed;
  {
    auto h = attach_steering(hooks, *model, SteeringStack{a, b});
    composed = model->forward(ids, fo).logits;
    CHECK(h.report().entries.size() == 2);
  }
  CHECK(max_abs_diff(composed, expected) < 1e-4);
  {
    auto h = attach_steering(hooks, *model, SteeringStack{b, a});
    reversed = model->forward(ids, fo).logits;
  }
  CHECK(max_abs_diff(reversed, composed) > 1e-5);  // order matters: the entries do not commute
}

TEST_CASE("per-row steering: rows equal separate runs, unsteered rows bit-identical",
          "[steering][rows]") {
  auto model = load_model(fixture("llama.pt"));
  const auto& c = model->config();
  SteeringVectors va = random_vectors(c, SteeringSite::kAttnOut, true, 1);
  SteeringVectors vb = random_vectors(c, SteeringSite::kHookZ, true, 2);
  SteeringOptions oa, ob;
  oa.alpha = 0.6;
  ob.mode = SteeringMode::kHeadwise;
  ob.alpha = 0.9;
  auto a = make_steering_plan(*model, va, oa);
  auto b = make_steering_plan(*model, vb, ob);
  // Three left-padded rows.
  at::Tensor ids =
      at::tensor({0, 0, 5, 17, 42, 9, 3, 8, 11, 4, 0, 7, 2, 6, 1}, at::kLong).view({3, 5});
  at::Tensor mask =
      at::tensor({0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1}, at::kLong).view({3, 5});
  ForwardOptions fo;
  fo.attention_mask = mask;
  auto run = [&](const std::vector<SteeringStack>& rows) {
    Hooks hooks;
    SteeringController control(hooks, c, model->device());
    control.set_rows(rows);
    ForwardOptions f = fo;
    f.hooks = &hooks;
    return model->forward(ids, f).logits;
  };
  at::Tensor mixed = run({{a}, {}, {a, b}});
  at::Tensor unsteered = model->forward(ids, fo).logits;
  at::Tensor all_a = run({{a}, {a}, {a}});
  at::Tensor all_ab = run({{a, b}, {a, b}, {a, b}});
  CHECK(at::equal(mixed[1], unsteered[1]));
  CHECK(at::equal(mixed[0], all_a[0]));
  CHECK(at::equal(mixed[2], all_ab[2]));
  CHECK(max_abs_diff(mixed[0], unsteered[0]) > 1e-4);
  // Each row alone, uniformly steered.
  for (int64_t r : {0, 2}) {
    Hooks hooks;
    auto h = attach_steering(hooks, *model, r == 0 ? SteeringStack{a} : SteeringStack{a, b});
    ForwardOptions f;
    f.hooks = &hooks;
    const int64_t n = mask[r].sum().item<int64_t>();
    at::Tensor alone = model->forward(ids[r].narrow(0, 5 - n, n).unsqueeze(0), f).logits[0];
    CHECK(max_abs_diff(mixed[r].narrow(0, 5 - n, n), alone) < 1e-4);
  }
  // A batch of another size than the assignment is refused.
  Hooks hooks;
  SteeringController control(hooks, c, model->device());
  control.set_rows({{a}, {}});
  ForwardOptions f = fo;
  f.hooks = &hooks;
  CHECK_THROWS_WITH(model->forward(ids, f), Contains("set_rows() assigned 2 rows"));
}

TEST_CASE("per-row steering can change between cached decode steps", "[steering][rows][generate]") {
  auto model = load_model(fixture("gpt2.pt"));
  const auto& c = model->config();
  SteeringVectors v = random_vectors(c, SteeringSite::kAttnOut, false, 3);
  SteeringOptions o;
  o.alpha = 0.8;
  auto a = make_steering_plan(*model, v, o);
  o.positions = SteeringPositions::kPrompt;
  auto a_prompt_only = make_steering_plan(*model, v, o);
  at::Tensor prompt = at::tensor({5, 17, 42, 9, 3, 8}, at::kLong).view({2, 3});
  auto loop = [&](const std::function<void(SteeringController&, int)>& assign) {
    Hooks hooks;
    SteeringController control(hooks, c, model->device());
    KVCache cache = model->make_cache(2, 8);
    ForwardOptions fo;
    fo.cache = &cache;
    fo.hooks = &hooks;
    fo.logits = LogitsFor::kLast;
    assign(control, 0);
    at::Tensor logits = model->forward(prompt, fo).logits;  // (2, 1, V)
    std::vector<at::Tensor> steps = {logits};
    for (int s = 1; s <= 3; ++s) {
      assign(control, s);
      at::Tensor next = logits.select(1, 0).argmax(-1).view({2, 1});
      logits = model->forward(next, fo).logits;
      steps.push_back(logits);
    }
    return at::cat(steps, 1);  // (2, 4, V)
  };
  // Row 1 steered through the prompt, then dropped from steering while decoding.
  at::Tensor switched = loop([&](SteeringController& s, int step) {
    s.set_rows({{a}, step == 0 ? SteeringStack{a} : SteeringStack{}});
  });
  at::Tensor uniform = loop([&](SteeringController& s, int) { s.set_uniform({a}); });
  at::Tensor prompt_window =
      loop([&](SteeringController& s, int) { s.set_uniform({a_prompt_only}); });
  CHECK(at::equal(switched[0], uniform[0]));
  CHECK(at::equal(switched[1], prompt_window[1]));
  CHECK(max_abs_diff(switched[1], uniform[1]) > 1e-4);

  // set_generated_from: one forward over prompt + continuation with the boundary given per
  // row equals the cached prompt pass + decode steps.
  o.positions = SteeringPositions::kGenerated;
  auto a_gen = make_steering_plan(*model, v, o);
  at::Tensor cached = loop([&](SteeringController& s, int) { s.set_uniform({a_gen}); });
  std::vector<int64_t> seq = {5, 17, 42};
  for (int s = 0; s < 3; ++s) seq.push_back(cached[0][s].argmax().item<int64_t>());
  Hooks hooks;
  SteeringController control(hooks, c, model->device());
  control.set_uniform({a_gen});
  control.set_generated_from({3});
  ForwardOptions fo;
  fo.hooks = &hooks;
  at::Tensor full =
      model->forward(at::tensor(seq, at::kLong).unsqueeze(0), fo).logits[0];  // (6, V)
  CHECK(max_abs_diff(full.narrow(0, 2, 4), cached[0]) < 1e-4);
}

TEST_CASE("the acted report against a hand-computed case", "[steering][report]") {
  const ModelConfig c = tiny_config();
  SteeringVectors v;
  v.directions = at::tensor({0.f, 1.f, 0.f, 0.f}).view({1, 2, 2});  // a = (0, 1, 0, 0)
  v.site = SteeringSite::kAttnOut;
  SteeringOptions o;
  o.alpha = 1.0;
  auto plan = std::make_shared<const SteeringPlan>(v, c, o);
  Hooks hooks;
  SteeringController control(hooks, c, c10::Device(c10::kCPU));
  control.set_uniform({plan});
  // Prompt call: a padding position, then (3, 0, 0, 0) and (0, 0, 2, 0).
  //   (3, 0, 0, 0): x' = 3 (1, -1, 0, 0)/sqrt2, |edit| = 3 sqrt(2 - sqrt2); all in head 0.
  //   (0, 0, 2, 0): x' = 2 (0, -1, 1, 0)/sqrt2 = (0, -sqrt2, sqrt2, 0): head 0 edit sqrt2,
  //   head 1 edit 2 - sqrt2, whole edit 2 sqrt(2 - sqrt2).
  at::Tensor prompt =
      at::tensor({1.f, 0.f, 0.f, 0.f, 3.f, 0.f, 0.f, 0.f, 0.f, 0.f, 2.f, 0.f}).view({1, 3, 4});
  at::Tensor prompt_mask = at::tensor({0, 1, 1}).to(at::kBool).view({1, 3});
  HookRunner::run(hooks, 0, HookSite::kAttnOut, prompt, prompt_mask, 0);
  // Decode call: (1, 0, 0, 0) after 3 cached positions: |edit| = sqrt(2 - sqrt2).
  HookRunner::run(hooks, 0, HookSite::kAttnOut, at::tensor({1.f, 0.f, 0.f, 0.f}).view({1, 1, 4}),
                  at::ones({1, 1}, at::kBool), 3);
  const double k = std::sqrt(2 - std::sqrt(2.0));
  const auto r = control.report();
  REQUIRE(r.entries.size() == 1);
  const auto& e = r.entries[0];
  CHECK(e.layers == std::vector<int64_t>{0});
  CHECK(e.prompt_positions == 2);
  CHECK(e.generated_positions == 1);
  CHECK(e.prompt_layer_mean[0] == Approx((3 * k + 2 * k) / 2).margin(1e-6));
  CHECK(e.generated_layer_mean[0] == Approx(k).margin(1e-6));
  CHECK(e.prompt_head_mean[0] == Approx((3 * k + std::sqrt(2.0)) / 2).margin(1e-6));
  CHECK(e.prompt_head_mean[1] == Approx((2 - std::sqrt(2.0)) / 2).margin(1e-6));
  CHECK(e.generated_head_mean[0] == Approx(k).margin(1e-6));
  CHECK(e.generated_head_mean[1] == Approx(0).margin(1e-9));
  CHECK_FALSE(e.generated_not_edited);
  CHECK(r.warnings().empty());
  control.reset_stats();
  CHECK(control.report().entries[0].prompt_positions == 0);

  // A gate that never opens while decoding is flagged; a prompt window is not.
  SteeringVectors closed = hand_vectors(-1e4, -1e4);
  o.gate = SteeringGate::kProbe;
  auto shut = std::make_shared<const SteeringPlan>(closed, c, o);
  o.gate = SteeringGate::kNone;
  o.positions = SteeringPositions::kPrompt;
  auto prompt_only = std::make_shared<const SteeringPlan>(closed, c, o);
  Hooks hooks2;
  SteeringController flagged(hooks2, c, c10::Device(c10::kCPU));
  flagged.set_uniform({shut, prompt_only});
  HookRunner::run(hooks2, 0, HookSite::kAttnOut, prompt, prompt_mask, 0);
  HookRunner::run(hooks2, 0, HookSite::kAttnOut, at::tensor({1.f, 0.f, 0.f, 0.f}).view({1, 1, 4}),
                  at::ones({1, 1}, at::kBool), 3);
  const auto fr = flagged.report();
  REQUIRE(fr.entries.size() == 2);
  CHECK(fr.entries[0].generated_not_edited);
  CHECK_FALSE(fr.entries[1].generated_not_edited);
  CHECK(fr.entries[1].prompt_layer_mean[0] > 0);
  REQUIRE(fr.warnings().size() == 1);
  CHECK_THAT(fr.warnings()[0], Contains("gate never opened"));
}

TEST_CASE("vectors files: format 2 stores the gate probes, format 1 files still load",
          "[steering][vectors]") {
  auto model = load_model(fixture("gpt2.pt"));
  const auto& c = model->config();
  auto dir = destein::test::temp_dir("vectors-v2");
  SteeringVectors v = random_vectors(c, SteeringSite::kAttnOut, true, 5);
  save_steering_vectors(dir / "v2.safetensors", v);
  SafetensorsFile raw = read_safetensors(dir / "v2.safetensors");
  CHECK(raw.metadata.at("format") == "destein-vectors/2");
  SteeringVectors back = load_steering_vectors(dir / "v2.safetensors");
  REQUIRE(back.has_gate_probes());
  CHECK(at::equal(back.probe_weight, v.probe_weight));
  CHECK(at::equal(back.probe_bias, v.probe_bias));
  CHECK(at::equal(back.probe_feature_mean, v.probe_feature_mean));
  CHECK(at::equal(back.probe_feature_scale, v.probe_feature_scale));

  // A format-1 file as the previous release wrote it.
  write_safetensors(dir / "v1.safetensors",
                    {{"directions", v.directions}, {"probe_accuracy", v.probe_accuracy}},
                    {{"format", "destein-vectors/1"},
                     {"site", "attn_out"},
                     {"last_k", "8"},
                     {"model_type", "gpt2"}});
  SteeringVectors old = load_steering_vectors(dir / "v1.safetensors");
  CHECK(at::equal(old.directions, v.directions));
  CHECK(at::equal(old.probe_accuracy, v.probe_accuracy));
  CHECK_FALSE(old.has_gate_probes());
  SteeringOptions o;
  o.alpha = 0.5;
  Hooks hooks;
  CHECK(attach_steering(hooks, *model, old, o).active());
  o.gate = SteeringGate::kProbe;
  CHECK_THROWS_WITH(attach_steering(hooks, *model, old, o),
                    Contains("gate: probe needs the per-head probes"));

  // Some probe tensors without the others, or a scale <= 0: refused with the file named.
  write_safetensors(dir / "partial.safetensors",
                    {{"directions", v.directions}, {"probe_weight", v.probe_weight}},
                    {{"format", "destein-vectors/2"}, {"site", "attn_out"}});
  CHECK_THROWS_WITH(load_steering_vectors(dir / "partial.safetensors"),
                    Contains("partial.safetensors") && Contains("1 of the 4 gate probe tensors"));
  write_safetensors(dir / "scale.safetensors",
                    {{"directions", v.directions},
                     {"probe_weight", v.probe_weight},
                     {"probe_bias", v.probe_bias},
                     {"probe_feature_mean", v.probe_feature_mean},
                     {"probe_feature_scale", at::zeros_like(v.probe_feature_scale)}},
                    {{"format", "destein-vectors/2"}, {"site", "attn_out"}});
  CHECK_THROWS_WITH(load_steering_vectors(dir / "scale.safetensors"), Contains("<= 0"));
  SteeringVectors bad = v;
  bad.probe_bias = at::Tensor();
  CHECK_THROWS_WITH(save_steering_vectors(dir / "bad.safetensors", bad), Contains("probe_bias"));
}

TEST_CASE("gate probes are fitted on every pair, standardised as documented",
          "[steering][probes]") {
  // 6 pairs, 1 layer, 1 head, 2 features: toxic samples have feature 0 high.
  const int64_t N = 6;
  std::vector<float> toxic, nontoxic;
  for (int64_t i = 0; i < N; ++i) {
    toxic.insert(toxic.end(), {2.0f + 0.1f * float(i), float(i % 2)});
    nontoxic.insert(nontoxic.end(), {-1.0f + 0.2f * float(i), float((i + 1) % 2)});
  }
  ProbeOptions o;
  o.standardize = true;
  GateProbes g = fit_gate_probes(toxic.data(), nontoxic.data(), N, 1, 1, 2, o);
  // Mean and population standard deviation of the 12 samples, by hand.
  double m0 = 0, m1 = 0;
  for (int64_t i = 0; i < N; ++i) {
    m0 += toxic[size_t(2 * i)] + nontoxic[size_t(2 * i)];
    m1 += toxic[size_t(2 * i + 1)] + nontoxic[size_t(2 * i + 1)];
  }
  m0 /= 2 * N;
  m1 /= 2 * N;
  double s0 = 0;
  for (int64_t i = 0; i < N; ++i) {
    s0 += std::pow(toxic[size_t(2 * i)] - m0, 2) + std::pow(nontoxic[size_t(2 * i)] - m0, 2);
  }
  s0 = std::sqrt(s0 / (2 * N));
  CHECK(g.feature_mean[0] == Approx(m0).margin(1e-6));
  CHECK(g.feature_mean[1] == Approx(m1).margin(1e-6));
  CHECK(g.feature_scale[0] == Approx(s0).margin(1e-6));
  CHECK(g.feature_scale[1] == Approx(0.5).margin(1e-6));
  // Every training sample on the right side of the probe.
  for (int64_t i = 0; i < N; ++i) {
    for (int side = 0; side < 2; ++side) {
      const float* x = (side == 0 ? toxic.data() : nontoxic.data()) + 2 * i;
      double z = g.bias[0];
      for (int k = 0; k < 2; ++k)
        z += g.weight[size_t(k)] * (x[k] - g.feature_mean[size_t(k)]) / g.feature_scale[size_t(k)];
      CHECK((z > 0) == (side == 0));
    }
  }
  o.standardize = false;
  GateProbes raw = fit_gate_probes(toxic.data(), nontoxic.data(), N, 1, 1, 2, o);
  CHECK(raw.feature_mean[0] == 0.f);
  CHECK(raw.feature_scale[1] == 1.f);
  CHECK_THROWS_WITH(fit_gate_probes(nullptr, nontoxic.data(), N, 1, 1, 2, o), Contains("null"));
}
