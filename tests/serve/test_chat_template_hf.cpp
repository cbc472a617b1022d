// The built-in chat templates against the models' own Jinja templates: conversations
// rendered by Hugging Face's Jinja engine (@huggingface/jinja) with the real
// tokenizer_config.json of Llama 3, Qwen3 and Gemma 3 and encoded by the Hugging Face
// tokenizers library, as apply_chat_template does (tests/fixtures/hf_golden.js).
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "destein/text/tokenizer.hpp"
#include "serve/chat_rendering.hpp"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using json = nlohmann::json;

namespace {
const fs::path kGolden = fs::path(DESTEIN_TEST_BINARY_DIR) / "fixtures" / "hf_golden";
}

TEST_CASE("built-in chat templates give the ids of the models' own Jinja templates",
          "[serve][hf_tokenizer]") {
  const std::vector<std::pair<std::string, destein::ChatTemplate>> models = {
      {"llama3", destein::ChatTemplate::kLlama3},
      {"qwen3", destein::ChatTemplate::kChatml},
      {"gemma3", destein::ChatTemplate::kGemma}};
  for (const auto& [name, expected] : models) {
    SECTION(name) {
      const fs::path folder = kGolden / name;
      REQUIRE(destein::detect_chat_template(folder) == expected);
      const auto tokenizer = destein::load_tokenizer(folder);
      std::ifstream in(kGolden / (name + "_chat.jsonl"));
      REQUIRE(in.good());
      size_t count = 0, bad = 0;
      std::string line, first;
      while (std::getline(in, line)) {
        const json g = json::parse(line);
        std::vector<destein::ChatMessage> messages;
        for (const json& m : g["messages"]) messages.push_back({m["role"], m["content"]});
        const auto prompt = destein::render_chat(expected, messages, *tokenizer);
        ++count;
        if (prompt.ids != g["ids"].get<std::vector<int64_t>>()) {
          if (bad++ == 0) first = "the Jinja template renders " + json(g["text"]).dump();
        }
      }
      INFO(first);
      CHECK(count >= 80);
      CHECK(bad == 0);
    }
  }
}

TEST_CASE("a chat_template that is none of the built-in ones is refused", "[serve][hf_tokenizer]") {
  const fs::path dir = fs::path(DESTEIN_TEST_BINARY_DIR) / "tmp" / "chat_template_unknown";
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream(dir / "tokenizer_config.json")
      << R"({"chat_template": "{% for m in messages %}### {{ m.role }}: {{ m.content }}{% endfor %}"})";
  CHECK_THROWS_WITH(destein::detect_chat_template(dir), Contains("none of the built-in templates"));
  // Llama 3.1's template adds dated system headers and tools: not Llama 3.0's.
  std::ofstream(dir / "tokenizer_config.json")
      << R"({"chat_template": "<|start_header_id|>system<|end_header_id|>Cutting Knowledge Date: December 2023"})";
  CHECK_THROWS_WITH(destein::detect_chat_template(dir), Contains("pass one by name"));
  CHECK(destein::parse_chat_template("llama-3") == destein::ChatTemplate::kLlama3);
  CHECK(destein::chat_template_name(destein::ChatTemplate::kGemma) == "gemma");
}
