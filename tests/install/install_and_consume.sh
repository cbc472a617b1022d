#!/usr/bin/env bash
# Installs the build into a temporary prefix, builds an out-of-tree consumer against it
# with find_package(destein CONFIG), runs it on the tiny model, and checks that the
# installed library found its SentencePiece module and scorer weights in the prefix.
# Usage: install_and_consume.sh BUILD_DIR SOURCE_DIR WORK_DIR
set -euo pipefail
build=$1 source=$2 work=$3
rm -rf "$work"
prefix="$work/prefix"
cmake --install "$build" --prefix "$prefix" > "$work.install.log" 2>&1 || { cat "$work.install.log"; exit 1; }
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S "$source/tests/install/consumer" -B "$work/consumer" "${generator[@]}" \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" > "$work.configure.log" 2>&1 \
  || { cat "$work.configure.log"; exit 1; }
cmake --build "$work/consumer" > "$work.build.log" 2>&1 || { cat "$work.build.log"; exit 1; }
# The model is copied out of the source tree, so nothing points back into it.
cp -r "$source/models/tiny-lm" "$work/model"
out=$(env -u DESTEIN_SPM_LIBRARY -u DESTEIN_SCORER "$work/consumer/consumer" "$work/model" "The weather today")
echo "$out"
grep -q "^text: ." <<<"$out" || { echo "FAIL: no generated text"; exit 1; }
real_prefix=$(cd "$prefix" && pwd -P)
grep -q "^sentencepiece_module: $real_prefix/.*/destein/libdestein_spm.so$" <<<"$out" \
  || { echo "FAIL: SentencePiece module not taken from the install prefix $real_prefix"; exit 1; }
grep -q "^scorer: $real_prefix/share/destein/scorer/perspective-linear-v2.safetensors$" <<<"$out" \
  || { echo "FAIL: scorer weights not taken from the install prefix $real_prefix"; exit 1; }
for f in toxicity-linear-v1.safetensors MODEL_CARD.md MODEL_CARD-v1.md; do
  [ -f "$real_prefix/share/destein/scorer/$f" ] || { echo "FAIL: $f not installed"; exit 1; }
done
# The installed include tree is the documented public API and nothing else: exactly the
# headers of docs/architecture.md's list, each reachable from the umbrella header (the
# consumer includes only the umbrella, so a public header that includes an uninstalled
# one fails its build above).
installed=$(cd "$real_prefix/include" && find destein -name '*.hpp' | sort)
documented=$(grep -o '^| `destein/[a-z_/]*\.hpp`' "$source/docs/architecture.md" | sed 's/^| `//; s/`$//' | sort)
[ -n "$documented" ] || { echo "FAIL: docs/architecture.md lists no public header"; exit 1; }
if [ "$installed" != "$documented" ]; then
  echo "FAIL: installed headers differ from docs/architecture.md's public API:"
  diff <(echo "$installed") <(echo "$documented") || true
  exit 1
fi
for h in $installed; do
  [ "$h" = destein/destein.hpp ] && continue
  grep -q "^#include \"$h\"$" "$real_prefix/include/destein/destein.hpp" \
    || { echo "FAIL: the umbrella header does not include $h"; exit 1; }
done
echo "install + consumer: OK ($(echo "$installed" | wc -l) public headers)"
