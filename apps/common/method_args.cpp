#include "method_args.hpp"

#include <fmt/format.h>

namespace destein::app {

std::optional<DecodingMethod> read_method_args(Args& args, double default_filter_p) {
  const auto kind =
      args.get("method", "a decoding-time method: dexperts, self-debias or word-filter");
  if (!kind && !args.help_requested()) {
    // Their options without --method would otherwise be mistaken for steering or be lost.
    for (const char* key :
         {"expert", "anti-expert", "filter-p", "lambda", "debias-prefix-ids", "words"}) {
      if (args.get(key)) throw std::invalid_argument(fmt::format("--{} needs --method", key));
    }
    return std::nullopt;
  }
  DecodingMethod m;
  m.kind = kind ? *kind : "";
  const auto expert = args.get("expert", "dexperts: the expert checkpoint (same tokenizer)");
  const auto anti =
      args.get("anti-expert", "dexperts: the anti-expert checkpoint (same tokenizer)");
  const auto alpha = args.get("alpha", "dexperts: strength (default 2)");
  const auto filter_p = args.get("filter-p", "dexperts: top-p truncation of the base logits");
  const auto lambda = args.get("lambda", "self-debias: decay constant (default 50)");
  m.prefix_ids = args.get_int_lists(
      "debias-prefix-ids",
      "self-debias: a prefix as token ids (repeatable; default the authors' six)");
  const auto words = args.get("words", "word-filter: the word list file (one word per line)");
  if (args.help_requested()) return std::nullopt;
  auto only_for = [&](bool given, const char* key, const char* method) {
    if (given && m.kind != method) {
      throw std::invalid_argument(
          fmt::format("--{} belongs to --method {}, not --method {}", key, method, m.kind));
    }
  };
  only_for(expert.has_value(), "expert", "dexperts");
  only_for(anti.has_value(), "anti-expert", "dexperts");
  only_for(alpha.has_value(), "alpha", "dexperts");
  only_for(filter_p.has_value(), "filter-p", "dexperts");
  only_for(lambda.has_value(), "lambda", "self-debias");
  only_for(!m.prefix_ids.empty(), "debias-prefix-ids", "self-debias");
  only_for(words.has_value(), "words", "word-filter");
  if (expert) m.expert = *expert;
  if (anti) m.anti_expert = *anti;
  m.alpha = alpha ? args.get_double("alpha", m.alpha) : m.alpha;
  m.filter_p = args.get_double("filter-p", default_filter_p);
  m.lambda = args.get_double("lambda", m.lambda);
  if (words) m.words = *words;
  check_decoding_method(m, "--method");
  return m;
}

}  // namespace destein::app
