// `destein serve` over real HTTP on 127.0.0.1, with curl and the npm openai client as
// clients. Oracles: `destein generate` (greedy and seeded) for what a request must return,
// the same requests sent one at a time for the concurrent ones.
#include <catch2/catch.hpp>

#include <ATen/ATen.h>

#include "destein/runtime/model.hpp"
#include "destein/steer/steering_vectors.hpp"
#include "serve_test_support.hpp"
#include "steering_fixtures.hpp"

using namespace destein::test;
using Catch::Matchers::Contains;
using nlohmann::json;

namespace {

const std::string kTinyLm = std::string(DESTEIN_SOURCE_DIR) + "/models/tiny-lm";

std::string write_vectors(const std::filesystem::path& dir) {
  auto model = destein::load_model(kTinyLm);
  const auto& c = model->config();
  const destein::SteeringVectors v = destein::test::random_gated_vectors(c);
  const auto path = dir / "v.safetensors";
  destein::save_steering_vectors(path, v);
  return path.string();
}

// What `destein generate` writes for a prompt: the texts of its samples.
std::vector<std::string> generate_texts(const std::string& prompt, const std::string& flags) {
  const std::string cmd = fmt::format("{} generate --model {} --prompt {} --json {} 2>/dev/null",
                                      DESTEIN_CLI, kTinyLm, shell_quote(prompt), flags);
  CommandResult r = run_command(cmd);
  REQUIRE(r.exit_code == 0);
  std::vector<std::string> texts;
  std::stringstream in(r.output);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line[0] == '{')
      texts.push_back(json::parse(line).at("text").get<std::string>());
  }
  return texts;
}

std::vector<std::string> choice_texts(const HttpReply& r) {
  std::vector<std::string> out;
  const json body = r.json();
  for (const auto& c : body.at("choices")) out.push_back(c.at("text").get<std::string>());
  return out;
}

double metric(const std::string& page, const std::string& name) {
  std::stringstream in(page);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name + " ", 0) == 0) return std::stod(line.substr(name.size() + 1));
  }
  return -1;
}

}  // namespace

