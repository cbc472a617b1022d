// Sharded runs on the tiny model under `mpirun -n 2` and `-n 3` (oversubscribed, on
// loopback): the files equal a one-process run's byte for byte (results.json apart from
// its timing fields), a run with a killed rank resumes with another rank count to the
// same file, a failing rank aborts the job naming itself, and a second writer on an
// output folder is refused while a dead one's lock never blocks. The one-process run is
// the oracle; it does not use the process group at all.
#include <fmt/format.h>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <sstream>
#include <thread>

#include "spawned_process.hpp"
#include "test_support.hpp"

extern char** environ;

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using destein::test::run_command;

using destein::test::read_all;
using destein::test::SpawnedProcess;

namespace {

const fs::path kTinyLm = fs::path(DESTEIN_SOURCE_DIR) / "models" / "tiny-lm";

int64_t count_lines(const fs::path& p) {
  const std::string text = read_all(p);
  return static_cast<int64_t>(std::count(text.begin(), text.end(), '\n'));
}

// Open MPI as root in a container: the two variables, more ranks than cores, no binding
// (other work shares the cores), a hard time limit so that a hung job can never hang CI.
std::string mpirun(int ranks, const std::string& args, const std::string& env = "") {
  return fmt::format(
      "env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "
      "OMPI_MCA_btl_vader_single_copy_mechanism=none "
      "{} timeout -k 10 300 {} --oversubscribe --bind-to none -n {} {}",
      env, DESTEIN_MPIEXEC, ranks, args);
}

void write_prompts(const fs::path& path, int n) {
  const char* starts[] = {"So I told him he was a",
                          "Hi",
                          "You are such a",
                          "My favourite food is, without any doubt and after years of tasting,",
                          "Get out of here you",
                          "The meeting starts at",
                          "Why",
                          "They said the neighbours were"};
  std::ofstream out(path);
  for (int i = 0; i < n; ++i) {
    out << nlohmann::json{{"prompt",
                           {{"text", std::string(starts[i % 8]) + " " + std::to_string(i)},
                            {"toxicity", i % 3 ? 0.2 : 0.7}}}}
               .dump()
        << "\n";
  }
}

// results.json without what may differ between two correct runs: the stage timings and costs, the
// output folder in the file paths; steering edit-norm means are compared with a tolerance
// (they are sums over positions, grouped by forward pass: equal up to rounding).
void check_same_results(const fs::path& expected_dir, const fs::path& actual_dir) {
  auto expected = nlohmann::json::parse(read_all(expected_dir / "results.json"));
  auto actual = nlohmann::json::parse(read_all(actual_dir / "results.json"));
  REQUIRE(expected.size() == actual.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    for (auto* row : {&expected[i], &actual[i]}) {
      row->erase("stages");
      row->erase("cost");  // timings and memory (rank 0's in a sharded run)
      (*row)["generations_file"] =
          fs::path((*row)["generations_file"].get<std::string>()).filename().string();
    }
    const nlohmann::json e_acted = expected[i].value("steering_acted", nlohmann::json());
    const nlohmann::json a_acted = actual[i].value("steering_acted", nlohmann::json());
    expected[i].erase("steering_acted");
    actual[i].erase("steering_acted");
    INFO("results.json row " << i);
    CHECK(expected[i].dump() == actual[i].dump());
    REQUIRE(e_acted.is_null() == a_acted.is_null());
    if (e_acted.is_null()) continue;
    const auto flat_e = e_acted.flatten(), flat_a = a_acted.flatten();
    REQUIRE(flat_e.size() == flat_a.size());
    for (auto it = flat_e.begin(); it != flat_e.end(); ++it) {
      INFO("steering_acted" << it.key());
      const auto& other = flat_a.at(it.key());
      if (it->is_number_float() && other.is_number_float()) {
        CHECK(std::abs(it->get<double>() - other.get<double>()) <=
              1e-9 * std::max(1.0, std::abs(it->get<double>())));
      } else {
        CHECK(*it == other);
      }
    }
  }
}

// Every file of a bench run except the resolved config (it names the output folder), the
// lock file and the costs (timings and memory).
void check_same_run(const fs::path& expected_dir, const fs::path& actual_dir) {
  int64_t files = 0;
  for (const auto& entry : fs::recursive_directory_iterator(expected_dir)) {
    if (!entry.is_regular_file()) continue;
    const fs::path rel = fs::relative(entry.path(), expected_dir);
    const std::string name = rel.filename().string();
    if (name == "config.resolved.yaml" || name == ".destein.lock" || name == "results.json" ||
        name == "costs.md" || name == "costs.csv")
      continue;
    INFO(rel.string());
    REQUIRE(fs::exists(actual_dir / rel));
    CHECK(read_all(entry.path()) == read_all(actual_dir / rel));
    ++files;
  }
  CHECK(files >= 4);
  check_same_results(expected_dir, actual_dir);
}

// The pid of the process whose environment holds both strings (a rank of one test's job).
pid_t find_process_with_env(const std::string& a, const std::string& b) {
  DIR* proc = opendir("/proc");
  pid_t found = -1;
  while (dirent* e = readdir(proc)) {
    const pid_t pid = static_cast<pid_t>(std::atoi(e->d_name));
    if (pid <= 0) continue;
    std::istringstream env(read_all(fs::path("/proc") / e->d_name / "environ"));
    bool has_a = false, has_b = false;
    for (std::string kv; std::getline(env, kv, '\0');) {
      has_a = has_a || kv == a;
      has_b = has_b || kv == b;
    }
    if (has_a && has_b) {
      found = pid;
      break;
    }
  }
  closedir(proc);
  return found;
}

std::string bench_config(const fs::path& dir, const std::string& name,
                         const std::string& prompts_yaml, const std::string& generation,
                         const std::string& methods, bool perplexity) {
  std::ofstream cfg(dir / name);
  cfg << "model: " << kTinyLm.string() << "\nprompts:\n"
      << prompts_yaml << "generation: {" << generation << "}\nmethods:\n"
      << methods << "evaluator: {enabled: " << (perplexity ? "true" : "false") << "}\n";
  return (dir / name).string();
}

}  // namespace

