#!/bin/bash
# The kind-weighted branch of the long run (benchmarks/recipes/toyworld-mtu-long-kinds.yaml). Re-run to continue:
# it starts from the parent run's checkpoint 23000 while the branch has none of its own, and resumes (auto) after.
cd /work/longrun
export OMP_NUM_THREADS=${THREADS:-1} MKL_NUM_THREADS=${THREADS:-1} PYTHONPATH=/work/longrun/wt-kinds/src
RESUME=auto
ls runs/toyworld-mtu-kinds/checkpoints/checkpoint-* > /dev/null 2>&1 \
  || RESUME=/work/longrun/runs/toyworld-mtu-big/checkpoints/checkpoint-0023000
exec /work/main/.venv/bin/python -m mtu.cli train --config /work/longrun/train-kinds.yaml --resume "$RESUME" \
  >> /work/longrun/train-kinds.log 2>&1
