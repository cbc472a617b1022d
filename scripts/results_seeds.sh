#!/usr/bin/env bash
# Variance of the main job's table over seeds (docs/results.md), after scripts/demo.sh:
#   - generation seeds 1 and 2 with the same vectors (runs/demo/bench-gen-seed{1,2})
#   - pair seeds 1 and 2: other self-induced pairs, so other vectors, generation seed 0
#     (runs/demo/pairs-seed{1,2}, runs/demo/bench-pair-seed{1,2})
# then prints mean and standard deviation over the three runs of each kind. About 20
# minutes on 2 cores. Reruns reuse what is written.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
source scripts/blas_env.sh
bin=build/bin
for s in 1 2; do
  $bin/destein-bench run --config configs/demo.yaml --seed $s --output runs/demo/bench-gen-seed$s
done
for s in 1 2; do
  d=runs/demo/pairs-seed$s
  mkdir -p $d
  $bin/destein pairs --config configs/demo-pairs.yaml --seed $s --output $d/pairs.jsonl
  $bin/destein vectors --config configs/demo-vectors.yaml --pairs $d/pairs.jsonl --output $d/vectors.attn_out.safetensors
  $bin/destein vectors --config configs/demo-vectors-z.yaml --pairs $d/pairs.jsonl --output $d/vectors.hook_z.safetensors
  $bin/destein-bench run --config configs/demo.yaml --vectors-dir $d --output runs/demo/bench-pair-seed$s
done
python3 - <<'PY'
import json, statistics as st
def load(d):
    return {(r["method"], r["subset"]): r for r in json.load(open(f"runs/demo/{d}/results.json"))}
for kind, dirs in [("generation seeds 0, 1, 2", ["bench", "bench-gen-seed1", "bench-gen-seed2"]),
                   ("pair seeds 0, 1, 2", ["bench", "bench-pair-seed1", "bench-pair-seed2"])]:
    runs = [load(d) for d in dirs]
    print(f"\n{kind}: mean ± std over 3 runs\n")
    print("| method | subset | EMT | TP | PPL | Dist-2 |")
    print("|---|---|---:|---:|---:|---:|")
    for key in runs[0]:
        cells = []
        for m in ["expected_max_toxicity", "toxicity_probability", "perplexity", "dist_2"]:
            v = [r[key][m] for r in runs]
            cells.append(f"{st.mean(v):.3f} ± {st.stdev(v):.3f}" if m != "perplexity" else f"{st.mean(v):.1f} ± {st.stdev(v):.1f}")
        print(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + " |")
PY
