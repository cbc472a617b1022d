// DeStein core: activations and directions (planted-direction recovery), the vectors
// file, and both intervention modes against a naive per-position, per-head oracle.
#include <catch2/catch.hpp>

#include "destein/runtime/generate.hpp"
#include "destein/steer/activations.hpp"
#include "destein/steer/steering.hpp"
#include "io/safetensors.hpp"
#include "test_support.hpp"

#include <cmath>
#include <map>

using namespace destein;
using Catch::Matchers::Contains;
using destein::test::fixture;
using destein::test::max_abs_diff;

namespace {

std::vector<std::vector<int64_t>> random_sequences(int64_t n, int64_t vocab, uint64_t seed) {
  at::manual_seed(seed);
  std::vector<std::vector<int64_t>> out;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t len = 3 + at::randint(0, 10, {1}).item<int64_t>();
    at::Tensor ids = at::randint(0, vocab, {len}, at::kLong);
    out.emplace_back(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + len);
  }
  return out;
}

double cosine(const at::Tensor& a, const at::Tensor& b) {
  return (at::dot(a.flatten().to(at::kDouble), b.flatten().to(at::kDouble)) /
          (a.norm().to(at::kDouble) * b.norm().to(at::kDouble)))
      .item<double>();
}

SteeringVectors random_vectors(const ModelConfig& c, SteeringSite site, bool with_probes,
                               uint64_t seed) {
  at::manual_seed(seed);
  SteeringVectors v;
  v.directions = at::randn({c.n_layers, c.n_heads, c.head_dim});
  if (with_probes) v.probe_accuracy = 0.4 + 0.6 * at::rand({c.n_layers, c.n_heads});
  v.site = site;
  v.model_type = c.model_type;
  return v;
}

}  // namespace

TEST_CASE("batched site activations equal one-by-one runs", "[steering][activations]") {
  auto model = load_model(fixture("llama.pt"));
  auto seqs = random_sequences(7, model->config().vocab_size, 3);
  for (SteeringSite site : {SteeringSite::kAttnOut, SteeringSite::kHookZ}) {
    ActivationOptions opts;
    opts.site = site;
    opts.last_k = 4;
    opts.batch_size = 3;
    at::Tensor batched = capture_site_activations(*model, seqs, opts);
    CHECK(batched.sizes() == c10::IntArrayRef({7, 2, 4, 8}));
    opts.batch_size = 1;
    at::Tensor single = capture_site_activations(*model, seqs, opts);
    CHECK(max_abs_diff(batched, single) < 1e-5);
  }
  // The mean over the last k positions, checked against a direct capture.
  Hooks hooks;
  at::Tensor seen;
  auto h = hooks.observe("blocks.1.hook_attn_out",
                         [&](const at::Tensor& x, const HookContext&) { seen = x.clone(); });
  ForwardOptions fo;
  fo.hooks = &hooks;
  model->forward(at::tensor(seqs[0], at::kLong).unsqueeze(0), fo);
  ActivationOptions opts;
  opts.last_k = 2;
  at::Tensor mine = capture_site_activations(*model, {seqs[0]}, opts);
  const int64_t T = seen.size(1);
  at::Tensor expected = seen[0].narrow(0, T - 2, 2).mean(0).view({4, 8});
  CHECK(max_abs_diff(mine[0][1], expected) < 1e-6);
}

