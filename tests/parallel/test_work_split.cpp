// How work is split over ranks, and where each rank runs: the properties the sharded
// commands rely on (every unit exactly once, in order, balanced), checked exhaustively
// for small sizes; the single-process group.
#include <catch2/catch.hpp>

#include <algorithm>
#include <vector>

#include "parallel/process_group.hpp"
#include "parallel/rank_placement.hpp"
#include "parallel/work_split.hpp"
#include "splitmix_inverse.hpp"

using namespace destein;
using Catch::Matchers::Contains;

TEST_CASE("shard ranges cover every unit once, in rank order, balanced within one", "[parallel]") {
  for (int size = 1; size <= 7; ++size) {
    for (int64_t units = 0; units <= 23; ++units) {
      INFO("size " << size << ", units " << units);
      int64_t next = 0, smallest = units, largest = 0;
      for (int r = 0; r < size; ++r) {
        const auto [begin, end] = shard_range(units, r, size);
        CHECK(begin == next);  // contiguous and in rank order: gathering concatenates in order
        CHECK(end >= begin);
        smallest = std::min(smallest, end - begin);
        largest = std::max(largest, end - begin);
        next = end;
      }
      CHECK(next == units);
      CHECK(largest - smallest <= 1);
    }
  }
  // By hand: 10 units over 4 ranks -> 3, 3, 2, 2.
  CHECK(shard_range(10, 0, 4) == std::pair<int64_t, int64_t>(0, 3));
  CHECK(shard_range(10, 1, 4) == std::pair<int64_t, int64_t>(3, 6));
  CHECK(shard_range(10, 2, 4) == std::pair<int64_t, int64_t>(6, 8));
  CHECK(shard_range(10, 3, 4) == std::pair<int64_t, int64_t>(8, 10));
  CHECK_THROWS_WITH(shard_range(10, 4, 4), Contains("rank 4 of 4"));
  CHECK_THROWS_AS(shard_range(-1, 0, 1), std::invalid_argument);
}

TEST_CASE("round-robin batches: each rank within one batch of the others", "[parallel]") {
  for (int size = 1; size <= 5; ++size) {
    for (int64_t batches = 0; batches <= 17; ++batches) {
      std::vector<int64_t> count(static_cast<size_t>(size), 0);
      for (int64_t b = 0; b < batches; ++b) ++count[static_cast<size_t>(batch_owner(b, size))];
      const auto [lo, hi] = std::minmax_element(count.begin(), count.end());
      CHECK(*hi - *lo <= 1);
    }
  }
  CHECK(batch_owner(7, 3) == 1);
  CHECK_THROWS_AS(batch_owner(1, 0), std::invalid_argument);
}

TEST_CASE("rank placement: cuda spreads over local GPUs, threads share the cores", "[parallel]") {
  CHECK(rank_device("cuda", 0, 8) == "cuda:0");
  CHECK(rank_device("cuda", 9, 8) == "cuda:1");
  CHECK(rank_device("cuda", 3, 2) == "cuda:1");
  CHECK(rank_device("cuda:5", 1, 8) == "cuda:5");  // an explicit device is the user's choice
  CHECK(rank_device("cpu", 3, 0) == "cpu");
  CHECK_THROWS_WITH(rank_device("cuda", 0, 0), Contains("no CUDA device"));
  CHECK(rank_threads(0, 3, 16) == 5);
  CHECK(rank_threads(0, 4, 2) == 1);  // oversubscribed: never 0 threads
  CHECK(rank_threads(0, 1, 2) == 2);
  CHECK(rank_threads(6, 4, 16) == 6);  // an explicit count is kept
}

TEST_CASE("a single process is rank 0 of 1 and its collectives are the identity", "[parallel]") {
  SingleProcess one;
  CHECK(one.is_root());
  CHECK(one.size() == 1);
  CHECK(one.local_size() == 1);
  std::string bytes = "abc";
  one.broadcast(bytes);
  CHECK(bytes == "abc");
  CHECK(one.gather("xyz") == std::vector<std::string>{"xyz"});
  CHECK_THROWS_AS(one.send("x", 1), std::logic_error);
  CHECK_THROWS_AS(one.receive(1), std::logic_error);
  CHECK_THAT(one.describe(), Contains("rank 0 of 1 (host "));
  CHECK(one.kind() == "single");
}

TEST_CASE("unsplitmix64 inverts splitmix64", "[parallel]") {
  // The sharded self-induction's streams rest on it (steer/self_induced.cpp).
  detail::SplitMix64 draws(12345);
  for (uint64_t x : {uint64_t{0}, uint64_t{1}, ~uint64_t{0}, detail::kGoldenGamma}) {
    CHECK(detail::unsplitmix64(detail::splitmix64(x)) == x);
    CHECK(detail::splitmix64(detail::unsplitmix64(x)) == x);
  }
  for (int i = 0; i < 10000; ++i) {
    const uint64_t x = draws.next();
    REQUIRE(detail::unsplitmix64(detail::splitmix64(x)) == x);
  }
}
