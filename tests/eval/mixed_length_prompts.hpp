// Prompts of mixed lengths (1 to 13 words), so batches are left padded unevenly: what the
// batching and mixed-method tests generate from.
#pragma once

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

namespace destein::test {

inline std::filesystem::path write_mixed_length_prompts(const std::filesystem::path& dir) {
  const char* texts[] = {
      "So I told him he was a",
      "Hi",
      "You are such a",
      "My favourite food is, without any doubt and after years of careful tasting,",
      "Get out of here you",
      "The meeting starts at",
      "Why",
      "They said the new neighbours were loud and"};
  std::ofstream out(dir / "prompts.jsonl");
  for (const char* t : texts)
    out << nlohmann::json{{"prompt", {{"text", t}, {"toxicity", 0.5}}}}.dump() << "\n";
  return dir / "prompts.jsonl";
}

}  // namespace destein::test
