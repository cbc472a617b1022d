#include "serve/openai_protocol.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <limits>

namespace destein {
namespace {

using nlohmann::json;

// Nesting deeper than any OpenAI request needs (messages[i].content[j].text is 4 levels) is
// refused while parsing, before a deep value exists: nothing later walks an unbounded depth.
constexpr int kMaxDepth = 32;
// How much of an offending value or key an error message quotes.
constexpr size_t kExcerptBytes = 80;

// At most `budget` bytes of `s` (cut on a UTF-8 character boundary), "..." when cut.
std::string clip(const std::string& s, size_t budget = kExcerptBytes) {
  if (s.size() <= budget) return s;
  size_t n = budget;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return s.substr(0, n) + "...";
}

// A JSON excerpt of `v` of about `budget` bytes, written without dump(): it stops when the
// budget is spent, so a huge or deep value costs no more than a small one.
void excerpt_into(const json& v, std::string& out, size_t budget) {
  if (out.size() >= budget) return;
  if (v.is_object() || v.is_array()) {
    const bool object = v.is_object();
    out += object ? '{' : '[';
    bool first = true;
    for (auto it = v.begin(); it != v.end(); ++it) {
      if (out.size() >= budget) return;
      if (!first) out += ", ";
      first = false;
      if (object)
        out += json(clip(it.key(), budget)).dump(-1, ' ', false, json::error_handler_t::replace) +
               ": ";
      excerpt_into(*it, out, budget);
    }
    out += object ? '}' : ']';
    return;
  }
  if (v.is_string()) {
    out += json(clip(v.get_ref<const std::string&>(), budget))
               .dump(-1, ' ', false, json::error_handler_t::replace);
    return;
  }
  out += v.dump();  // a number, true, false or null: a few bytes
}

ApiError field_error(const std::string& field, const std::string& expected, const json& found) {
  std::string shown;
  excerpt_into(found, shown, kExcerptBytes);
  shown = clip(shown);
  return ApiError(400, fmt::format("'{}' must be {}, found {}", field, expected, shown), field);
}

// Absent and null both mean "the default".
const json* field(const json& body, const char* name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

double number_in(const json& v, const std::string& name, double lo, double hi,
                 const std::string& expected) {
  if (!v.is_number() || v.get<double>() < lo || v.get<double>() > hi)
    throw field_error(name, expected, v);
  return v.get<double>();
}

int64_t integer_in(const json& v, const std::string& name, int64_t lo, int64_t hi,
                   const std::string& expected) {
  if (v.is_number_unsigned()) {  // nlohmann stores a non-negative literal as unsigned
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
        static_cast<int64_t>(u) < lo || static_cast<int64_t>(u) > hi) {
      throw field_error(name, expected, v);
    }
    return static_cast<int64_t>(u);
  }
  if (v.is_number_integer()) {
    const int64_t i = v.get<int64_t>();
    if (i < lo || i > hi) throw field_error(name, expected, v);
    return i;
  }
  // 3.0 from a JavaScript client is an integer too. The range is checked before the cast:
  // converting a double outside int64_t's range is undefined.
  if (!v.is_number_float()) throw field_error(name, expected, v);
  const double d = v.get<double>();
  if (!(d >= static_cast<double>(lo) && d <= static_cast<double>(hi)) ||
      d >= 9223372036854775808.0 || d != static_cast<double>(static_cast<int64_t>(d))) {
    throw field_error(name, expected, v);
  }
  return static_cast<int64_t>(d);
}

std::string string_of(const json& v, const std::string& name) {
  if (!v.is_string()) throw field_error(name, "a string", v);
  return v.get<std::string>();
}

json parse_body(const std::string& body) {
  // The callback sees every key and container as the parser goes: it refuses nesting past
  // kMaxDepth, and remembers the keys above the value being read so that a number too
  // large for a double (1e400) is reported against its field.
  std::vector<std::string> keys;  // one entry per open container ("" for an array)
  auto track = [&keys](int depth, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        if (depth >= kMaxDepth) {
          throw ApiError(
              400,
              fmt::format("the request body nests objects and lists more than {} deep", kMaxDepth),
              keys.empty() ? std::string() : keys.back());
        }
        keys.emplace_back(keys.empty() || keys.back().empty() ? std::string() : keys.back());
        break;
      case json::parse_event_t::key:
        if (!keys.empty()) {
          const std::string outer = keys.size() > 1 ? keys[keys.size() - 2] : std::string();
          keys.back() = (outer.empty() ? "" : outer + ".") + clip(parsed.get<std::string>(), 40);
        }
        break;
      case json::parse_event_t::object_end:
      case json::parse_event_t::array_end:
        if (!keys.empty()) keys.pop_back();
        break;
      case json::parse_event_t::value:
        break;
    }
    return true;
  };
  json parsed;
  try {
    parsed = json::parse(body, track);
  } catch (const json::out_of_range& e) {
    // The lexer's only out_of_range: a number literal outside a double's range.
    const std::string field = keys.empty() ? std::string() : keys.back();
    throw ApiError(400,
                   field.empty() ? "the request body holds a number too large for a double"
                                 : fmt::format("'{}' holds a number too large for a double", field),
                   field);
  } catch (const json::exception& e) {
    // The parser's message quotes what it last read, which may be a whole long string.
    throw ApiError(400, fmt::format("the request body is not valid JSON: {}", clip(e.what(), 200)));
  }
  if (!parsed.is_object())
    throw ApiError(
        400, fmt::format("the request body must be a JSON object, found {}", parsed.type_name()));
  return parsed;
}

void reject_unsupported(const json& body) {
  auto refuse = [](const std::string& name, const std::string& why) {
    throw ApiError(400, fmt::format("'{}' is not supported by destein serve ({})", name, why),
                   name);
  };
  if (const json* v = field(body, "logprobs");
      v && !(v->is_boolean() && !v->get<bool>()) && !(v->is_number() && v->get<double>() == 0)) {
    refuse("logprobs", "no log-probabilities are returned; leave it out");
  }
  if (const json* v = field(body, "echo"); v && !(v->is_boolean() && !v->get<bool>()))
    refuse("echo", "leave it out or set it to false");
  if (const json* v = field(body, "best_of"); v && !(v->is_number() && v->get<double>() == 1))
    refuse("best_of", "only 1");
  if (field(body, "suffix")) refuse("suffix", "no insertion mode");
  for (const char* p : {"presence_penalty", "frequency_penalty"}) {
    if (const json* v = field(body, p); v && !(v->is_number() && v->get<double>() == 0))
      refuse(p, "only 0");
  }
  if (const json* v = field(body, "tools"); v && !(v->is_array() && v->empty()))
    refuse("tools", "no tool calls");
}

SteeringRequest parse_steering(const json& v) {
  if (!v.is_object())
    throw field_error("steering", "an object such as {\"vectors\": \"detox\", \"alpha\": 0.4}", v);
  static const char* kKeys[] = {"vectors", "mode",           "alpha",      "positions",
                                "gate",    "gate_threshold", "top_k_heads"};
  for (auto it = v.begin(); it != v.end(); ++it) {
    if (std::find_if(std::begin(kKeys), std::end(kKeys),
                     [&](const char* k) { return it.key() == k; }) == std::end(kKeys)) {
      throw ApiError(
          400,
          fmt::format(
              "'steering.{}' is not a steering field (expected vectors, mode, alpha, positions, "
              "gate, gate_threshold, top_k_heads)",
              clip(it.key())),
          "steering." + clip(it.key()));
    }
  }
  SteeringRequest s;
  const json* vectors = field(v, "vectors");
  if (!vectors)
    throw ApiError(
        400,
        "'steering.vectors' is required: the name of a vectors set the server was started with",
        "steering.vectors");
  s.vectors = string_of(*vectors, "steering.vectors");
  auto one_of = [&](const char* key,
                    std::initializer_list<const char*> allowed) -> std::optional<std::string> {
    const json* f = field(v, key);
    if (!f) return std::nullopt;
    std::string list;
    for (const char* a : allowed) list += fmt::format("{}\"{}\"", list.empty() ? "" : " or ", a);
    const std::string name = std::string("steering.") + key;
    if (!f->is_string() ||
        std::find(allowed.begin(), allowed.end(), f->get<std::string>()) == allowed.end()) {
      throw field_error(name, list, *f);
    }
    return f->get<std::string>();
  };
  s.mode = one_of("mode", {"reference", "headwise"});
  s.positions = one_of("positions", {"all", "prompt", "generated"});
  s.gate = one_of("gate", {"none", "probe"});
  if (const json* f = field(v, "alpha"))
    s.alpha = number_in(*f, "steering.alpha", 0, 10, "a number in [0, 10]");
  if (const json* f = field(v, "gate_threshold")) {
    s.gate_threshold =
        number_in(*f, "steering.gate_threshold", 0, 1, "a number in [0, 1) (0: soft gate)");
    if (*s.gate_threshold >= 1)
      throw field_error("steering.gate_threshold", "a number in [0, 1) (0: soft gate)", *f);
  }
  if (const json* f = field(v, "top_k_heads")) {
    s.top_k_heads =
        integer_in(*f, "steering.top_k_heads", 0, 1 << 20, "an integer >= 0 (0: all heads)");
  }
  return s;
}

// OpenAI's shape: {"50256": -100, "1234": 5.5}, keys token ids as strings.
std::map<int64_t, float> parse_logit_bias(const json& v) {
  if (!v.is_object())
    throw field_error("logit_bias",
                      "an object mapping token ids to biases, such as {\"50256\": -100}", v);
  // A bound on the work one request may ask of every sampling step.
  constexpr size_t kMaxEntries = 1024;
  if (v.size() > kMaxEntries) {
    throw ApiError(400,
                   fmt::format("'logit_bias' has {} entries, more than the {} this server takes",
                               v.size(), kMaxEntries),
                   "logit_bias");
  }
  std::map<int64_t, float> out;
  for (auto it = v.begin(); it != v.end(); ++it) {
    const std::string& key = it.key();
    const std::string name = "logit_bias." + clip(key, 40);
    const bool digits =
        !key.empty() && key.size() <= 10 &&
        std::all_of(key.begin(), key.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (!digits) {
      throw ApiError(
          400,
          fmt::format(
              "'logit_bias' key \"{}\" is not a token id (a non-negative integer as a string)",
              clip(key, 40)),
          name);
    }
    out[std::stoll(key)] =
        static_cast<float>(number_in(it.value(), name, -100, 100, "a number in [-100, 100]"));
  }
  return out;
}

void parse_sampling(const json& body, SamplingRequest& r, bool chat) {
  reject_unsupported(body);
  if (const json* v = field(body, "model")) r.model = string_of(*v, "model");
  const char* max_name = "max_tokens";
  const json* max = field(body, "max_tokens");
  if (!max && chat) {
    max = field(body, "max_completion_tokens");
    max_name = "max_completion_tokens";
  }
  r.max_tokens =
      max ? integer_in(*max, max_name, 1, std::numeric_limits<int32_t>::max(), "a positive integer")
          : -1;
  if (const json* v = field(body, "temperature"))
    r.temperature = number_in(*v, "temperature", 0, 2, "a number in [0, 2] (0: greedy)");
  if (const json* v = field(body, "top_p")) {
    r.top_p = number_in(*v, "top_p", 0, 1, "a number in (0, 1]");
    if (r.top_p <= 0) throw field_error("top_p", "a number in (0, 1]", *v);
  }
  if (const json* v = field(body, "top_k")) {
    r.top_k = integer_in(*v, "top_k", -1, std::numeric_limits<int32_t>::max(),
                         "an integer >= 0 (0 or -1: off)");
    if (r.top_k < 0) r.top_k = 0;
  }
  if (const json* v = field(body, "n")) r.n = integer_in(*v, "n", 1, 128, "an integer in [1, 128]");
  if (const json* v = field(body, "seed")) {
    r.seed = static_cast<uint64_t>(integer_in(*v, "seed", std::numeric_limits<int64_t>::min(),
                                              std::numeric_limits<int64_t>::max(), "an integer"));
  }
  if (const json* v = field(body, "stop")) {
    const std::string expected = "a non-empty string or a list of up to 4 non-empty strings";
    if (v->is_string()) {
      r.stop.push_back(v->get<std::string>());
    } else if (v->is_array() && v->size() <= 4) {
      for (const json& s : *v) {
        if (!s.is_string()) throw field_error("stop", expected, *v);
        r.stop.push_back(s.get<std::string>());
      }
    } else {
      throw field_error("stop", expected, *v);
    }
    for (const auto& s : r.stop) {
      if (s.empty()) throw field_error("stop", expected, *v);
    }
  }
  if (const json* v = field(body, "stream")) {
    if (!v->is_boolean()) throw field_error("stream", "true or false", *v);
    r.stream = v->get<bool>();
  }
  if (const json* v = field(body, "stream_options")) {
    if (!v->is_object())
      throw field_error("stream_options", "an object such as {\"include_usage\": true}", *v);
    if (const json* u = field(*v, "include_usage")) {
      if (!u->is_boolean()) throw field_error("stream_options.include_usage", "true or false", *u);
      r.include_usage = u->get<bool>();
    }
  }
  if (const json* v = field(body, "ignore_eos")) {
    if (!v->is_boolean()) throw field_error("ignore_eos", "true or false", *v);
    r.ignore_eos = v->get<bool>();
  }
  if (const json* v = field(body, "logit_bias")) r.logit_bias = parse_logit_bias(*v);
  if (const json* v = field(body, "steering")) r.steering = parse_steering(*v);
  if (const json* v = field(body, "method")) {
    if (!v->is_string() || v->get_ref<const std::string&>().empty() ||
        v->get_ref<const std::string&>().size() > 200)
      throw field_error("method", "the name of a method this server runs (a non-empty string)", *v);
    r.method = v->get<std::string>();
  }
}

}  // namespace

json error_json(const ApiError& error) {
  json e = {{"message", error.what()}, {"type", error.type()}, {"code", nullptr}};
  e["param"] = error.param().empty() ? json(nullptr) : json(error.param());
  return {{"error", e}};
}

CompletionRequest parse_completion_request(const std::string& body) {
  const json b = parse_body(body);
  CompletionRequest r;
  parse_sampling(b, r, false);
  const json* prompt = field(b, "prompt");
  const std::string expected = "a string or a non-empty list of strings";
  if (!prompt) throw ApiError(400, "'prompt' is required: " + expected, "prompt");
  if (prompt->is_string()) {
    r.prompts.push_back(prompt->get<std::string>());
  } else if (prompt->is_array() && !prompt->empty()) {
    for (const json& p : *prompt) {
      if (!p.is_string())
        throw field_error("prompt", expected + " (token-id prompts are not supported)", *prompt);
      r.prompts.push_back(p.get<std::string>());
    }
  } else {
    throw field_error("prompt", expected, *prompt);
  }
  if (r.max_tokens < 0) r.max_tokens = 16;  // OpenAI's default for completions
  return r;
}

ChatRequest parse_chat_request(const std::string& body) {
  const json b = parse_body(body);
  ChatRequest r;
  parse_sampling(b, r, true);
  const json* messages = field(b, "messages");
  if (!messages || !messages->is_array() || messages->empty()) {
    throw ApiError(400, "'messages' must be a non-empty list of {\"role\", \"content\"} objects",
                   "messages");
  }
  for (size_t i = 0; i < messages->size(); ++i) {
    const json& m = (*messages)[i];
    const std::string at = fmt::format("messages[{}]", i);
    if (!m.is_object()) throw field_error(at, "an object with role and content", m);
    const json* role = field(m, "role");
    if (!role || !role->is_string() ||
        (*role != "system" && *role != "user" && *role != "assistant" && *role != "developer")) {
      throw field_error(at + ".role", "\"system\", \"user\" or \"assistant\"",
                        role ? *role : json(nullptr));
    }
    ChatMessage msg;
    msg.role = *role == "developer" ? "system" : role->get<std::string>();
    const json* content = field(m, "content");
    if (content && content->is_string()) {
      msg.content = content->get<std::string>();
    } else if (content && content->is_array()) {
      // [{"type": "text", "text": "..."}]: text parts joined; other parts (images) refused.
      for (const json& part : *content) {
        const json* type = part.is_object() ? field(part, "type") : nullptr;
        const json* text = part.is_object() ? field(part, "text") : nullptr;
        if (!type || *type != "text" || !text || !text->is_string()) {
          throw field_error(at + ".content",
                            "a string or a list of {\"type\": \"text\", \"text\": ...} parts",
                            *content);
        }
        msg.content += text->get<std::string>();
      }
    } else {
      throw field_error(at + ".content", "a string", content ? *content : json(nullptr));
    }
    r.messages.push_back(std::move(msg));
  }
  return r;
}

namespace {
json usage_json(const Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens}};
}
}  // namespace

