#!/bin/bash
# The next device call (issue 6, BENCHMARKS.md), prepared in the fifth session, which lost its
# GPU before it could run: gddcm's own CUDA paths, off by default until this has passed
# (planned cuDNN convolutions, src/nn/kernels/cudnn_conv.rs, GDDCM_CUDNN_PLANS=1; the GroupNorm kernel,
# src/nn/kernels/cuda_kernels.rs, GDDCM_CUDA_GROUP_NORM=1). SPEC 5 G4 with both on, then the forward
# with each switched off in turn (same binary), candle's im2col build and PyTorch, in the same
# call; `gddcm bench` at batch 256. If G4 passes and they are faster, make them the default in
# src/nn/kernels/ops.rs. Needs .gpu from tools/gpu/prepare.sh; writes to $OUT. About 5 minutes.
cd "$(dirname "$0")/../.." || exit 1
exec > >(tee $OUT/log.txt) 2>&1
. tools/gpu/setup.sh
export GDDCM_CUDNN_PLANS=1 GDDCM_CUDA_GROUP_NORM=1
. tools/gpu/lib.sh
g4_check
el "forward, full-size DDPM CIFAR-10 UNet, random weights"
export GDDCM_BENCH_DEVICE=cuda GDDCM_BENCH_ITERS=10 GDDCM_BENCH_BATCHES=1,8,64,256
F=.gpu/bin/unet_forward
echo "== planned cuDNN + GroupNorm kernel (both on)"; timeout 90 $F
echo "== planned cuDNN, candle's composite GroupNorm"; GDDCM_CUDA_GROUP_NORM=0 timeout 90 $F
echo "== candle's cuDNN path + GroupNorm kernel"; GDDCM_CUDNN_PLANS=0 timeout 90 $F
echo "== candle's im2col + SGEMM + GroupNorm kernel (cuda build)"; timeout 90 .gpu/bin/unet_forward_im2col
echo "== planned cuDNN + GroupNorm kernel, TF32 allowed"; NVIDIA_TF32_OVERRIDE=1 GDDCM_BENCH_BATCHES=64,256 timeout 60 $F
timeout 90 python3 tools/bench_torch.py 10 16 1,8,64,256
bench_batch256
el "done"
