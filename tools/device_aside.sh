#!/bin/bash
# The device tool (a lent GPU machine) sends the working tree to the machine, at most 64 MiB of it: tracked
# files, untracked files git does not ignore, and the ignored folders a call carries. The repository is bigger
# than that (test fixtures, result archives, model weights, the training checkpoint), and no device job needs all
# of it. This moves what a job does not need to .gpu-aside/ (git-ignored) before the call, and back after it.
#
#   tools/device_aside.sh aside CARRY [KEEP...]   move every file over 1 MB that travels, except the KEEP globs
#                                                 (e.g. 'models/classifier/*'), to .gpu-aside/; then refuse if
#                                                 what travels, with the carried folder CARRY, is over 64 MiB
#   tools/device_aside.sh restore                 move them back (again after a crash; `git checkout -- FILE`
#                                                 brings back a committed file too)
#   tools/device_aside.sh size CARRY              MiB that would travel with CARRY
#
# Used by tools/train/gpu.sh (training) and tools/gpu/prepare.sh (the CUDA checks).
set -euo pipefail
cd "$(dirname "$0")/.."
LIMIT=$((64 * 1024 * 1024))

travel_bytes() {  # existing tracked and untracked-not-ignored files, plus the carried folder
  { git ls-files -z --cached --others --exclude-standard; { [ ! -e "$1" ] || find "$1" -type f -print0; }; } |
    while IFS= read -r -d '' f; do if [ -f "$f" ]; then stat -c %s "$f"; fi; done | awk '{s += $1} END {print s + 0}'
}

aside() {
  local carry=${1:?aside CARRY [KEEP...]: the ignored folder the call carries}; shift
  grep -qxF /.gpu-aside/ .git/info/exclude 2>/dev/null || echo /.gpu-aside/ >> .git/info/exclude
  git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
    [ -f "$f" ] || continue
    local keep=0 k
    for k in "$@"; do
      # shellcheck disable=SC2053  # KEEP is a glob on purpose
      if [[ $f == $k ]]; then keep=1; fi
    done
    if [ $keep = 0 ] && [ "$(stat -c %s "$f")" -gt 1000000 ]; then
      mkdir -p ".gpu-aside/$(dirname "$f")" && mv "$f" ".gpu-aside/$f"
    fi
  done
  local n; n=$(travel_bytes "$carry")
  echo "would travel: $((n / 1048576)) MiB of at most 64 (moved aside: $(find .gpu-aside -type f 2>/dev/null | wc -l) files; restore with: tools/device_aside.sh restore)"
  if [ "$n" -gt "$LIMIT" ]; then
    echo "still over the device tool's 64 MiB: move more aside, or keep less" >&2
    exit 1
  fi
}

restore() {
  [ -d .gpu-aside ] || { echo "nothing to restore"; return; }
  (cd .gpu-aside && find . -type f -print0) | while IFS= read -r -d '' f; do
    f=${f#./}
    mkdir -p "$(dirname "$f")" && mv ".gpu-aside/$f" "$f"
  done
  find .gpu-aside -depth -type d -empty -delete
  if [ -d .gpu-aside ]; then
    echo "left in .gpu-aside:" >&2; find .gpu-aside -type f >&2; exit 1
  fi
  if git status --short | grep '^ D'; then
    echo "tracked files are still missing (above): git checkout -- FILE brings back the committed ones" >&2; exit 1
  fi
  echo "restored"
}

case ${1:-} in
  aside | restore) cmd=$1; shift; "$cmd" "$@" ;;
  size) echo "$(( $(travel_bytes "${2:?size CARRY}") / 1048576 )) MiB" ;;
  *) sed -n '2,13p' "$0"; exit 2 ;;
esac
