#!/usr/bin/env bash
# The README's main job: set up, build, then generate text from a checkpoint.
#   DESTEIN_MODEL=path/to/exported-model  bash scripts/demo.sh "Your prompt"
# Without DESTEIN_MODEL it uses the tiny GPT-2-shaped test checkpoint (random weights,
# 97-token vocabulary: the output is token ids, not meaningful text) until the small GPT
# trained here lands (see the issues).
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
  model=build/tests/fixtures/gpt2.pt
  echo "== no DESTEIN_MODEL given: using the tiny random test checkpoint $model"
  build/bin/destein info --model "$model"
  build/bin/destein verify --model "$model"
  build/bin/destein generate --model "$model" --ids 5,17,42 --n 3 --max-new-tokens 20 --top-p 0.9 --seed 1
fi
