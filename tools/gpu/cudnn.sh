#!/bin/bash
# Third device call (issue 6, BENCHMARKS.md): the `cudnn` build. SPEC 5 G4 again (CPU-encoded
# files decoded on the GPU; GPU-encoded token files compared byte for byte with the CPU's), the
# forward against PyTorch with both convolution paths in the same call, and `gddcm bench` at
# batch 256. Needs .gpu from tools/gpu/prepare.sh; writes to $OUT.
cd "$(dirname "$0")/../.." || exit 1
exec > >(tee $OUT/log.txt) 2>&1
. tools/gpu/setup.sh
. tools/gpu/lib.sh
g4_check
el "forward, full-size DDPM CIFAR-10 UNet, random weights"
export GDDCM_BENCH_DEVICE=cuda GDDCM_BENCH_ITERS=10
echo "== gddcm, cuDNN, TF32 off (gddcm's default)"; GDDCM_BENCH_BATCHES=1,8,64,256 timeout 90 .gpu/bin/unet_forward
echo "== gddcm, candle's im2col + SGEMM"; GDDCM_BENCH_BATCHES=1,8,64,256 timeout 90 .gpu/bin/unet_forward_im2col
echo "== gddcm, cuDNN, TF32 allowed"; NVIDIA_TF32_OVERRIDE=1 GDDCM_BENCH_BATCHES=64,256 timeout 60 .gpu/bin/unet_forward
timeout 90 python3 tools/bench_torch.py 10 16 1,8,64,256
bench_batch256
el "done"
