// JSON Lines: the generic reader (strict and skipping), the pairs reader and the
// prompted-generations reader on arbitrary bytes. Every failure must be a
// std::exception (with file:line), never a crash, a hang or a sanitizer report.
#include <exception>

#include "destein/eval/metrics.hpp"
#include "destein/steer/pairs.hpp"
#include "fuzz_support.hpp"
#include "io/jsonl.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = destein::fuzz::write_input(data, size, ".jsonl");
  for (bool skip : {false, true}) {
    try {
      destein::JsonlOptions o;
      o.skip_malformed = skip;
      destein::JsonlReader in(path, o);
      nlohmann::json value;
      while (in.next(value)) (void)in.where();
    } catch (const std::exception&) {
    }
    try {
      int64_t malformed = 0;
      (void)destein::read_generations_jsonl(path, skip, &malformed);
    } catch (const std::exception&) {
    }
  }
  try {
    auto pairs = destein::load_pairs_jsonl(path);
    (void)destein::pair_set_hash(pairs);
    (void)destein::pair_groups_by_toxic_text(pairs);
    (void)destein::deduplicate_pairs(pairs);
  } catch (const std::exception&) {
  }
  return 0;
}
