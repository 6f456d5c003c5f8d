#!/usr/bin/env bash
# Side-by-side forward timings on one thread: gddcm with the direct convolution, gddcm with
# im2col + GEMM (GDDCM_NN_DIRECT_CONV=0), gddcm without its process settings
# (GDDCM_BENCH_PLAIN=1), and PyTorch on the same shapes, alternated for ROUNDS rounds.
#
#   tools/ab_forward.sh [NET (ddpm-cifar10|bundled)] [BATCHES] [ITERS] [ROUNDS]
#
# Needs `cargo bench --bench unet_forward --no-run` first; PyTorch from $PYTHON (default
# /work/venv/bin/python, see tools/bench_torch.py).
set -euo pipefail
NET=${1:-ddpm-cifar10}
BATCHES=${2:-1,8}
ITERS=${3:-4}
ROUNDS=${4:-2}
PYTHON=${PYTHON:-/work/venv/bin/python}
B=$(ls -t target/release/deps/unet_forward-* | grep -v '\.d$' | head -1)
export GDDCM_BENCH_NET=$NET GDDCM_BENCH_BATCHES=$BATCHES GDDCM_BENCH_ITERS=$ITERS RAYON_NUM_THREADS=1
for ((r = 1; r <= ROUNDS; r++)); do
  echo "== round $r: gddcm"
  "$B" | grep -E "batch"
  echo "== round $r: gddcm, im2col + GEMM"
  GDDCM_NN_DIRECT_CONV=0 "$B" | grep -E "batch"
  echo "== round $r: gddcm, plain process"
  GDDCM_BENCH_PLAIN=1 "$B" | grep -E "batch"
  echo "== round $r: PyTorch"
  if [ "$NET" = bundled ]; then
    "$PYTHON" tools/bench_torch.py "$ITERS" 1 "$BATCHES" bundled | grep -E "batch"
  else
    "$PYTHON" tools/bench_torch.py "$ITERS" 1 "$BATCHES" | grep -E "batch"
  fi
done
