# Sourced by the run scripts (not by tests or CI). OpenBLAS 0.3.21 does not recognise
# recent Xeons and falls back to its generic "Prescott" kernel (~14 GFLOP/s per core here
# instead of ~65 with the AVX-512 kernel). When the environment does not already choose a
# core type, pick the one this CPU supports. A value set by the machine is never changed.
if [ -z "${OPENBLAS_CORETYPE:-}" ] && [ -r /proc/cpuinfo ]; then
  if grep -q -m1 -w avx512f /proc/cpuinfo && grep -q -m1 -w avx512bw /proc/cpuinfo; then
    export OPENBLAS_CORETYPE=SkylakeX
  elif grep -q -m1 -w avx2 /proc/cpuinfo && grep -q -m1 -w fma /proc/cpuinfo; then
    export OPENBLAS_CORETYPE=Haswell
  fi
fi
