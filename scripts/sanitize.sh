#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer build of the library, apps and tests in
# build-sanitize/ (RelWithDebInfo, no benchmarks), then the whole ctest suite under them.
#
#   bash scripts/sanitize.sh            # build and run every test
#   bash scripts/sanitize.sh -R steer   # extra arguments go to ctest (a subset)
#   DESTEIN_SANITIZE_SUBSET=base bash scripts/sanitize.sh
#       # only the LibTorch-free layer: builds destein_base_tests (and the SentencePiece
#       # module) and runs it; what CI runs (docs/testing.md gives the cost)
#
# DESTEIN_SANITIZE_JOBS (default 1) sets the build's parallel jobs: each sanitized LibTorch
# translation unit needs more memory than a normal one. SentencePiece is loaded into a link
# namespace of its own in this build (dlmopen; libdestein/src/text/spm_library.cpp): the
# sanitizer runtime refuses the RTLD_DEEPBIND that normally keeps its protobuf apart.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
source "$root/scripts/cmake_env.sh"
if [ ! -f build-sanitize/CMakeCache.txt ]; then
  cmake -S . -B build-sanitize "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DDESTEIN_SANITIZE=address,undefined -DDESTEIN_BUILD_BENCHMARKS=OFF "${launcher[@]}"
fi
subset=${DESTEIN_SANITIZE_SUBSET:-all}
targets=()
[ "$subset" = base ] && targets=(--target destein_base_tests destein_spm)
start=$(date +%s)
cmake --build build-sanitize -j "${DESTEIN_SANITIZE_JOBS:-1}" "${targets[@]}"
echo "sanitize: build ($subset) took $(( $(date +%s) - start )) s"
[ "${DESTEIN_SANITIZE_BUILD_ONLY:-0}" = 1 ] && exit 0
# halt_on_error: the first report fails the test. LibTorch's own allocations are not
# instrumented; leak detection covers what our code allocates (suppressions for
# third-party start-up allocations live in scripts/sanitize.supp).
export ASAN_OPTIONS="${ASAN_OPTIONS:-halt_on_error=1:detect_leaks=1:abort_on_error=0:detect_odr_violation=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
# Open MPI unloads its components at MPI_Finalize, before the leak check: kept loaded, their
# allocations can be named (and suppressed) by module.
export OMPI_MCA_mca_base_component_disable_dlclose=1
if [ -f scripts/sanitize.supp ]; then
  export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$root/scripts/sanitize.supp:print_suppressions=0}"
fi
start=$(date +%s)
if [ "$subset" = base ]; then
  bash tests/fixtures/make_fixtures.sh build-sanitize/tests/fixtures
  build-sanitize/tests/destein_base_tests "$@"
elif [ $# -gt 0 ]; then
  ctest --test-dir build-sanitize --output-on-failure -j "${DESTEIN_TEST_JOBS:-2}" "$@"
else
  # The [mpi] tests run apart, with leak detection off in their ranks: Open MPI's own
  # allocations (vasprintf in its startup, plugins whose stacks the fast unwinder cannot
  # follow) are reported as leaks that no suppression can match. ASan's memory-error and
  # UBSan's checks stay on there; the code those tests run is also run by the one-process
  # tests, with leak detection.
  mpi=$(build-sanitize/tests/destein_tests "[mpi]" --list-test-names-only | sed '/^$/d' \
        | sed 's/[][().*+?^$|\\]/\\&/g' | paste -sd'|' -)
  status=0
  ctest --test-dir build-sanitize --output-on-failure -j "${DESTEIN_TEST_JOBS:-2}" ${mpi:+-E "^($mpi)\$"} || status=1
  if [ -n "$mpi" ]; then
    ASAN_OPTIONS="$ASAN_OPTIONS:detect_leaks=0" \
      ctest --test-dir build-sanitize --output-on-failure -j "${DESTEIN_TEST_JOBS:-2}" -R "^($mpi)\$" || status=1
  fi
  [ $status = 0 ] || { echo "sanitize: tests failed" >&2; exit 1; }
fi
echo "sanitize: tests ($subset) took $(( $(date +%s) - start )) s"
