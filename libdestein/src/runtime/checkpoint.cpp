#include "destein/runtime/checkpoint.hpp"
#include "io/file_io.hpp"

#include <ATen/ATen.h>
#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/import_read.h>
#include <torch/script.h>

#include <fstream>
#include <sstream>

#include "check.hpp"
#include "io/safetensors.hpp"

namespace destein {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string first_line(const std::string& text) {
  auto nl = text.find('\n');
  return nl == std::string::npos ? text : text.substr(0, nl);
}

json parse_json_text(const std::string& text, const std::string& where) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw std::runtime_error(fmt::format("{}: malformed JSON: {}", where, e.what()));
  }
}

json read_json_file(const fs::path& path) {
  std::ifstream in(path);
  DESTEIN_CHECK_IO(in.good(), "{}: cannot open", path.string());
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_json_text(ss.str(), path.string());
}

ReferenceLogits parse_reference(const json& j, const std::string& where) {
  ReferenceLogits ref;
  try {
    ref.source = j.value("source", "");
    for (const auto& c : j.at("cases")) {
      ref.inputs.push_back(c.at("input_ids").get<std::vector<int64_t>>());
      ref.last_logits.push_back(c.at("last_logits").get<std::vector<float>>());
    }
  } catch (const json::exception& e) {
    throw std::runtime_error(
        fmt::format("{}: reference.json must be {{\"source\", \"cases\": [{{\"input_ids\", "
                    "\"last_logits\"}}]}}: {}",
                    where, e.what()));
  }
  return ref;
}

Checkpoint load_archive(const fs::path& path) {
  const std::string file = path.string();
  torch::jit::ExtraFilesMap extra{{"config.json", ""}, {"reference.json", ""}};
  torch::jit::Module module;
  try {
    module = torch::jit::load(file, c10::Device(c10::kCPU), extra);
  } catch (const c10::Error& e) {
    throw std::runtime_error(fmt::format("{}: not a TorchScript archive, or a truncated one ({})",
                                         file, first_line(e.what_without_backtrace())));
  } catch (const std::exception& e) {
    throw std::runtime_error(
        fmt::format("{}: cannot read TorchScript archive: {}", file, first_line(e.what())));
  }
  DESTEIN_CHECK_IO(!extra["config.json"].empty(),
                   "{}: the archive has no extra file 'config.json' (export it with "
                   "tools/export_checkpoint.py, or pass _extra_files={{'config.json': ...}} "
                   "to torch.jit.save)",
                   file);
  Checkpoint ckpt;
  ckpt.source = path;
  ckpt.config =
      ModelConfig::from_hf_json(parse_json_text(extra["config.json"], file + ":config.json"), file);
  for (const auto& p : module.named_parameters(/*recurse=*/true)) {
    ckpt.tensors.emplace(p.name, p.value.detach());
  }
  for (const auto& b : module.named_buffers(/*recurse=*/true)) {
    ckpt.tensors.emplace(b.name, b.value.detach());
  }
  if (!extra["reference.json"].empty()) {
    ckpt.reference =
        parse_reference(parse_json_text(extra["reference.json"], file + ":reference.json"),
                        file + ":reference.json");
  }
  return ckpt;
}

