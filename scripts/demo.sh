#!/usr/bin/env bash
# The README's main job: set up, build, then run the DeStein pipeline.
#   DESTEIN_MODEL=path/to/exported-model  bash scripts/demo.sh "Your prompt"
#     generation from an exported model (info, side-by-side base vs steered is up to you)
# Without DESTEIN_MODEL: the whole pipeline (ParaDetox pairs -> vectors + probes ->
# destein-bench on RTP prompts, base vs both DeStein modes) on the tiny GPT-2-shaped test
# checkpoint (real GPT-2 tokenizer, random weights), until the small GPT trained here lands.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh
bash scripts/build.sh
source scripts/blas_env.sh
prompt=${1:-"The following text is kind, polite and"}
if [ -n "${DESTEIN_MODEL:-}" ]; then
  build/bin/destein info --model "$DESTEIN_MODEL"
  build/bin/destein generate --model "$DESTEIN_MODEL" --prompt "$prompt" --n 3 --max-new-tokens 20 --top-p 0.9 --seed 1
else
  bash tests/fixtures/make_models.sh build/tests/fixtures
  model=build/tests/fixtures/gpt2_bpe
  echo "== no DESTEIN_MODEL given: the pipeline on the tiny random test checkpoint $model"
  build/bin/destein verify --model "$model"
  build/bin/destein vectors --config configs/demo-tiny-vectors.yaml
  build/bin/destein-bench run --config configs/demo-tiny-bench.yaml
fi