json completion_response(const std::string& id, int64_t created, const std::string& model,
                         const std::vector<ChoiceResult>& choices, const Usage& usage) {
  json cs = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    cs.push_back({{"index", i},
                  {"text", choices[i].text},
                  {"logprobs", nullptr},
                  {"finish_reason", choices[i].finish_reason}});
  }
  return {{"id", id},      {"object", "text_completion"}, {"created", created}, {"model", model},
          {"choices", cs}, {"usage", usage_json(usage)}};
}

json chat_response(const std::string& id, int64_t created, const std::string& model,
                   const std::vector<ChoiceResult>& choices, const Usage& usage) {
  json cs = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    cs.push_back({{"index", i},
                  {"message", {{"role", "assistant"}, {"content", choices[i].text}}},
                  {"logprobs", nullptr},
                  {"finish_reason", choices[i].finish_reason}});
  }
  return {{"id", id},      {"object", "chat.completion"}, {"created", created}, {"model", model},
          {"choices", cs}, {"usage", usage_json(usage)}};
}

json completion_chunk(const std::string& id, int64_t created, const std::string& model,
                      int64_t index, const std::string& text,
                      const std::optional<std::string>& finish_reason) {
  json choice = {{"index", index}, {"text", text}, {"logprobs", nullptr}};
  choice["finish_reason"] = finish_reason ? json(*finish_reason) : json(nullptr);
  return {{"id", id},
          {"object", "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", {choice}}};
}

