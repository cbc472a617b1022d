// A complete DeStein run from C++ using only the public headers: load a model, compute
// steering vectors from a handful of pairs (or load a vectors file), attach steering to a
// generation run, detach it.
//
//   build/bin/steer_generation MODEL_DIR [VECTORS_FILE]
#include <destein/runtime/generate.hpp>
#include <destein/runtime/model.hpp>
#include <destein/steer/activations.hpp>
#include <destein/steer/pairs.hpp>
#include <destein/steer/steering.hpp>
#include <destein/text/tokenizer.hpp>

#include <iostream>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: steer_generation MODEL_DIR [VECTORS_FILE]\n";
    return 2;
  }
  try {
    auto model = destein::load_model(argv[1]);
    auto tokenizer = destein::load_tokenizer(argv[1]);

    destein::SteeringVectors vectors;
    if (argc > 2) {
      vectors = destein::load_steering_vectors(argv[2]);
    } else {
      // Directions from three pairs: sum of (toxic - non-toxic) site activations.
      std::vector<destein::SteeringPair> pairs = {
          {"you are a stupid idiot", "you are mistaken", {}},
          {"shut up, moron", "please be quiet", {}},
          {"this is fucking garbage", "this is not good", {}}};
      destein::PairPrefixes prefixes;
      std::vector<std::vector<int64_t>> toxic, nontoxic;
      for (const auto& p : pairs) {
        toxic.push_back(tokenizer->encode_prompt(prefixes.toxic + p.toxic));
        nontoxic.push_back(tokenizer->encode_prompt(prefixes.nontoxic + p.nontoxic));
      }
      destein::ActivationOptions act;
      act.site = destein::SteeringSite::kAttnOut;
      vectors.directions = destein::directions_from_activations(
          destein::capture_site_activations(*model, toxic, act),
          destein::capture_site_activations(*model, nontoxic, act));
      vectors.site = act.site;
    }

    std::vector<std::vector<int64_t>> prompts = {
        tokenizer->encode_prompt("So I told him he was a")};
    destein::GenerationOptions options;
    options.num_samples = 2;
    options.max_new_tokens = 12;
    options.top_p = 0.9;
    options.seed = 1;

    destein::Hooks hooks;
    destein::SteeringOptions steer;
    steer.mode = destein::SteeringMode::kReference;
    steer.alpha = 0.4;
    destein::SteeringHandle handle = destein::attach_steering(hooks, *model, vectors, steer);
    auto steered = destein::generate(*model, prompts, options, &hooks);
    handle.remove();  // detached: the same call now runs the base model
    auto base = destein::generate(*model, prompts, options, &hooks);

    for (size_t i = 0; i < base.size(); ++i) {
      const auto& prompt = prompts[static_cast<size_t>(base[i].prompt_index)];
      std::cout << "base:    " << tokenizer->decode_continuation(prompt, base[i].token_ids) << "\n"
                << "steered: " << tokenizer->decode_continuation(prompt, steered[i].token_ids)
                << "\n";
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "steer_generation: " << e.what() << "\n";
    return 1;
  }
}
