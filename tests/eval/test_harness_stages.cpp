// The generation harness's stages one by one: the two-thread pipeline, the generations
// file (resume set, a torn last line cut), the sink's batch order on rank 0 of a sharded
// run and its rank-to-rank messages, the merge of steering statistics over ranks, and the
// scorer factory. The whole harness is checked end to end in test_mixed_methods.cpp,
// test_batching.cpp and the sharded runs.
#include <atomic>
#include <catch2/catch.hpp>
#include <cmath>
#include <deque>
#include <fstream>
#include <map>
#include <set>
#include <stdexcept>

#include "destein/experiment/bench_experiment.hpp"
#include "destein/score/attribute_scorer.hpp"
#include "destein/score/linear_scorer.hpp"
#include "destein/score/scorer_factory.hpp"
#include "eval/generation_sink.hpp"
#include "eval/generations_file.hpp"
#include "eval/pipeline.hpp"
#include "parallel/process_group.hpp"
#include "steer/steering_stats_merge.hpp"
#include "test_support.hpp"

using namespace destein;
using Catch::Matchers::Contains;
using destein::test::read_all;

namespace {

// A rank of a pretend group: receive() and gather() hand out canned messages, send()
// records; no other process is involved.
class FakeGroup : public ProcessGroup {
 public:
  FakeGroup(int rank, int size) : rank_(rank), size_(size) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return rank_; }
  int local_size() const override { return size_; }
  void broadcast(std::string&, int) const override {}
  std::vector<std::string> gather(const std::string& bytes, int) const override {
    if (rank_ != 0) return {};
    std::vector<std::string> all = {bytes};
    all.insert(all.end(), others.begin(), others.end());
    return all;
  }
  void send(const std::string& bytes, int destination) const override {
    sent.emplace_back(destination, bytes);
  }
  std::string receive(int source) const override {
    auto& queue = inbox.at(source);
    REQUIRE_FALSE(queue.empty());
    std::string m = queue.front();
    queue.pop_front();
    received_from.push_back(source);
    return m;
  }
  void barrier() const override {}
  [[noreturn]] void abort(int) const override { throw std::logic_error("abort"); }
  std::string kind() const override { return "fake"; }

  std::vector<std::string> others;                       // gather: ranks 1.. in order
  mutable std::map<int, std::deque<std::string>> inbox;  // receive: per source
  mutable std::vector<int> received_from;
  mutable std::vector<std::pair<int, std::string>> sent;

 private:
  int rank_, size_;
};

TrackLines lines(int64_t prompts, int64_t unscored, std::string text) {
  TrackLines t;
  t.prompts = prompts;
  t.unscored = unscored;
  t.lines = std::move(text);
  return t;
}

}  // namespace

TEST_CASE("pipeline: items in order on one or two threads, and the first error stops both",
          "[eval][harness_stages]") {
  for (bool overlapped : {false, true}) {
    std::vector<int64_t> consumed;
    double wait = 0;
    run_pipeline(
        5, [](int64_t k) { return k * k; }, [&](int64_t& x) { consumed.push_back(x); }, overlapped,
        &wait);
    CHECK(consumed == std::vector<int64_t>{0, 1, 4, 9, 16});
    CHECK(wait >= 0);
  }
  // The worker fails on item 2: no item past 3 is produced (the one being produced and
  // one in the slot at most), and the worker's error comes out.
  std::atomic<int64_t> produced{0};
  CHECK_THROWS_WITH(run_pipeline(
                        100,
                        [&](int64_t k) {
                          produced = k + 1;
                          return k;
                        },
                        [](int64_t& k) {
                          if (k == 2) throw std::runtime_error("consumer failed on 2");
                        },
                        true),
                    "consumer failed on 2");
  CHECK(produced <= 5);
  // The producer fails on item 3: the items before it are still consumed, then its error.
  std::vector<int64_t> consumed;
  CHECK_THROWS_WITH(run_pipeline(
                        10,
                        [](int64_t k) {
                          if (k == 3) throw std::invalid_argument("producer failed on 3");
                          return k;
                        },
                        [&](int64_t& k) { consumed.push_back(k); }, true),
                    "producer failed on 3");
  CHECK(consumed == std::vector<int64_t>{0, 1, 2});
}

