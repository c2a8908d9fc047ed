#!/bin/bash
# The tenth round's restart (benchmarks/recipes/toyworld-mtu-restart.yaml): the long run's final/ trained on with a
# new cosine cycle. Re-run this script to continue (resume: auto).
cd /work/longrun
[ -d runs/toyworld-mtu-big/final ] || { echo "run-restart.sh: runs/toyworld-mtu-big/final is missing (the long run's end)" >&2; exit 2; }
export OMP_NUM_THREADS=${THREADS:-1} MKL_NUM_THREADS=${THREADS:-1} PYTHONPATH=/work/longrun/wt-restart/src
exec /work/main/.venv/bin/python -m mtu.cli train --config /work/longrun/train-restart.yaml >> /work/longrun/train-restart.log 2>&1
