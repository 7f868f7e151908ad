#!/bin/bash
# usage: results/behaviour-fidelity/run_curve.sh [RUNS_DIR]   (default RUNS_DIR: runs/behaviour-fidelity)
# The behaviour model's fidelity against the training budget: for each budget in BUDGETS (in order)
# and each dataset in DATASETS, continue that dataset's `cpu`-preset model (seed 0) in
# RUNS_DIR/DATASET to the budget (`stratdiff diffusion train --resume`; no support actions worth
# the name: 1 state, K = 1) and score it (`stratdiff diffusion fidelity`, 512 states x 64
# samples) into results/behaviour-fidelity/DATASET/steps-BUDGET/. Points already scored are
# skipped and a killed run continues from the last saved budget, so rerunning it resumes; a
# dataset not built yet is skipped and picked up by the next rerun. Each point's wall seconds
# (training from the previous budget, scoring) are appended to timings.jsonl. Finally the curve:
# results/behaviour-fidelity/curve.png (+ curve.json). Env: PYTHON (default python),
# BUDGETS, DATASETS.
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python}
RUNS=${1:-runs/behaviour-fidelity}
OUT=results/behaviour-fidelity
BUDGETS=${BUDGETS:-"2000 5000 10000 20000 40000"}
DATASETS=${DATASETS:-"halfcheetah-medium-v5 hopper-medium-replay-v5 antmaze-umaze-diverse-v0"}
DATA=${STRATDIFF_DATA_DIR:-$HOME/.stratdiff/datasets}
# Budget by budget, so every dataset's curve grows together; a dataset built late (or a point lost)
# catches up on its missing smaller budgets first, in order, since a model only grows.
for budget in $BUDGETS; do
  for ds in $DATASETS; do
    if [ ! -f "$DATA/$ds/data/metadata.json" ]; then echo "$(date -u +%T) $ds not built; skipped"; continue; fi
    for b in $BUDGETS; do
      [ "$b" -gt "$budget" ] && break
      point=$OUT/$ds/steps-$b
      [ -f "$point/fidelity.json" ] && continue
      if [ -f "$RUNS/$ds/config.json" ] && [ "$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['config']['train_steps'])" "$RUNS/$ds/config.json")" -gt "$b" ]; then
        echo "$(date -u +%T) $ds: the model is past $b; point skipped"; continue
      fi
      echo "$(date -u +%T) $ds: training to $b"
      t0=$(date +%s)
      $PY -m stratdiff.cli diffusion train --dataset "$ds" --out "$RUNS/$ds" --preset cpu --seed 0 \
        --steps "$b" --support-states 1 --num-support 1 --resume --no-progress > "$RUNS/$ds.train.json" || exit 1
      t1=$(date +%s)
      echo "$(date -u +%T) $ds: scoring $b"
      $PY -m stratdiff.cli diffusion fidelity "$RUNS/$ds" --states 512 --samples 64 --seed 0 --out "$point" > /dev/null || exit 1
      t2=$(date +%s)
      echo "{\"dataset\": \"$ds\", \"budget\": $b, \"train_wall_s\": $((t1 - t0)), \"score_wall_s\": $((t2 - t1)), \"finished\": \"$(date -u +%FT%TZ)\"}" >> $OUT/timings.jsonl
    done
  done
done
ls $OUT/*/steps-*/fidelity.json > /dev/null 2>&1 && $PY -m stratdiff.cli diffusion fidelity-curve $OUT/*/steps-*/fidelity.json --out $OUT/curve.png > /dev/null
echo "$(date -u +%T) done"
