// Loads a model through an installed destein and generates greedily; prints where the
// library found its SentencePiece module and default scorer, so the install test can
// check they come from the install tree.
#include <destein/destein.hpp>

#include <cstdio>
#include <iostream>

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: consumer MODEL_FOLDER PROMPT\n";
    return 2;
  }
  try {
    auto model = destein::load_model(argv[1]);
    auto tokenizer = destein::load_tokenizer(argv[1]);
    destein::GenerationOptions options;
    options.max_new_tokens = 8;
    options.do_sample = false;
    const auto prompt = tokenizer->encode_prompt(argv[2]);
    const auto out = destein::generate(*model, {prompt}, options);
    const std::string text = tokenizer->decode_continuation(prompt, out.at(0).token_ids);
    auto scorer = destein::AttributeScorer::load(destein::default_scorer_path());
    const auto p = scorer.probabilities(text);
    std::cout << "text: " << text << "\n"
              << "toxicity: " << p[0] << "\n"
              << "insult: " << p[3] << "\n"
              << "sentencepiece_module: " << destein::sentencepiece_module_path().string() << "\n"
              << "scorer: " << destein::default_scorer_path().string() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "consumer: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