TEST_CASE("a direction planted in one head's activations is recovered", "[steering][activations]") {
  auto model = load_model(fixture("gpt2.pt"));  // 2 layers, 4 heads, Dh 8
  const auto& c = model->config();
  at::manual_seed(11);
  at::Tensor planted = at::randn({c.head_dim});
  const int64_t layer = 1, head = 2;
  auto toxic_texts = random_sequences(64, c.vocab_size, 1);
  auto nontoxic_texts = random_sequences(64, c.vocab_size, 2);
  for (SteeringSite site : {SteeringSite::kAttnOut, SteeringSite::kHookZ}) {
    INFO("site " << steering_site_name(site));
    ActivationOptions opts;
    opts.site = site;
    opts.batch_size = 8;
    // Plant: toxic runs carry +2u in the chosen head of the chosen layer, at every position.
    Hooks plant;
    const std::string point = hook_point_name(layer, hook_site_of(site));
    auto h = plant.edit(point, [&](const at::Tensor& x, const HookContext&) {
      at::Tensor y = x.clone();
      if (site == SteeringSite::kHookZ) {
        y.select(2, head).add_(2 * planted);
      } else {
        y.narrow(2, head * c.head_dim, c.head_dim).add_(2 * planted);
      }
      return y;
    });
    opts.hooks = &plant;
    at::Tensor toxic = capture_site_activations(*model, toxic_texts, opts);
    h.remove();
    at::Tensor nontoxic = capture_site_activations(*model, nontoxic_texts, opts);
    at::Tensor dirs = directions_from_activations(toxic, nontoxic);  // (L, H, Dh)
    CHECK(dirs.sizes() == c10::IntArrayRef({2, 4, 8}));
    const double cos = cosine(dirs[layer][head], planted);
    INFO("cosine " << cos);
    CHECK(cos > 0.99);
    // Other heads carry only noise: no alignment with the planted vector to speak of.
    CHECK(std::abs(cosine(dirs[layer][0], planted)) < 0.9);
  }
}

TEST_CASE("fast steering equals the naive per-position, per-head formulas", "[steering]") {
  auto model = load_model(fixture("llama.pt"));
  const auto& c = model->config();
  for (SteeringSite site : {SteeringSite::kAttnOut, SteeringSite::kHookZ}) {
    for (SteeringMode mode : {SteeringMode::kReference, SteeringMode::kHeadwise}) {
      for (bool probes : {false, true}) {
        for (int64_t top_k : {0, 3}) {
          if (top_k > 0 && (!probes || mode == SteeringMode::kReference)) continue;
          INFO(steering_site_name(site)
               << " " << steering_mode_name(mode) << " probes " << probes << " top_k " << top_k);
          SteeringVectors v = random_vectors(c, site, probes, 5);
          SteeringOptions o;
          o.mode = mode;
          o.alpha = 0.6;
          o.top_k_heads = top_k;
          SteeringPlan plan(v, c, o);
          at::Tensor x = site == SteeringSite::kHookZ ? at::randn({3, 5, c.n_heads, c.head_dim})
                                                      : at::randn({3, 5, c.d_model});
          x[0][0].zero_();  // a zero activation must stay zero, not become NaN
          for (int64_t l = 0; l < c.n_layers; ++l) {
            at::Tensor fast = plan.apply(l, x), naive = plan.apply_naive(l, x);
            CHECK(max_abs_diff(fast, naive) < 1e-5);
            CHECK(at::isfinite(fast).all().item<bool>());
            // Norm preserved: per position (reference) or per head (headwise).
            at::Tensor xs = x.reshape({3, 5, c.n_heads, c.head_dim}),
                       fs = fast.reshape({3, 5, c.n_heads, c.head_dim});
            if (mode == SteeringMode::kReference) {
              CHECK(max_abs_diff(xs.flatten(2).norm(2, -1), fs.flatten(2).norm(2, -1)) < 1e-4);
            } else {
              CHECK(max_abs_diff(xs.norm(2, -1), fs.norm(2, -1)) < 1e-4);
              // Heads with weight 0 are untouched, bit for bit; others move.
              at::Tensor w = plan.head_weights(l);
              for (int64_t h = 0; h < c.n_heads; ++h) {
                if (w[h].item<float>() == 0) {
                  CHECK(at::equal(fs.select(2, h), xs.select(2, h)));
                } else {
                  CHECK(max_abs_diff(fs.select(2, h)[1], xs.select(2, h)[1]) > 1e-3);
                }
              }
            }
          }
          if (top_k > 0)
            CHECK((plan.head_weights(0) > 0).sum().item<int64_t>() +
                      (plan.head_weights(1) > 0).sum().item<int64_t>() <=
                  3);
        }
      }
    }
  }
}

