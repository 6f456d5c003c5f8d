#!/bin/bash
# Issue 18's GPU path: every bundled model trained in ONE call of the device tool (one H100/H200), the
# weights brought back. The CPU recipe (run_resumable.sh) stays the documented default; this is the quick way
# when a session is lent a GPU. Four steps, the middle one on the device machine:
#
#   tools/train/gpu.sh prepare          # here: data and wheels into .gpu-train/, big tracked files moved aside
#   device run: command "bash tools/train/gpu.sh run", carry [".gpu-train"], timeout_s 600
#   tools/train/gpu.sh restore          # here, at once: the files moved aside come back
#   tools/train/gpu.sh unpack FILES_AT  # here: the call's files_at -> $GDDCM_TRAIN_OUT (default models-gpu/)
#
# Why the moving aside: the tool sends the working tree and at most 64 MiB of it. The repository's tracked
# files are over that (test fixtures, result archives, the model weights, the training checkpoint), and the
# training needs none of them. `prepare` moves every tracked or untracked file over 1 MB except models/classifier
# (the v1 FD scale) to .gpu-aside/ (tools/device_aside.sh) and refuses if what would travel is still over the
# limit; `restore` moves them back (after a crash: `tools/train/gpu.sh restore` again, or `git checkout -- .` for
# committed files).
#
# The GPU recipe (its own recipe ids): the images seen by the first CPU recipe (40 000 x 32 for edm, ddpm and
# 1-RF; the CPU defaults are shorter now, see tools/train/README.md) in 8x larger batches, so 8x fewer steps:
# edm, ddpm and 1-RF 5000 x 256 at lr 1e-3 (warmup 200); reflow 1250 x 256 at 4e-4 on the same 20 000 pairs;
# cm 2500 x 256 at 4e-4 (warmup 100); the classifier as on the CPU. The classifier goes first, then three
# chains share the GPU: edm -> cm, ddpm, rf1 -> pairs -> rf. Every stage stops at the deadline (GPU_MINUTES,
# default 8, from the start of `run`) so that packing fits in the call; a stage stopped there is lost with the
# machine, the others come back. The models come back as f16 weights (the bundle must stay under 64 MiB; each
# gddcm.json keeps the trainer's f16_weights_check, and `weights_dtype` says float16), tarred and split into
# 15 MiB parts; train logs and timing.json beside them.
#
# GPU_SMOKE=1 GPU_DEVICE=cpu OUT=/tmp/x tools/train/gpu.sh run   runs the same pipeline in minutes on a CPU with
# tiny step counts (a test of the script, not a recipe).
set -euo pipefail
cd "$(dirname "$0")/../.."

prepare() {
  local data=${FMNIST_DIR:-/usr/share/datasets/fashion-mnist} py=${PY:-/work/venv/bin/python}
  grep -qxF /.gpu-train/ .git/info/exclude 2>/dev/null || echo /.gpu-train/ >> .git/info/exclude
  mkdir -p .gpu-train/fmnist .gpu-train/whl
  for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
    [ -f "$data/$f" ] || { echo "missing $data/$f: apt-get install dataset-fashion-mnist (or set FMNIST_DIR)" >&2; exit 1; }
    cp -u "$data/$f" .gpu-train/fmnist/
  done
  # The device image has torch, numpy, safetensors, Pillow, huggingface_hub; diffusers and importlib_metadata travel.
  [ -n "$(ls .gpu-train/whl/diffusers-*.whl 2>/dev/null)" ] ||
    "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux2014_x86_64 -d .gpu-train/whl diffusers==0.42.1 importlib_metadata==10.2.0
  if pgrep -f "tools/train/train.py" >/dev/null; then
    echo "a training runs here: stop it first (touch tools/train/checkpoints/STOP), it writes its compact checkpoint" >&2
    exit 1
  fi
  tools/device_aside.sh aside .gpu-train 'models/classifier/*'
}

restore() {
  tools/device_aside.sh restore
}

