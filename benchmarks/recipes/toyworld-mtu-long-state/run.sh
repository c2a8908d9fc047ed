#!/bin/bash
# Resumable long run of the shipped toy-world MTU model (issue 11). Re-run this script to continue (resume: auto).
cd /work/longrun
export OMP_NUM_THREADS=${THREADS:-1} MKL_NUM_THREADS=${THREADS:-1} PYTHONPATH=/work/longrun/wt/src
exec /work/main/.venv/bin/python -m mtu.cli train --config /work/longrun/train.yaml >> /work/longrun/train.log 2>&1
