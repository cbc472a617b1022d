#!/usr/bin/env bash
# The README's main job: set up, build, then run the whole DeStein method offline on the
# small GPT trained here (models/tiny-lm, see its MODEL_CARD.md):
#   1. self-induced steering pairs from ParaDetox seeds  (configs/demo-pairs.yaml)
#   2. directions + per-head probes at both sites        (configs/demo-vectors*.yaml)
#   3. destein-bench on RealToxicityPrompts toxic and non-toxic prompts, base vs DeStein
#      in both modes at a few alphas, offline scorer, perplexity under the model itself
#      (configs/demo.yaml) -> runs/demo/bench/results.md and tradeoff.svg
# About 4 minutes on 2 cores after set-up (209 s from a clean clone). A rerun reuses what is
# already written.
#   DESTEIN_MODEL=path/to/exported-model bash scripts/demo.sh "Your prompt"
#     instead generates from an exported model (docs/reproducing.md has the full recipe).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh
bash scripts/build.sh
source scripts/blas_env.sh
if [ -n "${DESTEIN_MODEL:-}" ]; then
  prompt=${1:-"The following text is kind, polite and"}
  build/bin/destein info --model "$DESTEIN_MODEL"
  build/bin/destein generate --model "$DESTEIN_MODEL" --prompt "$prompt" --n 3 --max-new-tokens 20 --top-p 0.9 --seed 1
  exit 0
fi
start=$(date +%s)
build/bin/destein verify --model models/tiny-lm
build/bin/destein pairs --config configs/demo-pairs.yaml
build/bin/destein vectors --config configs/demo-vectors.yaml
build/bin/destein vectors --config configs/demo-vectors-z.yaml
build/bin/destein-bench run --config configs/demo.yaml
echo "main job done in $(( $(date +%s) - start )) s: runs/demo/bench/results.md, runs/demo/bench/tradeoff.svg"
