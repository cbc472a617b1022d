#!/usr/bin/env bash
# Configures and builds destein into build/ (Release). Extra arguments go to cmake.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
source "$root/scripts/cmake_env.sh"
if [ ! -f build/CMakeCache.txt ]; then
  cmake -S . -B build "${generator[@]}" -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" "$@"
fi
# 2 jobs: each LibTorch translation unit needs ~1-2 GB and this machine has 2 cores.
cmake --build build -j "${DESTEIN_BUILD_JOBS:-2}"