TEST_CASE("generations file: the prompts done, a torn last line cut, a corrupt line refused",
          "[eval][harness_stages][resume]") {
  auto dir = destein::test::temp_dir("harness_generations_file");
  const auto path = dir / "sub" / "g.jsonl";
  {
    GenerationsFile fresh(path);  // creates the folder and an empty file
    CHECK(fresh.done().empty());
    CHECK(fresh.truncated_bytes() == 0);
  }
  const std::string kept = "{\"prompt_index\": 4}\n\n{\"prompt_index\": 1, \"x\": [1]}\n";
  const std::string torn = "{\"prompt_index\": 7, \"generations\": [{\"te";
  std::ofstream(path, std::ios::binary) << kept << torn;
  {
    GenerationsFile f(path);
    CHECK(f.done() == std::set<int64_t>{1, 4});
    CHECK(f.truncated_bytes() == static_cast<int64_t>(torn.size()));
    CHECK(read_all(path) == kept);
    f.append("{\"prompt_index\": 7}\n");
  }
  CHECK(read_all(path) == kept + "{\"prompt_index\": 7}\n");
  // A complete last line without its newline is also a cut write.
  std::ofstream(path, std::ios::binary) << kept << "{\"prompt_index\": 9}";
  CHECK(GenerationsFile(path).done() == std::set<int64_t>{1, 4});
  CHECK(read_all(path) == kept);
  // A bad line before the last is not a torn write: refused, naming file:line.
  std::ofstream(path, std::ios::binary) << kept << "{\"no_index\": 1}\n{\"prompt_index\": 2}\n";
  CHECK_THROWS_WITH(GenerationsFile(path),
                    Contains(path.string() + ":4: corrupt line") && Contains("no prompt_index"));
}

TEST_CASE("sink: rank 0 writes every rank's batches in batch order, counting per track",
          "[eval][harness_stages][parallel]") {
  auto dir = destein::test::temp_dir("harness_sink");
  std::vector<GenerationsFile> files;
  files.emplace_back(dir / "a.jsonl");
  files.emplace_back(dir / "b.jsonl");
  std::vector<EvalRunReport> reports(2);
  reports[0].prompts_resumed = 1;
  FakeGroup root(0, 2);
  // Rank 1 owns the odd batches (round-robin): 1 and 3.
  root.inbox[1].push_back(encode_track_lines(1, {lines(1, 0, "a1\n"), lines(1, 2, "b1\n")}));
  root.inbox[1].push_back(encode_track_lines(3, {lines(0, 0, ""), lines(2, 0, "b3\nb3'\n")}));
  std::vector<std::pair<int64_t, int64_t>> progress;
  GenerationSink sink(
      &files, &root, &reports, 3, 12,
      [&](int64_t done, int64_t total) { progress.emplace_back(done, total); },
      "a.jsonl and 1 other file");
  sink.deliver(0, {lines(1, 0, "a0\n"), lines(0, 0, "")});
  CHECK(root.received_from.empty());  // nothing comes before batch 0
  sink.deliver(2, {lines(1, 1, "a2\n"), lines(1, 0, "b2\n")});
  CHECK(root.received_from == std::vector<int>{1});
  sink.finish(4);
  CHECK(root.received_from == std::vector<int>{1, 1});
  CHECK(read_all(dir / "a.jsonl") == "a0\na1\na2\n");
  CHECK(read_all(dir / "b.jsonl") == "b1\nb2\nb3\nb3'\n");
  CHECK(sink.batches() == 4);
  CHECK(reports[0].prompts_done == 3);
  CHECK(reports[0].generations == 9);
  CHECK(reports[0].unscored == 1);
  CHECK(reports[1].prompts_done == 4);
  CHECK(reports[1].unscored == 2);
  // Units finished, from the resumed one on, after each batch written.
  CHECK(progress == std::vector<std::pair<int64_t, int64_t>>{{2, 12}, {4, 12}, {6, 12}, {8, 12}});

  // Another rank sends its batches to rank 0 and counts them; it has no files.
  std::vector<GenerationsFile> none;
  std::vector<EvalRunReport> theirs(2);
  FakeGroup other(1, 2);
  GenerationSink remote(&none, &other, &theirs, 3, 12, {}, "x");
  remote.deliver(1, {lines(1, 0, "a1\n"), lines(0, 0, "")});
  REQUIRE(other.sent.size() == 1);
  CHECK(other.sent[0].first == 0);
  CHECK(theirs[0].prompts_done == 1);
  const auto back = decode_track_lines(other.sent[0].second, 1, 2, 1, "x");
  CHECK(back[0].lines == "a1\n");
  CHECK(back[1].prompts == 0);
}

