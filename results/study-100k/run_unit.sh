#!/bin/bash
# usage: results/study-100k/run_unit.sh DATASET SEED
#        (PRESET=smoke SNAPSHOT_STEPS="200 300 400" RUNS=... OUT=... check the script in minutes)
# One unit of the study: one (dataset, seed), its shared offline phase and three online arms, one
# run at a time with both cores:
#   1. iql             IQL, offline phase and online phase (sweep, RUNS/iql/DATASET/seedSEED)
#   2. stratdiff-iql   StratDiff-IQL from IQL's offline agent (sweep --share-offline)
#   3. random-split    StratDiff-IQL with --random-split from the same offline agent
#                      (RUNS/stratdiff-iql-random-split/DATASET/seedSEED)
# It builds DATASET first where it is missing. For seed 0 (SNAPSHOT_SEEDS) it copies the
# StratDiff-IQL run at the start, middle and end of its online phase and measures the split
# there (`stratdiff diffusion similarity`, into OUT/agreement/). Each stage's wall time is
# appended to OUT/unit-times.jsonl when the unit has finished ("exit": the command's status, or
# "interrupted" for a stage whose call was killed outright, timed from a heartbeat file). The light files of finished runs go to OUT/runs and the
# report to OUT/report (results/collect.sh). Run it again after an interruption: every run
# resumes from its last checkpoint, and finished runs are skipped.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -eq 2 ] || { echo "usage: $0 DATASET SEED" >&2; exit 2; }
dataset=$1
seed=$2
runs=${RUNS:-runs/study-100k}
out=${OUT:-results/study-100k}
preset=${PRESET:-study}
steps=${SNAPSHOT_STEPS:-300000 350000 400000}  # the online phase's start, middle and end
snapshot_seeds=${SNAPSHOT_SEEDS:-0}
bin=.venv/bin
mkdir -p "$out"

# A unit's stage times wait beside its runs (RUNS/.unit-times-DATASET-seedSEED.jsonl), so that
# they are lost with the runs if these are, and join OUT/unit-times.jsonl when the unit finishes.
times=$runs/.unit-times-$dataset-seed$seed.jsonl

record() {  # record STAGE START SECONDS EXIT: append a stage's wall time to the unit's times
  printf '{"dataset": "%s", "seed": %s, "stage": "%s", "preset": "%s", "started": "%s", "seconds": %s, "exit": "%s", "cores": %s}\n' \
    "$dataset" "$seed" "$1" "$preset" "$(date -u -d "@$2" +%FT%TZ)" "$3" "$4" "$(nproc)" >> "$times"
}

# A call killed outright (the machine taken away) cannot record its stage's time, so a heartbeat
# file under RUNS notes the stage, its start and the last moment it was seen alive, every 30 s;
# the next call records that stage as "interrupted" with the time it had run (to within 30 s).
beat=$runs/.unit-heartbeat-$dataset-seed$seed
mkdir -p "$runs"
if [ -f "$beat" ]; then
  read -r b_stage b_start b_last < "$beat"
  record "$b_stage" "$b_start" "$((b_last - b_start))" interrupted
  rm -f "$beat"
fi

timed() {  # timed STAGE COMMAND...: run it, then append its wall time to unit-times.jsonl
  local stage=$1 start status=0 alive
  shift
  start=$(date +%s)
  ( while kill -0 $$ 2>/dev/null; do echo "$stage $start $(date +%s)" > "$beat.tmp" && mv "$beat.tmp" "$beat"
    sleep 30; done ) &  # stops with this script
  alive=$!
  "$@" || status=$?
  kill "$alive" 2>/dev/null || true
  wait "$alive" 2>/dev/null || true
  rm -f "$beat"
  record "$stage" "$start" "$(($(date +%s) - start))" "$status"
  return $status
}

if ! $bin/stratdiff data list | awk -v d="$dataset" '$1 == d && $2 == "yes" {found=1} END {exit !found}'; then
  timed data $bin/stratdiff data build "$dataset"
fi

sweep=($bin/stratdiff sweep --datasets "$dataset" --seeds "$seed" --preset "$preset" --out "$runs" --workers 1)
timed iql "${sweep[@]}" --algos iql

watcher=
if [[ " $snapshot_seeds " == *" $seed "* ]]; then
  snaps=$runs/snapshots/$dataset/seed$seed
  # shellcheck disable=SC2086
  $bin/python results/amortised-score/snapshot.py "$runs/stratdiff-iql/$dataset/seed$seed" "$snaps" $steps &
  watcher=$!
  trap 'kill $watcher 2>/dev/null || true' EXIT
fi
timed stratdiff-iql "${sweep[@]}" --algos stratdiff-iql --share-offline
if [ -n "$watcher" ]; then wait "$watcher" || true; fi

random=$runs/stratdiff-iql-random-split/$dataset/seed$seed
resume=()
[ -f "$random/config.json" ] && resume=(--resume)
if [ ! -f "$random/summary.json" ]; then
  timed random-split $bin/stratdiff train --algo stratdiff-iql --random-split --dataset "$dataset" --seed "$seed" \
    --preset "$preset" --out "$random" "${resume[@]}" --set reuse_offline_from="$runs/iql/$dataset/seed$seed"
fi

if [ -n "$watcher" ]; then
  mkdir -p "$out/agreement"
  for snap in "$snaps"/step*; do
    [ -d "$snap" ] || continue
    name=$dataset-seed$seed-$(basename "$snap").json
    if [ ! -e "$out/agreement/$name" ]; then
      timed "similarity-$(basename "$snap")" $bin/stratdiff diffusion similarity "$snap" --batches 8 \
        --out "$snap/similarity" > /dev/null
      cp "$snap/similarity/similarity.json" "$out/agreement/$name"
    fi
  done
fi
cat "$times" >> "$out/unit-times.jsonl"
rm -f "$times"
results/collect.sh "$runs" "$out"
