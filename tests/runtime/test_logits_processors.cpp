// Logits processors in generate(): a ban that no sampled token gets through, a linear
// ensemble of other models and prefixed copies of the row (Self-Debiasing), each against an
// independent cache-free loop that recomputes the formula from full forward passes, and
// batched = alone.
#include <catch2/catch.hpp>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>

#include "destein/runtime/generate.hpp"
#include "destein/runtime/logits_processor.hpp"
#include "destein/text/tokenizer.hpp"
#include "runtime/decode_batch.hpp"
#include "test_support.hpp"

using namespace destein;
using Catch::Matchers::Contains;
using destein::test::fixture;

namespace {

const std::filesystem::path kTinyLm =
    std::filesystem::path(DESTEIN_SOURCE_DIR) / "models" / "tiny-lm";

// Last-position logits of `ids` from a full forward pass, no cache: (V) float64.
at::Tensor full_logits(const Model& model, const std::vector<int64_t>& ids) {
  at::Tensor x = at::tensor(ids, at::kLong).unsqueeze(0);
  return model.forward(x).logits[0][-1].to(at::kDouble);
}

// Greedy decoding where each step's scores come from `scores(sequence)`: the oracle loop.
std::vector<int64_t> greedy_loop(
    const std::vector<int64_t>& prompt, int64_t steps,
    const std::function<at::Tensor(const std::vector<int64_t>&)>& scores) {
  std::vector<int64_t> seq = prompt, out;
  for (int64_t t = 0; t < steps; ++t) {
    const int64_t next = scores(seq).argmax().item<int64_t>();
    out.push_back(next);
    seq.push_back(next);
  }
  return out;
}

std::vector<std::vector<int64_t>> tokens_of(const std::vector<Generation>& gens) {
  std::vector<std::vector<int64_t>> out;
  for (const auto& g : gens) out.push_back(g.token_ids);
  return out;
}

}  // namespace

TEST_CASE("logits processors: a banned token is never sampled, batched or not",
          "[generate][processors]") {
  auto model = load_model(kTinyLm);
  auto tok = load_tokenizer(kTinyLm);
  std::vector<std::vector<int64_t>> prompts;
  for (const char* t :
       {"The", "I think that", "You are a", "We went to the", "Why would anyone", "Hello"}) {
    prompts.push_back(tok->encode_prompt(t));
  }
  GenerationOptions o;
  o.num_samples = 4;
  o.max_new_tokens = 24;
  o.temperature = 1.3;
  o.seed = 11;
  o.stop_at_eos = false;
  // Without the ban: the tokens the model writes most often.
  std::map<int64_t, int> counts;
  for (const auto& g : generate(*model, prompts, o)) {
    for (int64_t t : g.token_ids) ++counts[t];
  }
  std::vector<std::pair<int, int64_t>> by_count;
  for (auto [t, n] : counts) by_count.push_back({n, t});
  std::sort(by_count.rbegin(), by_count.rend());
  REQUIRE(by_count.size() > 5);
  std::vector<int64_t> banned;
  for (size_t i = 0; i < 5; ++i) banned.push_back(by_count[i].second);
  INFO(fmt::format("banning the 5 most frequent tokens, seen {} to {} times", by_count[4].first,
                   by_count[0].first));
  REQUIRE(by_count[4].first >= 5);

  o.processors = {std::make_shared<TokenBanProcessor>(banned)};
  for (int64_t batch : {0, 1, 5}) {
    o.batch_size = batch;
    for (bool sample : {true, false}) {
      o.do_sample = sample;
      for (double top_p : {1.0, 0.9}) {
        o.top_p = top_p;
        o.top_k = top_p < 1 ? 0 : 40;
        const auto gens = generate(*model, prompts, o);
        int64_t total = 0;
        for (const auto& g : gens) {
          total += static_cast<int64_t>(g.token_ids.size());
          for (int64_t t : g.token_ids) {
            INFO(fmt::format("batch {} sample {} top_p {}", batch, sample, top_p));
            REQUIRE(std::find(banned.begin(), banned.end(), t) == banned.end());
          }
        }
        CHECK(total == 6 * 4 * 24);
      }
    }
  }
  // Batched = alone, and greedy with the ban = the cache-free argmax over unbanned tokens.
  o.do_sample = true;
  o.top_p = 0.95;
  o.top_k = 0;
  o.batch_size = 1;
  const auto alone = tokens_of(generate(*model, prompts, o));
  o.batch_size = 0;
  CHECK(tokens_of(generate(*model, prompts, o)) == alone);
  o.do_sample = false;
  o.num_samples = 1;
  o.max_new_tokens = 8;
  const auto greedy = generate(*model, {prompts[1]}, o);
  const auto expected = greedy_loop(prompts[1], 8, [&](const std::vector<int64_t>& seq) {
    at::Tensor z = full_logits(*model, seq);
    for (int64_t b : banned) z[b] = -std::numeric_limits<double>::infinity();
    return z;
  });
  CHECK(greedy[0].token_ids == expected);
}

