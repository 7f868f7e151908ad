"""Report tables: score cells per dataset and column, rendered as Markdown and LaTeX
(mean +- std with totals, IQM with stratified bootstrap intervals), and the column groups of
the ablation tables."""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from stratdiff.experiments import stats
from stratdiff.experiments.runs import (KIND_TITLES, KINDS, KNOWN_DEFAULTS, Column, Run, column_order,
                                        default_config, sortable, value_label, warn)


# ---- tables -------------------------------------------------------------------------------
@dataclasses.dataclass
class Table:
    """Cells as numbers; rendered to Markdown and LaTeX."""

    title: str
    columns: list[str]
    rows: list[tuple[str, str]]  # (dataset, kind)
    cells: dict[tuple[str, str], dict[str, Any]]  # (dataset, column) -> {"scores": [...], ...}
    caption: str = ""
    iqm_caption: str = "Normalised score after the online phase (final evaluation)."

    def column_scores(self, column: str, kind: str | None = None) -> dict[str, list[float]]:
        return {d: self.cells[(d, column)]["scores"] for d, k in self.rows
                if (kind is None or k == kind) and (d, column) in self.cells}


def _score_cells(groups: dict[Column, list[Run]], value: Callable[[Run], float],
                 what: str) -> tuple[list[tuple[str, str]], dict]:
    rows, cells = {}, {}
    for col, runs in groups.items():
        by_ds: dict[str, list[Run]] = defaultdict(list)
        for r in runs:
            by_ds[r.dataset].append(r)
            rows[r.dataset] = r.kind
        for ds, rs in by_ds.items():
            rs = sorted(rs, key=lambda r: r.seed)
            values = [(r.seed, value(r)) for r in rs]
            for r, (_, v) in zip(rs, values):
                if not math.isfinite(v):
                    listed = " (listed under 'Left out' in report.md)" if what == "final score" else ""
                    warn(f"run {r.path}: {what} {v} is not finite; left out of the cell {col.label} / {ds}{listed}")
            values = [(seed, v) for seed, v in values if math.isfinite(v)]
            cells[(ds, col.label)] = {"scores": [v for _, v in values], "seeds": [seed for seed, _ in values]}
    order = sorted(rows.items(), key=lambda kv: (KINDS.index(kv[1]), kv[0]))
    return order, cells


def score_table(title: str, groups: dict[Column, list[Run]], caption: str = "",
                value: Callable[[Run], float] = lambda r: r.final_score, what: str = "final score") -> Table:
    """Cells of `value(run)` (default: the final score) per dataset and column; `what` names
    the value in the warning about a non-finite one."""
    rows, cells = _score_cells(groups, value, what)
    return Table(title, [c.label for c in groups], rows, cells, caption)


def fmt_number(x: float, digits: int = 1) -> str:
    return "–" if not math.isfinite(x) else f"{x:.{digits}f}"


def _max_n(table: Table) -> int:
    return max((len(c["scores"]) for c in table.cells.values()), default=0)


def _mean_cell(cell: dict[str, Any] | None, max_n: int, latex: bool) -> tuple[str, float]:
    if not cell or not cell["scores"]:
        return ("--" if latex else "–"), -math.inf
    mean, std = stats.mean_std(cell["scores"])
    pm = r" $\pm$ " if latex else " ± "
    text = fmt_number(mean) + (pm + fmt_number(std) if math.isfinite(std) else "")
    n = len(cell["scores"])
    if n < max_n:
        text += f" (n={n})"
    return text, mean


def _iqm_cell(cell: dict[str, Any] | None, reps: int, seed: int, latex: bool) -> tuple[str, float]:
    if not cell or not cell["scores"]:
        return ("--" if latex else "–"), -math.inf
    point, lo, hi = stats.stratified_bootstrap_ci([cell["scores"]], stats.iqm, reps=reps, seed=seed)
    cell["iqm"], cell["ci"] = point, [lo, hi]
    return f"{fmt_number(point)} [{fmt_number(lo)}, {fmt_number(hi)}]", point


def _bold(text: str, latex: bool) -> str:
    return rf"\textbf{{{text}}}" if latex else f"**{text}**"


def _latex_escape(text: str) -> str:
    return (text.replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("%", r"\%")
            .replace("&", r"\&").replace("#", r"\#").replace("±", r"$\pm$"))


