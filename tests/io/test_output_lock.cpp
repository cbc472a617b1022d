// One writer per output: a second lock on a folder or file fails at once naming the
// folder and its owner; a lock whose owner died never blocks.
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include "io/output_lock.hpp"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;

namespace {
fs::path fresh_dir(const std::string& name) {
  const fs::path dir = fs::path(DESTEIN_TEST_BINARY_DIR) / "tmp" / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}
}  // namespace

TEST_CASE("output lock: a second writer is refused, naming the folder and the owner",
          "[output_lock]") {
  const fs::path dir = fresh_dir("output_lock_second");
  destein::OutputLock first = destein::lock_output_folder(dir / "run");
  REQUIRE(first.held());
  CHECK(first.lock_file() == dir / "run" / ".destein.lock");
  // flock locks belong to an open file description, so a second open in this process
  // conflicts exactly as another process's would.
  CHECK_THROWS_WITH(destein::lock_output_folder(dir / "run"),
                    Contains("output folder " + (dir / "run").string() +
                             " is being written by another process") &&
                        Contains("pid " + std::to_string(getpid()) + " on host ") &&
                        Contains("lock file"));
  // A file output locks <file>.lock, independent of its folder's lock.
  destein::OutputLock file = destein::lock_output_file(dir / "run" / "pairs.jsonl");
  CHECK(fs::exists(dir / "run" / "pairs.jsonl.lock"));
  CHECK_THROWS_WITH(destein::lock_output_file(dir / "run" / "pairs.jsonl"),
                    Contains("output file " + (dir / "run" / "pairs.jsonl").string()));
  // Released (destructor or release()): the next writer gets it.
  first.release();
  CHECK_FALSE(first.held());
  destein::OutputLock again = destein::lock_output_folder(dir / "run");
  CHECK(again.held());
  destein::OutputLock moved = std::move(again);
  CHECK(moved.held());
  CHECK_FALSE(again.held());
  CHECK_THROWS(destein::lock_output_folder(dir / "run"));
}

TEST_CASE("output lock: a lock left by a killed process does not block", "[output_lock]") {
  const fs::path dir = fresh_dir("output_lock_stale");
  const fs::path lock = dir / "run" / ".destein.lock";
  fs::create_directories(dir / "run");
  // Another process takes the lock on the same file, records itself, and is killed with
  // SIGKILL while holding it: no destructor runs, the file stays, the kernel drops the lock.
  {
    std::ofstream script(dir / "hold_and_die.sh");
    script << "exec 9>>'" << lock.string()
           << "'\nflock -n -x 9 || exit 3\necho \"pid $$ on host dead-owner\" >&9\n"
           << "kill -9 $$\n";
  }
  const int status = std::system(("bash '" + (dir / "hold_and_die.sh").string() + "'").c_str());
  // sh reports the killed bash as exit 137, or passes the signal through when it exec'd it.
  const bool killed = (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) ||
                      (WIFEXITED(status) && WEXITSTATUS(status) == 128 + SIGKILL);
  REQUIRE(killed);
  {
    std::ifstream in(lock);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    REQUIRE_THAT(text, Contains("dead-owner"));
  }
  destein::OutputLock taken = destein::lock_output_folder(dir / "run");
  CHECK(taken.held());
  std::ifstream in(lock);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK_THAT(text, Contains("pid " + std::to_string(getpid())));
  CHECK(text.find("dead-owner") == std::string::npos);
}

TEST_CASE("output lock: a folder that cannot be created is named", "[output_lock]") {
  const fs::path dir = fresh_dir("output_lock_bad");
  std::ofstream(dir / "file") << "x";
  CHECK_THROWS_WITH(destein::lock_output_folder(dir / "file" / "run"),
                    Contains((dir / "file").string()));
}
