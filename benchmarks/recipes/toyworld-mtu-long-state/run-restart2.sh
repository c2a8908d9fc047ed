#!/bin/bash
# The third cosine cycle (benchmarks/recipes/toyworld-mtu-restart2.yaml): the restart's final/ trained on. Re-run to continue (resume: auto).
cd /work/longrun
[ -d runs/toyworld-mtu-restart/final ] || { echo "run-restart2.sh: runs/toyworld-mtu-restart/final is missing (the restart's end)" >&2; exit 2; }
export OMP_NUM_THREADS=${THREADS:-1} MKL_NUM_THREADS=${THREADS:-1} PYTHONPATH=/work/longrun/wt-restart2/src
exec /work/main/.venv/bin/python -m mtu.cli train --config /work/longrun/train-restart2.yaml >> /work/longrun/train-restart2.log 2>&1
