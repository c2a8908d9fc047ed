#!/bin/bash
# The long toy-world run of issue 11, carried between machines: the newest checkpoint of the session that last ran
# it is committed here (run/), since a session may start on a fresh machine. This script puts it back where the
# run lives (/work/longrun) and starts the run again (resume: auto, exact); on a machine that still has
# /work/longrun it only starts the run. Afterwards: `tail -c 300 /work/longrun/train.log`.
# `restore.sh kinds` does the same for the kind-weighted branch (run-kinds/; log train-kinds.log),
# `restore.sh both` for both arms (one thread each). `restore.sh restart` starts the tenth round's restart
# (benchmarks/recipes/toyworld-mtu-restart.yaml: the run's final/ trained on with a new cosine cycle; run-restart/;
# log train-restart.log) and not the run, which has ended. `restore.sh restart2` starts or continues
# the third cycle (toyworld-mtu-restart2.yaml, from the restart's end: the weights the package shipped at a71d31c, byte for byte
# the restart's final/, put there when missing; run-restart2/ holds its end, step 8000, shipped since 2026-12-04;
# log train-restart2.log). Each arm runs as `run-arm.sh ARM` (copied into $LONGRUN), which says what each arm is.
set -euo pipefail
ARMS=${1:-big}
case "$ARMS" in big|kinds|both|restart|restart2) ;;
  *) echo "restore.sh: the arm must be big, kinds, both, restart or restart2, not '$ARMS'" >&2; exit 2 ;;
esac
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
LONGRUN=${LONGRUN:-/work/longrun}  # another folder only to check this script, with NO_START=1
restore() {  # STATE RUN_NAME WORKTREE COMMIT RECIPE CONFIG: one arm's code, config and committed run folder
  local state=$HERE/$1 run=$LONGRUN/runs/$2
  [ -d "$LONGRUN/$3" ] || git -C "$REPO" worktree add --detach "$LONGRUN/$3" "$4"
  [ -f "$LONGRUN/$6" ] || cp "$REPO/benchmarks/recipes/$5" "$LONGRUN/$6"
  # An arm with no committed state is left to its script (mtu train refuses an output_dir with an empty checkpoints/).
  [ -d "$state" ] || return 0
  mkdir -p "$run/checkpoints"
  [ -f "$run/config.yaml" ] || cp "$state/config.yaml" "$state/.mtu-output.json" "$run/"
  # the run's end (final/: the EMA weights the restart starts from), once it is committed
  [ ! -d "$state/final" ] || [ -d "$run/final" ] || cp -r "$state/final" "$run/"
  for checkpoint in "$state"/checkpoints/checkpoint-*; do
    [ -d "$checkpoint" ] || continue
    [ -d "$run/checkpoints/$(basename "$checkpoint")" ] || cp -r "$checkpoint" "$run/checkpoints/"
  done
}
# the code each arm started with: d0a2330 for the run, 22b032d (edit_kind_weights) for the branch
restore run toyworld-mtu-big wt d0a2330 toyworld-mtu-long.yaml train.yaml
case "$ARMS" in kinds|both) restore run-kinds toyworld-mtu-kinds wt-kinds 22b032d toyworld-mtu-long-kinds.yaml train-kinds.yaml ;; esac
# the restart's code: 30a342d (main when the restart started)
[ "$ARMS" != restart ] || restore run-restart toyworld-mtu-restart wt-restart 30a342d toyworld-mtu-restart.yaml train-restart.yaml
# the third cycle's code: cfc6c0e; it starts from the restart's end, which the package ships (src/mtu/toyworld/mtu_model)
if [ "$ARMS" = restart2 ]; then
  restart_final=$LONGRUN/runs/toyworld-mtu-restart/final
  if [ ! -d "$restart_final" ]; then
    mkdir -p "$restart_final"
    # the package shipped the restart's end until 2026-12-04 (a71d31c); it ships the third cycle's end since
    for file in mtu_config.json mtu_model.safetensors; do
      git -C "$REPO" show "a71d31c:src/mtu/toyworld/mtu_model/$file" > "$restart_final/$file"
    done
  fi
  restore run-restart2 toyworld-mtu-restart2 wt-restart2 cfc6c0e toyworld-mtu-restart2.yaml train-restart2.yaml
fi
cp "$HERE/run-arm.sh" "$LONGRUN/"
[ -z "${NO_START:-}" ] || exit 0
start() {  # start ARM (run-arm.sh) unless its config is in use already
  local arm=$1 name=$2
  if pgrep -f "$LONGRUN/$name.yaml" > /dev/null; then echo "arm $arm is running already"; return; fi
  (cd "$LONGRUN" && LONGRUN=$LONGRUN setsid nohup ./run-arm.sh "$arm" > /dev/null 2>&1 &)
  echo "arm $arm started; log: $LONGRUN/$name.log"
}
case "$ARMS" in
  big) start big train ;;
  kinds) start kinds train-kinds ;;
  both) start big train; start kinds train-kinds ;;
  restart) start restart train-restart ;;
  restart2) start restart2 train-restart2 ;;
esac
