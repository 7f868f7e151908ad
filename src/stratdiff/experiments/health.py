"""What the report says about runs that did not end well: diverged runs (their
`diverged.json`) and the last sweep's status of unfinished runs (`sweep.json`, checked).

A damaged sweep.json or metrics.csv stops the report with a DamagedFileError naming the
file and what to do; nothing is read around the damage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stratdiff import runfiles
from stratdiff.experiments.sweep import DIVERGED, MANIFEST, SUMMARY, divergence as _record
METRICS_FIX = ("run it again with `stratdiff train ... --force` (it deletes the run's files and starts over), "
               "or move the run folder out of the report's folder")
MANIFEST_FIX = ("move it away (e.g. to sweep.json.damaged): the report reads the run folders; running the "
                "sweep again writes a new one")


def read_metrics_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """A run's metrics.csv, checked (`runfiles.read_metrics_csv`); ([], []) when there is none."""
    if not path.is_file():
        return [], []
    return runfiles.read_metrics_csv(path, METRICS_FIX)


def divergence(folder: Path) -> dict[str, Any] | None:
    """The diverged.json record of an unfinished run folder (step, phase, loss, value), or None."""
    if not (folder / DIVERGED).is_file() or (folder / SUMMARY).is_file():
        return None
    return _record(folder)


def sweep_status(root: Path) -> dict[str, dict[str, Any]]:
    """Resolved run folder -> its entry in ROOT/sweep.json's latest invocation ({} without one)."""
    path = root / MANIFEST
    if not path.is_file():
        return {}
    manifest = runfiles.read_json(path, ("runs",), MANIFEST_FIX)
    runs = manifest["runs"]
    if not isinstance(runs, list) or not all(isinstance(e, dict) and "dir" in e for e in runs):
        raise runfiles.DamagedFileError(f"{path} is damaged (its runs are not entries with a dir); {MANIFEST_FIX}")
    return {str(Path(e["dir"]).resolve()): e for e in runs}


def diverged_lines(diverged: list[tuple[Path, str, str, int, dict[str, Any]]]) -> list[str]:
    """report.md's section on diverged runs: (folder, algo, dataset, seed, record) each."""
    lines = ["## Diverged runs", ""]
    if not diverged:
        return lines + ["None.", ""]
    lines += ["A loss became NaN or inf; the run stopped at that step and keeps its last good checkpoint. "
              "A sweep does not retry it. Not in any table or figure.", "",
              "| folder | algo | dataset | seed | step | phase | loss | value |",
              "|:---|:---|:---|:---|:---|:---|:---|:---|"]
    for folder, algo, dataset, seed, r in diverged:
        lines.append(f"| `{folder}` | {algo} | {dataset} | {seed} | {r.get('step', '?')} | {r.get('phase', '?')} | "
                     f"`{r.get('loss', '?')}` | {r.get('value', '?')} |")
    return lines + [""]
