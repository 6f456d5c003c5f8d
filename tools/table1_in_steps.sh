#!/usr/bin/env bash
# Computes `gddcm table1` on many images in steps, keeping every token file and
# reconstruction under $KEEP so that the run can stop at any time and be continued later
# (`--resume`); each step adds $STEP images to every row, so all rows grow together and the
# finished part is always a common prefix of the test set.
#
#   tools/table1_in_steps.sh ROWS [LIMIT] [STEP]
#
# ROWS: comma-separated `model:p` rows (e.g. fmnist-edm:0,fmnist-edm:0.5); run two of these
# scripts with disjoint rows and RAYON_NUM_THREADS=1 to use two cores. Then
#   gddcm table1 --limit N --keep $KEEP --resume ...
# with the same K, N and models writes the table over the first N images from the kept files.
set -euo pipefail
ROWS=$1
LIMIT=${2:-1000}
STEP=${3:-32}
KEEP=${KEEP:-results/table1-runs}
GDDCM=${GDDCM:-target/release/gddcm}
MODELS=$(echo "$ROWS" | tr ',' '\n' | cut -d: -f1 | awk '!seen[$0]++' | paste -sd, -)
for ((n = STEP; n < LIMIT + STEP; n += STEP)); do
  l=$((n < LIMIT ? n : LIMIT))
  echo "== $(date -u +%FT%TZ) rows $ROWS: first $l images"
  "$GDDCM" table1 --models "$MODELS" --rows "$ROWS" --limit "$l" -k 256 -n 300 \
    --metrics pixel,classifier --keep "$KEEP" --resume --batch 16 --quiet
done
