#!/usr/bin/env bash
# Side-by-side forward timings (one thread unless THREADS says otherwise): gddcm with the direct convolution, gddcm with
# im2col + GEMM (GDDCM_NN_DIRECT_CONV=0), gddcm without its process settings
# (GDDCM_BENCH_PLAIN=1), and PyTorch on the same shapes, alternated for ROUNDS rounds.
#
#   tools/ab_forward.sh [NET (ddpm-cifar10|bundled|edm-ddpmpp)] [BATCHES] [ITERS] [ROUNDS]
#
# Set AB_VARIANTS=0 to time only gddcm as built and PyTorch, THREADS=2 for two threads on each side.
#
# Needs `cargo bench --bench unet_forward --no-run` first; PyTorch from $PYTHON (default
# venv/bin/python, see tools/bench_torch.py).
set -euo pipefail
NET=${1:-ddpm-cifar10}
BATCHES=${2:-1,8}
ITERS=${3:-4}
ROUNDS=${4:-2}
PYTHON=${PYTHON:-venv/bin/python}
B=$(ls -t target/release/deps/unet_forward-* | grep -v '\.d$' | head -1)
export GDDCM_BENCH_NET=$NET GDDCM_BENCH_BATCHES=$BATCHES GDDCM_BENCH_ITERS=$ITERS RAYON_NUM_THREADS=${THREADS:-1}
T=${THREADS:-1}
for ((r = 1; r <= ROUNDS; r++)); do
  echo "== round $r: gddcm"
  "$B" | grep -E "batch"
  if [ "${AB_VARIANTS:-1}" != 0 ]; then
    echo "== round $r: gddcm, im2col + GEMM"
    GDDCM_NN_DIRECT_CONV=0 "$B" | grep -E "batch"
    echo "== round $r: gddcm, plain process"
    GDDCM_BENCH_PLAIN=1 "$B" | grep -E "batch"
  fi
  echo "== round $r: PyTorch"
  if [ "$NET" = bundled ]; then
    "$PYTHON" tools/bench_torch.py "$ITERS" "$T" "$BATCHES" bundled | grep -E "batch"
  elif [ "$NET" = edm-ddpmpp ]; then
    "$PYTHON" tools/songunet_torch.py bench "$ITERS" "$T" "$BATCHES" | grep -E "batch"
  else
    "$PYTHON" tools/bench_torch.py "$ITERS" "$T" "$BATCHES" | grep -E "batch"
  fi
done
