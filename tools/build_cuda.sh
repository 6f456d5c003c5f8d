#!/bin/bash
# Builds `gddcm --features cuda` (and the forward benchmark) on a machine WITHOUT a GPU or a
# CUDA toolkit, for a machine with an NVIDIA driver for CUDA 13 and the CUDA 13 libraries
# (cuBLAS, cuBLASLt, cuRAND, NVRTC), e.g. any machine with PyTorch cu130 installed.
#
#   [FEATURES=cuda,cudnn] tools/build_cuda.sh [WORKDIR (default target/cuda-toolchain)] [COMPUTE_CAP (default 90)]
#
# FEATURES defaults to `cuda`; `cuda,cudnn` runs the convolutions through cuDNN 9 (libcudnn.so.9
# must then be on the GPU machine too, e.g. PyTorch's nvidia-cudnn wheel).
#
# What it does, and why:
# - nvcc, cicc and the CUDA headers come from NVIDIA's PyPI wheels (nvidia-cuda-nvcc, -nvvm,
#   -cuda-runtime, -cuda-cccl, -cuda-crt 13.0): candle-kernels compiles its kernels with nvcc at
#   build time (PTX for CUDA_COMPUTE_CAP, plus static sm_XX code for its MoE/GGUF kernels).
# - cudarc (under candle) links dynamically against libcuda, libnvrtc, libcurand, libcublas and
#   libcublasLt. On a machine without them we link against stub libraries that export every
#   function cudarc declares, under the real sonames (libcuda.so.1, libnvrtc.so.13,
#   libcurand.so.10, libcublas.so.13, libcublasLt.so.13; libcudart.so.13 from the wheel); at run time the loader finds the real
#   ones (set LD_LIBRARY_PATH to the folders holding the CUDA 13 libraries).
# With a CUDA toolkit installed, plain `cargo build --release --features cuda` does the same.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$here/target/cuda-toolchain}
cap=${2:-90}
py=${PYTHON:-python3}
mkdir -p "$work/whl" "$work/stubs"
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
  -d "$work/whl" "nvidia-cuda-nvcc==13.0.*" "nvidia-nvvm==13.0.*" "nvidia-cuda-runtime==13.0.*" \
  "nvidia-cuda-cccl==13.0.*" "nvidia-cuda-crt==13.0.*"
for w in "$work"/whl/*.whl; do unzip -q -o "$w" -d "$work/x"; done
cuda="$work/x/nvidia/cu13"
chmod +x "$cuda"/bin/* "$cuda"/nvvm/bin/*
# Stub libraries: one empty function per symbol cudarc declares for the library.
src=$(cd "$here" && cargo metadata --format-version 1 --features cudnn | "$py" -c \
  'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"]=="cudarc").rsplit("/",1)[0] + "/src")')
stub() { # name soname module
  grep -ohE '^\s+fn [A-Za-z0-9_]+\(' "$src/$3/sys/mod.rs" | sed -E 's/^\s+fn ([A-Za-z0-9_]+)\(/void \1(void){}/' | sort -u > "$work/stubs/$1.c"
  cc -shared -fPIC -o "$work/stubs/lib$1.so" -Wl,-soname,"$2" "$work/stubs/$1.c"
}
stub cuda libcuda.so.1 driver; stub nvrtc libnvrtc.so.13 nvrtc; stub curand libcurand.so.10 curand
stub cublas libcublas.so.13 cublas; stub cublasLt libcublasLt.so.13 cublaslt
stub cudnn libcudnn.so.9 cudnn
# candle-kernels' static MoE kernels link the CUDA runtime (-lcudart); the wheel has only the
# versioned file.
ln -sf "$cuda/lib/libcudart.so.13" "$work/stubs/libcudart.so"
export CUDA_HOME="$cuda" PATH="$cuda/bin:$PATH" CUDA_COMPUTE_CAP="$cap" LIBRARY_PATH="$work/stubs"
export CARGO_TARGET_DIR="$here/target/cuda"
cd "$here"
features=${FEATURES:-cuda}
cargo build --release --features "$features" --bin gddcm
cargo bench --features "$features" --bench unet_forward --no-run 2>&1 | tee "$work/bench-build.log"
echo "built: $CARGO_TARGET_DIR/release/gddcm and $(grep -oE 'target/cuda/release/deps/unet_forward-[0-9a-f]+' "$work/bench-build.log" | tail -1)"
