// The YAML experiment-file mapping (destein/experiment/config_node.hpp, ConfigNode) on arbitrary
// text: typed reads of the keys destein's configs use, nested children and lists, and
// finish(). Errors must be std::exception with file:line, never a crash.
#include <exception>
#include <string>

#include "experiment/config_node.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    auto root = destein::ConfigNode::load_string(text, "fuzz.yaml");
    (void)root.get<std::string>("model", "");
    (void)root.get<int>("threads", 0);
    (void)root.get<double>("alpha", 0.4);
    (void)root.get<bool>("enabled", true);
    (void)root.get<int64_t>("seed", 0);
    auto gen = root.child("generation");
    (void)gen.get<double>("top_p", 0.9);
    (void)gen.get<int64_t>("samples", 25);
    for (const auto& m : root.list("methods")) {
      (void)m.get<std::string>("name", "");
      (void)m.get<double>("alpha", 0.0);
      (void)m.where("alpha");
    }
    for (const auto& p : root.list("prompts")) (void)p.require<std::string>("path");
    root.finish();
  } catch (const std::exception&) {
  }
  return 0;
}
