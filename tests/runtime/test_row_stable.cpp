// The row-stable kernels (the CPU float32 default): a sequence's logits are the same bits
// whatever else shares its batch, however wide the left padding, alone or with a cache;
// and they agree with the BLAS path, an independent implementation, to float tolerance.
#include <ATen/Parallel.h>
#include <catch2/catch.hpp>

#include "destein/runtime/model.hpp"
#include "runtime/row_stable.hpp"
#include "test_support.hpp"

using namespace destein;
using destein::test::fixture;
using destein::test::max_abs_diff;

namespace {
const std::vector<std::vector<int64_t>> kSequences = {{5, 17, 42, 8, 1, 33, 12, 60, 3, 9},
                                                      {7, 2, 11},
                                                      {40, 41, 42, 43, 44, 45, 46},
                                                      {8},
                                                      {30, 31, 32, 33, 34}};

// Left-padded batch of `rows` (indices into kSequences), its mask over `extra` more
// positions.
std::pair<at::Tensor, at::Tensor> padded(const std::vector<size_t>& rows, int64_t extra_pad) {
  int64_t L = 0;
  for (size_t r : rows) L = std::max<int64_t>(L, kSequences[r].size());
  L += extra_pad;
  at::Tensor ids = at::zeros({static_cast<int64_t>(rows.size()), L}, at::kLong);
  at::Tensor mask = at::zeros_like(ids);
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto& s = kSequences[rows[i]];
    const int64_t n = static_cast<int64_t>(s.size());
    ids[i].narrow(0, L - n, n).copy_(at::tensor(s, at::kLong));
    mask[i].narrow(0, L - n, n).fill_(1);
  }
  return {ids, mask};
}
}  // namespace

TEST_CASE("row-stable kernels: a row's logits do not depend on its batch", "[model][stable]") {
  for (const char* family : destein::test::kFamilies) {
    INFO("family " << family);
    auto model = load_model(fixture(std::string(family) + ".pt"));
    REQUIRE(model->linear_backend() == destein::LinearBackend::kStable);
    // ALiBi models take the masked-softmax attention (the row-stable one has no ALiBi
    // term), so the bit-for-bit claim covers their linears, not their attention.
    if (model->config().alibi) continue;
    ModelOptions blas;
    blas.linear_backend = LinearBackend::kBlas;
    auto reference = load_model(fixture(std::string(family) + ".pt"), blas);
    REQUIRE(reference->linear_backend() == destein::LinearBackend::kBlas);
    for (size_t r = 0; r < kSequences.size(); ++r) {
      const auto& s = kSequences[r];
      const int64_t n = static_cast<int64_t>(s.size());
      at::Tensor alone = model->forward(at::tensor(s, at::kLong).unsqueeze(0)).logits[0];  // (n, V)
      // The independent path agrees to float tolerance...
      at::Tensor ref = reference->forward(at::tensor(s, at::kLong).unsqueeze(0)).logits[0];
      CHECK(max_abs_diff(alone, ref) < 1e-4);
      // ...and the stable path gives the same bits in any batch, any padding.
      for (int64_t extra : {0, 3}) {
        std::vector<size_t> rows = {0, 1, 2, 3, 4, r};
        auto [ids, mask] = padded(rows, extra);
        ForwardOptions fo;
        fo.attention_mask = mask;
        at::Tensor batch = model->forward(ids, fo).logits;  // (6, L, V)
        const int64_t L = ids.size(1);
        INFO("sequence " << r << ", extra padding " << extra);
        CHECK(at::equal(batch[r].narrow(0, L - n, n), alone));
        CHECK(at::equal(batch[5].narrow(0, L - n, n), alone));
      }
    }
    // Cached decoding, one token at a time, in a padded batch of 5 and alone.
    const auto& s = kSequences[2];
    const int64_t n = static_cast<int64_t>(s.size());
    auto [ids, mask] = padded({0, 1, 2, 3, 4}, 2);
    const int64_t L = ids.size(1), steps = 4;
    at::Tensor full_mask = at::cat({mask, at::ones({5, steps}, at::kLong)}, 1);
    KVCache cache = model->make_cache(5, L + steps);
    KVCache single = model->make_cache(1, n + steps);
    ForwardOptions fo, so;
    fo.cache = &cache;
    so.cache = &single;
    fo.attention_mask = full_mask.narrow(1, 0, L);
    at::Tensor lb = model->forward(ids, fo).logits;
    at::Tensor ls = model->forward(at::tensor(s, at::kLong).unsqueeze(0), so).logits;
    CHECK(at::equal(lb[2][-1], ls[0][-1]));
    for (int64_t t = 0; t < steps; ++t) {
      at::Tensor next = at::full({5, 1}, 3 + t, at::kLong);
      fo.attention_mask = full_mask.narrow(1, 0, L + t + 1);
      lb = model->forward(next, fo).logits;
      ls = model->forward(next.narrow(0, 2, 1), so).logits;
      INFO("decode step " << t);
      CHECK(at::equal(lb[2][-1], ls[0][-1]));
    }
  }
}

