#!/bin/bash
# Runs the v2 training sequence (issue 18) to the end, however often it is stopped:
#
#   tools/train/run_resumable.sh                  # classifier edm ddpm rf cm
#   tools/train/run_resumable.sh edm              # only some stages, in the order given
#   setsid nohup tools/train/run_resumable.sh > tools/train/checkpoints/driver.log 2>&1 &   # in the background
#
# Each stage is skipped when it is finished (its model folder records the same recipe id) and otherwise
# resumes from its checkpoint, tools/train/checkpoints/<name>.safetensors. A stage that crashes or is killed
# by something else is restarted from its checkpoint (the driver loops until every stage is done; it gives up
# after MAX_FAILS failures in a row without a stage finishing). A stop on purpose (SIGTERM/SIGINT to the driver
# or to train.py, `touch tools/train/checkpoints/STOP`, --stop-after-minutes in TRAIN_ARGS) writes the
# checkpoint and ends the driver with status 75; a STOP file left from then is removed when the driver starts.
#
# Environment: PY (python; default /work/venv/bin/python if present, else python), GDDCM_TRAIN_OUT (finished
# models, default models/), GDDCM_TRAIN_CKPT (default tools/train/checkpoints), NICE (19), TRAIN_ARGS (extra
# train.py arguments for every stage, e.g. "--device cuda --batch 128"), MAX_FAILS (5).
# Each stage logs to $GDDCM_TRAIN_CKPT/<stage>.log; the log moves to <out>/<model>/train.log when the stage ends.
set -u
cd "$(dirname "$0")/../.."
export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
if [ -z "${PY:-}" ]; then
  if [ -x /work/venv/bin/python ]; then PY=/work/venv/bin/python; else PY=python; fi
fi
CKPT=${GDDCM_TRAIN_CKPT:-tools/train/checkpoints}
OUT=${GDDCM_TRAIN_OUT:-models}
export GDDCM_TRAIN_CKPT=$CKPT GDDCM_TRAIN_OUT=$OUT
NICE=${NICE:-19}
MAX_FAILS=${MAX_FAILS:-5}
TRAIN_ARGS=${TRAIN_ARGS:-}
STAGES=${*:-classifier edm ddpm rf cm}
mkdir -p "$CKPT"
rm -f "$CKPT/STOP"
child=
stop() {
  echo "$(date '+%F %T') driver: signal, stopping the current stage (it writes its checkpoint)"
  [ -n "$child" ] && kill -TERM "$child" 2>/dev/null && wait "$child"
  exit 75
}
trap stop TERM INT

models_of() { case $1 in rf) echo "rf1 rf" ;; *) echo "$1" ;; esac; }

echo "$(date '+%F %T') driver pid $$: stages [$STAGES], out $OUT, checkpoints $CKPT, python $PY, nice $NICE, args [$TRAIN_ARGS]"
fails=0
while :; do
  for s in $STAGES; do
    log=$CKPT/$s.log
    echo "=== $(date '+%F %T') driver pid $$: stage $s (host $(hostname))" >> "$log"
    # shellcheck disable=SC2086
    nice -n "$NICE" "$PY" tools/train/train.py "$s" $TRAIN_ARGS >> "$log" 2>&1 &
    child=$!
    wait "$child"
    rc=$?
    child=
    case $rc in
      0)
        fails=0
        if grep -q "checkpoint step\|pairs saved" "$log"; then
          for m in $(models_of "$s"); do
            [ -d "$OUT/$m" ] && cp "$log" "$OUT/$m/train.log"
          done
        fi
        rm -f "$log"
        echo "$(date '+%F %T') driver: stage $s done"
        ;;
      75)
        echo "$(date '+%F %T') driver: stage $s stopped on purpose (checkpoint written); log $log"
        exit 75
        ;;
      *)
        fails=$((fails + 1))
        echo "$(date '+%F %T') driver: stage $s failed with status $rc ($fails/$MAX_FAILS in a row); log $log"
        tail -5 "$log"
        if [ "$fails" -ge "$MAX_FAILS" ]; then
          echo "driver: giving up"
          exit 1
        fi
        sleep 30
        continue 2   # restart the sequence: finished stages are skipped, this one resumes from its checkpoint
        ;;
    esac
  done
  break
done
echo "$(date '+%F %T') driver: all stages done [$STAGES]"
