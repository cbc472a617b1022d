#pragma once
// Subcommands of the `destein` CLI register themselves here, one file per group
// (cmd_model.cpp, cmd_scorer.cpp, ...), so adding a command touches no shared file.

#include <functional>
#include <map>
#include <string>

#include "args.hpp"

namespace destein::app {

struct Command {
  std::string summary;
  std::function<int(Args&)> run;  // returns the process exit code
};

std::map<std::string, Command>& command_table();

struct CommandRegistrar {
  CommandRegistrar(const std::string& name, std::string summary, std::function<int(Args&)> run) {
    command_table()[name] = Command{std::move(summary), std::move(run)};
  }
};

}  // namespace destein::app

#define DESTEIN_COMMAND(var, name, summary, fn) \
  static ::destein::app::CommandRegistrar var { name, summary, fn }
