#!/bin/bash
# usage: results/study-200k/run_pair.sh DATASET SEED
#        (PRESET=smoke SNAPSHOT_STEPS="200 300 400" RUNS=... OUT=... check the script in a minute)
# One (dataset, seed) pair of the 200k-step study: builds DATASET if it is not built, then runs
# IQL and StratDiff-IQL at the `study` preset, StratDiff-IQL taking over IQL's offline phase
# (one sweep, one run at a time, each with both cores), snapshots the StratDiff-IQL run at the
# start, middle and end of its online phase for the split agreement, measures that agreement,
# and copies the light files into results/study-200k/. Run it again after an interruption: the
# sweep resumes each run from its last checkpoint (every 10k steps).
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -eq 2 ] || { echo "usage: $0 DATASET SEED" >&2; exit 2; }
dataset=$1
seed=$2
runs=${RUNS:-runs/study-200k}
out=${OUT:-results/study-200k}
preset=${PRESET:-study}
# the online phase's start (the stratifier just built), middle and end
steps=${SNAPSHOT_STEPS:-300000 400000 500000}
bin=.venv/bin
$bin/stratdiff data list | awk -v d="$dataset" '$1 == d && $2 == "yes" {found=1} END {exit !found}' \
  || $bin/stratdiff data build "$dataset"
run=$runs/stratdiff-iql/$dataset/seed$seed
snaps=$runs/snapshots/$dataset/seed$seed
# shellcheck disable=SC2086
$bin/python results/amortised-score/snapshot.py "$run" "$snaps" $steps &
watcher=$!
trap 'kill $watcher 2>/dev/null || true' EXIT
$bin/stratdiff sweep --algos iql stratdiff-iql --datasets "$dataset" --seeds "$seed" --preset "$preset" \
  --out "$runs" --workers 1 --share-offline
wait $watcher || true
mkdir -p "$out/agreement"
for snap in "$snaps"/step*; do
  [ -d "$snap" ] || continue
  name=$dataset-seed$seed-$(basename "$snap").json
  if [ ! -e "$out/agreement/$name" ]; then
    $bin/stratdiff diffusion similarity "$snap" --batches 8 --out "$snap/similarity" > /dev/null
    cp "$snap/similarity/similarity.json" "$out/agreement/$name"
  fi
done
results/collect.sh "$runs" "$out"