run() {
  : "${OUT:?run is meant for the device machine, where OUT is set (or set it for a smoke test)}"
  local py=${PY:-python3} dev=${GPU_DEVICE:-cuda} minutes=${GPU_MINUTES:-8} work=${GPU_WORK:-/tmp/gddcm-gpu}
  local t0; t0=$(date +%s)
  if [ -d .gpu-train/whl ] && [ -n "$(ls .gpu-train/whl/*.whl 2>/dev/null)" ]; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$work/site" .gpu-train/whl/*.whl
    export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  [ -d .gpu-train/fmnist ] && export FMNIST_DIR=$PWD/.gpu-train/fmnist
  export GDDCM_TRAIN_OUT=$work/models GDDCM_TRAIN_CKPT=$work/ckpt PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
  mkdir -p "$work/logs"
  local big="--steps 5000 --batch 256 --lr 1e-3 --warmup 200" cm="--steps 2500 --batch 256 --lr 4e-4 --warmup 100"
  local rf="--reflow-steps 1250 --reflow-lr 4e-4" cls="" ev=""
  if [ "${GPU_SMOKE:-0}" = 1 ]; then
    big="--steps 30 --batch 16 --lr 1e-3 --warmup 5" cm="--steps 10 --batch 16 --lr 4e-4 --warmup 2"
    rf="--reflow-steps 10 --reflow-lr 4e-4 --pairs 64" cls="--steps 30" ev="--eval-n 64"
  fi
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | sed 's/^/gpu: /' || true
  "$py" -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'cuda', torch.cuda.is_available())"
  stage() {  # stage NAME ARGS...: train.py with the time left until the deadline
    local name=$1 left; shift
    left=$(( (t0 + minutes * 60 - $(date +%s)) ))
    [ "$left" -gt 20 ] || { echo "[$name] no time left"; return 75; }
    echo "$(date +%T) [$name] starts, $left s left"
    "$py" tools/train/train.py "$@" --device "$dev" $ev --ckpt-minutes 1000 \
      --stop-after-minutes "$(awk "BEGIN {print $left / 60}")" >> "$work/logs/$name.log" 2>&1
    local rc=$?
    echo "$(date +%T) [$name] exit $rc ($(tail -n 1 "$work/logs/$name.log"))"
    return $rc
  }
  set +e
  stage classifier classifier $cls
  # shellcheck disable=SC2086
  { stage edm edm $big && stage cm cm $cm; } &
  # shellcheck disable=SC2086
  stage ddpm ddpm $big &
  # shellcheck disable=SC2086
  stage rf rf $big $rf &
  wait
  set -e
  pack "$work" "$t0" "$dev"
}

pack() {
  local work=$1 t0=$2 dev=$3
  "${PY:-python3}" - "$work/models" <<'EOF'
import json, os, sys
from safetensors.torch import load_file, save_file
root = sys.argv[1]
for name in sorted(os.listdir(root)):
    w = os.path.join(root, name, "diffusion_pytorch_model.safetensors")
    if not os.path.exists(w):
        continue
    save_file({k: v.half() for k, v in load_file(w).items()}, w)
    meta_path = os.path.join(root, name, "gddcm.json")
    meta = json.load(open(meta_path))
    meta["weights_dtype"] = "float16"
    meta["weights_dtype_note"] = ("EMA weights trained in f32, rounded to f16 by tools/train/gpu.sh to come back from the "
                                  "GPU machine; f16_weights_check is the output change that rounding causes")
    json.dump(meta, open(meta_path, "w"), indent=1)
    print(name, "f16", os.path.getsize(w), "bytes; f16 check", meta.get("f16_weights_check", {}).get("max_relative_rms_output_change"))
EOF
  (cd "$work" && ls models) > "$work/logs/done.txt" 2>/dev/null || true
  printf '{"wall_s": %d, "device": "%s", "models": "%s"}\n' $(( $(date +%s) - t0 )) "$dev" \
    "$(tr '\n' ' ' < "$work/logs/done.txt")" > "$OUT/timing.json"
  tar -czf - -C "$work" models logs | split -b 15M - "$OUT/bundle.tgz.part-"
  ls -la "$OUT"
}

unpack() {
  local from=${1:?unpack FILES_AT (the folder the device call returned)} dest=${GDDCM_TRAIN_OUT:-models-gpu}
  local tmp; tmp=$(mktemp -d)
  cat "$from"/bundle.tgz.part-* | tar -xzf - -C "$tmp"
  mkdir -p "$dest"
  for m in "$tmp"/models/*; do
    [ -d "$m" ] || continue
    local name log
    name=$(basename "$m") log=$tmp/logs/$(basename "$m").log
    [ "$name" = rf1 ] && log=$tmp/logs/rf.log
    rm -rf "${dest:?}/$name"
    mv "$m" "$dest/"
    if [ -f "$log" ]; then cp "$log" "$dest/$name/train.log"; fi
    echo "$dest/$name"
  done
  cat "$from/timing.json" 2>/dev/null || true
  rm -rf "$tmp"
}

case ${1:-} in
  prepare | restore | run | unpack) cmd=$1; shift; "$cmd" "$@" ;;
  *) sed -n '2,12p' "$0"; exit 2 ;;
esac
