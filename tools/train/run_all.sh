#!/bin/bash
# Train every shipped model in sequence (1 CPU thread each). Logs go to models/<name>/train.log.
# These are the exact commands used for the shipped models. All but the classifier use batch 32
# (the shared machine was ~2x slower than planned; smaller batches give more optimizer steps).
set -e
cd "$(dirname "$0")/../.."
export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736
PY=${PY:-python}
run() { name=$1; shift; mkdir -p models/$name; $PY tools/train/train.py "$@" 2>&1 | tee models/$name/train.log; }
if [ -z "$SKIP_DONE" ]; then
  run classifier classifier --minutes 3
  run ddpm ddpm --minutes 8 --batch 32
fi
run edm edm --minutes 12 --batch 32
run rf rf --minutes 8 --batch 32 --reflow-minutes 5 --pairs 2000
run cm cm --minutes 9 --batch 32
