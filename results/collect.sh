#!/bin/bash
# usage: results/collect.sh RUNS_DIR RESULTS_DIR
# Copy the light files of every finished run under RUNS_DIR (config.json, metrics.csv,
# summary.json, offline_agent.json) into RESULTS_DIR/runs, then write RESULTS_DIR/report.
# Unfinished runs (no summary.json) are left out; nothing under RUNS_DIR is changed.
# e.g. results/collect.sh runs/study results/study-cpu
#      results/collect.sh runs/antmaze-study results/antmaze-cpu
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -ne 2 ]; then
  echo "usage: results/collect.sh RUNS_DIR RESULTS_DIR" >&2
  exit 2
fi
src=${1%/}
out=${2%/}
[ -d "$src" ] || { echo "collect.sh: no runs folder $src" >&2; exit 2; }
dst=$out/runs
for summary in "$src"/*/*/seed*/summary.json; do
  [ -e "$summary" ] || continue
  run=$(dirname "$summary")
  rel=${run#"$src"/}
  mkdir -p "$dst/$rel"
  for f in config.json metrics.csv summary.json offline_agent.json; do
    if [ -e "$run/$f" ]; then cp "$run/$f" "$dst/$rel/$f"; fi
  done
done
rm -rf "$out/report"  # figures of an earlier collection must not linger
.venv/bin/stratdiff report "$dst" --out "$out/report"
