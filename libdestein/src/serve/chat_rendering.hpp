#pragma once
/// Rendering a conversation with one of the built-in chat templates, and tokenising it.

#include <cstdint>
#include <string>
#include <vector>

#include "destein/serve/chat_template.hpp"
#include "destein/text/tokenizer.hpp"
#include "serve/openai_protocol.hpp"

namespace destein {

/// A conversation as the model's prompt.
struct ChatPrompt {
  std::vector<int64_t> ids;
  std::vector<std::string> stop;  ///< stop strings the template implies (the end-of-turn marker)
};

/// Renders `messages` (an optional leading system message, then user and assistant turns,
/// ending with a user turn) and tokenises it. Throws ApiError (400) naming the message
/// for an order the template cannot express.
ChatPrompt render_chat(ChatTemplate t, const std::vector<ChatMessage>& messages,
                       const Tokenizer& tokenizer);

}  // namespace destein