namespace {

// A model configuration of the given shape, no weights: SteeringPlan needs only the shape.
ModelConfig shape_config(int64_t layers, int64_t heads, int64_t head_dim) {
  ModelConfig c;
  c.model_type = "gpt2";
  c.n_layers = layers;
  c.n_heads = heads;
  c.n_kv_heads = heads;
  c.head_dim = head_dim;
  c.d_model = heads * head_dim;
  return c;
}

// 2 layers, 2 heads of dimension 2, directions and accuracies chosen so that every plan
// value can be worked out by hand (below).
SteeringVectors hand_vectors(SteeringSite site, bool with_probes) {
  SteeringVectors v;
  v.directions = at::tensor({3.0f, 4.0f, 0.0f, 5.0f,    // layer 0: head 0 (3, 4), head 1 (0, 5)
                             1.0f, 0.0f, 0.0f, -2.0f})  // layer 1: head 0 (1, 0), head 1 (0, -2)
                     .view({2, 2, 2});
  if (with_probes) v.probe_accuracy = at::tensor({0.9f, 0.6f, 0.7f, 0.4f}).view({2, 2});
  v.site = site;
  v.model_type = "gpt2";
  return v;
}

at::Tensor doubles(std::vector<double> values) { return at::tensor(values, at::kDouble); }

}  // namespace