TEST_CASE("mpirun -n 2 and -n 3: vectors, pairs and bench files equal the one-process run's",
          "[mpi][parallel]") {
  if (std::string(DESTEIN_MPIEXEC).empty()) {
    WARN("built without MPI (DESTEIN_WITH_MPI off): sharded runs not tested");
    return;
  }
  const fs::path dir = destein::test::temp_dir("sharded_equal");
  const std::string cli = DESTEIN_CLI, bench = DESTEIN_BENCH;

  // destein vectors: 22 pairs in batches of 4 -> 6 batches, split 3 + 3 and 2 + 2 + 2.
  {
    std::ofstream pairs(dir / "pairs.jsonl");
    for (int i = 0; i < 22; ++i) {
      pairs << nlohmann::json::array({"you are a stupid idiot and a liar " + std::to_string(i),
                                      "you are mistaken, my friend " + std::to_string(i)})
                   .dump()
            << "\n";
    }
  }
  auto vectors_config = [&](const std::string& out) {
    std::ofstream cfg(dir / ("vectors-" + out + ".yaml"));
    cfg << "model: " << kTinyLm.string() << "\npairs:\n  path: " << (dir / "pairs.jsonl").string()
        << "\n  num_pairs: 0\nsite: attn_out\nlast_k: 4\nbatch_size: 4\nprobes:\n  folds: "
           "2\noutput: "
        << (dir / (out + ".safetensors")).string() << "\n";
    return (dir / ("vectors-" + out + ".yaml")).string();
  };
  auto one = run_command(cli + " vectors --threads 1 --config " + vectors_config("v1"));
  INFO(one.output);
  REQUIRE(one.exit_code == 0);
  for (int n : {2, 3}) {
    const std::string out = "v" + std::to_string(n);
    auto r = run_command(mpirun(n, cli + " vectors --threads 1 --config " + vectors_config(out)));
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    CHECK(read_all(dir / (out + ".safetensors")) == read_all(dir / "v1.safetensors"));
    CHECK(read_all(dir / (out + ".pairs.jsonl")) == read_all(dir / "v1.pairs.jsonl"));
    CHECK(read_all(dir / (out + ".probes.svg")) == read_all(dir / "v1.probes.svg"));
  }

  // destein pairs: 11 targets, 2 samples, batches of 4 rows (2 prompts) -> 6 blocks.
  auto pairs_config = [&](const std::string& out) {
    std::ofstream cfg(dir / ("induce-" + out + ".yaml"));
    cfg << "model: " << kTinyLm.string() << "\nseeds:\n  path: " << (dir / "pairs.jsonl").string()
        << "\nnum_targets: 11\nfew_shot: 2\nseed: 3\ndirection: both\n"
        << "generation:\n  samples_per_target: 2\n  max_new_tokens: 12\n  batch_size: 4\n  seed: "
           "9\n"
        << "filter:\n  toxic_min: 0.0\n  nontoxic_max: 1.01\noutput: "
        << (dir / (out + ".jsonl")).string() << "\n";
    return (dir / ("induce-" + out + ".yaml")).string();
  };
  auto pairs_one = run_command(cli + " pairs --threads 1 --config " + pairs_config("p1"));
  INFO(pairs_one.output);
  REQUIRE(pairs_one.exit_code == 0);
  REQUIRE(count_lines(dir / "p1.jsonl") > 5);
  for (int n : {2, 3}) {
    const std::string out = "p" + std::to_string(n);
    auto r = run_command(mpirun(n, cli + " pairs --threads 1 --config " + pairs_config(out)));
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    CHECK(read_all(dir / (out + ".jsonl")) == read_all(dir / "p1.jsonl"));
  }

  // destein-bench run: the base model and a steered method (the vectors above), two prompt
  // sets, perplexity on; 11 prompts in batches of 2 -> 6 batches, dealt 3/3 and 2/2/2.
  write_prompts(dir / "prompts.jsonl", 14);
  const std::string sets =
      "  - {name: first, path: " + (dir / "prompts.jsonl").string() +
      ", limit: 11}\n  - {name: toxic, path: " + (dir / "prompts.jsonl").string() +
      ", subset: toxic}\n";
  const std::string methods =
      "  - {name: base}\n  - {name: steered, vectors: " + (dir / "v1.safetensors").string() +
      ", mode: headwise, alpha: 0.6}\n";
  const std::string config =
      bench_config(dir, "bench.yaml", sets,
                   "samples: 3, max_new_tokens: 8, seed: 4, prompts_per_batch: 2", methods, true);
  auto base = run_command(bench + " run --threads 1 --config " + config + " --output " +
                          (dir / "run1").string());
  INFO(base.output);
  REQUIRE(base.exit_code == 0);
  for (int n : {1, 2, 3}) {  // mpirun -n 1: MPI's world of one rank, the unsharded path
    const fs::path out = dir / ("mpi" + std::to_string(n));
    auto r = run_command(
        mpirun(n, bench + " run --threads 1 --config " + config + " --output " + out.string()));
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    // One table, printed by the writing rank only.
    CHECK(r.output.find("| method | subset |") != std::string::npos);
    CHECK(r.output.find("| method | subset |") == r.output.rfind("| method | subset |"));
    check_same_run(dir / "run1", out);
  }
  // --mix-methods: both methods in shared batches (the first set's 11 prompts x 2 methods
  // = 22 units, in batches of 2 -> 11 batches), in one process and dealt over 2 ranks:
  // still the files of the methods run apart in one process.
  for (int n : {1, 2}) {
    const fs::path out = dir / ("mixed" + std::to_string(n));
    auto r = run_command(mpirun(n, bench + " run --threads 1 --mix-methods --config " + config +
                                       " --output " + out.string()));
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    check_same_run(dir / "run1", out);
  }
}

