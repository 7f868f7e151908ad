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
# appended to OUT/unit-times.jsonl. The light files of finished runs go to OUT/runs and the
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

timed() {  # timed STAGE COMMAND...: run it, then append its wall time to unit-times.jsonl
  local stage=$1 start status=0
  shift
  start=$(date +%s)
  "$@" || status=$?
  printf '{"dataset": "%s", "seed": %s, "stage": "%s", "preset": "%s", "started": "%s", "seconds": %s, "exit": %s, "cores": %s}\n' \
    "$dataset" "$seed" "$stage" "$preset" "$(date -u -d "@$start" +%FT%TZ)" "$(($(date +%s) - start))" "$status" \
    "$(nproc)" >> "$out/unit-times.jsonl"
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
results/collect.sh "$runs" "$out"