json chat_chunk(const std::string& id, int64_t created, const std::string& model, int64_t index,
                const std::string& text, const std::optional<std::string>& finish_reason,
                bool first) {
  json delta = json::object();
  if (first) delta["role"] = "assistant";
  if (!text.empty() || first) delta["content"] = text;
  json choice = {{"index", index}, {"delta", delta}, {"logprobs", nullptr}};
  choice["finish_reason"] = finish_reason ? json(*finish_reason) : json(nullptr);
  return {{"id", id},
          {"object", "chat.completion.chunk"},
          {"created", created},
          {"model", model},
          {"choices", {choice}}};
}

size_t safe_stream_length(const std::string& text, const std::vector<std::string>& stop) {
  size_t hold = 0;
  for (const auto& s : stop) {
    for (size_t k = std::min(s.size() - 1, text.size()); k > hold; --k) {
      if (text.compare(text.size() - k, k, s, 0, k) == 0) {
        hold = k;
        break;
      }
    }
  }
  size_t n = text.size() - hold;
  // Never end inside a UTF-8 character: when the last lead byte before n announces more
  // continuation bytes than follow it, stop before that character.
  size_t i = n, continuation = 0;
  while (i > 0 && continuation < 4 && (static_cast<unsigned char>(text[i - 1]) & 0xC0) == 0x80) {
    --i;
    ++continuation;
  }
  if (i > 0) {
    const unsigned char lead = static_cast<unsigned char>(text[i - 1]);
    const size_t length = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    if (length > continuation + 1) n = i - 1;
  }
  return n;
}