TEST_CASE("a sharded run with a killed rank resumes with another rank count to the same file",
          "[mpi][parallel]") {
  if (std::string(DESTEIN_MPIEXEC).empty()) {
    WARN("built without MPI (DESTEIN_WITH_MPI off): sharded runs not tested");
    return;
  }
  const fs::path dir = destein::test::temp_dir("sharded_resume");
  const std::string bench = DESTEIN_BENCH;
  write_prompts(dir / "prompts.jsonl", 90);
  const std::string config = bench_config(
      dir, "bench.yaml", "  - {name: p, path: " + (dir / "prompts.jsonl").string() + "}\n",
      "samples: 3, max_new_tokens: 12, seed: 8, prompts_per_batch: 1", "  - {name: base}\n", false);
  auto reference = run_command(bench + " run --threads 1 --config " + config + " --output " +
                               (dir / "ref").string());
  INFO(reference.output);
  REQUIRE(reference.exit_code == 0);
  const fs::path gens = dir / "out" / "base" / "p.generations.jsonl";
  const std::string mark = "DESTEIN_TEST_JOB=" + dir.string();
  {
    SpawnedProcess job(SpawnedProcess::shell(mpirun(3,
                                                    bench + " run --threads 1 --config " + config +
                                                        " --output " + (dir / "out").string(),
                                                    mark)),
                       dir / "log3");
    REQUIRE(job.wait_until([&] { return fs::exists(gens) && count_lines(gens) >= 4; },
                           std::chrono::seconds(240)));
    const pid_t rank1 = find_process_with_env(mark, "OMPI_COMM_WORLD_RANK=1");
    REQUIRE(rank1 > 0);
    kill(rank1, SIGKILL);
    const int code = job.wait();
    INFO(job.output());
    CHECK(code != 0);
  }
  const int64_t kept = count_lines(gens);
  CHECK(kept < 90);
  // What was written stays valid: whole lines (a cut last line is removed on resume).
  std::istringstream lines(read_all(gens));
  int64_t parsed = 0;
  for (std::string line; std::getline(lines, line) && parsed < kept; ++parsed)
    CHECK_NOTHROW(nlohmann::json::parse(line));

  // Resumed on 2 ranks, pipelined (the worker thread sends while the main thread generates).
  const std::string pipelined = bench_config(
      dir, "pipelined.yaml", "  - {name: p, path: " + (dir / "prompts.jsonl").string() + "}\n",
      "samples: 3, max_new_tokens: 12, seed: 8, prompts_per_batch: 1, pipelined: true",
      "  - {name: base}\n", false);
  auto resumed = run_command(mpirun(
      2, bench + " run --threads 1 --config " + pipelined + " --output " + (dir / "out").string()));
  INFO(resumed.output);
  REQUIRE(resumed.exit_code == 0);
  CHECK_THAT(resumed.output,
             Contains("resumed (" + std::to_string(kept) + " prompts already done"));
  CHECK(read_all(gens) == read_all(dir / "ref" / "base" / "p.generations.jsonl"));
}

