#!/bin/bash
# The long toy-world run of issue 11, carried between machines: the newest checkpoint of the session that last ran
# it is committed here (run/), since a session may start on a fresh machine. This script puts it back where the
# run lives (/work/longrun) and starts the run again (resume: auto, exact); on a machine that still has
# /work/longrun it only starts the run. Afterwards: `tail -c 300 /work/longrun/train.log`.
# `restore.sh kinds` does the same for the kind-weighted branch (run-kinds/, run-kinds.sh; log train-kinds.log),
# `restore.sh both` for both arms (one thread each).
set -euo pipefail
ARMS=${1:-big}
case "$ARMS" in big|kinds|both) ;; *) echo "restore.sh: the arm must be big, kinds or both, not '$ARMS'" >&2; exit 2 ;; esac
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
LONGRUN=${LONGRUN:-/work/longrun}  # another folder only to check this script, with NO_START=1
RUN=$LONGRUN/runs/toyworld-mtu-big
mkdir -p "$RUN/checkpoints"
[ -d "$LONGRUN/wt" ] || git -C "$REPO" worktree add --detach "$LONGRUN/wt" d0a2330  # the code the run started with
[ -f "$LONGRUN/train.yaml" ] || cp "$REPO/benchmarks/recipes/toyworld-mtu-long.yaml" "$LONGRUN/train.yaml"
[ -f "$RUN/config.yaml" ] || cp "$HERE/run/config.yaml" "$HERE/run/.mtu-output.json" "$RUN/"
for checkpoint in "$HERE"/run/checkpoints/checkpoint-*; do
  [ -d "$RUN/checkpoints/$(basename "$checkpoint")" ] || cp -r "$checkpoint" "$RUN/checkpoints/"
done
cp "$HERE/run.sh" "$HERE/run-kinds.sh" "$LONGRUN/"
if [ "$ARMS" != big ]; then
  KINDS=$LONGRUN/runs/toyworld-mtu-kinds
  [ -d "$LONGRUN/wt-kinds" ] || git -C "$REPO" worktree add --detach "$LONGRUN/wt-kinds" 22b032d  # edit_kind_weights
  [ -f "$LONGRUN/train-kinds.yaml" ] || cp "$REPO/benchmarks/recipes/toyworld-mtu-long-kinds.yaml" "$LONGRUN/train-kinds.yaml"
  if [ -d "$HERE/run-kinds" ]; then
    mkdir -p "$KINDS/checkpoints"  # (an empty output_dir is refused by mtu train: only with checkpoints)
    [ -f "$KINDS/config.yaml" ] || cp "$HERE/run-kinds/config.yaml" "$HERE/run-kinds/.mtu-output.json" "$KINDS/"
    for checkpoint in "$HERE"/run-kinds/checkpoints/checkpoint-*; do
      [ -d "$KINDS/checkpoints/$(basename "$checkpoint")" ] || cp -r "$checkpoint" "$KINDS/checkpoints/"
    done
  fi
fi
[ -z "${NO_START:-}" ] || exit 0
start() {  # start ARM's script unless its config is in use already
  local script=$1 config=$2 log=$3
  if pgrep -f "$LONGRUN/$config" > /dev/null; then echo "$script is running already"; return; fi
  (cd "$LONGRUN" && setsid nohup "./$script" > /dev/null 2>&1 &)
  echo "$script started; log: $LONGRUN/$log"
}
case "$ARMS" in
  big) start run.sh train.yaml train.log ;;
  kinds) start run-kinds.sh train-kinds.yaml train-kinds.log ;;
  both) start run.sh train.yaml train.log; start run-kinds.sh train-kinds.yaml train-kinds.log ;;
esac
