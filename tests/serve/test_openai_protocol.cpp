// The OpenAI wire format, chat templates, stream hold-back and the metrics page of
// `destein serve`, against hand-written expectations (LibTorch-free).
#include <catch2/catch.hpp>

#include <fstream>

#include "serve/chat_rendering.hpp"
#include "serve/metrics_registry.hpp"
#include "serve/openai_protocol.hpp"

using namespace destein;
using Catch::Matchers::Contains;

namespace {
std::string error_of(const std::string& body, int* status = nullptr, std::string* param = nullptr) {
  try {
    parse_completion_request(body);
  } catch (const ApiError& e) {
    if (status) *status = e.status();
    if (param) *param = e.param();
    return e.what();
  }
  return "no error";
}
}  // namespace

TEST_CASE("serve protocol: completion requests parse with OpenAI's defaults and types", "[serve]") {
  CompletionRequest r = parse_completion_request(R"({"model": "m", "prompt": "hi"})");
  CHECK(r.prompts == std::vector<std::string>{"hi"});
  CHECK(r.max_tokens == 16);
  CHECK(r.temperature == 1.0);
  CHECK(r.n == 1);
  CHECK(!r.seed);
  CHECK(!r.stream);
  r = parse_completion_request(
      R"({"prompt": ["a", "b"], "max_tokens": 5.0, "temperature": 0, "top_p": 0.5, "top_k": -1, "n": 3, "seed": -2,
          "stop": "x", "stream": true, "stream_options": {"include_usage": true}, "user": "ignored", "logprobs": null,
          "steering": {"vectors": "detox", "alpha": 0.3, "mode": "headwise", "positions": "generated", "gate": "probe",
                       "gate_threshold": 0.5, "top_k_heads": 4}})");
  CHECK(r.prompts.size() == 2);
  CHECK(r.max_tokens == 5);
  CHECK(r.temperature == 0);
  CHECK(r.top_k == 0);
  CHECK(r.n == 3);
  CHECK(r.seed == static_cast<uint64_t>(int64_t{-2}));
  CHECK(r.stop == std::vector<std::string>{"x"});
  CHECK(r.stream);
  CHECK(r.include_usage);
  REQUIRE(r.steering);
  CHECK(r.steering->vectors == "detox");
  CHECK(r.steering->alpha == 0.3);
  CHECK(r.steering->mode == "headwise");
  CHECK(r.steering->positions == "generated");
  CHECK(r.steering->gate == "probe");
  CHECK(r.steering->gate_threshold == 0.5);
  CHECK(r.steering->top_k_heads == 4);
}