TEST_CASE("serve: completions equal destein generate (base, steered, seeded), SSE, chat, metrics",
          "[serve][cli]") {
  auto dir = temp_dir("serve_http");
  const std::string vectors = write_vectors(dir);
  ServeProcess server({"--model", kTinyLm, "--vectors", "v=" + vectors}, dir);
  const std::string url = server.url("/v1/completions");

  auto health = http("GET", server.url("/health"), "", dir);
  CHECK(health.status == 200);
  auto models = http("GET", server.url("/v1/models"), "", dir);
  REQUIRE(models.status == 200);
  CHECK(models.json()["data"][0]["id"] == "tiny-lm");
  CHECK(models.json()["data"][0]["steering_vectors"] == json::array({"v"}));

  struct Variant {
    std::string cli_flags;
    json request;
  };
  const std::vector<Variant> variants = {
      {"--greedy", {{"temperature", 0}}},
      {"--greedy --vectors " + vectors + " --alpha 0.7",
       {{"temperature", 0}, {"steering", {{"vectors", "v"}, {"alpha", 0.7}}}}},
      {"--greedy --vectors " + vectors + " --mode headwise --alpha 0.5 --positions generated",
       {{"temperature", 0},
        {"steering",
         {{"vectors", "v"}, {"mode", "headwise"}, {"alpha", 0.5}, {"positions", "generated"}}}}},
      {"--temperature 0.8 --top-p 0.9 --seed 7 --n 2",
       {{"temperature", 0.8}, {"top_p", 0.9}, {"seed", 7}, {"n", 2}}},
      {"--temperature 0.8 --seed 11 --vectors " + vectors + " --alpha 0.7 --gate probe",
       {{"temperature", 0.8},
        {"seed", 11},
        {"steering", {{"vectors", "v"}, {"alpha", 0.7}, {"gate", "probe"}}}}},
      // logit_bias = `destein generate --logit-bias`: bans of the first greedy tokens of
      // "I think that" ('s a: 7930, 7907) and a pull toward another token.
      {"--greedy --logit-bias 7930:-100,7907:-100,100:5",
       {{"temperature", 0}, {"logit_bias", {{"7930", -100}, {"7907", -100}, {"100", 5}}}}},
      {"--temperature 0.9 --seed 5 --n 2 --logit-bias 100:4,101:-100",
       {{"temperature", 0.9}, {"seed", 5}, {"n", 2}, {"logit_bias", {{"100", 4}, {"101", -100}}}}},
  };
  const std::vector<std::string> prompts = {"I think that", "You are a"};
  std::vector<std::string> base_texts, steered_texts, biased_texts;
  for (const auto& prompt : prompts) {
    for (size_t k = 0; k < variants.size(); ++k) {
      json body = variants[k].request;
      body["model"] = "tiny-lm";
      body["prompt"] = prompt;
      body["max_tokens"] = 12;
      const auto expected = generate_texts(prompt, variants[k].cli_flags + " --max-new-tokens 12");
      auto reply = http("POST", url, body.dump(), dir);
      INFO(prompt << " | " << variants[k].cli_flags << "\n" << reply.body);
      REQUIRE(reply.status == 200);
      const json j = reply.json();
      CHECK(j["object"] == "text_completion");
      CHECK(j["model"] == "tiny-lm");
      CHECK(j["id"].get<std::string>().rfind("cmpl-", 0) == 0);
      CHECK(j["usage"]["total_tokens"] ==
            j["usage"]["prompt_tokens"].get<int>() + j["usage"]["completion_tokens"].get<int>());
      CHECK(choice_texts(reply) == expected);
      for (const auto& c : j["choices"])
        CHECK((c["finish_reason"] == "length" || c["finish_reason"] == "stop"));
      if (k == 0) base_texts.push_back(expected[0]);
      if (k == 1) steered_texts.push_back(expected[0]);
      if (k == 5) biased_texts.push_back(expected[0]);
    }
  }
  CHECK(base_texts !=
        steered_texts);  // the steering changed something, so the equality above says something
  CHECK(base_texts != biased_texts);  // and so did the bias
  {
    json body = {{"prompt", prompts[0]}, {"max_tokens", 4}, {"logit_bias", {{"100000", 1}}}};
    auto reply = http("POST", url, body.dump(), dir);
    CHECK(reply.status == 400);
    CHECK_THAT(reply.body, Contains("past the model's vocabulary"));
    CHECK(reply.json()["error"]["param"] == "logit_bias.100000");
  }

  SECTION("SSE streams the same text and ends with [DONE]") {
    json body = {{"prompt", prompts[0]},
                 {"max_tokens", 12},
                 {"temperature", 0},
                 {"stream", true},
                 {"stream_options", {{"include_usage", true}}}};
    auto reply = http("POST", url, body.dump(), dir, "-N");
    REQUIRE(reply.status == 200);
    CHECK_THAT(reply.headers, Contains("text/event-stream"));
    std::string joined, finish;
    std::vector<std::string> events;
    std::stringstream in(reply.body);
    std::string line;
    bool usage = false;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      REQUIRE(line.rfind("data: ", 0) == 0);
      events.push_back(line.substr(6));
      if (events.back() == "[DONE]") continue;
      const json chunk = json::parse(events.back());
      if (chunk.contains("usage")) {
        usage = chunk["usage"]["completion_tokens"].get<int>() > 0;
        continue;
      }
      joined += chunk["choices"][0]["text"].get<std::string>();
      if (!chunk["choices"][0]["finish_reason"].is_null())
        finish = chunk["choices"][0]["finish_reason"];
    }
    REQUIRE(!events.empty());
    CHECK(events.back() == "[DONE]");
    CHECK(events.size() > 3);  // token by token, not one block
    CHECK(usage);
    CHECK(joined == base_texts[0]);
    CHECK((finish == "length" || finish == "stop"));
  }

  SECTION("stop strings cut the text and finish with stop") {
    const std::string full = base_texts[0];
    REQUIRE(full.size() > 4);
    const std::string stop = full.substr(full.size() / 2, 2);
    json body = {{"prompt", prompts[0]}, {"max_tokens", 12}, {"temperature", 0}, {"stop", stop}};
    auto reply = http("POST", url, body.dump(), dir);
    REQUIRE(reply.status == 200);
    CHECK(choice_texts(reply)[0] == full.substr(0, full.find(stop)));
    CHECK(reply.json()["choices"][0]["finish_reason"] == "stop");
  }

  SECTION("chat completions through the plain template, streamed and not") {
    json body = {{"messages",
                  {{{"role", "system"}, {"content", "Be kind."}},
                   {{"role", "user"}, {"content", "Hello there"}}}},
                 {"max_tokens", 8},
                 {"temperature", 1},
                 {"seed", 2}};
    auto reply = http("POST", server.url("/v1/chat/completions"), body.dump(), dir);
    REQUIRE(reply.status == 200);
    const json j = reply.json();
    CHECK(j["object"] == "chat.completion");
    CHECK(j["choices"][0]["message"]["role"] == "assistant");
    // The oracle: the plain template's text, hand-written, continued by `destein generate`.
    const std::string content = j["choices"][0]["message"]["content"];
    // (Greedy, the tiny model ends its turn at once; seed 2 makes it say something.)
    const auto expected = generate_texts("System: Be kind.\nUser: Hello there\nAssistant:",
                                         "--temperature 1 --seed 2 --max-new-tokens 8");
    const std::string cut = expected[0].substr(0, expected[0].find("\nUser:"));
    REQUIRE(!cut.empty());
    CHECK(content == cut);
    body["stream"] = true;
    auto streamed = http("POST", server.url("/v1/chat/completions"), body.dump(), dir, "-N");
    REQUIRE(streamed.status == 200);
    CHECK_THAT(streamed.body, Contains("chat.completion.chunk"));
    CHECK_THAT(streamed.body, Contains("data: [DONE]"));
  }

  SECTION("metrics in Prometheus text") {
    auto page = http("GET", server.url("/metrics"), "", dir);
    REQUIRE(page.status == 200);
    CHECK_THAT(page.body, Contains("# TYPE destein_requests_total counter"));
    CHECK_THAT(page.body,
               Contains("destein_requests_total{endpoint=\"/v1/completions\",status=\"200\"}"));
    CHECK_THAT(page.body, Contains("# TYPE destein_request_duration_seconds histogram"));
    CHECK(metric(page.body, "destein_generated_tokens_total") > 0);
    CHECK(metric(page.body, "destein_queue_depth") == 0);
  }
}

