#!/bin/bash
# First device call (issue 6, BENCHMARKS.md): the SPEC 5 G4 check (GPU decodes of CPU-encoded
# files), GPU encodes, the forward bench against PyTorch and `gddcm bench`, on a machine with an
# NVIDIA GPU and PyTorch. Needs the folder .gpu made by tools/gpu/prepare.sh; writes to $OUT.
cd "$(dirname "$0")/../.." || exit 1
exec > >(tee $OUT/log.txt) 2>&1
. tools/gpu/setup.sh
CFGS="fmnist-edm fmnist-cm fmnist-rf fmnist-ddpm fmnist-ddpm-ddcm"
el "1. G4: decode the CPU-encoded files on the GPU"
mkdir -p $OUT/w/g4gpu $OUT/w/gpuenc
trap 'tar -C $OUT/w -czf $OUT/results.tar.gz . && rm -rf $OUT/w' EXIT
for c in $CFGS; do timeout 120 $B decode --quiet --device cuda -o $OUT/w/g4gpu/$c .gpu/g4/$c/tok/*.gddcm || echo "decode $c FAILED"; done
mkdir -p /tmp/ref; for c in $CFGS; do ln -sfn "$PWD/.gpu/g4/$c/cpu" /tmp/ref/$c; done
python3 tools/gpu/compare.py /tmp/ref $OUT/w/g4gpu
el "2. encode on the GPU (files come back for a CPU decode), decode them on the GPU"
for c in $CFGS; do m=${c%-ddcm}; x=""; [ "$c" != "$m" ] && x=--ddcm
  timeout 120 $B encode --quiet --device cuda -m $m $x -o $OUT/w/gpuenc/$c/tok assets/examples/*.png >/dev/null || echo "encode $c FAILED"
  timeout 120 $B decode --quiet --device cuda -o $OUT/w/gpuenc/$c/gpu $OUT/w/gpuenc/$c/tok/*.gddcm || echo "decode $c FAILED"; done
el "3. forward, full-size DDPM CIFAR-10 UNet, random weights: gddcm (candle CUDA) vs PyTorch"
GDDCM_BENCH_DEVICE=cuda GDDCM_BENCH_BATCHES=1,8,64,256 GDDCM_BENCH_ITERS=20 timeout 150 .gpu/bin/unet_forward
GDDCM_BENCH_DEVICE=cuda timeout 150 python3 tools/bench_torch.py 20 16 1,8,64,256
el "4. gddcm bench on the GPU"
timeout 100 $B bench --device cuda -n 300 --batch 1,256 --json $OUT/w/bench_bundled.json
python3 tools/gpu/mkddpm.py tests/fixtures/unet2d_ddpm_cifar10_32.keys.json /tmp/ddpm
timeout 200 $B bench --device cuda -m ddpm-cifar10 --weights /tmp/ddpm -n 300 --batch 1,256 --json $OUT/w/bench_ddpm.json
el "done"