TEST_CASE("steering plan values of a hand-computed 2-layer, 2-head case", "[steering]") {
  const ModelConfig c = shape_config(2, 2, 2);
  const double alpha = 0.5, r = std::sqrt(1 + alpha * alpha);
  SECTION("reference mode: a_l = concat_h (1 + acc_lh) dir_lh") {
    // a_0 = (1.9*3, 1.9*4, 1.6*0, 1.6*5) = (5.7, 7.6, 0, 8), |a_0|^2 = 154.25;
    // a_1 = (1.7*1, 1.7*0, 1.4*0, 1.4*-2) = (1.7, 0, 0, -2.8), |a_1|^2 = 10.73.
    // For a unit x orthogonal to a_l: x' = (x - alpha a_l/|a_l|) / sqrt(1 + alpha^2).
    SteeringOptions o;
    o.alpha = alpha;
    SteeringPlan plan(hand_vectors(SteeringSite::kAttnOut, true), c, o);
    const double n0 = std::sqrt(154.25), n1 = std::sqrt(10.73);
    at::Tensor x0 = at::tensor({0.0f, 0.0f, 1.0f, 0.0f}).view({1, 1, 4});
    at::Tensor e0 =
        doubles({-alpha * 5.7 / n0 / r, -alpha * 7.6 / n0 / r, 1 / r, -alpha * 8 / n0 / r});
    CHECK(max_abs_diff(plan.apply(0, x0).flatten(), e0) < 1e-6);
    at::Tensor x1 = at::tensor({0.0f, 1.0f, 0.0f, 0.0f}).view({1, 1, 4});
    at::Tensor e1 = doubles({-alpha * 1.7 / n1 / r, 1 / r, 0, alpha * 2.8 / n1 / r});
    CHECK(max_abs_diff(plan.apply(1, x1).flatten(), e1) < 1e-6);
    // Norm preserved for any x: |(3, -1, 2, 0.5)| stays sqrt(14.25).
    at::Tensor x = at::tensor({3.0f, -1.0f, 2.0f, 0.5f}).view({1, 1, 4});
    CHECK(std::abs(plan.apply(0, x).norm().item<double>() - std::sqrt(14.25)) < 1e-5);
    // Without probes a_0 = (3, 4, 0, 5), |a_0|^2 = 50.
    SteeringPlan bare(hand_vectors(SteeringSite::kAttnOut, false), c, o);
    const double m0 = std::sqrt(50.0);
    CHECK(
        max_abs_diff(bare.apply(0, x0).flatten(), doubles({-alpha * 3 / m0 / r, -alpha * 4 / m0 / r,
                                                           1 / r, -alpha * 5 / m0 / r})) < 1e-6);
  }
  SECTION("headwise weights: clamp((acc - 0.5) / (max acc - 0.5), 0, 1) and top-K") {
    SteeringOptions o;
    o.mode = SteeringMode::kHeadwise;
    o.alpha = alpha;
    // max acc 0.9: w = (0.4, 0.1, 0.2, -0.1) / 0.4 = (1, 0.25, 0.5, 0 clamped).
    SteeringPlan plan(hand_vectors(SteeringSite::kHookZ, true), c, o);
    CHECK(max_abs_diff(plan.head_weights(0), doubles({1, 0.25})) < 1e-6);
    CHECK(max_abs_diff(plan.head_weights(1), doubles({0.5, 0})) < 1e-6);
    // Top-2 by accuracy: 0.9 (layer 0 head 0) and 0.7 (layer 1 head 0) keep their weights.
    o.top_k_heads = 2;
    SteeringPlan top2(hand_vectors(SteeringSite::kHookZ, true), c, o);
    CHECK(max_abs_diff(top2.head_weights(0), doubles({1, 0})) < 1e-6);
    CHECK(max_abs_diff(top2.head_weights(1), doubles({0.5, 0})) < 1e-6);
    o.top_k_heads = 1;
    SteeringPlan top1(hand_vectors(SteeringSite::kHookZ, true), c, o);
    CHECK(max_abs_diff(top1.head_weights(1), doubles({0, 0})) < 1e-6);
    // Ties go to the earlier (layer, head): accuracies (0.8, 0.8, 0.8, 0.6), top 2 -> the
    // first two, both weight (0.8 - 0.5) / (0.8 - 0.5) = 1.
    SteeringVectors tied = hand_vectors(SteeringSite::kHookZ, true);
    tied.probe_accuracy = at::tensor({0.8f, 0.8f, 0.8f, 0.6f}).view({2, 2});
    o.top_k_heads = 2;
    SteeringPlan ties(tied, c, o);
    CHECK(max_abs_diff(ties.head_weights(0), doubles({1, 1})) < 1e-6);
    CHECK(max_abs_diff(ties.head_weights(1), doubles({0, 0})) < 1e-6);
  }
  SECTION("headwise intervention with the cosine term") {
    SteeringOptions o;
    o.mode = SteeringMode::kHeadwise;
    o.alpha = alpha;
    SteeringPlan plan(hand_vectors(SteeringSite::kHookZ, true), c, o);
    const double s = std::sqrt(2.0), h = 1 / s;
    // Layer 0, head 0 (w 1, unit direction (0.6, 0.8)); z = (0.8, -0.6) is orthogonal, cos 0:
    // v = z - 0.5 (0.6, 0.8) = (0.5, -1), z' = (0.5, -1) / sqrt(1.25).
    // Head 1 (w 0.25, unit direction (0, 1)); z = (1, 1), cos = 1/sqrt 2:
    // v = (h, h - 0.5 * 0.25 * (1 + h)), z' = sqrt 2 v / |v|.
    at::Tensor z0 = at::tensor({0.8f, -0.6f, 1.0f, 1.0f}).view({1, 1, 2, 2});
    const double k = alpha * 0.25 * (1 + h);
    const double vn = std::sqrt(h * h + (h - k) * (h - k));
    at::Tensor e0 =
        doubles({0.5 / std::sqrt(1.25), -1 / std::sqrt(1.25), s * h / vn, s * (h - k) / vn});
    CHECK(max_abs_diff(plan.apply(0, z0).flatten(), e0) < 1e-6);
    // Layer 1, head 0 (w 0.5, unit direction (1, 0)); z = (-1, 1), cos = -1/sqrt 2 clamps to
    // 0: v = (-h - 0.25, h), z' = sqrt 2 v / |v|. Head 1 has w 0: untouched.
    at::Tensor z1 = at::tensor({-1.0f, 1.0f, 0.3f, -0.7f}).view({1, 1, 2, 2});
    const double wn = std::sqrt((h + 0.25) * (h + 0.25) + h * h);
    at::Tensor e1 = doubles({s * (-h - 0.25) / wn, s * h / wn, 0.3, -0.7});
    CHECK(max_abs_diff(plan.apply(1, z1).flatten(), e1) < 1e-6);
  }
}

