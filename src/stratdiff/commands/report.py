"""`stratdiff report DIR [--out REPORT_DIR]`: the paper's tables and figures from run folders.

Reads every `stratdiff train` run folder under DIR (any depth) and writes report.md,
Markdown and LaTeX tables and PNG figures; see `stratdiff.experiments.report`.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Annotated

import tyro


@dataclasses.dataclass
class ReportArgs:
    """Table 1 (mean ± std and IQM with bootstrap CIs), the mean of the last three evaluations,
    per-seed scores (CSV), P(X > Y) per dataset, learning curves, exchange counts and ablation
    tables from the runs under DIR (docs/reports.md lists every file)."""

    root: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="DIR")]
    """Folder holding run folders (a sweep's --out, or any parent of runs)."""
    out: Path | None = None
    """Report folder (default: DIR/report)."""
    reps: int = 2000
    """Bootstrap resamples for the IQM confidence intervals."""
    seed: int = 0
    """Seed of the bootstrap (same seed, same intervals)."""
    confidence: float = 0.95
    """Confidence level of the intervals."""


def main(argv: list[str]) -> int:
    args = tyro.cli(ReportArgs, args=argv, prog="stratdiff report")
    import matplotlib

    matplotlib.use("Agg")
    from stratdiff.experiments.report import ReportError, write_report

    if not 0.0 < args.confidence < 1.0 or args.reps < 1:
        print("stratdiff report: error: --confidence must lie in (0, 1) and --reps be >= 1", file=sys.stderr)
        return 1
    try:
        path = write_report(args.root, args.out, reps=args.reps, seed=args.seed, confidence=args.confidence)
    except ReportError as e:
        print(f"stratdiff report: error: {e}", file=sys.stderr)
        return 1
    main_table = path.parent / "table_main.md"
    if main_table.is_file():
        print(main_table.read_text())
    print(f"report: {path}")
    return 0
