#!/bin/bash
# Third device call (issue 6, BENCHMARKS.md): the `cudnn` build. SPEC 5 G4 again (CPU-encoded
# files decoded on the GPU; GPU-encoded token files compared byte for byte with the CPU's), the
# forward against PyTorch with both convolution paths in the same call, and `gddcm bench` at
# batch 256. Needs .gpu from tools/gpu/prepare.sh; writes to $OUT.
cd "$(dirname "$0")/../.." || exit 1
exec > >(tee $OUT/log.txt) 2>&1
. tools/gpu/setup.sh
CFGS="fmnist-edm fmnist-cm fmnist-rf fmnist-ddpm fmnist-ddpm-ddcm"
el "1. G4: decode the CPU-encoded files on the GPU (cuDNN build)"
mkdir -p $OUT/w/g4gpu $OUT/w/gpuenc
trap 'tar -C $OUT/w -czf $OUT/results.tar.gz . && rm -rf $OUT/w' EXIT
for c in $CFGS; do timeout 60 $B decode --quiet --device cuda -o $OUT/w/g4gpu/$c .gpu/g4/$c/tok/*.gddcm || echo "decode $c FAILED"; done
mkdir -p /tmp/ref; for c in $CFGS; do ln -sfn "$PWD/.gpu/g4/$c/cpu" /tmp/ref/$c; done
python3 tools/gpu/compare.py /tmp/ref $OUT/w/g4gpu
el "2. encode on the GPU; token files against the CPU's"
for c in $CFGS; do m=${c%-ddcm}; x=""; [ "$c" != "$m" ] && x=--ddcm
  timeout 60 $B encode --quiet --device cuda -m $m $x -o $OUT/w/gpuenc/$c assets/examples/*.png >/dev/null || echo "encode $c FAILED"
  same=0; differ=0; for f in .gpu/g4/$c/tok/*.gddcm; do
    if cmp -s "$f" "$OUT/w/gpuenc/$c/$(basename "$f")"; then same=$((same+1)); else differ=$((differ+1)); fi; done
  echo "$c: $same token files identical to the CPU's, $differ differ"; done
el "3. forward, full-size DDPM CIFAR-10 UNet, random weights"
export GDDCM_BENCH_DEVICE=cuda GDDCM_BENCH_ITERS=10
echo "== gddcm, cuDNN, TF32 off (gddcm's default)"; GDDCM_BENCH_BATCHES=1,8,64,256 timeout 90 .gpu/bin/unet_forward
echo "== gddcm, candle's im2col + SGEMM"; GDDCM_BENCH_BATCHES=1,8,64,256 timeout 90 .gpu/bin/unet_forward_im2col
echo "== gddcm, cuDNN, TF32 allowed"; NVIDIA_TF32_OVERRIDE=1 GDDCM_BENCH_BATCHES=64,256 timeout 60 .gpu/bin/unet_forward
timeout 90 python3 tools/bench_torch.py 10 16 1,8,64,256
el "4. gddcm bench on the GPU, batch 256"
timeout 60 $B bench --device cuda -m fmnist-edm -n 300 --batch 256 --json $OUT/w/bench_fmnist_edm.json
python3 tools/gpu/mkddpm.py .gpu/unet2d_ddpm_cifar10_32.keys.json /tmp/ddpm
timeout 90 $B bench --device cuda -m ddpm-cifar10 --weights /tmp/ddpm -n 20 --batch 256 --json $OUT/w/bench_ddpm.json
el "done"
