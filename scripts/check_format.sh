#!/usr/bin/env bash
# The format check of the test command: every C++ file of ours (not third_party/) must be
# as clang-format 14 writes it with the committed .clang-format. Fix with
#   git ls-files '*.cpp' '*.hpp' '*.h' '*.cc' | grep -v ^third_party/ | xargs clang-format-14 -i
set -euo pipefail
cd "$(dirname "$0")/.."
formatter=$(command -v clang-format-14 || command -v clang-format || true)
if [ -z "$formatter" ]; then
  echo "check_format: clang-format-14 not found (scripts/setup.sh installs it)" >&2
  exit 2
fi
files=$(git ls-files '*.cpp' '*.hpp' '*.h' '*.cc' | grep -v '^third_party/')
if ! echo "$files" | xargs "$formatter" --dry-run --Werror 2> /tmp/destein-format.$$; then
  grep -m 20 'error:' /tmp/destein-format.$$ >&2 || true
  rm -f /tmp/destein-format.$$
  echo "check_format: files above are not formatted (.clang-format); the fix is in scripts/check_format.sh" >&2
  exit 1
fi
rm -f /tmp/destein-format.$$
echo "check_format: $(echo "$files" | wc -l) files formatted"
