#!/bin/bash
# usage: results/collect.sh [--with-offline-agents] RUNS_DIR RESULTS_DIR
# Copy the light files of every finished run under RUNS_DIR (config.json, metrics.csv,
# summary.json, offline_agent.json) into RESULTS_DIR/runs, then write RESULTS_DIR/report.
# --with-offline-agents also copies each run's offline_agent.msgpack (a few MB: the agent at the
# end of the offline phase, which `reuse_offline_from` and `sweep --share-offline` take over), so
# a fresh machine can continue the study without recomputing the offline phases.
# Unfinished runs (no summary.json) are left out; nothing under RUNS_DIR is changed.
# e.g. results/collect.sh runs/study results/study-cpu
#      results/collect.sh --with-offline-agents runs/antmaze-study results/antmaze-cpu
set -euo pipefail
cd "$(dirname "$0")/.."
files="config.json metrics.csv summary.json offline_agent.json"
if [ "${1:-}" = "--with-offline-agents" ]; then
  files="$files offline_agent.msgpack"
  shift
fi
if [ $# -ne 2 ]; then
  echo "usage: results/collect.sh [--with-offline-agents] RUNS_DIR RESULTS_DIR" >&2
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
  for f in $files; do
    if [ -e "$run/$f" ]; then cp "$run/$f" "$dst/$rel/$f"; fi
  done
done
rm -rf "$out/report"  # figures of an earlier collection must not linger
.venv/bin/stratdiff report "$dst" --out "$out/report"
