// Ranks against threads on the same work: `destein-bench run` on one experiment as
//   A: 1 process x 1 thread, B: 1 process x 2 threads, C: `mpirun -n 2`, 2 ranks x 1 thread,
// alternating A B C A B C ... (round 0 warms the page cache), with the wall times of the
// whole command (model loads and MPI start included) and the ratios measured side by side
// in this run; the GEMM rate at 1 and 2 threads and OpenBLAS's core in the same run. The
// generations files of B and C are compared with A's byte for byte.
//
//   build/bin/sharding_throughput [--model models/tiny-lm] [--prompts 24] [--samples 5]
//                                 [--new-tokens 20] [--rounds 2] [--no-perplexity]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "args.hpp"
#include "destein/runtime/device.hpp"
#include "io/data_folder.hpp"
#include "machine_rate.hpp"

using namespace destein;
using Clock = std::chrono::steady_clock;

namespace {

using bench::gemm_gflops;
using bench::seconds_since;

std::string read_all(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace

int main(int argc, char** argv) {
  try {
    app::Args args(argc, argv);
    const std::string model =
        args.get_or("model", std::string(DESTEIN_SOURCE_DIR) + "/models/tiny-lm");
    const int64_t prompts = args.get_int("prompts", 24);
    const int64_t samples = args.get_int("samples", 5);
    const int64_t new_tokens = args.get_int("new-tokens", 20);
    const int rounds = static_cast<int>(args.get_int("rounds", 2));
    const bool perplexity = !args.flag("no-perplexity");
    args.finish();
    if (std::string(DESTEIN_MPIEXEC).empty()) {
      throw std::runtime_error("built without MPI (DESTEIN_WITH_MPI off): nothing to compare");
    }
    const std::filesystem::path bin = std::filesystem::read_symlink("/proc/self/exe").parent_path();
    const std::filesystem::path dir =
        std::filesystem::temp_directory_path() / "destein_sharding_throughput";
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    {
      std::ofstream cfg(dir / "bench.yaml");
      cfg << "model: " << model << "\nprompts:\n  - {name: rtp, path: "
          << resolve_data_path("rtp/100/test.jsonl").string() << ", limit: " << prompts << "}\n"
          << "generation: {samples: " << samples << ", max_new_tokens: " << new_tokens
          << ", top_p: 0.9}\n"
          << "evaluator: {enabled: " << (perplexity ? "true" : "false") << "}\n";
    }
    set_threads(1);
    const double gemm1 = gemm_gflops(1024, 10);
    set_threads(2);
    const double gemm2 = gemm_gflops(1024, 10);
    const char* coretype = std::getenv("OPENBLAS_CORETYPE");
    fmt::print(
        "GEMM 1024^3: {:.1f} GFLOP/s at 1 thread, {:.1f} at 2 ({:.2f}x); {} cores; "
        "OPENBLAS_CORETYPE={}\n",
        gemm1, gemm2, gemm2 / gemm1, std::thread::hardware_concurrency(),
        coretype ? coretype : "(unset: OpenBLAS detects the core)");
    fmt::print("{}: {} prompts (rtp/100) x {} samples x {} new tokens, perplexity {}, {} rounds\n",
               model, prompts, samples, new_tokens, perplexity ? "on" : "off", rounds);

    struct Cell {
      std::string name, command;
      double seconds = 0;
      bool identical = true;
    };
    const std::string bench =
        (bin / "destein-bench").string() + " run --config " + (dir / "bench.yaml").string();
    const std::string mpi = fmt::format(
        "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "
        "OMPI_MCA_btl_vader_single_copy_mechanism=none {} "
        "--oversubscribe --bind-to core -n 2 ",
        DESTEIN_MPIEXEC);
    std::vector<Cell> cells = {{"1 process x 1 thread", bench + " --threads 1"},
                               {"1 process x 2 threads", bench + " --threads 2"},
                               {"2 ranks x 1 thread (mpirun)", mpi + bench + " --threads 1"}};
    const std::filesystem::path gens = std::filesystem::path("base") / "rtp.generations.jsonl";
    std::string reference;
    for (int round = 0; round <= rounds; ++round) {
      for (auto& c : cells) {
        const std::filesystem::path out = dir / "out";
        std::filesystem::remove_all(out);
        const auto t = Clock::now();
        const int rc = std::system(
            (c.command + " --output " + out.string() + " > " + (dir / "log").string() + " 2>&1")
                .c_str());
        const double s = seconds_since(t);
        if (rc != 0) throw std::runtime_error(c.name + " failed: " + read_all(dir / "log"));
        const std::string text = read_all(out / gens);
        if (reference.empty()) reference = text;
        c.identical = c.identical && text == reference;
        if (round > 0) c.seconds += s;
      }
    }
    std::filesystem::remove_all(dir);
    fmt::print("{:<30} {:>10} {:>12} {:>14} {:>10}\n", "", "wall (s)", "s / prompt", "vs 1 x 1",
               "files");
    for (const auto& c : cells) {
      const double wall = c.seconds / rounds;
      fmt::print("{:<30} {:>10.2f} {:>12.3f} {:>13.2f}x {:>10}\n", c.name, wall,
                 wall / static_cast<double>(prompts), cells[0].seconds / c.seconds,
                 c.identical ? "identical" : "DIFFER");
    }
    fmt::print("2 ranks x 1 thread vs 1 process x 2 threads: {:.2f}x (> 1: the ranks are faster)\n",
               cells[1].seconds / cells[2].seconds);
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "sharding_throughput: error: {}\n", e.what());
    return 1;
  }
}
