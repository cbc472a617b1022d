// `destein tokenize --tokenizer PATH [--add-special-tokens] [--decode]`: text to ids and
// back as a filter, one JSON value per line, so that destein's tokenizers can be checked
// against any other implementation from a shell.
#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "commands.hpp"
#include "destein/text/tokenizer.hpp"
#include "text/hf_tokenizer.hpp"

namespace destein::app {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// A tokenizer.json (named, or in the folder) gets the Hugging Face pipeline, as the
// library's fast tokenizers read it; anything else (a SentencePiece model, GPT-2's
// vocabulary files) what load_tokenizer finds.
struct Loaded {
  std::unique_ptr<Tokenizer> any;
  const HfTokenizer* hf = nullptr;
};

Loaded load(const fs::path& path) {
  std::error_code ec;
  fs::path json_file;
  if (fs::is_directory(path, ec)) {
    if (fs::is_regular_file(path / "tokenizer.json", ec)) json_file = path / "tokenizer.json";
  } else if (path.extension() == ".json" && path.filename() != "vocab.json" &&
             path.filename() != "encoder.json") {
    json_file = path;
  }
  Loaded loaded;
  if (!json_file.empty()) {
    auto hf = load_hf_tokenizer(json_file);
    loaded.hf = hf.get();
    loaded.any = std::move(hf);
  } else {
    loaded.any = load_tokenizer(path);
  }
  return loaded;
}

int run_tokenize(Args& args) {
  const std::string path =
      args.require("tokenizer", "a tokenizer.json, a model folder, or another tokenizer file");
  const bool add_special =
      args.flag("add-special-tokens",
                "add what the post-processor adds (BOS/EOS), as Hugging Face's "
                "encode(text, add_special_tokens=True); default: nothing added");
  const bool decode = args.flag("decode", "read JSON arrays of ids, write JSON strings");
  const bool keep_special =
      args.flag("keep-special-tokens", "with --decode: keep special tokens in the text");
  args.finish();
  const Loaded tokenizer = load(path);

  std::string line;
  for (int64_t line_no = 1; std::getline(std::cin, line); ++line_no) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    json value;
    try {
      value = json::parse(line);
    } catch (const json::parse_error& e) {
      throw std::invalid_argument(
          fmt::format("standard input line {}: not JSON ({})", line_no, e.what()));
    }
    if (decode) {
      if (!value.is_array() || !std::all_of(value.begin(), value.end(),
                                            [](const json& v) { return v.is_number_integer(); })) {
        throw std::invalid_argument(
            fmt::format("standard input line {}: expected a JSON array of token ids, found {}",
                        line_no, line.substr(0, 200)));
      }
      const auto ids = value.get<std::vector<int64_t>>();
      const std::string text = tokenizer.hf != nullptr ? tokenizer.hf->decode(ids, !keep_special)
                                                       : tokenizer.any->decode(ids);
      // A byte-level decode can end inside a character; its bytes become U+FFFD in JSON.
      std::cout << json(text).dump(-1, ' ', false, json::error_handler_t::replace) << '\n';
    } else {
      if (!value.is_string()) {
        throw std::invalid_argument(
            fmt::format("standard input line {}: expected a JSON string, found {}", line_no,
                        line.substr(0, 200)));
      }
      const std::string text = value.get<std::string>();
      std::vector<int64_t> ids;
      if (tokenizer.hf != nullptr) {
        ids = add_special ? tokenizer.hf->encode_with_special_tokens(text)
                          : tokenizer.hf->encode(text);
      } else {
        ids = add_special ? tokenizer.any->encode_prompt(text) : tokenizer.any->encode(text);
      }
      std::cout << json(ids).dump() << '\n';
    }
  }
  std::cout.flush();
  return 0;
}

}  // namespace

DESTEIN_COMMAND(
    tokenize_cmd, "tokenize",
    "text to token ids (one JSON string per input line, one array per output line), or back with "
    "--decode (--tokenizer PATH [--add-special-tokens])",
    run_tokenize);

}  // namespace destein::app