TEST_CASE("logits processors: logit_bias adds, and -100 bans (hand values)",
          "[generate][processors]") {
  LogitBiasProcessor bias({{0, 5.0f}, {2, -100.0f}, {7, -1.5f}});
  std::vector<float> s = {1, 2, 3, 4};
  const std::vector<int64_t> prompt = {1}, generated;
  ProcessorRows rows;
  rows.vocab_size = 4;
  rows.row_ids = {0};
  rows.prompts = {&prompt};
  rows.generated = {&generated};
  rows.scores = {s.data()};
  bias.process(rows);
  CHECK(s[0] == 6.0f);
  CHECK(s[1] == 2.0f);
  CHECK(std::isinf(s[2]));
  CHECK(s[2] < 0);
  CHECK(s[3] == 4.0f);  // token 7 is outside this vocabulary: ignored
  CHECK_THROWS_WITH(LogitBiasProcessor({{-1, 1.0f}}), Contains("negative"));
  CHECK_THROWS_WITH(TokenBanProcessor({3, -2}), Contains("negative"));
}

TEST_CASE(
    "logits processors: an ensemble of other models equals z + a (z_e - z_a) from full forwards",
    "[generate][processors]") {
  // Three different models over one 103-token vocabulary (MPT variants of the fixtures).
  auto base = load_model(fixture("mpt.pt"));
  auto expert = load_model(fixture("mpt_qkln.pt"));
  auto anti = load_model(fixture("mpt_learned.pt"));
  const int64_t V = base->config().vocab_size;
  REQUIRE(expert->config().vocab_size == V);
  REQUIRE(anti->config().vocab_size == V);
  const double alpha = 2.0;
  auto make = [&] {
    return std::make_shared<ModelEnsembleProcessor>(
        std::vector<const Model*>{expert.get(), anti.get()}, std::vector<double>{alpha, -alpha});
  };
  const std::vector<std::vector<int64_t>> prompts = {{5, 17, 42}, {8}, {9, 9, 3, 1, 4}};
  GenerationOptions o;
  o.do_sample = false;
  o.max_new_tokens = 10;
  o.stop_at_eos = false;
  o.processors = {make()};
  const auto greedy = generate(*base, prompts, o);
  for (size_t p = 0; p < prompts.size(); ++p) {
    const auto expected = greedy_loop(prompts[p], 10, [&](const std::vector<int64_t>& seq) {
      return full_logits(*base, seq) +
             alpha * (full_logits(*expert, seq) - full_logits(*anti, seq));
    });
    INFO("prompt " << p);
    CHECK(greedy[p].token_ids == expected);
  }
  // Without the ensemble the base model writes something else (the processor acts).
  GenerationOptions plain = o;
  plain.processors.clear();
  CHECK(tokens_of(generate(*base, prompts, plain)) != tokens_of(greedy));
  // Sampled: batched = alone, the processor serving rows of several batches in turn.
  o.do_sample = true;
  o.num_samples = 3;
  o.seed = 5;
  o.batch_size = 1;
  const auto alone = tokens_of(generate(*base, prompts, o));
  o.batch_size = 4;
  o.processors = {make()};
  CHECK(tokens_of(generate(*base, prompts, o)) == alone);
  o.batch_size = 0;
  CHECK(tokens_of(generate(*base, prompts, o)) == alone);
}

