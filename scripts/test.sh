#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, runs the whole test suite.
# DESTEIN_SANITIZE_TESTS=base (what .ci/run sets) or =all then also runs scripts/sanitize.sh
# (ASan + UBSan build in build-sanitize/; base: the LibTorch-free layer's tests only, all:
# the whole suite; docs/testing.md gives the costs).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh
bash scripts/check_format.sh
bash scripts/build.sh
ctest --test-dir build --output-on-failure -j "${DESTEIN_TEST_JOBS:-2}"
case "${DESTEIN_SANITIZE_TESTS:-}" in
  base|all) DESTEIN_SANITIZE_SUBSET=$DESTEIN_SANITIZE_TESTS DESTEIN_SANITIZE_JOBS=${DESTEIN_BUILD_JOBS:-2} \
              bash scripts/sanitize.sh ;;
  "") ;;
  *) echo "test.sh: DESTEIN_SANITIZE_TESTS must be base or all, found '$DESTEIN_SANITIZE_TESTS'" >&2; exit 2 ;;
esac