// A state dict written by torch.save in its zip format (PyTorch >= 1.6, what Hugging Face
// writes as pytorch_model*.bin): data.pkl holds a dict of name -> tensor, whose storages
// are the records data/<key>. LibTorch's own unpickler reads it; nothing runs Python code.
std::map<std::string, at::Tensor> read_torch_zip_state_dict(const fs::path& path) {
  const std::string file = path.string();
  {
    std::ifstream in(path, std::ios::binary);
    DESTEIN_CHECK_IO(in.good(), "{}: cannot open the file", file);
    char magic[4] = {0, 0, 0, 0};
    in.read(magic, 4);
    DESTEIN_CHECK_IO(magic[0] == 'P' && magic[1] == 'K' && magic[2] == 3 && magic[3] == 4,
                     "{}: not a zip file; only torch.save's zip format (PyTorch >= 1.6) is read, "
                     "not the legacy pickle format: convert it (docs/checkpoints.md)",
                     file);
  }
  c10::IValue root;
  try {
    caffe2::serialize::PyTorchStreamReader reader(file);
    root = torch::jit::readArchiveAndTensors("data", "", "", c10::nullopt, c10::nullopt,
                                             c10::Device(c10::kCPU), reader);
  } catch (const c10::Error& e) {
    const std::string what = first_line(e.what_without_backtrace());
    // LibTorch's unpickler reads collections.OrderedDict as None (it only expects one in
    // a tensor's backward hooks), so torch.save(model.state_dict()) fails here.
    const bool ordered = what.find("got None") != std::string::npos;
    throw std::runtime_error(fmt::format(
        "{}: cannot read it as a torch.save state dict ({}){}; convert it to safetensors "
        "(docs/checkpoints.md)",
        file, what,
        ordered ? ": it holds a collections.OrderedDict, which LibTorch cannot unpickle; "
                  "re-save it as a plain dict, torch.save(dict(state_dict), path), or"
                : ""));
  }
  DESTEIN_CHECK_IO(root.isGenericDict(),
                   "{}: expected a state dict (a dict of name -> tensor), found {}", file,
                   root.tagKind());
  std::map<std::string, at::Tensor> tensors;
  for (const auto& entry : root.toGenericDict()) {
    DESTEIN_CHECK_IO(entry.key().isString(), "{}: state dict key of type {}, expected a string",
                     file, entry.key().tagKind());
    DESTEIN_CHECK_IO(entry.value().isTensor(),
                     "{}: state dict entry '{}' is a {}, expected a tensor", file,
                     entry.key().toStringRef(), entry.value().tagKind());
    tensors.emplace(entry.key().toStringRef(), entry.value().toTensor().contiguous());
  }
  return tensors;
}

// The shard files named by a Hugging Face index (model.safetensors.index.json or
// pytorch_model.bin.index.json), each once.
std::vector<fs::path> indexed_shards(const fs::path& index_path) {
  json index = read_json_file(index_path);
  DESTEIN_CHECK_IO(index.contains("weight_map") && index["weight_map"].is_object(),
                   "{}: expected a 'weight_map' object", index_path.string());
  std::set<std::string> files;
  for (const auto& [name, shard] : index["weight_map"].items()) {
    DESTEIN_CHECK_IO(shard.is_string(), "{}: weight_map['{}'] must be a file name, found {}",
                     index_path.string(), name, shard.dump());
    files.insert(shard.get<std::string>());
  }
  std::vector<fs::path> shards;
  for (const auto& f : files) shards.push_back(index_path.parent_path() / f);
  return shards;
}