TEST_CASE("serve protocol: each bad field is a 400 naming it and what was expected", "[serve]") {
  int status = 0;
  std::string param;
  CHECK_THAT(error_of("{", &status), Contains("not valid JSON"));
  CHECK(status == 400);
  CHECK_THAT(error_of(R"({"prompt": "x", "max_tokens": -1})", &status, &param),
             Contains("'max_tokens' must be a positive integer, found -1"));
  CHECK(param == "max_tokens");
  CHECK_THAT(error_of(R"({"prompt": "x", "seed": "abc"})", nullptr, &param),
             Contains("'seed' must be an integer, found \"abc\""));
  CHECK_THAT(error_of(R"({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]})"),
             Contains("up to 4"));
  CHECK_THAT(error_of(R"({"prompt": "x", "stop": ""})"), Contains("non-empty"));
  CHECK_THAT(error_of(R"({"prompt": [1, 2]})"), Contains("token-id prompts are not supported"));
  CHECK_THAT(error_of(R"({"prompt": []})"), Contains("non-empty list"));
  CHECK_THAT(error_of(R"({"prompt": "x", "ignore_eos": 1})"),
             Contains("'ignore_eos' must be true or false"));
  CHECK(parse_completion_request(R"({"prompt": "x", "ignore_eos": true})").ignore_eos);
  CHECK_THAT(error_of(R"({"prompt": "x", "echo": true})", nullptr, &param),
             Contains("'echo' is not supported"));
  CHECK(param == "echo");
  CHECK_THAT(error_of(R"({"prompt": "x", "best_of": 2})"), Contains("'best_of' is not supported"));
  CHECK_THAT(error_of(R"({"prompt": "x", "presence_penalty": 0.5})"),
             Contains("'presence_penalty' is not supported"));
  CHECK_THAT(error_of(R"({"prompt": "x", "steering": {"vectors": "v", "gate": "always"}})", nullptr,
                      &param),
             Contains("'steering.gate' must be \"none\" or \"probe\", found \"always\""));
  CHECK(param == "steering.gate");
  CHECK_THAT(error_of(R"({"prompt": "x", "steering": {"vectors": "v", "gate_threshold": 1}})"),
             Contains("[0, 1)"));
  CHECK_THAT(error_of(R"({"prompt": "x", "steering": {"vectors": 3}})"),
             Contains("'steering.vectors' must be a string"));
  // logit_bias: OpenAI's shape, string keys that are token ids, biases in [-100, 100].
  const auto bias = parse_completion_request(
                        R"({"prompt": "x", "logit_bias": {"50256": -100, "7": 2.5, "0": 0}})")
                        .logit_bias;
  CHECK(bias == std::map<int64_t, float>{{0, 0.0f}, {7, 2.5f}, {50256, -100.0f}});
  CHECK(parse_completion_request(R"({"prompt": "x"})").logit_bias.empty());
  CHECK_THAT(error_of(R"({"prompt": "x", "logit_bias": [1, 2]})", nullptr, &param),
             Contains("'logit_bias' must be an object"));
  CHECK(param == "logit_bias");
  CHECK_THAT(error_of(R"({"prompt": "x", "logit_bias": {"-3": 1}})", nullptr, &param),
             Contains("key \"-3\" is not a token id"));
  CHECK(param == "logit_bias.-3");
  CHECK_THAT(error_of(R"({"prompt": "x", "logit_bias": {"12a": 1}})"),
             Contains("is not a token id"));
  CHECK_THAT(error_of(R"({"prompt": "x", "logit_bias": {"99999999999": 1}})"),
             Contains("is not a token id"));
  CHECK_THAT(error_of(R"({"prompt": "x", "logit_bias": {"5": 101}})", nullptr, &param),
             Contains("'logit_bias.5' must be a number in [-100, 100], found 101"));
  CHECK(param == "logit_bias.5");
  CHECK_THAT(error_of(R"({"prompt": "x", "logit_bias": {"5": "big"}})"),
             Contains("'logit_bias.5' must be a number"));
  nlohmann::json many = {{"prompt", "x"}, {"logit_bias", nlohmann::json::object()}};
  for (int i = 0; i < 1025; ++i) many["logit_bias"][std::to_string(i)] = 1;
  CHECK_THAT(error_of(many.dump()), Contains("1025 entries, more than the 1024"));
  const nlohmann::json e = error_json(ApiError(429, "busy", {}, "rate_limit_error"));
  CHECK(
      e ==
      nlohmann::json::parse(
          R"({"error": {"message": "busy", "type": "rate_limit_error", "param": null, "code": null}})"));
}

