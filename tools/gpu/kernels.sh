#!/bin/bash
# Fourth device call (issue 6, BENCHMARKS.md): gddcm's own CUDA paths (planned cuDNN
# convolutions, src/nn/cudnn_conv.rs; the GroupNorm kernel, src/nn/cuda_kernels.rs). SPEC 5 G4
# with them, then the forward with each switched off in turn (same binary), candle's im2col
# build, and PyTorch, in the same call; `gddcm bench` at batch 256. Needs .gpu from
# tools/gpu/prepare.sh; writes to $OUT.
cd "$(dirname "$0")/../.." || exit 1
exec > >(tee $OUT/log.txt) 2>&1
. tools/gpu/setup.sh
export GDDCM_CUDNN_PLANS=1 GDDCM_CUDA_GROUP_NORM=1
CFGS="fmnist-edm fmnist-cm fmnist-rf fmnist-ddpm fmnist-ddpm-ddcm"
el "1. G4: decode the CPU-encoded files on the GPU"
mkdir -p $OUT/w/g4gpu $OUT/w/gpuenc
trap 'tar -C $OUT/w -czf $OUT/results.tar.gz . && rm -rf $OUT/w' EXIT
for c in $CFGS; do timeout 60 $B decode --quiet --device cuda -o $OUT/w/g4gpu/$c .gpu/g4/$c/tok/*.gddcm || echo "decode $c FAILED"; done
mkdir -p /tmp/ref; for c in $CFGS; do ln -sfn "$PWD/.gpu/g4/$c/cpu" /tmp/ref/$c; done
python3 tools/gpu/compare.py /tmp/ref $OUT/w/g4gpu | grep -v '^/'
el "2. encode on the GPU; token files against the CPU's"
for c in $CFGS; do m=${c%-ddcm}; x=""; [ "$c" != "$m" ] && x=--ddcm
  timeout 60 $B encode --quiet --device cuda -m $m $x -o $OUT/w/gpuenc/$c assets/examples/*.png >/dev/null || echo "encode $c FAILED"
  same=0; differ=0; for f in .gpu/g4/$c/tok/*.gddcm; do
    if cmp -s "$f" "$OUT/w/gpuenc/$c/$(basename "$f")"; then same=$((same+1)); else differ=$((differ+1)); fi; done
  echo "$c: $same token files identical to the CPU's, $differ differ"; done
el "3. forward, full-size DDPM CIFAR-10 UNet, random weights"
export GDDCM_BENCH_DEVICE=cuda GDDCM_BENCH_ITERS=10 GDDCM_BENCH_BATCHES=1,8,64,256
F=.gpu/bin/unet_forward
echo "== planned cuDNN + GroupNorm kernel (default)"; timeout 90 $F
echo "== planned cuDNN, candle's composite GroupNorm"; GDDCM_CUDA_GROUP_NORM=0 timeout 90 $F
echo "== candle's cuDNN path + GroupNorm kernel"; GDDCM_CUDNN_PLANS=0 timeout 90 $F
echo "== candle's im2col + SGEMM + GroupNorm kernel (cuda build)"; timeout 90 .gpu/bin/unet_forward_im2col
echo "== planned cuDNN + GroupNorm kernel, TF32 allowed"; NVIDIA_TF32_OVERRIDE=1 GDDCM_BENCH_BATCHES=64,256 timeout 60 $F
timeout 90 python3 tools/bench_torch.py 10 16 1,8,64,256
el "4. gddcm bench on the GPU, batch 256"
timeout 60 $B bench --device cuda -m fmnist-edm -n 300 --batch 256 --json $OUT/w/bench_fmnist_edm.json
python3 tools/gpu/mkddpm.py .gpu/unet2d_ddpm_cifar10_32.keys.json /tmp/ddpm
timeout 90 $B bench --device cuda -m ddpm-cifar10 --weights /tmp/ddpm -n 20 --batch 256 --json $OUT/w/bench_ddpm.json
el "done"
