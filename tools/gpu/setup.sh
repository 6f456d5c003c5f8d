# Sourced by tools/gpu/check.sh and bench.sh on the GPU machine, from the checkout's root:
# unpacks the CUDA build from .gpu (tools/gpu/prepare.sh), points the loader at the CUDA 13
# libraries, installs the carried wheels, and sets B (the gddcm binary) and el (a timed echo).
T0=$(date +%s); el() { echo "[t+$(( $(date +%s) - T0 ))s] $*"; }
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv
lscpu | grep -E 'Model name|^CPU\(s\)'
for f in .gpu/bin/*.xz; do xz -d -T0 -k -f "$f"; done; chmod +x .gpu/bin/*[!z]
# libcudnn.so.9 (the `cudnn` build) often comes with PyTorch, as the nvidia-cudnn wheel.
site=$(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null)
L=""; for so in libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13 libcudart.so.13 libcudnn.so.9; do
  p=$(find /usr/local/cuda/ /usr/local/cuda*/ /opt /usr/lib $site -name "$so" 2>/dev/null | head -1); echo "$so -> $p"
  [ -n "$p" ] && L="$L:$(dirname "$p")"; done
export LD_LIBRARY_PATH="${L#:}:${LD_LIBRARY_PATH:-}"
ldd .gpu/bin/gddcm | grep -E 'cuda|cublas|curand|nvrtc|cudnn|not found'
# The forward bench reads models/ and tests/fixtures/ from the folder it was built in.
M=$(cat .gpu/built_in)
[ -e "$M" ] || ln -s "$PWD" "$M"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
B=.gpu/bin/gddcm