TEST_CASE("logits processors: Self-Debiasing's prefixed rows equal the formula from full forwards",
          "[generate][processors]") {
  auto model = load_model(fixture("gpt2.pt"));
  const std::vector<std::vector<int64_t>> prefixes = {{3, 14, 15}, {92, 6}};
  const double lambda = 50.0;
  // The formula, written from the paper: p = softmax(z(x)), p_k = softmax(z(prefix_k + x)),
  // delta = p - max_k p_k, alpha = 1 if delta >= 0 else exp(lambda delta), q ~ alpha p.
  auto log_q = [&](const std::vector<int64_t>& seq) {
    at::Tensor p = at::softmax(full_logits(*model, seq), 0);
    at::Tensor worst = at::zeros_like(p);
    for (const auto& prefix : prefixes) {
      std::vector<int64_t> x = prefix;
      x.insert(x.end(), seq.begin(), seq.end());
      worst = at::maximum(worst, at::softmax(full_logits(*model, x), 0));
    }
    at::Tensor delta = p - worst;
    at::Tensor a = at::where(delta >= 0, at::ones_like(delta), at::exp(lambda * delta));
    at::Tensor q = a * p;
    return at::log(q / q.sum());
  };
  const std::vector<std::vector<int64_t>> prompts = {{5, 17, 42}, {8}, {9, 9, 3, 1, 4}};

  SECTION("one step's scores at 1e-5") {
    SelfDebiasProcessor sd(*model, prefixes, lambda);
    std::vector<float> scores(static_cast<size_t>(model->config().vocab_size));
    at::Tensor z = full_logits(*model, prompts[0]).to(at::kFloat).contiguous();
    std::copy(z.data_ptr<float>(), z.data_ptr<float>() + z.numel(), scores.begin());
    const std::vector<int64_t> none;
    ProcessorRows rows;
    rows.vocab_size = model->config().vocab_size;
    rows.row_ids = {7};
    rows.prompts = {&prompts[0]};
    rows.generated = {&none};
    rows.scores = {scores.data()};
    sd.process(rows);
    at::Tensor expected = log_q(prompts[0]);
    at::Tensor got = at::tensor(scores, at::kFloat).to(at::kDouble);
    const at::Tensor finite = at::isfinite(expected);
    CHECK(at::equal(finite, at::isfinite(got)));
    CHECK(test::max_abs_diff(got.masked_select(finite), expected.masked_select(finite)) < 1e-5);
    // The scores moved: some token's probability was cut by the prefixes.
    CHECK(test::max_abs_diff(
              got.masked_select(finite),
              at::log_softmax(full_logits(*model, prompts[0]), 0).masked_select(finite)) > 1e-3);
  }
  SECTION("greedy equals the cache-free loop; sampled batched = alone") {
    GenerationOptions o;
    o.do_sample = false;
    o.max_new_tokens = 10;
    o.stop_at_eos = false;
    o.processors = {std::make_shared<SelfDebiasProcessor>(*model, prefixes, lambda)};
    const auto greedy = generate(*model, prompts, o);
    for (size_t p = 0; p < prompts.size(); ++p) {
      INFO("prompt " << p);
      CHECK(greedy[p].token_ids == greedy_loop(prompts[p], 10, log_q));
    }
    o.do_sample = true;
    o.num_samples = 3;
    o.seed = 9;
    o.batch_size = 1;
    const auto alone = tokens_of(generate(*model, prompts, o));
    o.batch_size = 0;
    o.processors = {std::make_shared<SelfDebiasProcessor>(*model, prefixes, lambda)};
    CHECK(tokens_of(generate(*model, prompts, o)) == alone);
  }
}