TEST_CASE("row-stable backend: named, and refused where it cannot run", "[model][stable][errors]") {
  CHECK(parse_linear_backend("stable") == LinearBackend::kStable);
  CHECK_THROWS_WITH(parse_linear_backend("fast"), Catch::Matchers::Contains("stable"));
  ModelOptions o;
  o.linear_backend = LinearBackend::kStable;
  o.dtype = at::kBFloat16;
  CHECK_THROWS_WITH(load_model(fixture("gpt2.pt"), o), Catch::Matchers::Contains("float32 on cpu"));
  o.linear_backend = LinearBackend::kAuto;
  CHECK(load_model(fixture("gpt2.pt"), o)->linear_backend() == destein::LinearBackend::kBlas);
}

TEST_CASE("row-stable GEMM: the product, whatever the row count", "[model][stable]") {
  at::manual_seed(5);
  const int64_t K = 300, N = 37;  // K past one depth block, N past two panels (a partial one)
  at::Tensor w = at::randn({K, N}), bias = at::randn({N}), x = at::randn({100, K});
  at::Tensor packed = destein::detail::pack_stable_weight(w);
  CHECK(packed.sizes() == c10::IntArrayRef({3, K, 16}));
  at::Tensor all = destein::detail::stable_linear(x, packed, N, bias);  // (100, N)
  // Against a double-precision product computed by ATen, an independent path.
  at::Tensor ref = (x.to(at::kDouble).mm(w.to(at::kDouble)) + bias.to(at::kDouble)).to(at::kFloat);
  CHECK(max_abs_diff(all, ref) < 1e-3);
  // Any row count, any offset: the same bits per row.
  for (int64_t start : {0, 1, 7}) {
    for (int64_t m : {1, 5, 6, 13, 25, 93}) {
      INFO("rows " << start << ".." << start + m);
      at::Tensor part =
          destein::detail::stable_linear(x.narrow(0, start, m).contiguous(), packed, N, bias);
      CHECK(at::equal(part, all.narrow(0, start, m)));
    }
  }
  // Without bias.
  at::Tensor nb = destein::detail::stable_linear(x, packed, N, at::Tensor());
  CHECK(max_abs_diff(nb + bias, all) < 1e-4);
}

TEST_CASE("row-stable GEMM: the same bits on every instruction set and thread count",
          "[model][stable]") {
  using destein::detail::StableIsa;
  at::manual_seed(11);
  // K: two depth blocks and a part; N: 13 full panels and a partial one, so that the
  // few-row path's groups of 8, 4 or 2 panels leave remainders.
  const int64_t K = 600, N = 13 * 16 + 5, M = 100;
  at::Tensor w = at::randn({K, N}), bias = at::randn({N}), x = at::randn({M, K});
  at::Tensor packed = destein::detail::pack_stable_weight(w);
  struct Restore {
    int threads = at::get_num_threads();
    ~Restore() {
      destein::detail::reset_stable_isa();
      at::set_num_threads(threads);
    }
  } restore;
  // The reference: the scalar path (std::fma chains), one thread, all rows at once.
  destein::detail::set_stable_isa(StableIsa::kScalar);
  at::set_num_threads(1);
  const at::Tensor ref = destein::detail::stable_linear(x, packed, N, bias);
  const at::Tensor exact =
      (x.to(at::kDouble).mm(w.to(at::kDouble)) + bias.to(at::kDouble)).to(at::kFloat);
  CHECK(max_abs_diff(ref, exact) < 1e-3);
  int paths = 0;
  for (StableIsa isa : {StableIsa::kScalar, StableIsa::kAvx2, StableIsa::kAvx512}) {
    if (!destein::detail::stable_isa_supported(isa)) {
      CHECK_THROWS_AS(destein::detail::set_stable_isa(isa), std::invalid_argument);
      continue;
    }
    destein::detail::set_stable_isa(isa);
    for (int threads : {1, 2}) {
      at::set_num_threads(threads);
      ++paths;
      for (int64_t m : {1, 2, 3, 4, 5, 7, 8, 9, 13, 24, 25, 30, 100}) {
        INFO(destein::detail::stable_isa_name(isa) << ", " << threads << " threads, rows 0.." << m);
        CHECK(at::equal(
            destein::detail::stable_linear(x.narrow(0, 0, m).contiguous(), packed, N, bias),
            ref.narrow(0, 0, m)));
      }
    }
  }
  CHECK(paths >= 2);
}
