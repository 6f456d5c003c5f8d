#!/bin/bash
# Second device call (BENCHMARKS.md): the forward bench against PyTorch in one call, and
# `gddcm bench` on the bundled and the full-size (random-weight) model. Needs .gpu from
# tools/gpu/prepare.sh; writes to $OUT.
cd "$(dirname "$0")/../.." || exit 1
exec > >(tee $OUT/log2.txt) 2>&1
. tools/gpu/setup.sh
el "forward, full-size DDPM CIFAR-10 UNet, random weights"
GDDCM_BENCH_DEVICE=cuda GDDCM_BENCH_BATCHES=1,8,64,256 GDDCM_BENCH_ITERS=10 timeout 90 .gpu/bin/unet_forward
GDDCM_BENCH_DEVICE=cuda timeout 60 python3 tools/bench_torch.py 10 16 1,8,64,256
el "gddcm bench, bundled fmnist-edm, N=300"
timeout 60 $B bench --device cuda -m fmnist-edm -n 300 --batch 1,256 --json $OUT/bench_fmnist_edm.json
el "gddcm bench, full-size ddpm-cifar10 (random weights), N=20"
python3 tools/gpu/mkddpm.py tests/fixtures/unet2d_ddpm_cifar10_32.keys.json /tmp/ddpm
timeout 100 $B bench --device cuda -m ddpm-cifar10 --weights /tmp/ddpm -n 20 --batch 1,64,256 --json $OUT/bench_ddpm.json
el done
