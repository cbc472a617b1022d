// The continuous-batching engine of `destein serve` against generate() run alone: requests
// of different lengths, steering and sampling, joining and leaving the batch between
// decode steps, must each get the tokens generate() gives them by themselves.
#include <catch2/catch.hpp>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <thread>

#include "destein/runtime/generate.hpp"
#include "destein/steer/steering.hpp"
#include "destein/text/tokenizer.hpp"
#include "serve/batch_engine.hpp"
#include "test_support.hpp"

using namespace destein;

namespace {

const std::filesystem::path kTinyLm =
    std::filesystem::path(DESTEIN_SOURCE_DIR) / "models" / "tiny-lm";

SteeringVectors random_vectors(const ModelConfig& c, uint64_t seed) {
  at::manual_seed(static_cast<int64_t>(seed));
  SteeringVectors v;
  v.directions = at::randn({c.n_layers, c.n_heads, c.head_dim});
  v.probe_accuracy = 0.6 + 0.4 * at::rand({c.n_layers, c.n_heads});
  v.probe_weight = at::randn({c.n_layers, c.n_heads, c.head_dim});
  v.probe_bias = at::randn({c.n_layers, c.n_heads});
  v.probe_feature_mean = at::zeros({c.n_layers, c.n_heads, c.head_dim});
  v.probe_feature_scale = at::ones({c.n_layers, c.n_heads, c.head_dim});
  v.model_type = c.model_type;
  return v;
}

struct Case {
  EngineRequest request;
  std::vector<std::vector<int64_t>> expected;  // per choice
};

// The oracle: generate() on this request alone, steering attached for the whole run.
std::vector<std::vector<int64_t>> alone(const Model& model, const EngineRequest& r) {
  GenerationOptions g = r.sampling;
  g.max_new_tokens = r.max_tokens;
  g.num_samples = r.n;
  Hooks hooks;
  SteeringHandle handle;
  if (!r.steering.empty()) handle = attach_steering(hooks, model, r.steering);
  std::vector<std::vector<int64_t>> out;
  for (const Generation& gen : generate(model, r.prompts, g, &hooks)) out.push_back(gen.token_ids);
  return out;
}

// The engine frees a row's place after the event that finishes it: wait a moment for that.
bool becomes_idle(const BatchEngine& engine) {
  for (int i = 0; i < 200 && !engine.idle(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  return engine.idle();
}

std::vector<std::vector<int64_t>> collect(RequestStream& stream,
                                          std::vector<FinishReason>* reasons = nullptr) {
  std::vector<std::vector<int64_t>> out(static_cast<size_t>(stream.choices()));
  if (reasons) reasons->assign(out.size(), FinishReason::kNone);
  EngineEvent ev;
  while (stream.next(ev)) {
    if (ev.token >= 0) out[static_cast<size_t>(ev.choice)].push_back(ev.token);
    if (ev.finished != FinishReason::kNone && reasons)
      (*reasons)[static_cast<size_t>(ev.choice)] = ev.finished;
  }
  return out;
}

}  // namespace

TEST_CASE("serve engine: each request gets its tokens from generate() alone, batched or not",
          "[serve]") {
  auto model = load_model(kTinyLm);
  auto tok = load_tokenizer(kTinyLm);
  REQUIRE(model->linear_backend() == destein::LinearBackend::kStable);
  const SteeringVectors vectors = random_vectors(model->config(), 3);
  SteeringOptions a;
  a.alpha = 0.7;
  SteeringOptions b;
  b.mode = SteeringMode::kHeadwise;
  b.alpha = 0.5;
  b.positions = SteeringPositions::kGenerated;
  SteeringOptions gated;
  gated.alpha = 0.9;
  gated.gate = SteeringGate::kProbe;
  const std::vector<SteeringStack> stacks = {{},
                                             {make_steering_plan(*model, vectors, a)},
                                             {make_steering_plan(*model, vectors, b)},
                                             {make_steering_plan(*model, vectors, gated)}};
  const std::vector<std::string> texts = {
      "The",
      "I think that the people who",
      "You are a",
      "Thanks for the link, I will read it later and",
      "Why would anyone",
      "This is the worst thing I have ever seen in my whole life, and",
      "Hello",
      "We went to the"};
  std::vector<Case> cases;
  for (int i = 0; i < 14; ++i) {
    Case c;
    EngineRequest& r = c.request;
    r.prompts = {tok->encode_prompt(texts[static_cast<size_t>(i) % texts.size()])};
    if (i == 5) r.prompts.push_back(tok->encode_prompt("A second prompt in the same request"));
    r.n = i % 5 == 3 ? 2 : 1;
    r.max_tokens = 4 + (i * 7) % 23;
    r.steering = stacks[static_cast<size_t>(i) % stacks.size()];
    r.sampling.do_sample = i % 3 != 0;
    r.sampling.temperature = 0.9;
    r.sampling.top_p = i % 2 ? 0.9 : 1.0;
    r.sampling.top_k = i % 4 == 1 ? 20 : 0;
    r.sampling.seed = 100 + static_cast<uint64_t>(i);
    c.expected = alone(*model, r);
    cases.push_back(std::move(c));
  }

  BatchEngine engine(*model, {.max_rows = 8, .max_queue = 64});
  std::vector<std::shared_ptr<RequestStream>> streams(cases.size());
  std::vector<std::vector<std::vector<int64_t>>> got(cases.size());
  std::vector<std::thread> readers;
  // Half at once; the rest one by one while the first ones decode, so that rows join a
  // running batch (max_rows 8 also keeps some waiting in the queue).
  for (size_t i = 0; i < cases.size(); ++i) {
    if (i >= cases.size() / 2) std::this_thread::sleep_for(std::chrono::milliseconds(15));
    streams[i] = engine.submit(cases[i].request);
    REQUIRE(streams[i] != nullptr);
    readers.emplace_back([&, i] { got[i] = collect(*streams[i]); });
  }
  for (auto& t : readers) t.join();
  for (size_t i = 0; i < cases.size(); ++i) {
    INFO(fmt::format("request {} ({} choices, max_tokens {}, {})", i, cases[i].expected.size(),
                     cases[i].request.max_tokens,
                     cases[i].request.sampling.do_sample ? "sampled" : "greedy"));
    CHECK(got[i] == cases[i].expected);
  }
  const BatchEngineStats s = engine.stats();
  INFO(fmt::format("{} decode steps, {} rows", s.forwards, s.rows_forwarded));
  CHECK(s.rows_forwarded > 2 * s.forwards);  // requests really shared decode steps
  INFO(fmt::format("{} prompts prefilled in {} passes", s.prefills, s.prefill_passes));
  CHECK(s.prefill_passes < s.prefills);  // and prompt passes of different lengths
  CHECK(becomes_idle(engine));
}

TEST_CASE("serve engine: cancel frees the rows, a full queue refuses, bad requests throw",
          "[serve]") {
  auto model = load_model(kTinyLm);
  auto tok = load_tokenizer(kTinyLm);
  BatchEngine engine(*model, {.max_rows = 1, .max_queue = 1});
  EngineRequest r;
  r.prompts = {tok->encode_prompt("The")};
  r.max_tokens = 100;
  r.sampling.do_sample = false;
  r.sampling.stop_at_eos = false;
  auto first = engine.submit(r);
  REQUIRE(first);
  // Wait until it runs, so that the next one is queued behind it.
  EngineEvent ev;
  REQUIRE(first->next(ev));
  auto second = engine.submit(r);
  REQUIRE(second);
  CHECK(engine.submit(r) == nullptr);  // queue of 1 is full
  first->cancel();
  std::vector<FinishReason> reasons;
  collect(*first, &reasons);
  CHECK(reasons[0] == FinishReason::kCancelled);
  auto tokens = collect(*second, &reasons);
  CHECK(reasons[0] == FinishReason::kLength);
  CHECK(tokens[0].size() == 100);
  CHECK(becomes_idle(engine));

  EngineRequest too_long = r;
  too_long.max_tokens = model->config().max_positions;
  CHECK_THROWS_WITH(engine.submit(too_long), Catch::Contains("past the model's limit"));
  EngineRequest too_many = r;
  too_many.n = 2;
  CHECK_THROWS_WITH(engine.submit(too_many), Catch::Contains("at most 1"));

  EngineRequest timed = r;
  timed.deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(30);
  auto late = engine.submit(timed);
  REQUIRE(late);
  tokens = collect(*late, &reasons);
  CHECK(reasons[0] == FinishReason::kTimeout);
  CHECK(tokens[0].size() < 100);
}

TEST_CASE("serve engine: logits processors per request give what generate() gives alone",
          "[serve][processors]") {
  auto model = load_model(kTinyLm);
  auto tok = load_tokenizer(kTinyLm);
  REQUIRE(model->linear_backend() == destein::LinearBackend::kStable);
  // Each kind: scores only (a ban), other models' scores (the model itself as a stand-in
  // expert, a shifted copy of its weights being unavailable here: the ensemble's arithmetic
  // is checked against full forwards in tests/runtime), prefixed copies (Self-Debiasing).
  const std::vector<int64_t> prefix = tok->encode_prompt("The following text is rude:");
  std::vector<int64_t> banned;
  for (const char* w : {" the", " a", ".", ","}) {
    const auto ids = tok->encode_prompt(w);
    banned.insert(banned.end(), ids.begin(), ids.end());
  }
  auto make_chain = [&](int kind) -> LogitsProcessorChain {
    switch (kind) {
      case 1:
        return {std::make_shared<TokenBanProcessor>(banned)};
      case 2:
        return {std::make_shared<ModelEnsembleProcessor>(std::vector<const Model*>{model.get()},
                                                         std::vector<double>{-0.5})};
      case 3:
        return {std::make_shared<SelfDebiasProcessor>(
            *model, std::vector<std::vector<int64_t>>{prefix}, 10.0)};
      default:
        return {};
    }
  };
  const std::vector<std::string> texts = {"The", "I think that the people who", "You are a",
                                          "Hello", "Why would anyone"};
  std::vector<Case> cases;
  for (int i = 0; i < 10; ++i) {
    Case c;
    EngineRequest& r = c.request;
    r.prompts = {tok->encode_prompt(texts[static_cast<size_t>(i) % texts.size()])};
    r.n = i % 3 == 2 ? 2 : 1;
    r.max_tokens = 5 + (i * 5) % 13;
    r.sampling.do_sample = i % 4 != 0;
    r.sampling.temperature = 1.1;
    r.sampling.seed = 40 + static_cast<uint64_t>(i);
    r.sampling.stop_at_eos = false;
    GenerationOptions g = r.sampling;
    g.max_new_tokens = r.max_tokens;
    g.num_samples = r.n;
    g.processors = make_chain(i % 4);
    for (const Generation& gen : generate(*model, r.prompts, g))
      c.expected.push_back(gen.token_ids);
    r.processors = make_chain(i % 4);
    cases.push_back(std::move(c));
  }
  BatchEngine engine(*model, {.max_rows = 6, .max_queue = 64});
  std::vector<std::shared_ptr<RequestStream>> streams(cases.size());
  std::vector<std::vector<std::vector<int64_t>>> got(cases.size());
  std::vector<std::thread> readers;
  for (size_t i = 0; i < cases.size(); ++i) {
    if (i >= cases.size() / 2) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    streams[i] = engine.submit(cases[i].request);
    REQUIRE(streams[i] != nullptr);
    readers.emplace_back([&, i] { got[i] = collect(*streams[i]); });
  }
  for (auto& t : readers) t.join();
  for (size_t i = 0; i < cases.size(); ++i) {
    INFO(fmt::format("request {} (processor kind {}, {} choices)", i, i % 4,
                     cases[i].expected.size()));
    CHECK(got[i] == cases[i].expected);
    if (i % 4 == 1) {
      for (const auto& tokens : got[i]) {
        for (int64_t t : tokens) CHECK(std::find(banned.begin(), banned.end(), t) == banned.end());
      }
    }
  }
  CHECK(becomes_idle(engine));
  // A processor that throws ends that request's rows with an error, not the engine.
  struct Failing : LogitsProcessor {
    std::string name() const override { return "failing"; }
    void process(ProcessorRows&) override { throw std::runtime_error("no expert"); }
  };
  EngineRequest bad = cases[1].request;
  bad.processors = {std::make_shared<Failing>()};
  auto s = engine.submit(bad);
  REQUIRE(s != nullptr);
  std::vector<FinishReason> reasons;
  collect(*s, &reasons);
  CHECK((reasons.size() == 1 && reasons[0] == FinishReason::kError));
  auto ok = engine.submit(cases[2].request);
  REQUIRE(ok != nullptr);
  CHECK(collect(*ok) == cases[2].expected);
}
