"""Report figures: learning curves and other online-phase metrics per dataset, mean +- std
over seeds, one line per table column."""

from __future__ import annotations

import math
import textwrap
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stratdiff.experiments.runs import KINDS, Column, Run


COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
          "#bcbd22", "#17becf"]


def aggregate_curve(series: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, ...]:
    """(x, mean, std, n) over seeds at every x any seed logged (std 0 where one seed)."""
    by_x: dict[float, list[float]] = defaultdict(list)
    for xs, ys in series:
        for x, y in zip(xs, ys):
            by_x[float(x)].append(float(y))
    xs = np.array(sorted(by_x))
    vals = [by_x[x] for x in xs]
    mean = np.array([np.mean(v) for v in vals])
    std = np.array([np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in vals])
    n = np.array([len(v) for v in vals])
    return xs, mean, std, n


def panel_title(dataset: str, lines: dict[tuple[Column, int], list]) -> str:
    """A curves panel's title with its seed count, per table column where they differ
    ("hopper-medium-v5 (3 seeds)", "walker2d-medium-v5 (seeds: IQL 3, StratDiff-IQL 1)")."""
    counts: dict[str, int] = {}
    for (col, _), series in lines.items():
        counts[col.label] = max(counts.get(col.label, 0), len(series))
    if len(set(counts.values())) == 1:
        n = next(iter(counts.values()))
        return f"{dataset}  ({n} seed{'s' if n > 1 else ''})"
    seeds = "(seeds: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + ")"
    return f"{dataset}  {seeds}" if len(dataset) + len(seeds) <= 44 else f"{dataset}\n{seeds}"


def _grid(n: int):
    from matplotlib.figure import Figure

    cols = min(3, max(1, n))
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(max(4.6 * cols, 8.0), 3.4 * rows + 0.6), layout="constrained")
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n)]
    return fig, axes


def _steps_formatter(ax) -> None:
    from matplotlib.ticker import FuncFormatter

    def fmt(x, _):
        if abs(x) >= 1e6:
            return f"{x / 1e6:g}M"
        if abs(x) >= 1e3:
            return f"{x / 1e3:g}k"
        return f"{x:g}"

    ax.xaxis.set_major_formatter(FuncFormatter(fmt))


def plot_curves(groups: dict[Column, list[Run]], column: str | Sequence[tuple[str, str]], path: Path, title: str,
                ylabel: str, colors: dict[str, str], auto_log: bool = False) -> bool:
    """One panel per dataset, one line per table column (mean over seeds, +- std band).

    `column` is a metrics column, or several (metrics column, legend suffix) pairs drawn
    in one colour per table column with solid, dashed, dotted lines. False (and no file)
    when no run logged any of them in the online phase. `auto_log`: a log y axis when every
    value is positive and they span more than two orders of magnitude."""
    series_cols = [(column, "")] if isinstance(column, str) else list(column)
    styles = ["-", "--", ":", "-."]
    datasets: dict[str, str] = {}
    lines: dict[str, dict[tuple[Column, int], list]] = defaultdict(dict)
    for col, runs in groups.items():
        for r in runs:
            for j, (metric, _) in enumerate(series_cols):
                xs, ys = r.online_series(metric)
                if xs.size:
                    datasets[r.dataset] = r.kind
                    lines[r.dataset].setdefault((col, j), []).append((xs, ys))
    if not datasets:
        return False
    order = sorted(datasets, key=lambda d: (KINDS.index(datasets[d]), d))
    fig, axes = _grid(len(order))
    handles = {}
    for ax, ds in zip(axes, order):
        for (col, j), series in lines[ds].items():
            x, mean, std, n = aggregate_curve(series)
            color = colors.get(col.label, "k")
            label = col.label + series_cols[j][1]
            (h,) = ax.plot(x, mean, color=color, lw=1.8, ls=styles[j % len(styles)], label=label)
            ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.15, lw=0)
            handles[label] = h
        ax.set_title(panel_title(ds, lines[ds]), fontsize=11)
        values = np.concatenate([y for series in lines[ds].values() for _, y in series])
        if auto_log and values.min() > 0 and values.max() > 100 * values.min():
            ax.set_yscale("log")
        ax.set_xlabel("online environment steps")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        _steps_formatter(ax)
    width = fig.get_figwidth()
    fig.suptitle(textwrap.fill(title, int(width * 10)), fontsize=13)
    longest = max(len(label) for label in handles)
    ncol = max(1, min(len(handles), 4, int(width * 11 / (longest + 4))))
    fig.legend(list(handles.values()), [textwrap.fill(label, int(width * 11)) for label in handles],
               loc="outside lower center", ncol=ncol, fontsize=10, frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return True