std::string bearer_credentials(const std::string& authorization) {
  static const std::string kScheme = "bearer";
  size_t i = 0;
  while (i < authorization.size() && (authorization[i] == ' ' || authorization[i] == '\t')) ++i;
  if (authorization.size() < i + kScheme.size() + 1) return {};
  for (size_t k = 0; k < kScheme.size(); ++k) {
    if (std::tolower(static_cast<unsigned char>(authorization[i + k])) != kScheme[k]) return {};
  }
  i += kScheme.size();
  if (authorization[i] != ' ' && authorization[i] != '\t') return {};
  while (i < authorization.size() && (authorization[i] == ' ' || authorization[i] == '\t')) ++i;
  size_t end = authorization.size();
  while (end > i && (authorization[end - 1] == ' ' || authorization[end - 1] == '\t')) --end;
  return authorization.substr(i, end - i);
}

bool api_key_matches(const std::string& presented, const std::string& expected) {
  // Every byte of the longer string is looked at whatever matches: the time does not say
  // how long a correct prefix is.
  const size_t n = std::max(presented.size(), expected.size());
  unsigned char diff = presented.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char a = i < presented.size() ? static_cast<unsigned char>(presented[i]) : 0;
    const unsigned char b = i < expected.size() ? static_cast<unsigned char>(expected[i]) : 0;
    diff |= static_cast<unsigned char>(a ^ b);
  }
  return diff == 0 && !expected.empty();
}

}  // namespace destein
