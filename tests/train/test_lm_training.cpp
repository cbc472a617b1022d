// Training a GPT-2 from scratch: the training forward equals the inference runtime, the
// optimizer and schedule compute what they claim, training learns, and resume is exact.
#include <catch2/catch.hpp>

#include <fstream>

#include "destein/runtime/checkpoint.hpp"
#include "destein/runtime/model.hpp"
#include "test_support.hpp"
#include "train/lm_training.hpp"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using destein::test::max_abs_diff;

namespace {

destein::GptShape tiny_shape() {
  destein::GptShape s;
  s.vocab_size = 40;
  s.context = 16;
  s.d_model = 32;
  s.n_layers = 2;
  s.n_heads = 4;
  return s;
}

// A stream with structure to learn: runs counting up by one, of random start and length.
std::vector<int32_t> counting_stream(size_t n, uint64_t seed) {
  std::vector<int32_t> ids;
  uint64_t x = seed * 2654435761u + 1;
  while (ids.size() < n) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    const int start = static_cast<int>((x >> 33) % 30);
    for (int i = 0; i < 10 && ids.size() < n; ++i) ids.push_back(start + i);
  }
  return ids;
}

destein::LmTrainOptions tiny_options(int64_t steps) {
  destein::LmTrainOptions o;
  o.shape = tiny_shape();
  o.batch_size = 8;
  o.optimizer.total_steps = steps;
  o.optimizer.warmup_steps = 5;
  o.optimizer.learning_rate = 3e-3;
  o.eval_every = 0;
  o.checkpoint_every = 0;
  o.eval_tokens = 256;
  return o;
}

}  // namespace

TEST_CASE("the training forward equals the inference runtime on the saved checkpoint",
          "[lm_training]") {
  destein::Gpt2Trainable model(tiny_shape(), 3);
  const fs::path dir = destein::test::temp_dir("lm_forward");
  std::map<std::string, at::Tensor> weights;
  for (const auto& [name, t] : model.parameters()) weights[name] = t.detach();
  destein::save_checkpoint(dir / "model.pt", destein::gpt2_hf_config(tiny_shape(), 1, 2), weights);
  auto runtime = destein::load_model(dir / "model.pt", {.threads = 1});
  CHECK(runtime->parameter_count() == model.parameter_count());
  at::Tensor ids = at::tensor({1, 5, 9, 3, 3, 39, 0, 12, 7, 1, 2, 30}, at::kLong).view({2, 6});
  at::Tensor expected = runtime->forward(ids).logits;
  at::Tensor logits = model.logits(ids);
  REQUIRE(logits.sizes() == expected.sizes());
  CHECK(max_abs_diff(logits, expected) < 1e-5);
  CHECK_THROWS_WITH(model.logits(at::zeros({1, 17}, at::kLong)), Contains("context of 16"));
}

TEST_CASE("loss is the mean next-token cross-entropy and reaches every parameter",
          "[lm_training]") {
  destein::Gpt2Trainable model(tiny_shape(), 5);
  at::Tensor window = at::tensor({4, 8, 15, 16, 23}, at::kLong).unsqueeze(0);
  at::Tensor logits = model.logits(window.narrow(1, 0, 4)).squeeze(0).detach();
  double by_hand = 0;
  for (int t = 0; t < 4; ++t) {
    by_hand -= at::log_softmax(logits[t], 0)[window[0][t + 1].item<int64_t>()].item<double>() / 4;
  }
  at::Tensor loss = model.loss(window);
  CHECK(loss.item<double>() == Approx(by_hand).epsilon(1e-5));
  loss.backward();
  for (const auto& [name, p] : model.parameters()) {
    INFO(name);
    REQUIRE(p.grad().defined());
  }
  // A fresh model predicts close to uniform: loss near ln(V).
  CHECK(loss.item<double>() == Approx(std::log(40.0)).margin(0.3));
}

TEST_CASE("the learning rate warms up linearly, then decays along a cosine", "[lm_training]") {
  destein::OptimizerOptions o;
  o.learning_rate = 1e-3;
  o.min_learning_rate = 1e-4;
  o.warmup_steps = 10;
  o.total_steps = 110;
  CHECK(destein::scheduled_learning_rate(o, 0) == Approx(1e-4));
  CHECK(destein::scheduled_learning_rate(o, 4) == Approx(5e-4));
  CHECK(destein::scheduled_learning_rate(o, 9) == Approx(1e-3));
  CHECK(destein::scheduled_learning_rate(o, 10) == Approx(1e-3));
  CHECK(destein::scheduled_learning_rate(o, 60) == Approx(5.5e-4));  // half way: the mean
  CHECK(destein::scheduled_learning_rate(o, 110) == Approx(1e-4));
  CHECK(destein::scheduled_learning_rate(o, 500) == Approx(1e-4));
}

