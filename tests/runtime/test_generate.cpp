// Generation: the warpers against hand-computed distributions, greedy decoding against a
// cache-free argmax loop, reproducibility whatever the batch size, EOS, and errors.
#include <catch2/catch.hpp>

#include <cmath>

#include "destein/runtime/generate.hpp"
#include "test_support.hpp"

using namespace destein;
using Catch::Matchers::Contains;
using destein::test::fixture;

namespace {
// Logits whose softmax is exactly the given probabilities.
std::vector<float> logits_of(const std::vector<double>& probs) {
  std::vector<float> out;
  for (double p : probs) out.push_back(static_cast<float>(std::log(p)));
  return out;
}
}  // namespace

TEST_CASE("sample_token: greedy, top-k, top-p as Hugging Face defines them", "[generate]") {
  auto l = logits_of({0.15, 0.5, 0.05, 0.3});  // sorted: 1 (.5), 3 (.3), 0 (.15), 2 (.05)
  GenerationOptions greedy;
  greedy.do_sample = false;
  CHECK(sample_token(l.data(), 4, greedy, 0.99) == 1);

  GenerationOptions plain;
  // Inverse CDF over the vocabulary order: [0, .15) -> 0, [.15, .65) -> 1, [.65, .7) -> 2, else 3.
  CHECK(sample_token(l.data(), 4, plain, 0.10) == 0);
  CHECK(sample_token(l.data(), 4, plain, 0.60) == 1);
  CHECK(sample_token(l.data(), 4, plain, 0.68) == 2);
  CHECK(sample_token(l.data(), 4, plain, 0.90) == 3);

  // top_p 0.8 keeps {1, 3}: the mass before token 0 is already 0.8. Renormalised: 1 -> .625.
  GenerationOptions nucleus;
  nucleus.top_p = 0.8;
  CHECK(sample_token(l.data(), 4, nucleus, 0.00) == 1);
  CHECK(sample_token(l.data(), 4, nucleus, 0.62) == 1);
  CHECK(sample_token(l.data(), 4, nucleus, 0.63) == 3);
  CHECK(sample_token(l.data(), 4, nucleus, 0.999) == 3);
  // top_p 0.81 also keeps token 0.
  nucleus.top_p = 0.81;
  CHECK(sample_token(l.data(), 4, nucleus, 0.999) == 0);
  // A tiny top_p keeps only the most likely token.
  nucleus.top_p = 0.01;
  CHECK(sample_token(l.data(), 4, nucleus, 0.999) == 1);

  // top_k 2 keeps {1, 3}; with top_p 0.6 of that mass only token 1 survives (.625 >= .6).
  GenerationOptions topk;
  topk.top_k = 2;
  CHECK(sample_token(l.data(), 4, topk, 0.99) == 3);
  topk.top_p = 0.6;
  CHECK(sample_token(l.data(), 4, topk, 0.99) == 1);

  // Temperature 2 flattens: p ~ sqrt(p). Token 2's share becomes .05^.5 / sum.
  GenerationOptions hot;
  hot.temperature = 2.0;
  double z = std::sqrt(0.15) + std::sqrt(0.5) + std::sqrt(0.05) + std::sqrt(0.3);
  double c0 = std::sqrt(0.15) / z, c1 = c0 + std::sqrt(0.5) / z;
  CHECK(sample_token(l.data(), 4, hot, c1 + 0.001) == 2);
  CHECK(sample_token(l.data(), 4, hot, c1 - 0.001) == 1);
}

TEST_CASE("sample_token on a large vocabulary follows the distribution", "[generate]") {
  // 5000 tokens, a few heavy ones: top-p must widen its candidate set past 256 when needed.
  const int64_t V = 5000;
  std::vector<float> l(V, 0.0f);
  l[10] = 6.0f;
  l[4000] = 5.0f;
  GenerationOptions o;
  o.top_p = 0.9;
  std::vector<int> counts(V, 0);
  for (int i = 0; i < 2000; ++i) counts[sample_token(l.data(), V, o, (i + 0.5) / 2000.0)]++;
  const double w10 = std::exp(6.0), w4000 = std::exp(5.0), z = w10 + w4000 + (V - 2);
  // Nucleus: 10 (.0724), 4000 (.0266), then ~8200 mass-units of the flat tail are needed.
  CHECK(counts[10] > 0);
  CHECK(counts[4000] > 0);
  int kept = 0;
  for (int c : counts) kept += c > 0;
  CHECK(kept > 256);
  CHECK(std::abs(counts[10] / 2000.0 - w10 / (0.9 * z)) < 0.01);
}

