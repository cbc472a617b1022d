// libdestein_spm: the only code that links libsentencepiece (see
// libdestein/src/text/spm_shim_api.h for why it lives alone).
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "text/spm_shim_api.h"

struct dspm_model {
  sentencepiece::SentencePieceProcessor processor;
};

namespace {
void write_error(char* err, size_t err_len, const std::string& message) {
  if (!err || err_len == 0) return;
  size_t n = std::min(err_len - 1, message.size());
  std::memcpy(err, message.data(), n);
  err[n] = '\0';
}
}  // namespace

extern "C" {

int dspm_abi_version(void) { return DSPM_ABI_VERSION; }

dspm_model* dspm_load(const char* path, char* err, size_t err_len) {
  auto* model = new dspm_model();
  auto status = model->processor.Load(path);
  if (!status.ok()) {
    write_error(err, err_len, status.ToString());
    delete model;
    return nullptr;
  }
  return model;
}

void dspm_free(dspm_model* model) { delete model; }

int dspm_encode(const dspm_model* model, const char* text, size_t len, int32_t** ids, size_t* n,
                char* err, size_t err_len) {
  std::vector<int> out;
  auto status = model->processor.Encode(std::string_view(text, len), &out);
  if (!status.ok()) {
    write_error(err, err_len, status.ToString());
    return 1;
  }
  *n = out.size();
  *ids = static_cast<int32_t*>(std::malloc(sizeof(int32_t) * (out.empty() ? 1 : out.size())));
  for (size_t i = 0; i < out.size(); ++i) (*ids)[i] = out[i];
  return 0;
}

int dspm_decode(const dspm_model* model, const int32_t* ids, size_t n, char** text, size_t* len,
                char* err, size_t err_len) {
  std::vector<int> in(ids, ids + n);
  std::string out;
  auto status = model->processor.Decode(in, &out);
  if (!status.ok()) {
    write_error(err, err_len, status.ToString());
    return 1;
  }
  *len = out.size();
  *text = static_cast<char*>(std::malloc(out.size() + 1));
  std::memcpy(*text, out.data(), out.size());
  (*text)[out.size()] = '\0';
  return 0;
}

int dspm_piece_size(const dspm_model* model) { return model->processor.GetPieceSize(); }
int dspm_bos_id(const dspm_model* model) { return model->processor.bos_id(); }
int dspm_eos_id(const dspm_model* model) { return model->processor.eos_id(); }
int dspm_pad_id(const dspm_model* model) { return model->processor.pad_id(); }
int dspm_unk_id(const dspm_model* model) { return model->processor.unk_id(); }

int dspm_is_control(const dspm_model* model, int id) {
  return model->processor.IsControl(id) || model->processor.IsUnused(id) ? 1 : 0;
}

int dspm_id_to_piece(const dspm_model* model, int id, char* buf, size_t buf_len) {
  write_error(buf, buf_len, model->processor.IdToPiece(id));
  return 0;
}

int dspm_train(const char* args, char* err, size_t err_len) {
  // spm_train's --random_seed is a flag of the command-line tool, not a TrainerSpec field:
  // take it out here and seed the library's generator, as spm_train does.
  std::string spec(args);
  const std::string flag = "--random_seed=";
  if (size_t at = spec.find(flag); at != std::string::npos) {
    const size_t end = spec.find(' ', at);
    const std::string value = spec.substr(
        at + flag.size(), end == std::string::npos ? std::string::npos : end - at - flag.size());
    try {
      sentencepiece::SetRandomGeneratorSeed(static_cast<unsigned int>(std::stoul(value)));
    } catch (const std::exception&) {
      write_error(err, err_len,
                  "--random_seed expects a non-negative integer, found '" + value + "'");
      return 1;
    }
    spec.erase(at, end == std::string::npos ? std::string::npos : end - at + 1);
  }
  auto status = sentencepiece::SentencePieceTrainer::Train(spec);
  if (!status.ok()) {
    write_error(err, err_len, status.ToString());
    return 1;
  }
  return 0;
}

void dspm_free_buffer(void* buffer) { std::free(buffer); }

}  // extern "C"
