# Sourced by scripts/build.sh and scripts/sanitize.sh: the CMake generator and compiler
# launcher every build folder of this checkout is configured with. Sets `generator` and
# `launcher` (arrays of cmake arguments); expects `root` (the checkout).
generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi
launcher=()
if command -v ccache >/dev/null; then
  # PCH-friendly ccache settings; a rebuild in another checkout of the tree hits the cache.
  export CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
  export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$(dirname "$root")}"
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi
