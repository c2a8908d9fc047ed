#!/bin/bash
# Runs one arm of issue 11's long toy-world training in $LONGRUN (default /work/longrun), where restore.sh put the
# arm's code (a git worktree of the commit it started with), config and committed checkpoints. Re-run to continue:
# every arm resumes exactly (auto). One thread unless THREADS says otherwise.
#
#     run-arm.sh ARM     (restore.sh starts it; log: $LONGRUN/<config name>.log)
#
#   big       the long run (toyworld-mtu-long.yaml; code d0a2330 in wt/; config train.yaml)
#   kinds     the kind-weighted branch (toyworld-mtu-long-kinds.yaml; wt-kinds/, train-kinds.yaml): starts from the
#             run's checkpoint 23000 while it has none of its own
#   restart   the tenth round's restart (toyworld-mtu-restart.yaml; wt-restart/, train-restart.yaml): the run's
#             final/ trained on with a new cosine cycle
#   restart2  the third cycle (toyworld-mtu-restart2.yaml; wt-restart2/, train-restart2.yaml): the restart's final/
#             trained on
set -u
LONGRUN=${LONGRUN:-/work/longrun}
resume=auto parent=
case "${1:-}" in
  big) name=train worktree=wt ;;
  kinds) name=train-kinds worktree=wt-kinds
    ls "$LONGRUN"/runs/toyworld-mtu-kinds/checkpoints/checkpoint-* > /dev/null 2>&1 \
      || resume=$LONGRUN/runs/toyworld-mtu-big/checkpoints/checkpoint-0023000 ;;
  restart) name=train-restart worktree=wt-restart parent=runs/toyworld-mtu-big/final ;;
  restart2) name=train-restart2 worktree=wt-restart2 parent=runs/toyworld-mtu-restart/final ;;
  *) echo "run-arm.sh: the arm must be big, kinds, restart or restart2, not '${1:-}'" >&2; exit 2 ;;
esac
cd "$LONGRUN" || exit 2
if [ -n "$parent" ] && [ ! -d "$parent" ]; then
  echo "run-arm.sh: $LONGRUN/$parent is missing (the parent arm's end)" >&2; exit 2
fi
export OMP_NUM_THREADS=${THREADS:-1} MKL_NUM_THREADS=${THREADS:-1} PYTHONPATH=$LONGRUN/$worktree/src
exec "${PYTHON:-/work/main/.venv/bin/python}" -m mtu.cli train --config "$LONGRUN/$name.yaml" --resume "$resume" \
  >> "$LONGRUN/$name.log" 2>&1