def _render(header: list[str], body: list[list[str]], latex: bool, caption: str, rules: Sequence[int],
            text_columns: int = 1) -> str:
    """A table with `text_columns` leading label columns (left aligned) and number columns."""
    if latex:
        lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{_latex_escape(caption)}}}",
                 r"\begin{tabular}{" + "l" * text_columns + "c" * (len(header) - text_columns) + "}", r"\toprule",
                 " & ".join(_latex_escape(h) for h in header) + r" \\", r"\midrule"]
        for i, row in enumerate(body):
            if i in rules:
                lines.append(r"\midrule")
            lines.append(" & ".join(row) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
        return "\n".join(lines) + "\n"
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join([":---"] * text_columns + ["---:"] * (len(header) - text_columns)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return (f"{caption}\n\n" if caption else "") + "\n".join(lines) + "\n"


def _dataset_rows(table: Table, datasets: Sequence[str], cell_text: Callable[[dict[str, Any] | None],
                  tuple[str, float]], latex: bool) -> list[list[str]]:
    """A row per dataset: `cell_text(cell)` -> (text, value) per column, the best finite value in bold
    when there are several columns."""
    rows = []
    for ds in datasets:
        texts = [cell_text(table.cells.get((ds, c))) for c in table.columns]
        best = max(v for _, v in texts)
        row = [_latex_escape(ds) if latex else ds]
        row += [_bold(t, latex) if v == best and math.isfinite(v) and len(texts) > 1 else t for t, v in texts]
        rows.append(row)
    return rows


def render_mean_table(table: Table, latex: bool = False) -> str:
    """Rows: datasets, then per task kind the sum of the column means (marked * when a
    dataset of that kind is missing in the column), and a grand total over kinds."""
    max_n = _max_n(table)
    body, rules = [], []
    kinds = [k for k in KINDS if any(kind == k for _, kind in table.rows)]
    totals: dict[str, list[tuple[float, bool]]] = {}
    for kind in kinds:
        rules.append(len(body))
        kind_rows = [d for d, k in table.rows if k == kind]
        body += _dataset_rows(table, kind_rows, lambda cell: _mean_cell(cell, max_n, latex), latex)
        tot_row = [f"total ({KIND_TITLES[kind]})"]
        for c in table.columns:
            means = [stats.mean_std(table.cells[(d, c)]["scores"])[0] for d in kind_rows
                     if (d, c) in table.cells and table.cells[(d, c)]["scores"]]
            complete = len(means) == len(kind_rows)
            total = float(np.sum(means)) if means else math.nan
            totals.setdefault(c, []).append((total, complete))
            tot_row.append(fmt_number(total) + ("" if complete or not means else "*"))
        rules.append(len(body))
        body.append(tot_row)
    if len(kinds) > 1:
        rules.append(len(body))
        grand = ["total"]
        for c in table.columns:
            parts = [t for t, _ in totals[c] if math.isfinite(t)]
            complete = all(ok for _, ok in totals[c])
            grand.append(fmt_number(float(np.sum(parts)) if parts else math.nan)
                         + ("" if complete or not parts else "*"))
        body.append(grand)
    caption = table.caption
    if any(not ok for parts in totals.values() for t, ok in parts if math.isfinite(t)):
        caption += " *: sum over the datasets present only (some are missing for this column)."
    return _render(["dataset", *table.columns], body, latex, caption, rules[1:] if rules else [])


def render_iqm_table(table: Table, reps: int, seed: int, confidence: float = 0.95, latex: bool = False) -> str:
    """IQM [95% CI] per cell; per task kind the IQM of every run pooled, its interval from a
    bootstrap stratified by dataset."""
    body, rules, incomplete = [], [], False
    kinds = [k for k in KINDS if any(kind == k for _, kind in table.rows)]
    for kind in kinds:
        rules.append(len(body))
        kind_rows = [d for d, k in table.rows if k == kind]
        body += _dataset_rows(table, kind_rows, lambda cell: _iqm_cell(cell, reps, seed, latex), latex)
        agg = [f"IQM, all {KIND_TITLES[kind]} runs"]
        for c in table.columns:
            strata = list(table.column_scores(c, kind).values())
            if not any(strata):
                agg.append("--" if latex else "–")
                continue
            point, lo, hi = stats.stratified_bootstrap_ci(strata, stats.iqm, reps=reps, confidence=confidence,
                                                          seed=seed)
            complete = len([s for s in strata if s]) == len(kind_rows)
            incomplete |= not complete
            agg.append(f"{fmt_number(point)} [{fmt_number(lo)}, {fmt_number(hi)}]" + ("" if complete else "*"))
        rules.append(len(body))
        body.append(agg)
    caption = (f"{table.iqm_caption} IQM (mean of the middle 50% of seeds; with fewer than 4 seeds, the mean) "
               f"[{round(confidence * 100)}% stratified bootstrap CI, {reps} resamples, seed {seed}].")
    if incomplete:
        caption += " *: some datasets are missing for this column."
    return _render(["dataset", *table.columns], body, latex, caption, rules[1:] if rules else [])


# ---- ablations ----------------------------------------------------------------------------
def ablation_groups(groups: dict[Column, list[Run]]) -> dict[str, dict[Column, list[Run]]]:
    """Setting -> columns comparing its values: for every method with runs that differ from
    the default in exactly that one setting, its default column and each variant column,
    ordered by value (the default first) and then method."""
    dims: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for col in groups:
        if len(col.variant) == 1:
            dims[col.variant[0][0]].add((col.algo, col.scale))
    out = {}
    for key, algos in sorted(dims.items()):
        chosen = []
        for col, runs in groups.items():
            if (col.algo, col.scale) not in algos:
                continue
            if col.variant == ():
                value, is_default = _default_value(key, runs), True
            elif len(col.variant) == 1 and col.variant[0][0] == key:
                value, is_default = col.variant[0][1], False
            else:
                continue
            chosen.append((not is_default, sortable(value), col, runs, value))
        chosen.sort(key=lambda t: (t[0], t[1], column_order(t[2])))
        multi_algo = len({a for a, _ in algos}) > 1
        table_cols = {}
        for _, _, col, runs, value in chosen:
            label = value_label(key, value)
            label = f"{col.algo}, {label}" if multi_algo else label
            if col.scale:
                label += f" ({col.scale})"
            table_cols[Column(col.algo, col.variant, col.scale, label)] = runs
        out[key] = table_cols
    return out


def _default_value(key: str, runs: Sequence[Run]) -> Any:
    default = default_config(runs[0].config, runs[0].path) or {}
    if key in default:
        return default[key]
    return KNOWN_DEFAULTS.get(key, "default")


# ---- per-seed numbers and online-phase means ---------------------------------------------
PER_SEED_HEADER = ("dataset", "method", "seed", "final_score", "last3_mean")


def per_seed_rows(groups: dict[Column, list[Run]]) -> list[tuple[str, str, int, float, float]]:
    """(dataset, column label, seed, final score, mean of the last three evaluations) for
    every run, ordered by task kind and dataset, then column, then seed."""
    rows = [(r.kind, r.dataset, i, col.label, r.seed, r.final_score, r.last_scores_mean(3))
            for i, (col, runs) in enumerate(groups.items()) for r in runs]
    rows.sort(key=lambda t: (KINDS.index(t[0]), t[1], t[2], t[4]))
    return [(ds, label, seed, final, last3) for _, ds, _, label, seed, final, last3 in rows]


def online_mean_cells(groups: dict[Column, list[Run]], column: str,
                      last_fraction: float) -> dict[tuple[str, str, str], dict[str, list]]:
    """{(task kind, dataset, column label): {"seeds", "online", "last"}} for each dataset and
    table column whose runs logged `column` online: each run's mean of it over the online phase
    and over the last `last_fraction` of online steps, in seed order; ordered by task kind and
    dataset, then column. Empty when no run logged it."""
    cells: dict[tuple[str, str, str], dict[str, list]] = {}
    for col, runs in groups.items():
        for r in sorted(runs, key=lambda r: r.seed):
            if r.online_series(column)[0].size:
                cell = cells.setdefault((r.kind, r.dataset, col.label), {"seeds": [], "online": [], "last": []})
                cell["seeds"].append(r.seed)
                cell["online"].append(r.online_mean(column))
                cell["last"].append(r.online_mean(column, last_fraction))
    order = {label: i for i, label in enumerate(c.label for c in groups)}
    return dict(sorted(cells.items(), key=lambda kv: (KINDS.index(kv[0][0]), kv[0][1], order[kv[0][2]])))


def render_online_mean_table(cells: dict[tuple[str, str, str], dict[str, list]], last_fraction: float,
                             latex: bool = False, caption: str = "") -> str:
    """`online_mean_cells` as a table: a row per dataset and column, mean ± std over seeds of
    the whole online phase's and the last part's means, and the number of seeds."""
    esc = _latex_escape if latex else str

    def text(values: list[float]) -> str:
        return _mean_cell({"scores": [v for v in values if math.isfinite(v)]}, 0, latex)[0]

    body, rules, last_ds = [], [], None
    for (_, ds, label), cell in cells.items():
        if last_ds is not None and ds != last_ds:
            rules.append(len(body))
        last_ds = ds
        body.append([esc(ds), esc(label), text(cell["online"]), text(cell["last"]), str(len(cell["seeds"]))])
    header = ["dataset", "method", "online phase", f"last {round(last_fraction * 100)}% of online steps", "seeds"]
    return _render(header, body, latex, caption, rules, text_columns=2)
