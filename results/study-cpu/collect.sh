#!/bin/bash
# Copy the light files of every finished run of the CPU-scale study (config.json, metrics.csv,
# summary.json, offline_agent.json) from runs/study into results/study-cpu/runs, then write the
# report. Unfinished runs (no summary.json) are left out.
set -euo pipefail
cd "$(dirname "$0")/../.."
src=${1:-runs/study}
dst=results/study-cpu/runs
for summary in "$src"/*/*/seed*/summary.json; do
  [ -e "$summary" ] || continue
  run=$(dirname "$summary")
  rel=${run#"$src"/}
  mkdir -p "$dst/$rel"
  for f in config.json metrics.csv summary.json offline_agent.json; do
    [ -e "$run/$f" ] && cp "$run/$f" "$dst/$rel/$f"
  done
done
rm -rf results/study-cpu/report  # figures of an earlier collection must not linger
.venv/bin/stratdiff report "$dst" --out results/study-cpu/report
