// Perspective: the response body of comments:analyze and the score cache file, both on
// arbitrary bytes. A response must give a score in [0, 1] or none; a cache file must load
// or fail with a std::exception naming file:line, never crash.
#include <cstdlib>
#include <exception>

#include "fuzz_support.hpp"
#include "score/perspective.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  for (const char* attribute : {"TOXICITY", "SEVERE_TOXICITY", "A~1/b"}) {
    const auto score = destein::perspective_summary_score(body, attribute);
    if (score && !(*score >= 0.0 && *score <= 1.0)) __builtin_trap();
  }
  // The cache file is read (and a partial last line cut off) when a scorer is made; no
  // request is sent here.
  const auto path = destein::fuzz::write_input(data, size, ".perspective-cache.jsonl");
  setenv("DESTEIN_FUZZ_PERSPECTIVE_KEY", "fuzz-key", 1);
  try {
    destein::PerspectiveOptions options;
    options.api_key_env = "DESTEIN_FUZZ_PERSPECTIVE_KEY";
    options.endpoint = "http://127.0.0.1:9/";
    options.cache_path = path;
    destein::PerspectiveScorer scorer(options);
  } catch (const std::exception&) {
  }
  return 0;
}