TEST_CASE("AdamW: first step, decoupled decay, bias correction and clipping", "[lm_training]") {
  destein::OptimizerOptions o;
  o.learning_rate = 0.1;
  o.min_learning_rate = 0.1;
  o.warmup_steps = 0;
  o.total_steps = 10;
  o.weight_decay = 0.5;
  o.grad_clip = 1.0;
  destein::AdamW adam(o);
  std::map<std::string, at::Tensor> params = {
      {"w", at::tensor({1.0f, -2.0f, 3.0f, 0.5f}).view({2, 2})}, {"b", at::tensor({1.0f, 1.0f})}};
  for (auto& [n, p] : params) p.set_requires_grad(true);
  params["w"].mutable_grad() = at::tensor({3.0f, -4.0f, 0.0f, 0.0f}).view({2, 2});  // norm 5
  params["b"].mutable_grad() = at::tensor({0.0f, 0.0f});
  const double norm = adam.step(params, 0);
  CHECK(norm == Approx(5.0));
  // Step 1 with bias correction: m_hat = g, v_hat = g^2, so the update is lr * sign(g)
  // (clipping scales g, not the sign); decay multiplies matrices by 1 - lr * wd first.
  at::Tensor w = params["w"].detach();
  CHECK(w[0][0].item<float>() == Approx(1.0 * 0.95 - 0.1).epsilon(1e-5));
  CHECK(w[0][1].item<float>() == Approx(-2.0 * 0.95 + 0.1).epsilon(1e-5));
  CHECK(w[1][0].item<float>() == Approx(3.0 * 0.95).epsilon(1e-5));
  CHECK(params["b"].detach()[0].item<float>() == Approx(1.0));  // vectors are not decayed
  auto state = adam.state();
  // The first moment holds (1 - beta1) * clipped g: g * 1/5 after clipping to norm 1.
  CHECK(state.at("exp_avg.w")[0][0].item<float>() == Approx(0.1 * 3.0 / 5.0).epsilon(1e-4));
  CHECK(!params["w"].grad().defined());  // gradients are cleared

  params["w"].mutable_grad() = at::full({2, 2}, std::numeric_limits<float>::quiet_NaN());
  CHECK_THROWS_WITH(adam.step(params, 1), Contains("diverged"));
}

TEST_CASE("training learns a counting pattern and held-out loss falls", "[lm_training]") {
  const fs::path dir = destein::test::temp_dir("lm_learn");
  destein::LmTrainer trainer(tiny_options(150), counting_stream(20000, 1), counting_stream(2000, 2),
                             dir);
  const double before = trainer.heldout_loss();
  auto result = trainer.train();
  CHECK(result.steps == 150);
  CHECK(result.tokens_seen == 150 * 8 * 16);
  // The run start (1 in 10 tokens) is unpredictable among 30 starts: ln(30)/10 = 0.34 nats
  // is the floor; uniform guessing is ln(40) = 3.7.
  CHECK(before > 3.0);
  CHECK(result.final_heldout_loss < 1.0);
  CHECK(fs::is_directory(dir / "step-00000150"));  // the end always checkpoints
}

TEST_CASE("a resumed run is identical to an uninterrupted one", "[lm_training]") {
  auto train = counting_stream(5000, 3), heldout = counting_stream(600, 4);
  auto options = tiny_options(12);
  options.checkpoint_every = 4;
  options.eval_every = 4;
  options.keep_checkpoints = 2;
  const fs::path straight_dir = destein::test::temp_dir("lm_straight");
  destein::LmTrainer straight(options, train, heldout, straight_dir);
  auto straight_result = straight.train();

  const fs::path split_dir = destein::test::temp_dir("lm_split");
  {
    destein::LmTrainer first(options, train, heldout, split_dir);
    auto partial = first.train({}, 6);  // "killed" after 6 steps (checkpointed at 6)
    CHECK(partial.steps == 6);
  }
  // An interrupted checkpoint write is ignored.
  fs::create_directories(split_dir / "step-00000010.tmp");
  fs::create_directories(split_dir / "step-00000011");  // no state.json
  destein::LmTrainer second(options, train, heldout, split_dir);
  REQUIRE(second.resume() == 6);
  auto resumed = second.train();
  CHECK(resumed.resumed_at == 6);
  CHECK(resumed.steps == 12);
  CHECK(resumed.tokens_seen == straight_result.tokens_seen);
  for (const auto& [name, p] : straight.model().parameters()) {
    INFO(name);
    CHECK(at::equal(p, second.model().parameters().at(name)));
  }
  CHECK(resumed.heldout_curve == straight_result.heldout_curve);
  // keep_checkpoints = 2: steps 8 and 12 remain in the uninterrupted run.
  CHECK(!fs::exists(straight_dir / "step-00000004"));
  CHECK(fs::exists(straight_dir / "step-00000008"));
  CHECK(fs::exists(straight_dir / "step-00000012"));

  auto other = options;
  other.optimizer.learning_rate = 1e-2;
  destein::LmTrainer mismatched(other, train, heldout, split_dir);
  CHECK_THROWS_WITH(mismatched.resume(), Contains("optimizer.learning_rate"));
  auto other_data = train;
  other_data[10] = 0;
  destein::LmTrainer other_stream(options, other_data, heldout, split_dir);
  CHECK_THROWS_WITH(other_stream.resume(), Contains("other token streams"));
}

TEST_CASE("the trainer rejects streams it cannot use", "[lm_training]") {
  const fs::path dir = destein::test::temp_dir("lm_bad");
  auto o = tiny_options(1);
  CHECK_THROWS_WITH(
      destein::LmTrainer(o, std::vector<int32_t>(10, 1), counting_stream(100, 1), dir),
      Contains("needs more than one window of 17"));
  CHECK_THROWS_WITH(
      destein::LmTrainer(o, counting_stream(100, 1), std::vector<int32_t>(100, 40), dir),
      Contains("token id 40 is outside the vocabulary of 40"));
  o.shape.n_heads = 5;
  CHECK_THROWS_WITH(destein::Gpt2Trainable(o.shape, 0), Contains("not divisible"));
}
