#include "serve/chat_rendering.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <stdexcept>
#include <string>

namespace destein {

ChatTemplate parse_chat_template(const std::string& name) {
  if (name == "llama-2" || name == "llama2") return ChatTemplate::kLlama2;
  if (name == "chatml") return ChatTemplate::kChatml;
  if (name == "plain") return ChatTemplate::kPlain;
  if (name == "llama-3" || name == "llama3") return ChatTemplate::kLlama3;
  if (name == "gemma") return ChatTemplate::kGemma;
  throw std::invalid_argument(fmt::format(
      "unknown chat template '{}' (expected llama-2, chatml, plain, llama-3 or gemma)", name));
}

std::string chat_template_name(ChatTemplate t) {
  switch (t) {
    case ChatTemplate::kLlama2:
      return "llama-2";
    case ChatTemplate::kChatml:
      return "chatml";
    case ChatTemplate::kLlama3:
      return "llama-3";
    case ChatTemplate::kGemma:
      return "gemma";
    default:
      return "plain";
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
    const auto has = [&](const char* marker) { return jinja.find(marker) != std::string::npos; };
    if (has("<|im_start|>")) return ChatTemplate::kChatml;
    // Llama 3.1 and later add a system header with a knowledge cutoff and today's date,
    // and tool calls: not the built-in Llama 3 (3.0) template.
    if (has("<|start_header_id|>") && !has("Cutting Knowledge Date") && !has("tools"))
      return ChatTemplate::kLlama3;
    if (has("<start_of_turn>")) return ChatTemplate::kGemma;
    if (has("[INST]")) return ChatTemplate::kLlama2;
    throw std::invalid_argument(
        fmt::format("the chat_template of '{}' is none of the built-in templates (llama-2, chatml, "
                    "llama-3, gemma, plain), and "
                    "its Jinja is not interpreted; pass one by name (--chat-template / "
                    "chat_template:) or render the "
                    "conversation yourself and send it to /v1/completions",
                    (dir / "tokenizer_config.json").string()));
  }
  nlohmann::json config = read_json(dir / "config.json");
  if (config.is_object() && config.value("model_type", "") == "llama") return ChatTemplate::kLlama2;
  return ChatTemplate::kPlain;
}

namespace {

void append(std::vector<int64_t>& ids, const std::vector<int64_t>& more) {
  ids.insert(ids.end(), more.begin(), more.end());
}

// System first (optional), then user/assistant alternating, ending with a user turn.
void check_order(const std::vector<ChatMessage>& m) {
  size_t first = (!m.empty() && m[0].role == "system") ? 1 : 0;
  if (first == m.size())
    throw ApiError(400, "'messages' has no user message to answer", "messages");
  for (size_t i = first; i < m.size(); ++i) {
    const char* want = (i - first) % 2 == 0 ? "user" : "assistant";
    if (m[i].role != want) {
      throw ApiError(
          400,
          fmt::format(
              "'messages[{}].role' must be \"{}\" here, found \"{}\" (after an optional system "
              "message, user and assistant turns alternate)",
              i, want, m[i].role),
          fmt::format("messages[{}].role", i));
    }
  }
  if (m.back().role != "user") {
    throw ApiError(
        400,
        fmt::format("'messages[{}]' must be a user message: the last turn is the one answered",
                    m.size() - 1),
        fmt::format("messages[{}].role", m.size() - 1));
  }
}

// Jinja's `trim`: Python's str.strip(), which removes the characters str.isspace() accepts.
std::string jinja_trim(const std::string& s) {
  static const char* const kSpaces[] = {"\t",     "\n",     "\v",     "\f",     "\r",     " ",
                                        "\x1c",   "\x1d",   "\x1e",   "\x1f",   "\u0085", "\u00a0",
                                        "\u1680", "\u2000", "\u2001", "\u2002", "\u2003", "\u2004",
                                        "\u2005", "\u2006", "\u2007", "\u2008", "\u2009", "\u200a",
                                        "\u2028", "\u2029", "\u202f", "\u205f", "\u3000"};
  const auto space_at = [&](size_t pos, bool backwards) -> size_t {
    for (const char* sp : kSpaces) {
      const size_t n = std::char_traits<char>::length(sp);
      if (!backwards && s.compare(pos, n, sp) == 0) return n;
      if (backwards && pos >= n && s.compare(pos - n, n, sp) == 0) return n;
    }
    return 0;
  };
  size_t begin = 0, end = s.size();
  while (begin < end) {
    const size_t n = space_at(begin, false);
    if (n == 0) break;
    begin += n;
  }
  while (end > begin) {
    const size_t n = space_at(end, true);
    if (n == 0) break;
    end -= n;
  }
  return s.substr(begin, end - begin);
}

}  // namespace

ChatPrompt render_chat(ChatTemplate t, const std::vector<ChatMessage>& messages,
                       const Tokenizer& tokenizer) {
  ChatPrompt out;
  if (t == ChatTemplate::kChatml) {
    for (size_t i = 0; i < messages.size(); ++i) {
      if (messages[i].role == "system" && i > 0) {
        throw ApiError(400, fmt::format("'messages[{}]': a system message must come first", i),
                       fmt::format("messages[{}].role", i));
      }
    }
    if (messages.back().role != "user") {
      throw ApiError(
          400,
          fmt::format("'messages[{}]' must be a user message: the last turn is the one answered",
                      messages.size() - 1),
          fmt::format("messages[{}].role", messages.size() - 1));
    }
    std::string text;
    for (const auto& m : messages)
      text += fmt::format("<|im_start|>{}\n{}<|im_end|>\n", m.role, m.content);
    text += "<|im_start|>assistant\n";
    out.ids = tokenizer.encode_prompt(text);
    out.stop = {"<|im_end|>"};
    return out;
  }
  check_order(messages);
  const bool has_system = messages.front().role == "system";
  const size_t first = has_system ? 1 : 0;
  // Both render the text as the model's Jinja template does, and tokenise it as Hugging
  // Face's apply_chat_template does (no special tokens added: the markers are in the text,
  // and a tokenizer.json tokenizer matches them as its special tokens).
  if (t == ChatTemplate::kLlama3) {
    std::string text = "<|begin_of_text|>";
    for (const auto& m : messages) {
      text += fmt::format("<|start_header_id|>{}<|end_header_id|>\n\n{}<|eot_id|>", m.role,
                          jinja_trim(m.content));
    }
    text += "<|start_header_id|>assistant<|end_header_id|>\n\n";
    out.ids = tokenizer.encode(text);
    out.stop = {"<|eot_id|>"};
    return out;
  }
  if (t == ChatTemplate::kGemma) {
    // The system message (untrimmed) and a blank line open the first user turn.
    std::string text = "<bos>";
    for (size_t i = first; i < messages.size(); ++i) {
      const std::string prefix = i == first && has_system ? messages[0].content + "\n\n" : "";
      text += fmt::format("<start_of_turn>{}\n{}{}<end_of_turn>\n",
                          messages[i].role == "assistant" ? "model" : "user", prefix,
                          jinja_trim(messages[i].content));
    }
    text += "<start_of_turn>model\n";
    out.ids = tokenizer.encode(text);
    out.stop = {"<end_of_turn>"};
    return out;
  }
  if (t == ChatTemplate::kLlama2) {
    // Each exchange is its own <s> ... </s> sequence, as Meta's chat_completion() builds it;
    // the system prompt goes inside the first [INST].
    const auto bos = tokenizer.bos_id(), eos = tokenizer.eos_id();
    for (size_t i = first; i < messages.size(); i += 2) {
      std::string user = messages[i].content;
      if (i == first && has_system)
        user = fmt::format("<<SYS>>\n{}\n<</SYS>>\n\n{}", messages[0].content, user);
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
    const std::string role = m.role == "system" ? "System"
                             : m.role == "user" ? "User"
                                                : "Assistant";
    text += fmt::format("{}: {}\n", role, m.content);
  }
  text += "Assistant:";
  out.ids = tokenizer.encode_prompt(text);
  out.stop = {"\nUser:"};
  return out;
}

}  // namespace destein
