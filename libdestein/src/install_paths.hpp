#pragma once
// Where the library's run-time resources are: the SentencePiece module and the default
// scorer weights. An installed library finds them beside itself (lib/destein/,
// share/destein/); a library used from its build tree falls back to the build and
// source paths compiled in.

#include <filesystem>
#include <vector>

namespace destein::detail {

/// The folder holding the shared object this code was linked into (dladdr); empty when
/// it cannot be told.
std::filesystem::path library_directory();

/// `relative` under the installed data folder (share/destein/), found from
/// library_directory(); empty when no such file is there.
std::filesystem::path installed_data_file(const std::filesystem::path& relative);

/// Candidate paths of libdestein_spm.so, most specific first.
std::vector<std::filesystem::path> spm_module_candidates();

}  // namespace destein::detail
