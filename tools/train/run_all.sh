#!/bin/bash
# Kept for old instructions: v1's time-budgeted commands are gone (see `git show d95c513:tools/train/run_all.sh`).
# The v2 recipe runs through the resumable driver, which skips finished stages and resumes from checkpoints.
exec "$(dirname "$0")/run_resumable.sh" "$@"