TEST_CASE("greedy generation equals an argmax loop over full forward passes", "[generate]") {
  for (const char* family : destein::test::kFamilies) {
    INFO("family " << family);
    auto model = load_model(fixture(std::string(family) + ".pt"));
    std::vector<std::vector<int64_t>> prompts = {{5, 17, 42}, {8}, {1, 2, 3, 4, 5, 6}};
    GenerationOptions o;
    o.do_sample = false;
    o.max_new_tokens = 6;
    o.stop_at_eos = false;
    auto gens = generate(*model, prompts, o);
    REQUIRE(gens.size() == 3);
    for (size_t p = 0; p < prompts.size(); ++p) {
      std::vector<int64_t> seq = prompts[p];
      for (int i = 0; i < 6; ++i) {
        at::Tensor logits = model->forward(at::tensor(seq, at::kLong).unsqueeze(0)).logits;
        seq.push_back(logits[0][-1].argmax().item<int64_t>());
      }
      std::vector<int64_t> expected(seq.begin() + prompts[p].size(), seq.end());
      CHECK(gens[p].token_ids == expected);
    }
  }
}

TEST_CASE("sampling is reproducible for a seed whatever the batch size", "[generate]") {
  auto model = load_model(fixture("gpt2.pt"));
  std::vector<std::vector<int64_t>> prompts = {{5, 17, 42}, {8}, {1, 2, 3, 4, 5, 6}, {9, 9}};
  GenerationOptions o;
  o.num_samples = 3;
  o.max_new_tokens = 8;
  o.top_p = 0.9;
  o.seed = 7;
  o.stop_at_eos = false;
  auto all = generate(*model, prompts, o);
  REQUIRE(all.size() == 12);
  for (int64_t bs : {1, 2, 5}) {
    o.batch_size = bs;
    auto again = generate(*model, prompts, o);
    for (size_t i = 0; i < all.size(); ++i) {
      INFO("batch size " << bs << ", row " << i);
      CHECK(again[i].prompt_index == all[i].prompt_index);
      CHECK(again[i].sample_index == all[i].sample_index);
      CHECK(again[i].token_ids == all[i].token_ids);
    }
  }
  // A prompt's samples do not depend on which prompts share its batch (streams are keyed
  // by prompt index and sample index).
  auto neighbours = generate(*model, {{60, 61, 62, 63, 64, 65, 66, 67}, {2}, prompts[2], {4}}, o);
  for (int s = 0; s < 3; ++s) CHECK(neighbours[6 + s].token_ids == all[6 + s].token_ids);
  // Samples of one prompt differ from each other, and another seed changes them.
  CHECK(all[0].token_ids != all[1].token_ids);
  o.seed = 8;
  o.batch_size = 0;
  auto other = generate(*model, prompts, o);
  int same = 0;
  for (size_t i = 0; i < all.size(); ++i) same += other[i].token_ids == all[i].token_ids;
  CHECK(same < 3);
  // Progress reports every batch.
  std::vector<int64_t> done;
  o.batch_size = 5;
  generate(*model, prompts, o, nullptr, [&](int64_t d, int64_t total) {
    CHECK(total == 12);
    done.push_back(d);
  });
  CHECK(done == std::vector<int64_t>{5, 10, 12});
}

TEST_CASE("generation stops at EOS and leaves it out", "[generate]") {
  auto model = load_model(fixture("gpt2.pt"));
  GenerationOptions o;
  o.do_sample = false;
  o.max_new_tokens = 6;
  o.stop_at_eos = false;
  auto free_run = generate(*model, {{5, 17, 42}}, o);
  REQUIRE(free_run[0].token_ids.size() == 6);
  o.stop_at_eos = true;
  o.eos_id = free_run[0].token_ids[2];
  auto stopped = generate(*model, {{5, 17, 42}}, o);
  // Stops at the first occurrence of the EOS token.
  size_t first = 0;
  while (free_run[0].token_ids[first] != o.eos_id) ++first;
  CHECK(stopped[0].stopped_at_eos);
  CHECK(stopped[0].token_ids ==
        std::vector<int64_t>(free_run[0].token_ids.begin(), free_run[0].token_ids.begin() + first));
}

TEST_CASE("generation rejects bad prompts and options", "[generate][errors]") {
  auto model = load_model(fixture("gpt2.pt"));  // 64 positions, vocabulary 97
  GenerationOptions o;
  CHECK_THROWS_WITH(generate(*model, {{1, 2}, {}}, o), Contains("prompt 1 is empty"));
  CHECK_THROWS_WITH(generate(*model, {std::vector<int64_t>(50, 1)}, o), Contains("64 positions"));
  CHECK_THROWS_WITH(generate(*model, {{1, 200}}, o), Contains("200") && Contains("vocabulary"));
  o.top_p = 0;
  CHECK_THROWS_WITH(generate(*model, {{1}}, o), Contains("top_p"));
  o.top_p = 1;
  o.temperature = 0;
  CHECK_THROWS_WITH(generate(*model, {{1}}, o), Contains("temperature"));
}

