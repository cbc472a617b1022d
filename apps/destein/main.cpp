// `destein <command> [options]`: thin dispatcher; only here are exceptions caught.
#include <fmt/format.h>

#include <exception>
#include <memory>
#include <string>

#include "commands.hpp"
#include "experiment/stop_request.hpp"
#include "parallel/process_group.hpp"
#include "program_group.hpp"

namespace destein::app {
std::map<std::string, Command>& command_table() {
  static std::map<std::string, Command> table;
  return table;
}
}  // namespace destein::app

static void print_usage() {
  fmt::print(stderr, "usage: destein <command> [options]\n\ncommands:\n");
  for (const auto& [name, cmd] : destein::app::command_table()) {
    fmt::print(stderr, "  {:<14} {}\n", name, cmd.summary);
  }
}

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    print_usage();
    return argc < 2 ? 2 : 0;
  }
  auto& table = destein::app::command_table();
  auto it = table.find(argv[1]);
  if (it == table.end()) {
    fmt::print(stderr, "destein: unknown command '{}'\n", argv[1]);
    print_usage();
    return 2;
  }
  // Under mpirun / srun: the ranks of the job (docs/scaling.md); else one process.
  std::unique_ptr<destein::ProcessGroup> group;
  try {
    group = destein::start_process_group(&argc, &argv);
  } catch (const std::exception& e) {
    fmt::print(stderr, "destein {}: error: {}\n", argv[1], e.what());
    return 1;
  }
  destein::app::set_program_group(group.get());
  using destein::app::end_failed_rank;
  using destein::app::rank_prefix;
  destein::install_stop_handlers();
  try {
    destein::app::Args args(argc, argv, 2);
    return it->second.run(args);
  } catch (const destein::app::HelpRequested& help) {
    fmt::print("usage: destein {} [options]\n{}\n\n{}", argv[1], it->second.summary, help.what());
    return 0;
  } catch (const destein::StopRequested& e) {
    fmt::print(stderr, "destein {}: {}stopped by {}: {}\n", argv[1], rank_prefix(), e.signal_name(),
               e.what());
    return end_failed_rank(e.exit_code());
  } catch (const std::exception& e) {
    fmt::print(stderr, "destein {}: {}error: {}\n", argv[1], rank_prefix(), e.what());
    return end_failed_rank(1);
  }
}