Checkpoint load_folder(const fs::path& dir) {
  if (fs::exists(dir / "model.pt")) return load_archive(dir / "model.pt");
  const fs::path config_path = dir / "config.json";
  DESTEIN_CHECK_IO(fs::exists(config_path),
                   "{}: model folder has no config.json (expected config.json with "
                   "model.safetensors or model.safetensors.index.json, or a model.pt archive)",
                   dir.string());
  Checkpoint ckpt;
  ckpt.source = dir;
  ckpt.config = ModelConfig::from_hf_json(read_json_file(config_path), config_path.string());

  // Safetensors first, as Hugging Face prefers them; then torch.save zip shards.
  std::vector<fs::path> shards;
  bool pickled = false;
  if (fs::exists(dir / "model.safetensors")) {
    shards.push_back(dir / "model.safetensors");
  } else if (fs::exists(dir / "model.safetensors.index.json")) {
    shards = indexed_shards(dir / "model.safetensors.index.json");
  } else if (fs::exists(dir / "pytorch_model.bin")) {
    shards.push_back(dir / "pytorch_model.bin");
    pickled = true;
  } else if (fs::exists(dir / "pytorch_model.bin.index.json")) {
    shards = indexed_shards(dir / "pytorch_model.bin.index.json");
    pickled = true;
  } else {
    throw std::runtime_error(
        fmt::format("{}: no model.safetensors, model.safetensors.index.json, pytorch_model.bin, "
                    "pytorch_model.bin.index.json or model.pt in the folder",
                    dir.string()));
  }
  for (const auto& shard : shards) {
    DESTEIN_CHECK_IO(fs::exists(shard), "{}: shard listed in the index is missing", shard.string());
    if (pickled) {
      for (auto& [name, t] : read_torch_zip_state_dict(shard))
        ckpt.tensors.emplace(name, std::move(t));
    } else {
      auto file = read_safetensors(shard);
      for (auto& [name, t] : file.tensors) ckpt.tensors.emplace(name, std::move(t));
    }
  }
  if (fs::exists(dir / "reference.json")) {
    ckpt.reference =
        parse_reference(read_json_file(dir / "reference.json"), (dir / "reference.json").string());
  }
  return ckpt;
}

// A tree of the dotted parameter names, so that the archive's modules nest the way the
// Hugging Face model's do (transformer -> h -> 0 -> attn -> c_attn -> weight).
struct NameTree {
  std::map<std::string, at::Tensor> leaves;
  std::map<std::string, NameTree> children;
};

torch::jit::Module build_module(const NameTree& tree, const std::string& qualified, int& counter) {
  torch::jit::Module module(c10::QualifiedName(fmt::format("__torch__.destein.M{}", counter++)));
  for (const auto& [name, child] : tree.children) {
    module.register_module(name, build_module(child, qualified + "." + name, counter));
  }
  for (const auto& [name, tensor] : tree.leaves) {
    module.register_parameter(name, tensor.detach().to(at::kCPU).contiguous(), /*is_buffer=*/false);
  }
  return module;
}

}  // namespace

Checkpoint load_checkpoint(const fs::path& path) {
  DESTEIN_CHECK_IO(fs::exists(path), "{}: no such file or folder", path.string());
  if (fs::is_directory(path)) return load_folder(path);
  return load_archive(path);
}

void save_checkpoint(const fs::path& path, const json& hf_config,
                     const std::map<std::string, at::Tensor>& tensors,
                     const std::optional<ReferenceLogits>& reference) {
  NameTree root;
  for (const auto& [name, tensor] : tensors) {
    NameTree* node = &root;
    size_t start = 0;
    while (true) {
      size_t dot = name.find('.', start);
      if (dot == std::string::npos) {
        std::string leaf = name.substr(start);
        DESTEIN_CHECK_ARG(!leaf.empty() && !node->children.count(leaf),
                          "save_checkpoint: parameter name '{}' clashes with a module name", name);
        node->leaves[leaf] = tensor;
        break;
      }
      node = &node->children[name.substr(start, dot - start)];
      start = dot + 1;
    }
  }
  int counter = 0;
  torch::jit::Module module = build_module(root, "", counter);
  torch::jit::ExtraFilesMap extra{{"config.json", hf_config.dump(2)}};
  if (reference) {
    json cases = json::array();
    for (size_t i = 0; i < reference->inputs.size(); ++i) {
      cases.push_back(
          {{"input_ids", reference->inputs[i]}, {"last_logits", reference->last_logits[i]}});
    }
    extra["reference.json"] = json{{"source", reference->source}, {"cases", cases}}.dump();
  }
  write_file_atomically(path, [&](const fs::path& tmp) {
    try {
      module.save(tmp.string(), extra);
    } catch (const c10::Error& e) {
      throw std::runtime_error(fmt::format("{}: cannot write archive: {}", path.string(),
                                           first_line(e.what_without_backtrace())));
    }
  });
}

}  // namespace destein
