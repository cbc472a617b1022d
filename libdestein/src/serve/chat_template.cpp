#include "destein/serve/chat_template.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <stdexcept>

namespace destein {

ChatTemplate parse_chat_template(const std::string& name) {
  if (name == "llama-2" || name == "llama2") return ChatTemplate::kLlama2;
  if (name == "chatml") return ChatTemplate::kChatml;
  if (name == "plain") return ChatTemplate::kPlain;
  throw std::invalid_argument(fmt::format("unknown chat template '{}' (expected llama-2, chatml or plain)", name));
}

std::string chat_template_name(ChatTemplate t) {
  switch (t) {
    case ChatTemplate::kLlama2: return "llama-2";
    case ChatTemplate::kChatml: return "chatml";
    default: return "plain";
  }
}

ChatTemplate detect_chat_template(const std::filesystem::path& model_path) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::is_directory(model_path) ? model_path : model_path.parent_path();
  auto read_json = [](const fs::path& p) -> nlohmann::json {
    std::ifstream in(p);
    if (!in) return nullptr;
    try {
      return nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception&) {
      return nullptr;
    }
  };
  nlohmann::json tc = read_json(dir / "tokenizer_config.json");
  if (tc.is_object() && tc.contains("chat_template") && tc["chat_template"].is_string()) {
    const std::string jinja = tc["chat_template"].get<std::string>();
    if (jinja.find("<|im_start|>") != std::string::npos) return ChatTemplate::kChatml;
    if (jinja.find("[INST]") != std::string::npos) return ChatTemplate::kLlama2;
  }
  nlohmann::json config = read_json(dir / "config.json");
  if (config.is_object() && config.value("model_type", "") == "llama") return ChatTemplate::kLlama2;
  return ChatTemplate::kPlain;
}

namespace {

void append(std::vector<int64_t>& ids, const std::vector<int64_t>& more) { ids.insert(ids.end(), more.begin(), more.end()); }

// System first (optional), then user/assistant alternating, ending with a user turn.
void check_order(const std::vector<ChatMessage>& m) {
  size_t first = (!m.empty() && m[0].role == "system") ? 1 : 0;
  if (first == m.size()) throw ApiError(400, "'messages' has no user message to answer", "messages");
  for (size_t i = first; i < m.size(); ++i) {
    const char* want = (i - first) % 2 == 0 ? "user" : "assistant";
    if (m[i].role != want) {
      throw ApiError(400,
                     fmt::format("'messages[{}].role' must be \"{}\" here, found \"{}\" (after an optional system "
                                 "message, user and assistant turns alternate)",
                                 i, want, m[i].role),
                     fmt::format("messages[{}].role", i));
    }
  }
  if (m.back().role != "user") {
    throw ApiError(400, fmt::format("'messages[{}]' must be a user message: the last turn is the one answered", m.size() - 1),
                   fmt::format("messages[{}].role", m.size() - 1));
  }
}

}  // namespace

ChatPrompt render_chat(ChatTemplate t, const std::vector<ChatMessage>& messages, const Tokenizer& tokenizer) {
  ChatPrompt out;
  if (t == ChatTemplate::kChatml) {
    for (size_t i = 0; i < messages.size(); ++i) {
      if (messages[i].role == "system" && i > 0) {
        throw ApiError(400, fmt::format("'messages[{}]': a system message must come first", i), fmt::format("messages[{}].role", i));
      }
    }
    if (messages.back().role != "user") {
      throw ApiError(400, fmt::format("'messages[{}]' must be a user message: the last turn is the one answered", messages.size() - 1),
                     fmt::format("messages[{}].role", messages.size() - 1));
    }
    std::string text;
    for (const auto& m : messages) text += fmt::format("<|im_start|>{}\n{}<|im_end|>\n", m.role, m.content);
    text += "<|im_start|>assistant\n";
    out.ids = tokenizer.encode_prompt(text);
    out.stop = {"<|im_end|>"};
    return out;
  }
  check_order(messages);
  const bool has_system = messages.front().role == "system";
  const size_t first = has_system ? 1 : 0;
  if (t == ChatTemplate::kLlama2) {
    // Each exchange is its own <s> ... </s> sequence, as Meta's chat_completion() builds it;
    // the system prompt goes inside the first [INST].
    const auto bos = tokenizer.bos_id(), eos = tokenizer.eos_id();
    for (size_t i = first; i < messages.size(); i += 2) {
      std::string user = messages[i].content;
      if (i == first && has_system) user = fmt::format("<<SYS>>\n{}\n<</SYS>>\n\n{}", messages[0].content, user);
      std::string text = fmt::format("[INST] {} [/INST]", user);
      if (i + 1 < messages.size()) text += fmt::format(" {} ", messages[i + 1].content);
      if (bos) out.ids.push_back(*bos);
      append(out.ids, tokenizer.encode(text));
      if (i + 1 < messages.size() && eos) out.ids.push_back(*eos);
    }
    return out;
  }
  std::string text;
  for (const auto& m : messages) {
    const std::string role = m.role == "system" ? "System" : m.role == "user" ? "User" : "Assistant";
    text += fmt::format("{}: {}\n", role, m.content);
  }
  text += "Assistant:";
  out.ids = tokenizer.encode_prompt(text);
  out.stop = {"\nUser:"};
  return out;
}

}  // namespace destein
