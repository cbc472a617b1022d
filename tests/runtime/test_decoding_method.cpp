// build_decoding_method(): DExperts' base truncation by hand, and Self-Debiasing's text
// prefixes on a BOS model (BOS prefix prompt, the prompt's own BOS dropped) against the
// formula from full forward passes.
#include <ATen/ATen.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <limits>

#include "destein/runtime/decoding_method.hpp"
#include "destein/text/tokenizer.hpp"
#include "test_support.hpp"

using namespace destein;
using Catch::Matchers::Contains;

namespace {

const std::filesystem::path kTinyLm =
    std::filesystem::path(DESTEIN_SOURCE_DIR) / "models" / "tiny-lm";

std::vector<int64_t> kept(const std::vector<float>& scores) {
  std::vector<int64_t> out;
  for (size_t v = 0; v < scores.size(); ++v) {
    if (std::isfinite(scores[v])) out.push_back(static_cast<int64_t>(v));
  }
  return out;
}

}  // namespace

TEST_CASE("top_p_filter keeps the nucleus of the authors' rule (hand values)", "[methods]") {
  // Probabilities 0.15, 0.5, 0.05, 0.3: ranked 1, 3, 0, 2 with 0, 0.5, 0.8, 0.95 ahead.
  const std::vector<float> z = {std::log(0.15f), std::log(0.5f), std::log(0.05f), std::log(0.3f)};
  using Ids = std::vector<int64_t>;
  auto filtered = [&](double p) {
    std::vector<float> s = z;
    top_p_filter(s.data(), 4, p);
    for (int64_t v : kept(s)) CHECK(s[static_cast<size_t>(v)] == z[static_cast<size_t>(v)]);
    return kept(s);
  };
  CHECK(filtered(1.0) == Ids{0, 1, 2, 3});
  CHECK(filtered(0.9) == Ids{0, 1, 3});
  CHECK(filtered(0.7) == Ids{1, 3});
  CHECK(filtered(0.4) == Ids{1});  // the first always stays
  CHECK(filtered(0.1) == Ids{1});
}

TEST_CASE("self-debias from text prefixes on a BOS model equals the formula from full forwards",
          "[methods][processors]") {
  auto model = load_model(kTinyLm);
  auto tok = load_tokenizer(kTinyLm);
  REQUIRE(tok->prepend_bos());
  const int64_t bos = *tok->bos_id();
  DecodingMethod m;
  m.kind = "self-debias";
  m.prefixes = {"The following text is rude:\n", "Insults:\n"};
  m.lambda = 20;
  const auto chain = build_decoding_method(m, *model, tok.get());
  REQUIRE(chain.size() == 1);
  const auto* sd = dynamic_cast<const SelfDebiasProcessor*>(chain[0].get());
  REQUIRE(sd != nullptr);
  REQUIRE(sd->prefixes().size() == 2);
  for (size_t k = 0; k < 2; ++k) {
    std::vector<int64_t> expected = {bos};
    const auto body = tok->encode(m.prefixes[k]);
    expected.insert(expected.end(), body.begin(), body.end());
    CHECK(sd->prefixes()[k] == expected);
  }
  const std::vector<int64_t> prompt = tok->encode_prompt("You are such a");
  REQUIRE(prompt.front() == bos);
  auto z = [&](const std::vector<int64_t>& ids) {
    return model->forward(at::tensor(ids, at::kLong).unsqueeze(0)).logits[0][-1].to(at::kDouble);
  };
  // The copy reads BOS, the prefix, then the prompt without its BOS.
  at::Tensor p = at::softmax(z(prompt), 0), worst = at::zeros_like(p);
  for (const auto& prefix : sd->prefixes()) {
    std::vector<int64_t> x = prefix;
    x.insert(x.end(), prompt.begin() + 1, prompt.end());
    worst = at::maximum(worst, at::softmax(z(x), 0));
  }
  at::Tensor delta = p - worst;
  at::Tensor q = at::where(delta >= 0, at::ones_like(delta), at::exp(m.lambda * delta)) * p;
  const at::Tensor expected = at::log(q / q.sum());

  at::Tensor raw = z(prompt).to(at::kFloat).contiguous();
  std::vector<float> scores(raw.data_ptr<float>(), raw.data_ptr<float>() + raw.numel());
  const std::vector<int64_t> none;
  ProcessorRows rows;
  rows.vocab_size = model->config().vocab_size;
  rows.row_ids = {3};
  rows.prompts = {&prompt};
  rows.generated = {&none};
  rows.scores = {scores.data()};
  chain[0]->process(rows);
  const at::Tensor got = at::tensor(scores, at::kFloat).to(at::kDouble);
  CHECK(test::max_abs_diff(got, expected) < 1e-5);
  CHECK(test::max_abs_diff(got, at::log_softmax(z(prompt), 0)) > 1e-3);  // the prefixes act

  m.prefixes.clear();  // the authors' six
  const auto authors = build_decoding_method(m, *model, tok.get());
  CHECK(dynamic_cast<const SelfDebiasProcessor*>(authors[0].get())->prefixes().size() == 6);
  CHECK_THROWS_WITH(build_decoding_method(m, *model, nullptr), Contains("tokenizer is needed"));
  m.kind = "self-debiasing";
  CHECK_THROWS_WITH(build_decoding_method(m, *model, tok.get()), Contains("unknown method"));
}
