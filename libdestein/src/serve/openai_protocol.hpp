#pragma once
/// The OpenAI wire format of `destein serve`: request bodies of /v1/completions and
/// /v1/chat/completions checked field by field (an error names the field and what was
/// expected), the per-request steering extension, and the response and error objects.
/// LibTorch-free.
///
///   destein::CompletionRequest req = destein::parse_completion_request(body);   // throws ApiError
///   nlohmann::json reply = destein::completion_response(req, "cmpl-1", created, model, choices, usage);

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace destein {

/// An error the server answers with `{"error": {"message", "type", "param", "code"}}`.
class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string message, std::string param = {},
           std::string type = "invalid_request_error")
      : std::runtime_error(message),
        status_(status),
        param_(std::move(param)),
        type_(std::move(type)) {}
  int status() const { return status_; }
  const std::string& param() const { return param_; }
  const std::string& type() const { return type_; }

 private:
  int status_;
  std::string param_, type_;
};

/// OpenAI's error object for `error`.
nlohmann::json error_json(const ApiError& error);

/// The `steering` extension field: vectors by a name configured at start, the rest as the
/// steering flags (unset: the server's defaults for that name).
struct SteeringRequest {
  std::string vectors;
  std::optional<std::string> mode;  ///< "reference" / "headwise"
  std::optional<double> alpha;
  std::optional<std::string> positions;  ///< "all" / "prompt" / "generated"
  std::optional<std::string> gate;       ///< "none" / "probe"
  std::optional<double> gate_threshold;
  std::optional<int64_t> top_k_heads;
};

/// Fields both endpoints share.
struct SamplingRequest {
  std::string model;
  int64_t max_tokens = 16;
  double temperature = 1.0;  ///< 0: greedy
  double top_p = 1.0;
  int64_t top_k = 0;  ///< extension (vLLM's name); 0: off
  int64_t n = 1;
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;
  bool stream = false;
  bool include_usage = false;  ///< stream_options.include_usage
  bool ignore_eos = false;     ///< extension (vLLM's name): keep going past end-of-sequence
  /// OpenAI's `logit_bias`: token id -> bias in [-100, 100] added to its logit; -100 bans.
  /// Ids are checked against the model's vocabulary by the server.
  std::map<int64_t, float> logit_bias;
  std::optional<SteeringRequest> steering;
  /// Extension: a decoding-time method the server was started with (the `methods:` of
  /// its config), by name; empty: none.
  std::string method;
};

struct CompletionRequest : SamplingRequest {
  std::vector<std::string> prompts;  ///< `prompt` as a string or a list of strings
};

struct ChatMessage {
  std::string role;  ///< "system", "user", "assistant"
  std::string content;
};

struct ChatRequest : SamplingRequest {
  std::vector<ChatMessage> messages;
};

/// Parse and check a request body. Throws ApiError (400) naming the field: bad JSON, a
/// missing or mistyped field, a value out of range, an OpenAI option destein does not
/// implement (logprobs, echo, best_of > 1, suffix, penalties, logit_bias) rather than
/// silently ignoring it. Unknown fields are ignored, as OpenAI does.
CompletionRequest parse_completion_request(const std::string& body);
ChatRequest parse_chat_request(const std::string& body);

/// One finished choice of a response.
struct ChoiceResult {
  std::string text;
  std::string finish_reason;  ///< "stop" / "length"
};

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
};

/// The `text_completion` object.
nlohmann::json completion_response(const std::string& id, int64_t created, const std::string& model,
                                   const std::vector<ChoiceResult>& choices, const Usage& usage);
/// The `chat.completion` object (choices carry `message: {role: assistant, content}`).
nlohmann::json chat_response(const std::string& id, int64_t created, const std::string& model,
                             const std::vector<ChoiceResult>& choices, const Usage& usage);
/// One streamed chunk: `text_completion` (choices[].text) or `chat.completion.chunk`
/// (choices[].delta.content); `finish_reason` null while running. `first` adds the chat
/// delta's role.
nlohmann::json completion_chunk(const std::string& id, int64_t created, const std::string& model,
                                int64_t index, const std::string& text,
                                const std::optional<std::string>& finish_reason);
nlohmann::json chat_chunk(const std::string& id, int64_t created, const std::string& model,
                          int64_t index, const std::string& text,
                          const std::optional<std::string>& finish_reason, bool first);

/// Text to send now while streaming with stop strings: `text` without its longest tail that
/// could still become the start of a stop string (that tail is held back until it can not).
size_t safe_stream_length(const std::string& text, const std::vector<std::string>& stop);

/// The credentials of an `Authorization: Bearer KEY` header value; empty when the scheme is
/// not Bearer. The scheme is matched without regard to case (RFC 7235), "bearer KEY" too.
std::string bearer_credentials(const std::string& authorization);

/// Constant-time comparison of a presented API key with the configured one.
bool api_key_matches(const std::string& presented, const std::string& expected);

}  // namespace destein
