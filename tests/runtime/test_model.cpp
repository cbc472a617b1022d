// Invariants of the forward pass: cached decoding equals full recomputation, a padded
// batch equals each sequence run alone.
#include <catch2/catch.hpp>

#include "destein/runtime/model.hpp"
#include "test_support.hpp"

using namespace destein;
using destein::test::fixture;
using destein::test::max_abs_diff;

namespace {
const std::vector<std::vector<int64_t>> kSequences = {
    {5, 17, 42, 8, 1, 33, 12, 60, 3, 9}, {7, 2, 11}, {40, 41, 42, 43, 44, 45, 46}};

at::Tensor row(const std::vector<int64_t>& ids) { return at::tensor(ids, at::kLong).unsqueeze(0); }
}  // namespace

TEST_CASE("cached decoding equals full recomputation", "[model][cache]") {
  for (const char* family : destein::test::kFamilies) {
    INFO("family " << family);
    auto model = load_model(fixture(std::string(family) + ".pt"));
    const auto& seq = kSequences[0];
    const int64_t T = static_cast<int64_t>(seq.size());
    at::Tensor full = model->forward(row(seq)).logits;  // (1, T, V)

    KVCache cache = model->make_cache(1, T);
    ForwardOptions fo;
    fo.cache = &cache;
    const int64_t prefill = 4;
    at::Tensor first = model->forward(row({seq.begin(), seq.begin() + prefill}), fo).logits;
    double worst = max_abs_diff(first, full.narrow(1, 0, prefill));
    for (int64_t t = prefill; t < T; ++t) {
      at::Tensor step = model->forward(row({seq[t]}), fo).logits;  // (1, 1, V)
      worst = std::max(worst, max_abs_diff(step, full.narrow(1, t, 1)));
    }
    CHECK(cache.length() == T);
    INFO("max |diff| " << worst);
    CHECK(worst < 1e-4);
  }
}

TEST_CASE("a left-padded batch equals each sequence run alone", "[model][batch]") {
  for (const char* family : destein::test::kFamilies) {
    INFO("family " << family);
    auto model = load_model(fixture(std::string(family) + ".pt"));
    const int64_t B = static_cast<int64_t>(kSequences.size());
    int64_t L = 0;
    for (const auto& s : kSequences) L = std::max<int64_t>(L, s.size());
    // Padding with a real token id, to prove the mask, not the id, hides it.
    at::Tensor ids = at::full({B, L}, 3, at::kLong);
    at::Tensor mask = at::zeros({B, L}, at::kLong);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t n = static_cast<int64_t>(kSequences[b].size());
      ids[b].narrow(0, L - n, n).copy_(at::tensor(kSequences[b], at::kLong));
      mask[b].narrow(0, L - n, n).fill_(1);
    }
    ForwardOptions fo;
    fo.attention_mask = mask;
    at::Tensor batched = model->forward(ids, fo).logits;  // (B, L, V)
    double worst = 0;
    for (int64_t b = 0; b < B; ++b) {
      const int64_t n = static_cast<int64_t>(kSequences[b].size());
      at::Tensor alone = model->forward(row(kSequences[b])).logits;
      worst = std::max(worst, max_abs_diff(batched[b].narrow(0, L - n, n), alone[0]));
      REQUIRE(at::isfinite(batched).all().item<bool>());
    }
    INFO("max |diff| " << worst);
    CHECK(worst < 1e-4);

    // And the same through the cache: padded prefill, then two decode steps.
    KVCache cache = model->make_cache(B, L + 2);
    ForwardOptions cached;
    cached.cache = &cache;
    cached.attention_mask = mask;
    cached.logits = LogitsFor::kLast;
    model->forward(ids, cached);
    at::Tensor next = at::tensor({4, 5, 6}, at::kLong).view({B, 1});
    cached.attention_mask = at::cat({mask, at::ones({B, 1}, at::kLong)}, 1);
    at::Tensor step = model->forward(next, cached).logits;  // (B, 1, V)
    for (int64_t b = 0; b < B; ++b) {
      auto seq = kSequences[b];
      seq.push_back(4 + b);
      at::Tensor alone = model->forward(row(seq)).logits;
      CHECK(max_abs_diff(step[b][0], alone[0][-1]) < 1e-4);
    }
  }
}

TEST_CASE("the parameter count counts tied weights once", "[model]") {
  auto gpt2 = load_model(fixture("gpt2.pt"));
  // wte 97x32 + wpe 64x32 + ln_f 2x32 + 2 layers x (2 LN 4x32, attn 32x96+96, proj 32x32+32,
  // fc 32x128+128, proj 128x32+32)
  const int64_t per_layer = 4 * 32 + 32 * 96 + 96 + 32 * 32 + 32 + 32 * 128 + 128 + 128 * 32 + 32;
  CHECK(gpt2->parameter_count() == 97 * 32 + 64 * 32 + 2 * 32 + 2 * per_layer);
}