TEST_CASE("before_forward reports which prompt and sample each row of every forward call holds",
          "[generate]") {
  auto model = load_model(fixture("gpt2.pt"));
  // Three prompts of 3, 1 and 2 tokens, 2 samples each: rows (p, s) = (0,0) (0,1) (1,0) (1,1) (2,0) (2,1).
  const std::vector<std::vector<int64_t>> prompts = {{5, 17, 42}, {8}, {9, 9}};
  GenerationOptions o;
  o.num_samples = 2;
  o.max_new_tokens = 3;
  o.stop_at_eos = false;  // every chunk makes 1 prompt pass + 2 decode steps
  o.seed = 4;
  struct Call {
    bool prompt_pass;
    int64_t step;
    std::vector<int64_t> prompt, sample;
  };
  std::vector<Call> calls;
  o.before_forward = [&](const GenerationRows& r) {
    REQUIRE(r.prompt_index.size() == r.sample_index.size());
    calls.push_back({r.prompt_pass, r.decode_step, r.prompt_index, r.sample_index});
  };
  // The batch each forward call really has, seen by a hook on the first block.
  std::vector<int64_t> batch_sizes;
  Hooks hooks;
  auto h = hooks.observe("blocks.0.hook_attn_out", [&](const at::Tensor& x, const HookContext&) {
    batch_sizes.push_back(x.size(0));
  });
  auto check_calls = [&](const std::vector<Call>& expected) {
    REQUIRE(calls.size() == expected.size());
    REQUIRE(batch_sizes.size() == expected.size());
    for (size_t i = 0; i < expected.size(); ++i) {
      INFO("forward call " << i);
      CHECK(calls[i].prompt_pass == expected[i].prompt_pass);
      CHECK(calls[i].step == expected[i].step);
      CHECK(calls[i].prompt == expected[i].prompt);
      CHECK(calls[i].sample == expected[i].sample);
      CHECK(batch_sizes[i] == static_cast<int64_t>(expected[i].prompt.size()));
    }
    calls.clear();
    batch_sizes.clear();
  };
  GenerationOptions without = o;
  without.before_forward = nullptr;
  const auto plain = generate(*model, prompts, without);

  SECTION("chunks of 4 rows, shared prompt pass") {
    o.batch_size = 4;
    const auto out = generate(*model, prompts, o, &hooks);
    // Chunk 1: (0,0) (0,1) (1,0) (1,1), one prompt-pass row per prompt; chunk 2: (2,0) (2,1).
    check_calls({{true, 0, {0, 1}, {-1, -1}},
                 {false, 1, {0, 0, 1, 1}, {0, 1, 0, 1}},
                 {false, 2, {0, 0, 1, 1}, {0, 1, 0, 1}},
                 {true, 0, {2}, {-1}},
                 {false, 1, {2, 2}, {0, 1}},
                 {false, 2, {2, 2}, {0, 1}}});
    // The callback only observes: the same tokens as without it.
    for (size_t i = 0; i < out.size(); ++i) CHECK(out[i].token_ids == plain[i].token_ids);
  }
  SECTION("a chunk that splits a prompt's samples") {
    o.batch_size = 3;
    generate(*model, prompts, o, &hooks);
    // Chunk 1: (0,0) (0,1) (1,0): prompt 1's prompt-pass row serves sample 0 alone.
    // Chunk 2: (1,1) (2,0) (2,1).
    check_calls({{true, 0, {0, 1}, {-1, 0}},
                 {false, 1, {0, 0, 1}, {0, 1, 0}},
                 {false, 2, {0, 0, 1}, {0, 1, 0}},
                 {true, 0, {1, 2}, {1, -1}},
                 {false, 1, {1, 2, 2}, {1, 0, 1}},
                 {false, 2, {1, 2, 2}, {1, 0, 1}}});
  }
  SECTION("prompt pass not shared: one row per (prompt, sample)") {
    o.share_prefill = false;
    generate(*model, prompts, o, &hooks);
    const std::vector<int64_t> p = {0, 0, 1, 1, 2, 2}, s = {0, 1, 0, 1, 0, 1};
    check_calls({{true, 0, p, s}, {false, 1, p, s}, {false, 2, p, s}});
  }
  SECTION("an exception from the callback leaves generate()") {
    o.before_forward = [](const GenerationRows& r) {
      if (!r.prompt_pass) throw std::runtime_error("stop at the first decode step");
    };
    CHECK_THROWS_WITH(generate(*model, prompts, o), Contains("stop at the first decode step"));
  }
}