TEST_CASE(
    "serve: per-request decoding methods equal destein generate --method, alone and concurrent",
    "[serve][cli][methods]") {
  auto dir = temp_dir("serve_methods");
  const auto words = dir / "words.txt";
  std::ofstream(words) << "# test list\ngood\nidiot\n";  // greedy base writes "good"
  // DExperts with the model as both experts: the authors' top-p truncation of the base
  // scores alone (the experts' difference is 0), still a different text from base.
  std::ofstream(dir / "serve.yaml")
      << "model: " << kTinyLm << "\nport: 0\nmodel_name: tiny-lm\n"
      << "methods:\n"
      << "  - {name: filter, method: word-filter, words: " << words.string() << "}\n"
      << "  - {name: debias, method: self-debias, lambda: 50}\n"
      << "  - {name: dexperts, method: dexperts, expert: " << kTinyLm
      << ", anti_expert: " << kTinyLm << ", alpha: 2.0}\n";
  ServeProcess server({"--config", (dir / "serve.yaml").string()}, dir);
  const std::string url = server.url("/v1/completions");
  CHECK(http("GET", server.url("/v1/models"), "", dir).json()["data"][0]["methods"] ==
        json::array({"debias", "dexperts", "filter"}));
  struct Variant {
    std::string cli_flags;
    json request;
  };
  const std::string method_words = " --method word-filter --words " + words.string();
  const std::vector<Variant> variants = {
      {"--greedy", {{"temperature", 0}}},
      {"--greedy" + method_words, {{"temperature", 0}, {"method", "filter"}}},
      {"--temperature 0.9 --seed 3 --n 2" + method_words,
       {{"temperature", 0.9}, {"seed", 3}, {"n", 2}, {"method", "filter"}}},
      {"--greedy --method self-debias --lambda 50", {{"temperature", 0}, {"method", "debias"}}},
      {"--temperature 0.9 --seed 4 --n 2 --method self-debias --lambda 50",
       {{"temperature", 0.9}, {"seed", 4}, {"n", 2}, {"method", "debias"}}},
      {"--temperature 0.9 --seed 5 --method dexperts --expert " + kTinyLm + " --anti-expert " +
           kTinyLm + " --alpha 2",
       {{"temperature", 0.9}, {"seed", 5}, {"method", "dexperts"}}},
      {"--temperature 0.9 --seed 5", {{"temperature", 0.9}, {"seed", 5}}},
      // The method's processors first, then the request's logit_bias, as the CLI orders them.
      {"--greedy --method self-debias --lambda 50 --logit-bias 100:5",
       {{"temperature", 0}, {"method", "debias"}, {"logit_bias", {{"100", 5}}}}},
  };
  const std::vector<std::string> prompts = {"I think that", "You are a"};
  std::vector<std::string> bodies;
  std::vector<std::vector<std::string>> expected_all;
  for (const auto& prompt : prompts) {
    std::vector<std::string> firsts;
    for (const auto& v : variants) {
      json body = v.request;
      body["prompt"] = prompt;
      body["max_tokens"] = 12;
      const auto expected = generate_texts(prompt, v.cli_flags + " --max-new-tokens 12");
      auto reply = http("POST", url, body.dump(), dir);
      INFO(prompt << " | " << v.cli_flags << "\n" << reply.body);
      REQUIRE(reply.status == 200);
      CHECK(choice_texts(reply) == expected);
      firsts.push_back(expected.at(0));
      bodies.push_back(body.dump());
      expected_all.push_back(expected);
    }
    // Each method changed the text, so the equalities above say something.
    CHECK(firsts[1] != firsts[0]);
    CHECK(firsts[3] != firsts[0]);
    CHECK(firsts[5] != firsts[6]);
  }
  // Requests naming the same method share its processors: concurrent rows keep their state
  // apart (self-debias's prefixed rows, the experts' caches).
  auto replies = http_concurrent(url, bodies, dir);
  for (size_t i = 0; i < bodies.size(); ++i) {
    INFO("request " << i << ": " << bodies[i] << "\n" << replies[i].body);
    REQUIRE(replies[i].status == 200);
    CHECK(choice_texts(replies[i]) == expected_all[i]);
  }
  // Errors name the field.
  for (const auto& [body, message] : std::vector<std::pair<json, std::string>>{
           {{{"prompt", "x"}, {"method", "nope"}},
            "names no method of this server: \"nope\" (known: \"debias\", \"dexperts\", "
            "\"filter\")"},
           {{{"prompt", "x"}, {"method", 3}}, "'method' must be the name of a method"},
           {{{"prompt", "x"}, {"method", "filter"}, {"steering", {{"vectors", "v"}}}},
            "'method' and 'steering' do not combine"}}) {
    auto reply = http("POST", url, body.dump(), dir);
    INFO(reply.body);
    CHECK(reply.status == 400);
    CHECK_THAT(reply.json()["error"]["message"].get<std::string>(), Contains(message));
    CHECK(reply.json()["error"]["param"] == "method");
  }
}