TEST_CASE("serve protocol: chat requests and the built-in templates", "[serve]") {
  ChatRequest r = parse_chat_request(
      R"({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": [{"type": "text", "text": "U"}]}],
          "max_completion_tokens": 7})");
  REQUIRE(r.messages.size() == 2);
  CHECK(r.messages[1].content == "U");
  CHECK(r.max_tokens == 7);
  CHECK(parse_chat_request(R"({"messages": [{"role": "user", "content": "x"}]})").max_tokens == -1);
  CHECK_THROWS_WITH(parse_chat_request(R"({"messages": []})"),
                    Contains("'messages' must be a non-empty list"));
  CHECK_THROWS_WITH(parse_chat_request(R"({"messages": [{"role": "robot", "content": "x"}]})"),
                    Contains("'messages[0].role' must be"));

  auto tok = load_tokenizer(std::filesystem::path(DESTEIN_SOURCE_DIR) / "models" / "tiny-lm");
  const std::vector<ChatMessage> talk = {
      {"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello."}, {"user", "Why?"}};
  ChatPrompt plain = render_chat(ChatTemplate::kPlain, talk, *tok);
  CHECK(plain.ids == tok->encode_prompt(
                         "System: Be brief.\nUser: Hi\nAssistant: Hello.\nUser: Why?\nAssistant:"));
  CHECK(plain.stop == std::vector<std::string>{"\nUser:"});
  ChatPrompt chatml = render_chat(ChatTemplate::kChatml, talk, *tok);
  CHECK(chatml.ids ==
        tok->encode_prompt(
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nWhy?<|im_end|>\n"
            "<|im_start|>assistant\n"));
  CHECK(chatml.stop == std::vector<std::string>{"<|im_end|>"});
  ChatPrompt llama = render_chat(ChatTemplate::kLlama2, talk, *tok);
  std::vector<int64_t> expected = {*tok->bos_id()};
  for (int64_t id : tok->encode("[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello. "))
    expected.push_back(id);
  expected.push_back(*tok->eos_id());
  expected.push_back(*tok->bos_id());
  for (int64_t id : tok->encode("[INST] Why? [/INST]")) expected.push_back(id);
  CHECK(llama.ids == expected);
  CHECK_THROWS_WITH(render_chat(ChatTemplate::kPlain, {{"user", "a"}, {"user", "b"}}, *tok),
                    Contains("'messages[1].role' must be \"assistant\" here"));
  CHECK_THROWS_WITH(render_chat(ChatTemplate::kLlama2, {{"user", "a"}, {"assistant", "b"}}, *tok),
                    Contains("must be a user message"));
  CHECK(parse_chat_template("chatml") == ChatTemplate::kChatml);
  CHECK_THROWS_WITH(parse_chat_template("jinja"),
                    Contains("expected llama-2, chatml, plain, llama-3 or gemma"));

  const auto dir = std::filesystem::path(DESTEIN_TEST_BINARY_DIR) / "tmp" / "chat_template_detect";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  CHECK(detect_chat_template(dir) == ChatTemplate::kPlain);
  std::ofstream(dir / "tokenizer_config.json")
      << R"({"chat_template": "{% for m in messages %}<|im_start|>{{ m.role }}{% endfor %}"})";
  CHECK(detect_chat_template(dir / "model.safetensors") == ChatTemplate::kChatml);
  std::ofstream(dir / "tokenizer_config.json")
      << R"({"chat_template": "{{ bos_token }}[INST] {{ m }} [/INST]"})";
  CHECK(detect_chat_template(dir) == ChatTemplate::kLlama2);
}

TEST_CASE("serve protocol: streaming holds back a possible stop string and split characters",
          "[serve]") {
  CHECK(safe_stream_length("hello wor", {"world"}) == 6);
  CHECK(safe_stream_length("hello", {"world"}) == 5);
  CHECK(safe_stream_length("say EN", {"END", "\nUser:"}) == 4);
  CHECK(safe_stream_length("a\n", {"\nUser:"}) == 1);
  CHECK(safe_stream_length("caf\xC3", {}) == 3);  // half of "é" waits for its second byte
  CHECK(api_key_matches("abc", "abc"));
  CHECK(!api_key_matches("abd", "abc"));
  CHECK(!api_key_matches("ab", "abc"));
  CHECK(!api_key_matches("abcd", "abc"));
  CHECK(!api_key_matches("", ""));
}

TEST_CASE("serve metrics: Prometheus text exposition", "[serve]") {
  MetricsRegistry m;
  m.describe_counter("req_total", "requests");
  m.describe_gauge("depth", "queue depth");
  m.describe_histogram("lat_seconds", "latency", {0.1, 1});
  m.add("req_total", {{"endpoint", "/v1/completions"}, {"status", "200"}});
  m.add("req_total", {{"endpoint", "/v1/completions"}, {"status", "200"}}, 2);
  m.set("depth", 4);
  m.observe("lat_seconds", 0.05);
  m.observe("lat_seconds", 0.5);
  m.observe("lat_seconds", 7);
  CHECK(m.render() ==
        "# HELP req_total requests\n# TYPE req_total counter\n"
        "req_total{endpoint=\"/v1/completions\",status=\"200\"} 3\n"
        "# HELP depth queue depth\n# TYPE depth gauge\ndepth 4\n"
        "# HELP lat_seconds latency\n# TYPE lat_seconds histogram\n"
        "lat_seconds_bucket{le=\"0.1\"} 1\nlat_seconds_bucket{le=\"1\"} "
        "2\nlat_seconds_bucket{le=\"+Inf\"} 3\n"
        "lat_seconds_sum 7.55\nlat_seconds_count 3\n");
  CHECK_THROWS_WITH(m.observe("depth", 1), Contains("depth is a gauge, not a histogram"));
  CHECK_THROWS_WITH(m.add("nothing"), Contains("was not described"));
}

