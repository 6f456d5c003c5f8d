#!/bin/bash
# Prepares the folder .gpu (ignored by git; give it to the GPU machine with the checkout) for
# tools/gpu/check.sh, bench.sh, cudnn.sh and kernels.sh:
#   .gpu/bin/{gddcm,unet_forward}.xz   the CUDA + cuDNN build (tools/build_cuda.sh), stripped, xz'd
#   .gpu/bin/unet_forward_im2col.xz   the forward bench with candle's own CUDA convolutions
#   .gpu/g4/<config>/{tok,cpu}          CPU-encoded token files of assets/examples and their CPU decodes
#   .gpu/whl/                           diffusers and its two missing needs, for tools/bench_torch.py
#   .gpu/built_in
# Usage: [CUDA_WORK=dir] tools/gpu/prepare.sh   (from the checkout; needs pip)
# The device call then carries [".gpu"]. The tool sends at most 64 MiB of working tree, so at the end every file over
# 1 MB that the checks do not read (all but models/) is moved to .gpu-aside/: run `tools/device_aside.sh restore`
# right after the call.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo /.gpu/ >> .git/info/exclude
rm -rf .gpu && mkdir -p .gpu/bin .gpu/whl .gpu/g4
# The forward bench twice: with candle's own convolutions (im2col + SGEMM) and through cuDNN.
bench_bin() { grep -oE 'target/cuda/release/deps/unet_forward-[0-9a-f]+' "$1" | tail -1; }
FEATURES=cuda tools/build_cuda.sh "${CUDA_WORK:-}" | tee .gpu/build-im2col.log
strip -o .gpu/bin/unet_forward_im2col "$(bench_bin .gpu/build-im2col.log)"
FEATURES=cuda,cudnn tools/build_cuda.sh "${CUDA_WORK:-}" | tee .gpu/build.log
strip -o .gpu/bin/gddcm target/cuda/release/gddcm
strip -o .gpu/bin/unet_forward "$(bench_bin .gpu/build.log)"
xz -T0 -6 .gpu/bin/gddcm .gpu/bin/unet_forward .gpu/bin/unet_forward_im2col
pwd > .gpu/built_in
${PYTHON:-python3} -m pip download -q --no-deps --only-binary=:all: -d .gpu/whl diffusers==0.42.1 importlib_metadata zipp
cargo build --release --bin gddcm
for c in fmnist-edm fmnist-cm fmnist-rf fmnist-ddpm fmnist-ddpm-ddcm; do
  m=${c%-ddcm}; x=(); [ "$c" != "$m" ] && x=(--ddcm)
  target/release/gddcm encode --quiet -m "$m" "${x[@]}" -o .gpu/g4/$c/tok assets/examples/*.png > /dev/null
  target/release/gddcm decode --quiet -o .gpu/g4/$c/cpu .gpu/g4/$c/tok/*.gddcm > /dev/null
done
du -sh .gpu
tools/device_aside.sh aside .gpu 'models/*'