TEST_CASE("sink messages: bytes kept, a message for another batch or no message refused",
          "[eval][harness_stages][parallel][errors]") {
  const std::string text = "{\"text\": \"caf\xc3\xa9 \xe2\x80\x94 \\u0000\"}\n";
  const auto m = encode_track_lines(6, {lines(2, 1, text), lines(0, 0, "")});
  const auto parts = decode_track_lines(m, 6, 2, 3, "out.jsonl");
  REQUIRE(parts.size() == 2);
  CHECK(parts[0].prompts == 2);
  CHECK(parts[0].unscored == 1);
  CHECK(parts[0].lines == text);
  CHECK(parts[1].lines.empty());
  CHECK_THROWS_WITH(decode_track_lines(m, 5, 2, 3, "out.jsonl"),
                    Contains("out.jsonl: rank 3 sent batch 6 of 2 tracks where batch 5 of 2"));
  CHECK_THROWS_WITH(decode_track_lines(m, 6, 3, 3, "out.jsonl"),
                    Contains("where batch 6 of 3 was expected"));
  CHECK_THROWS_WITH(decode_track_lines("not a message", 6, 2, 3, "out.jsonl"),
                    Contains("out.jsonl: unreadable message from rank 3"));
}

TEST_CASE("steering statistics over ranks: counts add up, means weighted by positions",
          "[steering][harness_stages][parallel]") {
  SteeringReport mine;
  mine.entries.resize(1);
  auto& e = mine.entries[0];
  e.layers = {0, 1};
  e.prompt_layer_mean = {1.0, 2.0};
  e.generated_layer_mean = {0.0, std::nan("")};
  e.prompt_head_mean = {3.0};
  e.generated_head_mean = {std::nan("")};
  e.prompt_positions = 2;
  e.generated_positions = 0;
  // Rank 1: 1 prompt position (layer means 4 and 8), 3 generated (means 2, 6), none edited.
  FakeGroup root(0, 2);
  root.others.push_back(nlohmann::json::array({{{"prompt_layer", {4.0, 8.0}},
                                                {"generated_layer", {2.0, 6.0}},
                                                {"prompt_head", {6.0}},
                                                {"generated_head", {1.0}},
                                                {"prompt_positions", 1},
                                                {"generated_positions", 3},
                                                {"generated_not_edited", true}}})
                            .dump());
  const SteeringReport merged = gather_steering_stats(mine, root);
  const auto& m = merged.entries[0];
  CHECK(m.prompt_positions == 3);
  CHECK(m.generated_positions == 3);
  CHECK(m.prompt_layer_mean[0] == Approx((1.0 * 2 + 4.0 * 1) / 3));  // 2
  CHECK(m.prompt_layer_mean[1] == Approx((2.0 * 2 + 8.0 * 1) / 3));  // 4
  CHECK(m.prompt_head_mean[0] == Approx((3.0 * 2 + 6.0 * 1) / 3));   // 4
  CHECK(m.generated_layer_mean[0] == Approx(2.0));  // rank 0 had no generated positions
  CHECK(m.generated_layer_mean[1] == Approx(6.0));  // its NaN does not count
  CHECK(m.generated_head_mean[0] == Approx(1.0));
  CHECK(m.generated_not_edited);  // the only rank with generated positions edited none
  // The other ranks keep their own statistics.
  FakeGroup other(1, 2);
  CHECK(gather_steering_stats(mine, other).entries[0].prompt_layer_mean[0] == 1.0);
}

TEST_CASE("scorer factory: the kinds a config names, an unknown kind refused with the list",
          "[score][harness_stages][errors]") {
  CHECK(toxicity_scorer_kinds() ==
        std::vector<std::string>{"linear", "perspective", "torchscript", "hf-classifier"});
  ToxicityScorerSpec spec;
  auto linear = make_toxicity_scorer(spec);  // the default offline scorer
  CHECK(linear->name() == load_offline_scorer(default_scorer_path())->name());
  spec.kind = "roberta";
  CHECK_THROWS_WITH(make_toxicity_scorer(spec),
                    Contains("unknown scorer kind 'roberta'") &&
                        Contains("linear, perspective, torchscript, hf-classifier"));
  spec.kind = "torchscript";
  CHECK_THROWS_AS(make_toxicity_scorer(spec), std::invalid_argument);

  auto dir = destein::test::temp_dir("harness_scorer_kind");
  std::ofstream(dir / "bench.yaml") << "model: m\nprompts:\n  - {name: a, path: p.jsonl}\n"
                                       "scorer:\n  kind: roberta\n";
  CHECK_THROWS_WITH(load_bench_experiment(dir / "bench.yaml"),
                    Contains("bench.yaml:5") &&
                        Contains("scorer.kind must be one of linear, perspective, torchscript, "
                                 "hf-classifier, found 'roberta'"));
}
