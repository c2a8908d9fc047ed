#!/bin/bash
# Runs benchmarks/toyworld_quality.py rows one at a time, one thread each, skipping the runs already done, so that
# a long queue of runs continues across sessions and machines:
#
#     benchmarks/quality_queue.sh QUEUE_FILE OUT_DIR      (PYTHON=... to use another interpreter)
#
# QUEUE_FILE: one run per line, "ROW SEED [MORE toyworld_quality.py ARGUMENTS]" ('#' starts a comment); each run
# writes OUT_DIR/<row>-s<seed>[-pertask]/quality.json (and a .log beside it); a line whose quality.json exists is
# skipped. Several workers may run the same queue at once (one per core): each run is claimed with a lock on
# OUT_DIR/<run>.lock, which the system releases if its worker dies. OUT_DIR/queue.log records starts and ends.
# Join the results with `toyworld_quality.py --merge OUT_DIR/*/quality.json` (comma-separated).
set -u
queue=$(realpath "$1")
outdir=$(realpath -m "$2")
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$repo/.venv/bin/python}
mkdir -p "$outdir"
cd "$repo"
while read -r row seed extra; do
  case "$row" in ""|\#*) continue;; esac
  out=$outdir/$(echo "$row" | tr ':/+' '_-p')-s$seed
  case "$extra" in *per-task*) out=$out-pertask;; esac
  [ -f "$out/quality.json" ] && continue
  exec 9> "$out.lock"
  if ! flock -n 9; then exec 9>&-; continue; fi
  [ -f "$out/quality.json" ] && { exec 9>&-; continue; }
  echo "$(date +%T) start $row seed $seed $extra" >> "$outdir/queue.log"
  start=$(date +%s)
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 "$python" benchmarks/toyworld_quality.py --seeds "$seed" --rows "$row" \
    $extra --out "$out" > "$out.log" 2>&1 < /dev/null
  echo "$(date +%T) done $row seed $seed rc $? $(( $(date +%s) - start )) s" >> "$outdir/queue.log"
  exec 9>&-
done < "$queue"
