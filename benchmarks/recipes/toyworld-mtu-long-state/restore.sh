#!/bin/bash
# The long toy-world run of issue 11, carried between machines: the newest checkpoint of the session that last ran
# it is committed here (run/), since a session may start on a fresh machine. This script puts it back where the
# run lives (/work/longrun) and starts the run again (resume: auto, exact); on a machine that still has
# /work/longrun it only starts the run. Afterwards: `tail -c 300 /work/longrun/train.log`.
set -euo pipefail
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
cp "$HERE/run.sh" "$LONGRUN/run.sh"
[ -z "${NO_START:-}" ] || exit 0
pgrep -f "$LONGRUN/train.yaml" > /dev/null && { echo "the long run is running already"; exit 0; }
(cd "$LONGRUN" && setsid nohup ./run.sh > /dev/null 2>&1 &)
echo "long run started from $(ls "$RUN/checkpoints" | tail -1); log: $LONGRUN/train.log"