TEST_CASE("both interventions equal an independent PyTorch implementation of the formulas",
          "[steering]") {
  // tests/fixtures/make_steering.py: written from the paper's and the notebook's formulas
  // in float64 PyTorch, 3 layers, 4 heads, Dh 5, alpha 0.45.
  SafetensorsFile f = read_safetensors(fixture("steering_reference.safetensors"));
  const ModelConfig c = shape_config(3, 4, 5);
  const double alpha = std::stod(f.metadata.at("alpha"));
  const auto& t = f.tensors;
  SteeringVectors v;
  v.directions = t.at("directions");
  v.probe_accuracy = t.at("probe_accuracy");
  v.model_type = "gpt2";
  SECTION("reference mode, with and without probe accuracies") {
    v.site = SteeringSite::kAttnOut;
    SteeringOptions o;
    o.alpha = alpha;
    SteeringPlan plan(v, c, o);
    SteeringVectors bare = v;
    bare.probe_accuracy = at::Tensor();
    SteeringPlan plain(bare, c, o);
    for (int64_t l = 0; l < c.n_layers; ++l) {
      INFO("layer " << l);
      const at::Tensor& x = t.at("x_attn_out");
      CHECK(max_abs_diff(plan.apply(l, x), t.at("reference." + std::to_string(l))) < 1e-5);
      CHECK(max_abs_diff(plan.apply_naive(l, x), t.at("reference." + std::to_string(l))) < 1e-5);
      CHECK(max_abs_diff(plain.apply(l, x), t.at("reference_noprobe." + std::to_string(l))) < 1e-5);
    }
  }
  SECTION("headwise mode, all heads and top-5") {
    v.site = SteeringSite::kHookZ;
    for (int64_t top_k : {0, 5}) {
      SteeringOptions o;
      o.mode = SteeringMode::kHeadwise;
      o.alpha = alpha;
      o.top_k_heads = top_k;
      SteeringPlan plan(v, c, o);
      const std::string tag = "top" + std::to_string(top_k);
      for (int64_t l = 0; l < c.n_layers; ++l) {
        INFO(tag << " layer " << l);
        CHECK(max_abs_diff(plan.head_weights(l), t.at("headwise_weights." + tag)[l]) < 1e-6);
        const at::Tensor& z = t.at("x_hook_z");
        const at::Tensor expected = t.at("headwise." + tag + "." + std::to_string(l));
        CHECK(max_abs_diff(plan.apply(l, z), expected) < 1e-5);
        CHECK(max_abs_diff(plan.apply_naive(l, z), expected) < 1e-5);
      }
    }
  }
}

TEST_CASE("alpha 0 is bit-identical and steering changes every family's output", "[steering]") {
  for (const char* family : destein::test::kFamilies) {
    INFO("family " << family);
    auto model = load_model(fixture(std::string(family) + ".pt"));
    const auto& c = model->config();
    at::Tensor ids = at::tensor({5, 17, 42, 8, 11, 3}, at::kLong).unsqueeze(0);
    at::Tensor base = model->forward(ids).logits;
    for (SteeringSite site : {SteeringSite::kAttnOut, SteeringSite::kHookZ}) {
      for (SteeringMode mode : {SteeringMode::kReference, SteeringMode::kHeadwise}) {
        SteeringVectors v = random_vectors(c, site, true, 21);
        SteeringOptions o;
        o.mode = mode;
        o.alpha = 0.0;
        Hooks hooks;
        ForwardOptions fo;
        fo.hooks = &hooks;
        {
          auto handle = attach_steering(hooks, *model, v, o);
          CHECK(at::equal(model->forward(ids, fo).logits, base));
        }
        o.alpha = 0.5;
        auto handle = attach_steering(hooks, *model, v, o);
        CHECK(handle.active());
        CHECK(max_abs_diff(model->forward(ids, fo).logits, base) > 1e-3);
        handle.remove();
        CHECK(at::equal(model->forward(ids, fo).logits, base));
      }
    }
  }
}

