#pragma once
/// Built-in chat templates of `destein serve`: LLaMA-2-chat, ChatML, Llama 3, Gemma and a
/// plain one, and how a model folder's template is recognised.
/// A model folder's Jinja `chat_template` is not interpreted (Debian has no C++ Jinja
/// engine); it is only read to recognise which of the built-in templates it is.
/// LibTorch-free.

#include <filesystem>
#include <string>

namespace destein {

enum class ChatTemplate {
  kLlama2,  ///< <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s><s>[INST] ...
  kChatml,  ///< <|im_start|>{role}\n{content}<|im_end|>\n ... <|im_start|>assistant\n
  kPlain,   ///< "System: ...\nUser: ...\nAssistant:" (for models trained on plain text)
  /// Llama 3 (3.0): <|begin_of_text|><|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>
  /// ... <|start_header_id|>assistant<|end_header_id|>\n\n
  kLlama3,
  /// Gemma 2/3: <bos><start_of_turn>user\n{system}\n\n{user}<end_of_turn>\n<start_of_turn>model\n ...
  kGemma,
};

/// "llama-2", "chatml", "plain", "llama-3", "gemma". Throws std::invalid_argument otherwise.
ChatTemplate parse_chat_template(const std::string& name);
std::string chat_template_name(ChatTemplate t);

/// Recognises the template from the model folder's tokenizer_config.json `chat_template`
/// ("<|im_start|>" -> ChatML, "<|start_header_id|>" -> Llama 3, "<start_of_turn>" -> Gemma,
/// "[INST]" -> LLaMA-2) or, without one, its config.json model_type ("llama" -> LLaMA-2);
/// plain otherwise. A `chat_template` that is none of the built-in ones (Llama 3.1's, with
/// its date and tool headers, included) is refused: std::invalid_argument naming the file
/// and saying to pass a template by name. `model_path` may be a folder or a file inside one.
ChatTemplate detect_chat_template(const std::filesystem::path& model_path);

}  // namespace destein