TEST_CASE("logits processors: per-row chains, errors end their rows, bad input throws",
          "[generate][processors]") {
  auto model = load_model(fixture("gpt2.pt"));
  const std::vector<std::vector<int64_t>> prompts = {{5, 17, 42}, {8}};
  GenerationOptions o;
  o.do_sample = false;
  o.max_new_tokens = 6;
  o.stop_at_eos = false;
  const auto plain = tokens_of(generate(*model, prompts, o));
  // Prompt 1 bans what it wrote unprocessed; prompt 0 keeps an empty chain and its tokens.
  auto ban = std::make_shared<TokenBanProcessor>(plain[1]);
  o.processors_for_row = [&](int64_t p, int64_t) {
    return p == 1 ? LogitsProcessorChain{ban} : LogitsProcessorChain{};
  };
  const auto mixed = tokens_of(generate(*model, prompts, o));
  CHECK(mixed[0] == plain[0]);
  for (int64_t t : mixed[1])
    CHECK(std::find(plain[1].begin(), plain[1].end(), t) == plain[1].end());

  // Banning the whole vocabulary leaves nothing to sample: an error naming why.
  std::vector<int64_t> all(static_cast<size_t>(model->config().vocab_size));
  std::iota(all.begin(), all.end(), 0);
  GenerationOptions everything = o;
  everything.processors_for_row = nullptr;
  everything.processors = {std::make_shared<TokenBanProcessor>(all)};
  CHECK_THROWS_WITH(generate(*model, prompts, everything), Contains("no token to sample"));

  // A processor that throws ends its rows with the message; generate() reports it.
  struct Failing : LogitsProcessor {
    std::string name() const override { return "failing"; }
    void process(ProcessorRows&) override { throw std::runtime_error("expert model went away"); }
  };
  GenerationOptions failing = o;
  failing.processors_for_row = nullptr;
  failing.processors = {std::make_shared<Failing>()};
  CHECK_THROWS_WITH(generate(*model, prompts, failing),
                    Contains("'failing': expert model went away"));

  // The decode core refuses a row id twice and a shared prompt pass over different prompts.
  DecodeBatch batch(*model);
  DecodeRowSpec a;
  a.id = 1;
  a.prompt = {5};
  a.sampling.max_new_tokens = 3;
  DecodeRowSpec b = a;
  CHECK_THROWS_WITH(batch.add({a, b}), Contains("already running"));
  b.id = 2;
  b.prompt = {6};
  a.prefill_group = b.prefill_group = 0;
  CHECK_THROWS_WITH(batch.add({a, b}), Contains("share prefill group"));
  CHECK(batch.rows().empty());
  CHECK_THROWS_WITH(ModelEnsembleProcessor({model.get()}, {1.0, 2.0}),
                    Contains("1 models but 2 weights"));
  CHECK_THROWS_WITH(SelfDebiasProcessor(*model, {{}}), Contains("prefix 0 is empty"));
}

TEST_CASE("decode core: rows join a running batch and leave it with the tokens they get alone",
          "[generate][processors]") {
  auto model = load_model(kTinyLm);
  auto tok = load_tokenizer(kTinyLm);
  REQUIRE(model->linear_backend() == destein::LinearBackend::kStable);
  const std::vector<std::string> texts = {"The", "I think that the people who", "You are a",
                                          "Hello there"};
  auto spec = [&](int64_t id) {
    DecodeRowSpec s;
    s.id = id;
    s.prompt = tok->encode_prompt(texts[static_cast<size_t>(id) % texts.size()]);
    s.sampling.max_new_tokens = 5 + id * 3;
    s.sampling.stop_at_eos = false;
    s.sampling.temperature = 0.8;
    s.rng = std::mt19937_64(static_cast<uint64_t>(1000 + id));
    return s;
  };
  // Alone: one batch per row.
  std::vector<std::vector<int64_t>> alone;
  for (int64_t id = 0; id < 4; ++id) {
    DecodeBatch b(*model);
    b.add({spec(id)});
    while (b.running() > 0) b.step();
    alone.push_back(b.rows()[0].generated);
    CHECK(b.rows()[0].finish == FinishReason::kLength);
  }
  // Together: rows 0 and 1 start, 2 joins after two steps, 3 after four; finished rows leave.
  DecodeBatch batch(*model);
  std::map<int64_t, std::vector<int64_t>> got;
  batch.add({spec(0), spec(1)});
  for (int step = 0; batch.running() > 0 || step < 5; ++step) {
    if (step == 2) batch.add({spec(2)});
    if (step == 4) batch.add({spec(3)});
    for (const auto& r : batch.rows()) got[r.id] = r.generated;
    batch.remove_finished();
    if (batch.running() > 0) batch.step();
  }
  for (const auto& r : batch.rows()) got[r.id] = r.generated;
  for (int64_t id = 0; id < 4; ++id) {
    INFO("row " << id);
    CHECK(got[id] == alone[static_cast<size_t>(id)]);
  }
}