TEST_CASE("steering acts through the KV cache during generation", "[steering][generate]") {
  auto model = load_model(fixture("gpt2.pt"));
  SteeringVectors v = random_vectors(model->config(), SteeringSite::kAttnOut, false, 4);
  GenerationOptions g;
  g.do_sample = false;
  g.max_new_tokens = 8;
  g.stop_at_eos = false;
  std::vector<std::vector<int64_t>> prompts = {{5, 17, 42}, {9, 1}};
  auto base = generate(*model, prompts, g);
  Hooks hooks;
  SteeringOptions o;
  o.alpha = 0.9;
  auto handle = attach_steering(hooks, *model, v, o);
  auto steered = generate(*model, prompts, g, &hooks);
  CHECK((steered[0].token_ids != base[0].token_ids || steered[1].token_ids != base[1].token_ids));
  // Every decode step is steered: greedy steered generation equals an argmax loop over
  // steered full forward passes.
  ForwardOptions fo;
  fo.hooks = &hooks;
  std::vector<int64_t> seq = prompts[0];
  for (int i = 0; i < 8; ++i) {
    seq.push_back(model->forward(at::tensor(seq, at::kLong).unsqueeze(0), fo)
                      .logits[0][-1]
                      .argmax()
                      .item<int64_t>());
  }
  CHECK(std::vector<int64_t>(seq.begin() + 3, seq.end()) == steered[0].token_ids);
  // A layer range steers only those layers. Observers see the edited activation: layer 0's
  // output must be the unsteered one, bit for bit, and layer 1's the plan applied to the
  // unsteered layer-1 activation (its input is unchanged since layer 0 is not steered).
  handle.remove();
  o.layer_start = 1;
  o.layer_end = 2;
  std::map<int64_t, at::Tensor> touched;
  auto spy = hooks.observe(
      "blocks.*.hook_attn_out",
      [&](const at::Tensor& x, const HookContext& ctx) { touched[ctx.layer] = x.clone(); });
  const at::Tensor ids = at::tensor(std::vector<int64_t>{5, 17, 42, 8}, at::kLong).unsqueeze(0);
  model->forward(ids, fo);
  REQUIRE(touched.size() == 2);
  const std::map<int64_t, at::Tensor> unsteered = touched;
  touched.clear();
  auto ranged = attach_steering(hooks, *model, v, o);
  CHECK(ranged.plan()->steers(1));
  CHECK_FALSE(ranged.plan()->steers(0));
  model->forward(ids, fo);
  REQUIRE(touched.size() == 2);
  CHECK(at::equal(touched[0], unsteered.at(0)));
  CHECK(max_abs_diff(touched[1], unsteered.at(1)) > 1e-3);
  CHECK(max_abs_diff(touched[1], ranged.plan()->apply(1, unsteered.at(1))) < 1e-6);
}