TEST_CASE("serve: 16 concurrent clients mixing steering each get their sequential answer",
          "[serve][cli]") {
  auto dir = temp_dir("serve_concurrent");
  const std::string vectors = write_vectors(dir);
  ServeProcess server({"--model", kTinyLm, "--vectors", "v=" + vectors, "--max-rows", "32"}, dir);
  const std::string url = server.url("/v1/completions");
  const std::vector<std::string> prompts = {"The",
                                            "I think that the people who",
                                            "You are a",
                                            "Why would anyone",
                                            "Thanks for the link, I will read it later and",
                                            "Hello"};
  std::vector<std::string> bodies;
  for (int i = 0; i < 16; ++i) {
    json body = {{"prompt", prompts[static_cast<size_t>(i) % prompts.size()]},
                 {"max_tokens", 6 + (i * 5) % 20}};
    if (i % 3 == 0) {
      body["temperature"] = 0;
    } else {
      body["temperature"] = 0.9;
      body["seed"] = 40 + i;
    }
    if (i % 4 == 1) body["steering"] = {{"vectors", "v"}, {"alpha", 0.7}};
    if (i % 4 == 2)
      body["steering"] = {
          {"vectors", "v"}, {"mode", "headwise"}, {"alpha", 0.5}, {"positions", "generated"}};
    if (i % 5 == 4) body["n"] = 2;
    bodies.push_back(body.dump());
  }
  std::vector<std::vector<std::string>> sequential;
  for (const auto& b : bodies) {
    auto r = http("POST", url, b, dir);
    REQUIRE(r.status == 200);
    sequential.push_back(choice_texts(r));
  }
  const double steps_before = metric(http("GET", server.url("/metrics"), "", dir).body,
                                     "destein_rows_per_decode_step_count");
  const double rows_before =
      metric(http("GET", server.url("/metrics"), "", dir).body, "destein_rows_per_decode_step_sum");
  auto replies = http_concurrent(url, bodies, dir);
  for (size_t i = 0; i < bodies.size(); ++i) {
    INFO("request " << i << ": " << bodies[i] << "\n" << replies[i].body);
    REQUIRE(replies[i].status == 200);
    CHECK(choice_texts(replies[i]) == sequential[i]);
  }
  const std::string page = http("GET", server.url("/metrics"), "", dir).body;
  const double steps = metric(page, "destein_rows_per_decode_step_count") - steps_before;
  const double rows = metric(page, "destein_rows_per_decode_step_sum") - rows_before;
  INFO(rows << " rows in " << steps << " decode steps");
  CHECK(rows / steps > 2);  // the concurrent requests shared forwards
}

