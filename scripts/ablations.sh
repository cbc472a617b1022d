#!/usr/bin/env bash
# DeStein's ablations on the small model (configs/ablation-tiny.yaml; docs/results.md
# "Ablations"): after the main job (scripts/demo.sh; its pairs and vectors are reused), the
# ablations' vectors, then the bench. A rerun reuses what is already written.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
source scripts/blas_env.sh
if [ ! -f runs/demo/pairs.jsonl ] || [ ! -f runs/demo/vectors.hook_z.safetensors ] ||
   [ ! -f runs/demo/vectors.attn_out.safetensors ]; then
  echo "ablations.sh: run the main job first (bash scripts/demo.sh): it writes runs/demo/" >&2
  exit 2
fi
mkdir -p runs/ablation
vectors() {  # OUTPUT, then extra flags for destein vectors
  local out=$1
  shift
  [ -f "$out" ] || build/bin/destein vectors --config configs/demo-vectors-z.yaml --output "$out" "$@"
}
# The raw ParaDetox pairs, as many as the self-induced ones.
n=$(grep -c . runs/demo/pairs.jsonl)
vectors runs/ablation/vectors.hook_z.paradetox.safetensors --pairs paradetox/paradetox.tsv --num-pairs "$n"
vectors runs/ablation/vectors.hook_z.uniform.safetensors --no-probes
for k in 10 25 50; do
  vectors runs/ablation/vectors.hook_z.$k.safetensors --num-pairs "$k"
done
build/bin/destein-bench run --config configs/ablation-tiny.yaml
echo "ablations done: runs/ablation/bench/results.md"
