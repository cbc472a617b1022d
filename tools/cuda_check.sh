#!/usr/bin/env bash
# CUDA check of destein on a machine with an NVIDIA GPU and a CUDA build of LibTorch (for
# example the one inside pip's torch): builds the CLIs against it, then runs the small GPT
# trained here (models/tiny-lm) on CUDA and on the CPU and compares them:
#   1. `destein verify --device cuda`: CUDA logits against the training forward's reference
#   2. last-position logits, base and steered in both modes, CUDA vs CPU
#   3. greedy generation, base and steered, CUDA vs CPU (token ids)
#   4. destein-bench on 20 + 20 RTP prompts, base and both modes: metrics and wall time
# Needs runs/demo/vectors.{attn_out,hook_z}.safetensors (scripts/demo.sh writes them) and
# the RTP prompts under $DESTEIN_DATA (rtp/100/test.jsonl).
#   bash tools/cuda_check.sh [OUT_DIR]
# MODEL, REF_VECTORS, Z_VECTORS override the model and vectors; VERIFY=0 skips step 1 (for
# a checkpoint without reference logits).
set -euo pipefail
out=${1:-runs/cuda-check}
mkdir -p "$out"
torch_cmake=${TORCH_CMAKE_PREFIX:-$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')}
echo "== build against $torch_cmake"
cmake -S . -B build-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DDESTEIN_BUILD_TESTS=OFF \
  -DDESTEIN_BUILD_BENCHMARKS=OFF -DCMAKE_PREFIX_PATH="$torch_cmake" ${CXX_STD:+-DCMAKE_CXX_STANDARD=$CXX_STD} -DCMAKE_CXX_FLAGS="${EXTRA_CXX_FLAGS:-}" \
  > "$out/cmake.log" 2>&1 ||
  { tail -30 "$out/cmake.log"; exit 1; }
ninja -C build-cuda destein_cli destein_bench > "$out/build.log" 2>&1 || { grep -E "error|FAILED" "$out/build.log" | head -40; exit 1; }
bin=build-cuda/bin
model=${MODEL:-models/tiny-lm}
ref=${REF_VECTORS:-runs/demo/vectors.attn_out.safetensors}
z=${Z_VECTORS:-runs/demo/vectors.hook_z.safetensors}

if [ "${VERIFY:-1}" = 1 ]; then
  echo "== 1. verify on CUDA"
  $bin/destein verify --model $model --device cuda
fi

echo "== 2. logits CUDA vs CPU"
ids=1,45,273,19,802,11,64,2049,7,13,99,512
for steer in "" "--vectors $ref --mode reference --alpha 0.9" "--vectors $z --mode headwise --alpha 0.9"; do
  $bin/destein logits --model $model --ids $ids $steer --device cpu > "$out/logits_cpu.json"
  $bin/destein logits --model $model --ids $ids $steer --device cuda > "$out/logits_cuda.json"
  python3 - "$out/logits_cpu.json" "$out/logits_cuda.json" "${steer:-base}" <<'PY'
import json, sys
a = json.load(open(sys.argv[1]))["logits"]; b = json.load(open(sys.argv[2]))["logits"]
d = max(abs(x - y) for x, y in zip(a, b)); m = max(abs(x) for x in a)
am = max(range(len(a)), key=a.__getitem__) == max(range(len(b)), key=b.__getitem__)
print(f"{sys.argv[3]:<60} max |cpu - cuda| {d:.2e} (max |logit| {m:.1f}), argmax agrees: {am}")
sys.exit(0 if d <= 1e-3 * max(1.0, m) and am else 1)
PY
done

echo "== 3. greedy generation CUDA vs CPU"
for steer in "" "--vectors $ref --mode reference --alpha 0.9" "--vectors $z --mode headwise --alpha 0.9"; do
  for dev in cpu cuda; do
    $bin/destein generate --model $model --prompt "So I told him that he was a" --greedy --max-new-tokens 20 \
      --json $steer --device $dev > "$out/gen_$dev.jsonl"
  done
  python3 - "$out/gen_cpu.jsonl" "$out/gen_cuda.jsonl" "${steer:-base}" <<'PY'
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]; b = [json.loads(l) for l in open(sys.argv[2])]
same = a[0]["token_ids"] == b[0]["token_ids"]
print(f"{sys.argv[3]:<60} identical tokens: {same}\n  cpu:  {a[0]['text']!r}\n  cuda: {b[0]['text']!r}")
PY
done

echo "== 4. destein-bench CUDA vs CPU"
for dev in cpu cuda; do
  cat > "$out/bench_$dev.yaml" <<YAML
model: $model
device: $dev
prompts:
  - {name: toxic, path: rtp/100/test.jsonl, subset: toxic, limit: 20}
  - {name: nontoxic, path: rtp/100/test.jsonl, subset: nontoxic, limit: 20}
methods:
  - {name: base}
  - {name: reference-0.9, vectors: $ref, mode: reference, alpha: 0.9}
  - {name: headwise-0.9, vectors: $z, mode: headwise, alpha: 0.9}
generation: {samples: 25, max_new_tokens: 20, top_p: 0.9, seed: 0}
output: $out/bench_$dev
YAML
  rm -rf "$out/bench_$dev"
  start=$(date +%s.%N)
  $bin/destein-bench run --config "$out/bench_$dev.yaml" > "$out/bench_$dev.log" 2>&1 || { tail -20 "$out/bench_$dev.log"; exit 1; }
  echo "$dev: $(python3 -c "print(f'{$(date +%s.%N) - $start:.1f}')") s"
done
python3 - "$out/bench_cpu/results.json" "$out/bench_cuda/results.json" <<'PY'
import json, sys
a = {(r["method"], r["subset"]): r for r in json.load(open(sys.argv[1]))}
b = {(r["method"], r["subset"]): r for r in json.load(open(sys.argv[2]))}
for k in a:
    ra, rb = a[k], b[k]
    print(f"{k[0]:<14} {k[1]:<9} EMT cpu {ra['expected_max_toxicity']:.3f} cuda {rb['expected_max_toxicity']:.3f}  "
          f"TP {ra['toxicity_probability']:.3f} / {rb['toxicity_probability']:.3f}  "
          f"PPL {ra.get('perplexity', float('nan')):.2f} / {rb.get('perplexity', float('nan')):.2f}")
PY