TEST_CASE("serve: bytes that are not UTF-8 go out as U+FFFD, not as a failed request",
          "[serve][cli]") {
  // A random byte-level BPE model writes lone bytes of multi-byte characters.
  auto dir = temp_dir("serve_bytes");
  ServeProcess server({"--model", fixture("gpt2_bpe").string()}, dir);
  const std::string body =
      R"({"prompt": "Hello", "max_tokens": 24, "temperature": 1, "seed": 5, "n": 8})";
  auto reply = http("POST", server.url("/v1/completions"), body, dir);
  INFO(reply.body);
  REQUIRE(reply.status == 200);
  int replaced = 0;
  for (const auto& text : choice_texts(reply))
    replaced += text.find("\xEF\xBF\xBD") != std::string::npos;
  CHECK(replaced > 0);  // the case this test is about did occur
  json stream_body = json::parse(body);
  stream_body["stream"] = true;
  auto streamed = http("POST", server.url("/v1/completions"), stream_body.dump(), dir, "-N");
  REQUIRE(streamed.status == 200);
  CHECK_THAT(streamed.body, Contains("data: [DONE]"));
}

TEST_CASE("serve: every error is OpenAI-style JSON naming the field", "[serve][cli]") {
  auto dir = temp_dir("serve_errors");
  const std::string vectors = write_vectors(dir);
  std::ofstream(dir / "key") << "s3cret-key\n";
  ServeProcess server({"--model", kTinyLm, "--vectors", "v=" + vectors, "--max-body-bytes", "4000"},
                      dir);
  const std::string url = server.url("/v1/completions");
  auto expect_error = [&](const std::string& body, int status, const std::string& words,
                          const std::string& param) {
    auto r = http("POST", url, body, dir);
    INFO(body << " -> " << r.status << " " << r.body);
    CHECK(r.status == status);
    const json j = r.json();
    REQUIRE(j.contains("error"));
    CHECK_THAT(j["error"]["message"].get<std::string>(), Contains(words));
    if (!param.empty()) CHECK(j["error"]["param"] == param);
    CHECK(j["error"].contains("type"));
  };
  expect_error("{not json", 400, "not valid JSON", "");
  expect_error("[1, 2]", 400, "must be a JSON object", "");
  expect_error(R"({"max_tokens": 3})", 400, "'prompt' is required", "prompt");
  expect_error(R"({"prompt": 5})", 400, "'prompt' must be a string or a non-empty list of strings",
               "prompt");
  expect_error(R"({"prompt": "x", "temperature": "hot"})", 400,
               "'temperature' must be a number in [0, 2]", "temperature");
  expect_error(R"({"prompt": "x", "temperature": 3})", 400,
               "'temperature' must be a number in [0, 2]", "temperature");
  expect_error(R"({"prompt": "x", "max_tokens": 0})", 400,
               "'max_tokens' must be a positive integer", "max_tokens");
  expect_error(R"({"prompt": "x", "max_tokens": 1000})", 400, "past the model's 128 positions",
               "max_tokens");
  expect_error(R"({"prompt": "x", "n": 1.5})", 400, "'n' must be an integer", "n");
  expect_error(R"({"prompt": "x", "top_p": 0})", 400, "'top_p' must be a number in (0, 1]",
               "top_p");
  expect_error(R"({"prompt": "x", "stop": ["a", 3]})", 400, "'stop' must be", "stop");
  expect_error(R"({"prompt": "x", "stream": "yes"})", 400, "'stream' must be true or false",
               "stream");
  expect_error(R"({"prompt": "x", "logprobs": 5})", 400, "'logprobs' is not supported", "logprobs");
  expect_error(R"({"prompt": "x", "model": "gpt-4"})", 404, "'model' must be \"tiny-lm\"", "model");
  expect_error(R"({"prompt": "x", "steering": {"vectors": "nope"}})", 400,
               "names no vectors set of this server: \"nope\" (known: \"v\")", "steering.vectors");
  expect_error(R"({"prompt": "x", "steering": {"vectors": "v", "alpha": -1}})", 400,
               "'steering.alpha' must be a number in [0, 10]", "steering.alpha");
  expect_error(R"({"prompt": "x", "steering": {"vectors": "v", "mode": "fast"}})", 400,
               "'steering.mode' must be \"reference\" or \"headwise\"", "steering.mode");
  expect_error(R"({"prompt": "x", "steering": {"vectors": "v", "file": "/etc/passwd"}})", 400,
               "'steering.file' is not a steering field", "steering.file");
  expect_error(R"({"prompt": "x", "steering": {"alpha": 1}})", 400,
               "'steering.vectors' is required", "steering.vectors");
  expect_error(R"({"prompt": "x", "steering": "v"})", 400, "'steering' must be an object",
               "steering");
  expect_error(R"({"prompt": "x", "n": 100})", 400, "more than this server's limit of 32", "n");
  expect_error(json{{"prompt", std::string(5000, 'a')}}.dump(), 413,
               "larger than the server's limit", "");
  auto chat = http("POST", server.url("/v1/chat/completions"),
                   R"({"messages": [{"role": "assistant", "content": "hi"}]})", dir);
  CHECK(chat.status == 400);
  CHECK_THAT(chat.body, Contains("messages[0].role"));
  chat =
      http("POST", server.url("/v1/chat/completions"), R"({"messages": [{"role": "user"}]})", dir);
  CHECK(chat.status == 400);
  CHECK_THAT(chat.body, Contains("'messages[0].content' must be a string"));
  auto missing = http("GET", server.url("/v1/nothing"), "", dir);
  CHECK(missing.status == 404);
  CHECK_THAT(missing.body, Contains("no endpoint GET /v1/nothing"));
  CHECK(http("GET", server.url("/health"), "", dir).status == 200);  // still alive after all that

  SECTION("YAML config: the same server from a file; bad keys name file:line") {
    auto yaml_dir = temp_dir("serve_errors_yaml");
    std::ofstream(yaml_dir / "serve.yaml")
        << "model: " << kTinyLm
        << "\nport: 0\nmodel_name: tiny\nvectors:\n  - {name: w, path: " << vectors
        << "}\nsteering: {mode: headwise, alpha: 0.5}\nmax_rows: 4\n";
    auto dumped = run_command(std::string(DESTEIN_CLI) + " serve --config " +
                              (yaml_dir / "serve.yaml").string() + " --dump-config");
    REQUIRE(dumped.exit_code == 0);
    CHECK_THAT(dumped.output, Contains("mode: headwise"));
    CHECK_THAT(dumped.output, Contains("max_rows: 4"));
    ServeProcess from_yaml({"--config", (yaml_dir / "serve.yaml").string()}, yaml_dir);
    auto models = http("GET", from_yaml.url("/v1/models"), "", yaml_dir);
    CHECK(models.json()["data"][0]["id"] == "tiny");
    CHECK(models.json()["data"][0]["steering_vectors"] == json::array({"w"}));
    auto r = http("POST", from_yaml.url("/v1/completions"), R"({"prompt": "x", "n": 5})", yaml_dir);
    CHECK(r.status == 400);
    CHECK_THAT(r.body, Contains("limit of 4"));
    std::ofstream(yaml_dir / "bad.yaml") << "model: " << kTinyLm << "\nport: 0\nmax_rowz: 4\n";
    auto bad = run_command(std::string(DESTEIN_CLI) + " serve --config " +
                           (yaml_dir / "bad.yaml").string());
    CHECK(bad.exit_code != 0);
    CHECK_THAT(bad.output, Contains("bad.yaml:3"));
    CHECK_THAT(bad.output, Contains("max_rowz"));
  }

  SECTION("API key") {
    auto keyed_dir = temp_dir("serve_errors_key");
    ServeProcess keyed({"--model", kTinyLm, "--api-key-file", (dir / "key").string()}, keyed_dir);
    const std::string body = R"({"prompt": "x", "max_tokens": 2, "temperature": 0})";
    auto none = http("POST", keyed.url("/v1/completions"), body, keyed_dir);
    CHECK(none.status == 401);
    CHECK_THAT(none.body, Contains("API key"));
    auto wrong = http("POST", keyed.url("/v1/completions"), body, keyed_dir,
                      "-H 'Authorization: Bearer s3cret-kez'");
    CHECK(wrong.status == 401);
    auto right = http("POST", keyed.url("/v1/completions"), body, keyed_dir,
                      "-H 'Authorization: Bearer s3cret-key'");
    CHECK(right.status == 200);
  }
}

