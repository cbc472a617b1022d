#include "text/spm_library.hpp"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <string>
#include <vector>

#include "check.hpp"
#include "install_paths.hpp"

namespace destein::detail {
namespace {

std::vector<std::string> candidate_paths() {
  std::vector<std::string> paths;
  for (const auto& p : spm_module_candidates()) paths.push_back(p.string());
  return paths;
}

template <typename F>
void bind(void* handle, const char* name, F& target, const std::string& path) {
  target = reinterpret_cast<F>(dlsym(handle, name));
  DESTEIN_CHECK_IO(target != nullptr, "{}: symbol {} missing (a stale libdestein_spm.so?)", path,
                   name);
}

#if defined(__SANITIZE_ADDRESS__)
#define DESTEIN_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define DESTEIN_ASAN 1
#endif
#endif

// RTLD_DEEPBIND keeps the module's protobuf apart from LibTorch's (spm_shim_api.h). The
// AddressSanitizer runtime refuses RTLD_DEEPBIND, so a sanitizer build loads the module
// into a link namespace of its own (dlmopen LM_ID_NEWLM) instead: there it sees only its
// own libraries, whatever the process holds, LibTorch's protobuf included. The module is
// built without sanitizer instrumentation for this (libdestein/CMakeLists.txt): a second
// namespace cannot host a second copy of the sanitizer runtime. Nothing but C types and
// buffers the module itself frees crosses the boundary (spm_shim_api.h).
void* open_module(const std::string& path) {
#ifdef DESTEIN_ASAN
  return dlmopen(LM_ID_NEWLM, path.c_str(), RTLD_NOW | RTLD_LOCAL);
#else
  return dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
#endif
}

SpmLibrary load_library() {
  std::string tried;
  for (const auto& path : candidate_paths()) {
    if (!std::filesystem::exists(path)) {
      tried += "\n  " + path + " (absent)";
      continue;
    }
    void* handle = open_module(path);
    if (!handle) {
      tried += "\n  " + path + " (" + dlerror() + ")";
      continue;
    }
    auto version = reinterpret_cast<decltype(&dspm_abi_version)>(dlsym(handle, "dspm_abi_version"));
    DESTEIN_CHECK_IO(version && version() == DSPM_ABI_VERSION,
                     "{}: wrong libdestein_spm ABI version (rebuild destein)", path);
    SpmLibrary lib{};
    bind(handle, "dspm_load", lib.load, path);
    bind(handle, "dspm_free", lib.free_model, path);
    bind(handle, "dspm_encode", lib.encode, path);
    bind(handle, "dspm_decode", lib.decode, path);
    bind(handle, "dspm_piece_size", lib.piece_size, path);
    bind(handle, "dspm_bos_id", lib.bos_id, path);
    bind(handle, "dspm_eos_id", lib.eos_id, path);
    bind(handle, "dspm_pad_id", lib.pad_id, path);
    bind(handle, "dspm_unk_id", lib.unk_id, path);
    bind(handle, "dspm_is_control", lib.is_control, path);
    bind(handle, "dspm_id_to_piece", lib.id_to_piece, path);
    bind(handle, "dspm_train", lib.train, path);
    bind(handle, "dspm_free_buffer", lib.free_buffer, path);
    lib.path = path;
    return lib;
  }
  throw std::runtime_error(
      "cannot load libdestein_spm.so, destein's SentencePiece wrapper; tried:" + tried +
      "\nset DESTEIN_SPM_LIBRARY to its path");
}

}  // namespace

const SpmLibrary& spm_library() {
  static std::once_flag once;
  static SpmLibrary lib;
  static std::string error;
  std::call_once(once, [] {
    try {
      lib = load_library();
    } catch (const std::exception& e) {
      error = e.what();
    }
  });
  DESTEIN_CHECK_IO(error.empty(), "{}", error);
  return lib;
}

}  // namespace destein::detail

namespace destein {
std::filesystem::path sentencepiece_module_path() { return detail::spm_library().path; }
}  // namespace destein
