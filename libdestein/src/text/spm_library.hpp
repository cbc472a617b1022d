// Private: loads libdestein_spm (the sentencepiece shim) on first use; see
// spm_shim_api.h for why sentencepiece is never linked directly.
#pragma once

#include <string>

#include "text/spm_shim_api.h"

namespace destein::detail {

struct SpmLibrary {
  decltype(&dspm_load) load;
  decltype(&dspm_free) free_model;
  decltype(&dspm_encode) encode;
  decltype(&dspm_decode) decode;
  decltype(&dspm_piece_size) piece_size;
  decltype(&dspm_bos_id) bos_id;
  decltype(&dspm_eos_id) eos_id;
  decltype(&dspm_pad_id) pad_id;
  decltype(&dspm_unk_id) unk_id;
  decltype(&dspm_is_control) is_control;
  decltype(&dspm_id_to_piece) id_to_piece;
  decltype(&dspm_train) train;
  decltype(&dspm_free_buffer) free_buffer;
  std::string path;  ///< the file that was loaded
};

/// The loaded shim. Looks in $DESTEIN_SPM_LIBRARY, then beside the library itself
/// (installed: <libdir>/destein/), then the build-time path (install_paths.hpp). Throws std::runtime_error listing the
/// places tried when none loads.
const SpmLibrary& spm_library();

}  // namespace destein::detail