TEST_CASE("serve: overload gives 429 with Retry-After, disconnects free rows, SIGTERM drains",
          "[serve][cli]") {
  auto dir = temp_dir("serve_limits");
  const std::string long_body =
      R"({"prompt": "The", "max_tokens": 100, "temperature": 0.9, "seed": 1, "n": 1})";

  SECTION("overload") {
    ServeProcess server({"--model", kTinyLm, "--max-rows", "1", "--max-queue", "1"}, dir);
    auto replies =
        http_concurrent(server.url("/v1/completions"), std::vector<std::string>(8, long_body), dir);
    int ok = 0, busy = 0;
    for (const auto& r : replies) {
      if (r.status == 200) ++ok;
      if (r.status == 429) {
        ++busy;
        CHECK_THAT(r.headers, Contains("Retry-After: 1"));
        CHECK_THAT(r.body, Contains("the server is busy"));
      }
    }
    CHECK(ok + busy == 8);
    CHECK(ok >= 2);  // the running one and the queued one
    CHECK(busy >= 1);
    CHECK(http("GET", server.url("/health"), "", dir).status == 200);
  }

  SECTION("a request past --request-timeout gets 504, streamed or not") {
    ServeProcess server({"--model", kTinyLm, "--request-timeout", "0.05"}, dir);
    const std::string slow =
        R"({"prompt": "The", "max_tokens": 120, "temperature": 0.9, "seed": 1, "n": 16})";
    auto r = http("POST", server.url("/v1/completions"), slow, dir);
    CHECK(r.status == 504);
    CHECK_THAT(r.body, Contains("longer than the server's limit of 0.05 s"));
    json stream_body = json::parse(slow);
    stream_body["stream"] = true;
    auto streamed = http("POST", server.url("/v1/completions"), stream_body.dump(), dir, "-N");
    CHECK(streamed.status == 200);  // the headers went out before the limit
    CHECK_THAT(streamed.body, Contains("\"timeout_error\""));
    CHECK_THAT(streamed.body, Contains("data: [DONE]"));
  }

  SECTION("a client that goes away frees its rows") {
    ServeProcess server({"--model", kTinyLm}, dir);
    // ignore_eos: no row may end early, so the request outlives the client for sure.
    const std::string body =
        R"({"prompt": "The", "max_tokens": 120, "temperature": 0.9, "seed": 1, "n": 32, "ignore_eos": true})";
    // curl gives up after 0.2 s, long before 32 rows x 120 tokens are written.
    auto gone = http("POST", server.url("/v1/completions"), body, dir, "--max-time 0.2");
    CHECK(gone.status == 0);
    double cancelled = 0, active = -1;
    for (int i = 0; i < 100 && (cancelled < 1 || active != 0); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      const std::string page = http("GET", server.url("/metrics"), "", dir).body;
      cancelled =
          metric(page, "destein_requests_total{endpoint=\"/v1/completions\",status=\"499\"}");
      active = metric(page, "destein_active_rows");
    }
    CHECK(cancelled == 1);
    CHECK(active == 0);
    const std::string page = http("GET", server.url("/metrics"), "", dir).body;
    CHECK(metric(page, "destein_generated_tokens_total") < 32 * 120);

    // The same while streaming: the next write (or the wait between tokens) notices.
    json streamed = json::parse(body);
    streamed["stream"] = true;
    http("POST", server.url("/v1/completions"), streamed.dump(), dir, "-N --max-time 0.2");
    for (int i = 0; i < 100 && (cancelled < 2 || active != 0); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      const std::string p = http("GET", server.url("/metrics"), "", dir).body;
      cancelled = metric(p, "destein_requests_total{endpoint=\"/v1/completions\",status=\"499\"}");
      active = metric(p, "destein_active_rows");
    }
    CHECK(cancelled == 2);
    CHECK(active == 0);
    CHECK(metric(http("GET", server.url("/metrics"), "", dir).body,
                 "destein_generated_tokens_total") < 2 * 32 * 120);
  }

  SECTION("SIGTERM finishes what runs and refuses new requests") {
    ServeProcess server({"--model", kTinyLm}, dir);
    const std::string running =
        R"({"prompt": "The", "max_tokens": 100, "temperature": 0.9, "seed": 3, "n": 8})";
    const auto out = dir / "running";
    std::ofstream(out.string() + ".request") << running;
    const std::string cmd =
        curl_command("POST", server.url("/v1/completions"), out.string() + ".request", out) +
        " > " + shell_quote(out.string() + ".status") + " &";
    run_command(cmd);
    std::string page;
    for (int i = 0; i < 100; ++i) {
      page = http("GET", server.url("/metrics"), "", dir).body;
      if (metric(page, "destein_active_rows") > 0) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    REQUIRE(metric(page, "destein_active_rows") > 0);
    kill(server.pid(), SIGTERM);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    auto refused =
        http("POST", server.url("/v1/completions"), R"({"prompt": "x", "max_tokens": 2})", dir);
    CHECK(refused.status != 200);  // 503 while draining, or no listener once stopped
    const int code = server.wait_exit(std::chrono::seconds(60));
    CHECK(code == 143);
    const auto reply = read_reply(out, slurp(out.string() + ".status"));
    INFO(reply.body);
    REQUIRE(reply.status == 200);
    const json j = reply.json();
    CHECK(j["choices"].size() == 8);
    int tokens = j["usage"]["completion_tokens"];
    CHECK(tokens > 8);
  }
}

TEST_CASE("serve: the npm openai client completes, streams, chats and sees errors",
          "[serve][cli]") {
  const std::filesystem::path modules =
      std::filesystem::path(DESTEIN_SOURCE_DIR) / "third_party/npm/openai-client/node_modules";
  INFO("the npm openai client is installed by scripts/setup.sh into " << modules);
  REQUIRE(std::filesystem::exists(modules / "openai" / "package.json"));
  auto dir = temp_dir("serve_openai_client");
  const std::string vectors = write_vectors(dir);
  ServeProcess server({"--model", kTinyLm, "--vectors", "v=" + vectors}, dir);
  const std::string script =
      std::string(DESTEIN_SOURCE_DIR) + "/tests/serve/openai_client/client.js";
  CommandResult r = run_command(fmt::format(
      "DESTEIN_OPENAI_MODULES={} node {} {} tiny-lm {}", shell_quote(modules.string()),
      shell_quote(script), shell_quote(server.url("/v1")), shell_quote("I think that")));
  INFO(r.output << "\n" << server.log());
  REQUIRE(r.exit_code == 0);
  const json j = json::parse(r.output.substr(r.output.find('{')));
  const auto plain = generate_texts("I think that", "--greedy --max-new-tokens 8");
  const auto steered = generate_texts(
      "I think that", "--greedy --max-new-tokens 8 --vectors " + vectors + " --alpha 0.7");
  CHECK(j["plain"] == plain[0]);
  CHECK(j["steered"] == steered[0]);
  CHECK(j["streamed"] == plain[0]);
  CHECK(j["usage"]["completion_tokens"].get<int>() > 0);
  CHECK(j["chat_object"] == "chat.completion");
  CHECK(j["error"]["status"] == 400);
  CHECK_THAT(j["error"]["message"].get<std::string>(), Contains("nope"));
}