TEST_CASE("vectors files round-trip and are checked against the model", "[steering][vectors]") {
  auto model = load_model(fixture("llama.pt"));
  const auto& c = model->config();
  auto dir = destein::test::temp_dir("vectors");
  SteeringVectors v = random_vectors(c, SteeringSite::kHookZ, true, 2);
  v.num_pairs = 20;
  v.pair_hash = "abc123";
  v.toxic_prefix = "toxic: ";
  v.nontoxic_prefix = "polite: ";
  v.last_k = 6;
  save_steering_vectors(dir / "v.safetensors", v);
  SteeringVectors back = load_steering_vectors(dir / "v.safetensors");
  CHECK(at::equal(back.directions, v.directions));
  CHECK(at::equal(back.probe_accuracy, v.probe_accuracy));
  CHECK(back.site == SteeringSite::kHookZ);
  CHECK(back.num_pairs == 20);
  CHECK(back.last_k == 6);
  CHECK(back.pair_hash == "abc123");
  CHECK(back.toxic_prefix == "toxic: ");
  CHECK(back.model_type == "llama");
  check_vectors_match_model(back, c);

  // Minimal file: directions plus format and site only.
  write_safetensors(dir / "min.safetensors", {{"directions", v.directions}},
                    {{"format", "destein-vectors/1"}, {"site", "attn_out"}});
  SteeringVectors minimal = load_steering_vectors(dir / "min.safetensors");
  CHECK_FALSE(minimal.probe_accuracy.defined());
  CHECK(minimal.site == SteeringSite::kAttnOut);
  CHECK(minimal.last_k == 8);  // the default when the file does not say
  // Integers in the metadata are read whole: a damaged value is an error, not a prefix.
  for (const char* bad : {"12abc", "-3", "x", "99999999999999999999"}) {
    write_safetensors(dir / "badint.safetensors", {{"directions", v.directions}},
                      {{"format", "destein-vectors/1"}, {"site", "attn_out"}, {"last_k", bad}});
    CHECK_THROWS_WITH(load_steering_vectors(dir / "badint.safetensors"),
                      Contains("badint.safetensors") &&
                          Contains(std::string("'last_k' = '") + bad + "'") &&
                          Contains("not a non-negative integer"));
  }

  // Another model's vectors: every differing dimension named.
  auto gpt2 = load_model(fixture("gpt2.pt"));
  CHECK_THROWS_WITH(check_vectors_match_model(back, gpt2->config()),
                    Contains("model_type llama vs gpt2"));
  SteeringVectors wrong = v;
  wrong.model_type = "";
  wrong.directions = at::randn({2, 4, 6});
  wrong.probe_accuracy = at::Tensor();
  CHECK_THROWS_WITH(check_vectors_match_model(wrong, c), Contains("head dim 6 vs 8"));
  Hooks hooks;
  SteeringOptions o;
  CHECK_THROWS_WITH(attach_steering(hooks, *model, wrong, o), Contains("head dim 6 vs 8"));

  // Corrupt contents.
  at::Tensor nan_dirs = v.directions.clone();
  nan_dirs[1][2][0] = std::nanf("");
  write_safetensors(dir / "nan.safetensors", {{"directions", nan_dirs}},
                    {{"format", "destein-vectors/1"}, {"site", "hook_z"}});
  CHECK_THROWS_WITH(load_steering_vectors(dir / "nan.safetensors"),
                    Contains("layer 1 head 2") && Contains("NaN"));
  at::Tensor zero_dirs = v.directions.clone();
  zero_dirs[0][3].zero_();
  write_safetensors(dir / "zero.safetensors", {{"directions", zero_dirs}},
                    {{"format", "destein-vectors/1"}, {"site", "hook_z"}});
  CHECK_THROWS_WITH(load_steering_vectors(dir / "zero.safetensors"),
                    Contains("layer 0 head 3") && Contains("zeros"));
  write_safetensors(dir / "site.safetensors", {{"directions", v.directions}},
                    {{"format", "destein-vectors/1"}, {"site", "mlp"}});
  CHECK_THROWS_WITH(load_steering_vectors(dir / "site.safetensors"),
                    Contains("unknown steering site 'mlp'"));
  write_safetensors(dir / "foreign.safetensors", {{"directions", v.directions}},
                    {{"format", "pt"}});
  CHECK_THROWS_WITH(load_steering_vectors(dir / "foreign.safetensors"),
                    Contains("not a destein vectors file"));
  CHECK_THROWS_WITH(load_steering_vectors(dir / "absent.safetensors"),
                    Contains("absent.safetensors"));
  CHECK_THROWS_WITH(parse_steering_mode("both"), Contains("reference or headwise"));

  // Headwise with probes no better than chance is refused.
  SteeringVectors chance = v;
  chance.probe_accuracy = at::full({c.n_layers, c.n_heads}, 0.5);
  o.mode = SteeringMode::kHeadwise;
  CHECK_THROWS_WITH(SteeringPlan(chance, c, o), Contains("better than chance"));
  o.mode = SteeringMode::kReference;
  o.top_k_heads = 2;
  CHECK_THROWS_WITH(SteeringPlan(v, c, o), Contains("headwise mode only"));
}
