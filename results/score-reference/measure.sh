#!/usr/bin/env bash
# The split of a StratDiff-IQL run with the `study` preset's score settings, judged against the
# reference (gaussian_fit, M = 64, 15 steps) at the start, middle and end of its online phase.
#
#   results/score-reference/measure.sh DATASET [SEED]
#
# A shortened run (OFFLINE_STEPS, default 30000, then ONLINE_STEPS, default 12000, of which
# WARMUP_STEPS, default 2000, before the first update; the study's network sizes, behaviour
# model and score schedules), snapshots of its folder at the three points, then
# `stratdiff diffusion similarity SNAPSHOT --batches 8` on each: the JSON files land beside this
# script as DATASET-stepN.json. Run folders go to runs/score-reference/ (not committed); run it
# again after an interruption: the run resumes from its last checkpoint.
#
# The behaviour model is trained for DIFFUSION_STEPS (default 20000, the `cpu` preset's; the
# `study` preset now trains it for 40000). EXTRA_SET adds --set items (other score options, say)
# RESULTS (default results/score-reference) is where the JSON files go, RUNS_ROOT (default
# runs/score-reference) where the run folders go.
#
# REWIND=1 measures the online phase again from the copy taken at its start (after the score
# options changed, say): the old run folder moves to run.old, and `rewind.py` sets up the run
# at the end of the same offline phase, so the behaviour model and energy are not trained again.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATASET=$1
SEED=${2:-0}
OFF=${OFFLINE_STEPS:-30000}
ON=${ONLINE_STEPS:-12000}
WARMUP=${WARMUP_STEPS:-2000}
STRATDIFF=${STRATDIFF:-.venv/bin/stratdiff}
PYTHON=${PYTHON:-.venv/bin/python}
ROOT=${RUNS_ROOT:-runs/score-reference}/$DATASET-s$SEED
RESULTS=${RESULTS:-results/score-reference}
read -r -a EXTRA <<< "${EXTRA_SET:-}"
mkdir -p "$ROOT" "$RESULTS"
if [ "${REWIND:-0}" = 1 ]; then
  rm -rf "$ROOT/run.old" "$ROOT/step$OFF.old"
  if [ -d "$ROOT/run" ]; then mv "$ROOT/run" "$ROOT/run.old"; fi
  mv "$ROOT/snapshots/step$OFF" "$ROOT/step$OFF.old"
  rm -rf "$ROOT/snapshots"
  "$PYTHON" results/score-reference/rewind.py "$ROOT/step$OFF.old" "$ROOT/run"
fi
RESUME=()
[ -f "$ROOT/run/config.json" ] && RESUME=(--resume)
"$STRATDIFF" train --algo stratdiff-iql --preset study --dataset "$DATASET" --seed "$SEED" --out "$ROOT/run" \
  --no-progress "${RESUME[@]}" --set offline_steps="$OFF" online_steps="$ON" online_warmup_steps="$WARMUP" \
  log_every=1000 eval_every=6000 offline_eval_every="$OFF" eval_episodes=5 checkpoint_every=1000 \
  stratifier.diffusion_steps="${DIFFUSION_STEPS:-20000}" "${EXTRA[@]}" \
  > "$ROOT/train.log" 2>&1 &
TRAIN=$!
MIDDLE=$((OFF + WARMUP + (ON - WARMUP) / 2))
"$PYTHON" results/amortised-score/snapshot.py "$ROOT/run" "$ROOT/snapshots" "$OFF" "$MIDDLE" "$((OFF + ON))" \
  || true
wait "$TRAIN"
for snap in "$ROOT"/snapshots/step*; do
  name=$(basename "$snap")
  "$STRATDIFF" diffusion similarity "$snap" --batches 8 --out "$ROOT/similarity-$name" > /dev/null
  cp "$ROOT/similarity-$name/similarity.json" "$RESULTS/$DATASET-s$SEED-$name.json"
  echo "$RESULTS/$DATASET-s$SEED-$name.json"
done
