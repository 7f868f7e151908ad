#!/bin/bash
# usage: results/collect.sh [--with-offline-agents] [--with-unfinished] RUNS_DIR RESULTS_DIR
# Copy the light files of every finished run under RUNS_DIR (config.json, metrics.csv,
# summary.json, offline_agent.json) into RESULTS_DIR/runs, then write RESULTS_DIR/report.
# --with-offline-agents also copies each run's offline_agent.msgpack (a few MB: the agent at the
# end of the offline phase, which `reuse_offline_from` and `sweep --share-offline` take over), so
# that another machine can continue the study without recomputing the offline phases.
# --with-unfinished also copies every unfinished run (a checkpoint.msgpack but no summary.json)
# into RESULTS_DIR/unfinished, with its checkpoint and (StratDiff runs) its behaviour/ folder (the
# pretrained behaviour model, support actions and energy: 10-30 MB). On another machine, copy
# RESULTS_DIR/runs/. and RESULTS_DIR/unfinished/. into the same RUNS_DIR path (a run's config.json
# names its backbone's run by that path, and resume refuses a config that differs) and re-run the
# sweep: it resumes each run from its checkpoint. Earlier unfinished copies are replaced, so a run
# that has finished since is dropped. Without it, unfinished runs are left out; nothing under
# RUNS_DIR is changed. Offline agents and unfinished runs are for moving work between machines,
# not for committing (.gitignore lists them).
# e.g. results/collect.sh runs/study results/study-cpu
#      results/collect.sh --with-offline-agents runs/antmaze-study results/antmaze-cpu
set -euo pipefail
cd "$(dirname "$0")/.."
files="config.json metrics.csv summary.json offline_agent.json"
unfinished=0
while [ $# -gt 0 ]; do
  case "$1" in
    --with-offline-agents) files="$files offline_agent.msgpack"; shift ;;
    --with-unfinished) unfinished=1; shift ;;
    -*) echo "collect.sh: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
if [ $# -ne 2 ]; then
  echo "usage: results/collect.sh [--with-offline-agents] [--with-unfinished] RUNS_DIR RESULTS_DIR" >&2
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
if [ "$unfinished" = 1 ]; then
  rm -rf "$out/unfinished"
  for ckpt in "$src"/*/*/seed*/checkpoint.msgpack; do
    [ -e "$ckpt" ] || continue
    run=$(dirname "$ckpt")
    [ -e "$run/summary.json" ] && continue
    rel=${run#"$src"/}
    mkdir -p "$out/unfinished/$rel"
    # the checkpoint before metrics.csv, so the copied metrics reach at least its step (resume
    # drops the rows after it)
    for f in checkpoint.msgpack config.json metrics.csv offline_agent.json offline_agent.msgpack; do
      if [ -e "$run/$f" ]; then cp "$run/$f" "$out/unfinished/$rel/$f"; fi
    done
    # a StratDiff run's pretrained behaviour model, support actions and energy: without them a
    # resume retrains them (half an hour on AntMaze), and on other cores not bit for bit
    if [ -d "$run/behaviour" ]; then cp -r "$run/behaviour" "$out/unfinished/$rel/behaviour"; fi
    echo "collect.sh: unfinished run $rel copied with its checkpoint"
  done
fi
rm -rf "$out/report"  # figures of an earlier collection must not linger
.venv/bin/stratdiff report "$dst" --out "$out/report"
