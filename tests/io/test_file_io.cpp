// Shared file helpers: JSON reads that name the file, atomic writes, settings differences.
#include <catch2/catch.hpp>

#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>

#include "io/file_io.hpp"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;

TEST_CASE("text files are written whole and JSON read back with errors naming the file",
          "[file_io]") {
  const fs::path dir = fs::path(DESTEIN_TEST_BINARY_DIR) / "file_io_tmp";
  fs::remove_all(dir);
  fs::create_directories(dir);
  destein::write_text_file(dir / "a.json", "{\"x\": [1, 2]}\n");
  CHECK(!fs::exists(dir / "a.json.tmp"));
  CHECK(destein::read_json_file(dir / "a.json")["x"][1] == 2);
  destein::write_text_file(dir / "a.json", "{oops");
  CHECK_THROWS_WITH(destein::read_json_file(dir / "a.json"), Contains("a.json: not valid JSON"));
  CHECK_THROWS_WITH(destein::read_json_file(dir / "missing.json"), Contains("missing.json"));
  CHECK_THROWS_WITH(destein::write_text_file(dir / "no" / "such" / "dir.txt", "x"),
                    Contains("dir.txt"));
  // FNV-1a 64 test vectors: "" -> offset basis, "a" -> af63dc4c8601ec8c.
  destein::write_text_file(dir / "empty", "");
  destein::write_text_file(dir / "a", "a");
  CHECK(destein::file_fnv1a64(dir / "empty") == "cbf29ce484222325");
  CHECK(destein::file_fnv1a64(dir / "a") == "af63dc4c8601ec8c");
  CHECK_THROWS_WITH(destein::file_fnv1a64(dir / "missing"), Contains("missing"));
}

TEST_CASE("write-then-rename keeps the old file when the writer fails and leaves no temporary",
          "[file_io]") {
  const fs::path dir = fs::path(DESTEIN_TEST_BINARY_DIR) / "file_io_atomic";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const fs::path target = dir / "out.txt";
  destein::write_text_file(target, "old\n");
  auto read = [](const fs::path& p) {
    std::ifstream in(p);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  // A writer that wrote half and then failed: the error goes on, the old file stays whole.
  CHECK_THROWS_WITH(destein::write_file_atomically(target,
                                                   [](const fs::path& tmp) {
                                                     std::ofstream(tmp) << "half";
                                                     throw std::runtime_error("writer failed");
                                                   }),
                    Contains("writer failed"));
  CHECK(read(target) == "old\n");
  CHECK_FALSE(fs::exists(dir / "out.txt.tmp"));
  // The rename fails when the target is a non-empty folder: named, temporary removed.
  fs::create_directories(dir / "folder" / "inside");
  CHECK_THROWS_WITH(destein::write_file_atomically(
                        dir / "folder", [](const fs::path& tmp) { std::ofstream(tmp) << "x"; }),
                    Contains("folder.tmp") && Contains("into place"));
  CHECK_FALSE(fs::exists(dir / "folder.tmp"));
  destein::write_file_atomically(target, [](const fs::path& tmp) { std::ofstream(tmp) << "new"; });
  CHECK(read(target) == "new");
}

TEST_CASE("the first differing setting is named by its dotted key", "[file_io]") {
  const nlohmann::json before = {
      {"model", {{"path", "m"}, {"bytes", 10}}}, {"seed", 2}, {"old_only", 1}};
  CHECK(!destein::first_json_difference(before, before));
  nlohmann::json now = before;
  now.erase("old_only");  // keys only the older settings have are ignored
  CHECK(!destein::first_json_difference(now, before));
  now["model"]["bytes"] = 11;
  CHECK(destein::first_json_difference(now, before) ==
        std::optional<std::string>("model.bytes: 11 now, 10 before"));
  now = before;
  now["new_key"] = true;
  CHECK(destein::first_json_difference(now, before) ==
        std::optional<std::string>("new_key: absent before"));
}