namespace {
std::string nested(const std::string& key, size_t depth) {
  return "{\"" + key + "\": " + std::string(depth, '[') + "\"x\"" + std::string(depth, ']') + "}";
}
std::string chat_error_of(const std::string& body, int* status = nullptr,
                          std::string* param = nullptr) {
  try {
    parse_chat_request(body);
  } catch (const ApiError& e) {
    if (status) *status = e.status();
    if (param) *param = e.param();
    return e.what();
  }
  return "no error";
}
}  // namespace

TEST_CASE("serve protocol: hostile bodies are 400s that name the field, never a crash or overflow",
          "[serve]") {
  int status = 0;
  std::string param;
  // 60,000 deep (the body that crashed the server) and just past the limit: refused while
  // parsing; 32 levels (the limit) still parse.
  for (const char* key : {"prompt", "stop", "steering"}) {
    for (size_t depth : {size_t{60000}, size_t{33}}) {
      status = 0;
      const std::string what = error_of(nested(key, depth), &status, &param);
      CHECK(status == 400);
      CHECK_THAT(what, Contains("more than 32 deep"));
      CHECK(param == key);
    }
  }
  CHECK_THAT(error_of(R"({"prompt": "p", "stop": )" + std::string(31, '[') + "1" +
                          std::string(31, ']') + "}",
                      &status, &param),
             Contains("'stop' must be a non-empty string or a list"));
  // The excerpt of a huge or deep value is bounded.
  std::string many = "1";
  for (int i = 0; i < 100000; ++i) many += ", 1";
  const std::string big = error_of(R"({"prompt": [)" + many + "]}", &status, &param);
  CHECK(status == 400);
  CHECK(param == "prompt");
  CHECK(big.size() < 300);
  // A number a double cannot hold: a 400 naming the field (nlohmann throws out_of_range).
  CHECK_THAT(error_of(R"({"prompt": "p", "temperature": 1e400})", &status, &param),
             Contains("'temperature' holds a number too large"));
  CHECK(status == 400);
  CHECK(param == "temperature");
  CHECK_THAT(error_of(R"({"prompt": "p", "steering": {"vectors": "v", "alpha": -1e999}})", &status,
                      &param),
             Contains("'steering.alpha' holds a number too large"));
  CHECK(param == "steering.alpha");
  CHECK_THAT(
      chat_error_of(R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": 2e308})",
                    &status, &param),
      Contains("'max_tokens' holds a number too large"));
  // Integers past int64 (undefined to cast) and unsigned ones: range errors, not UB.
  CHECK_THAT(error_of(R"({"prompt": "p", "seed": 18446744073709551615})", &status, &param),
             Contains("'seed' must be an integer"));
  CHECK_THAT(error_of(R"({"prompt": "p", "seed": 1e300})", &status, &param),
             Contains("'seed' must be an integer"));
  CHECK_THAT(error_of(R"({"prompt": "p", "max_tokens": 1e19})", &status, &param),
             Contains("'max_tokens' must be a positive"));
  CHECK(parse_completion_request(R"({"prompt": "p", "seed": 9223372036854775807})").seed ==
        9223372036854775807ULL);
  // A syntax error quotes a bounded part of what the parser read.
  const std::string bad =
      error_of("{\"prompt\": \"" + std::string(100000, 'a') + "\x01\"}", &status);
  CHECK(status == 400);
  CHECK_THAT(bad, Contains("not valid JSON"));
  CHECK(bad.size() < 400);
  // A content part whose type is not a string is the caller's error, not an internal one.
  CHECK_THAT(
      chat_error_of(R"({"messages": [{"role": "user", "content": [{"type": 5, "text": "x"}]}]})",
                    &status, &param),
      Contains("'messages[0].content' must be"));
  CHECK(status == 400);
}

TEST_CASE("serve protocol: the Bearer scheme is matched without regard to case", "[serve]") {
  CHECK(bearer_credentials("Bearer k1") == "k1");
  CHECK(bearer_credentials("bearer k1") == "k1");
  CHECK(bearer_credentials("BEARER  k1 ") == "k1");
  CHECK(bearer_credentials("Basic k1").empty());
  CHECK(bearer_credentials("Bearerk1").empty());
  CHECK(bearer_credentials("Bearer").empty());
  CHECK(bearer_credentials("").empty());
}