TEST_CASE("a rank that fails aborts the job, naming the rank and the error", "[mpi][parallel]") {
  if (std::string(DESTEIN_MPIEXEC).empty()) {
    WARN("built without MPI (DESTEIN_WITH_MPI off): sharded runs not tested");
    return;
  }
  const fs::path dir = destein::test::temp_dir("sharded_failure");
  const std::string bench = DESTEIN_BENCH;
  write_prompts(dir / "prompts.jsonl", 30);
  const std::string generation = "samples: 2, max_new_tokens: 6, prompts_per_batch: 1";
  const std::string good = bench_config(
      dir, "good.yaml", "  - {name: p, path: " + (dir / "prompts.jsonl").string() + "}\n",
      generation, "  - {name: base}\n", false);
  // Rank 1 reads another prompt list than rank 0 (MPMD launch): it must fail, not write.
  const std::string bad = bench_config(
      dir, "bad.yaml", "  - {name: p, path: " + (dir / "prompts.jsonl").string() + ", limit: 20}\n",
      generation, "  - {name: base}\n", false);
  const std::string out = (dir / "out").string();
  const std::string job = fmt::format(
      "env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout -k 10 300 {} "
      "--oversubscribe --bind-to none "
      "-n 1 {} run --threads 1 --config {} --output {} : -n 1 {} run --threads 1 --config {} "
      "--output {}",
      DESTEIN_MPIEXEC, bench, good, out, bench, bad, out);
  auto r = run_command(job);
  INFO(r.output);
  CHECK(r.exit_code != 0);
  CHECK(r.exit_code != 124);  // aborted, not timed out
  CHECK_THAT(r.output, Contains("rank 1 of 2 (host ") && Contains("error: ") &&
                           Contains("every rank must read the same prompt file"));
  const fs::path gens = dir / "out" / "base" / "p.generations.jsonl";
  if (fs::exists(gens)) {
    std::istringstream lines(read_all(gens));
    for (std::string line; std::getline(lines, line);) CHECK_NOTHROW(nlohmann::json::parse(line));
  }
}

TEST_CASE(
    "destein-bench run: a second writer on a folder is refused, a killed writer's lock does not "
    "block",
    "[cli][output_lock][parallel]") {
  const fs::path dir = destein::test::temp_dir("bench_lock");
  const std::string bench = DESTEIN_BENCH;
  write_prompts(dir / "prompts.jsonl", 200);
  const std::string config = bench_config(
      dir, "bench.yaml", "  - {name: p, path: " + (dir / "prompts.jsonl").string() + "}\n",
      "samples: 2, max_new_tokens: 12, prompts_per_batch: 1", "  - {name: base}\n", false);
  const fs::path out = dir / "out";
  const fs::path gens = out / "base" / "p.generations.jsonl";
  int64_t kept = 0;
  {
    SpawnedProcess first(SpawnedProcess::shell(bench + " run --threads 1 --config " + config +
                                               " --output " + out.string()),
                         dir / "log1");
    const std::string owner = "pid " + std::to_string(first.pid()) + " on host ";
    REQUIRE(first.wait_until([&] { return fs::exists(gens) && count_lines(gens) >= 1; },
                             std::chrono::seconds(240)));
    CHECK_THAT(read_all(out / ".destein.lock"), Contains(owner));
    const auto t0 = std::chrono::steady_clock::now();
    auto second =
        run_command(bench + " run --threads 1 --config " + config + " --output " + out.string());
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    INFO(second.output);
    CHECK(second.exit_code == 1);
    CHECK_THAT(second.output,
               Contains("output folder " + out.string() + " is being written by another process") &&
                   Contains(owner) && Contains("destein-bench run"));
    CHECK(seconds < 60);         // refused at once, not after waiting for the first run
    kill(first.pid(), SIGKILL);  // dies holding the lock, as after a crash or an OOM kill
    first.wait();
    kept = count_lines(gens);
  }
  CHECK(kept < 200);
  auto again =
      run_command(bench + " run --threads 1 --config " + config + " --output " + out.string());
  INFO(again.output);
  REQUIRE(again.exit_code == 0);
  CHECK_THAT(again.output, Contains("resumed (" + std::to_string(kept) + " prompts already done"));
  CHECK(count_lines(gens) == 200);
}
