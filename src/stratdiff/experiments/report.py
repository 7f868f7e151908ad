"""Reports over run folders: the paper's tables and figures from `stratdiff train` runs.

`write_report(root, out)` reads every run folder under `root` (any depth: a folder whose
config.json is a run config) and writes to `out`:

- `table_main.md/.tex`: Table 1 layout, the normalised score after the online phase (the
  final evaluation, summary.json's `final_score`), mean +- std over seeds (sample std,
  ddof=1), datasets as rows, methods as columns, totals (sums of the means) for the
  locomotion and AntMaze datasets (the task kind comes from the run's environment:
  `stratdiff.envs.get_spec(env).goal_reaching`);
- `table_iqm.md/.tex`: the same cells as IQM with a 95% stratified bootstrap interval
  (`stratdiff.experiments.stats`), aggregate rows pooling every run of a task kind;
- `table_rliable_<kind>.md/.tex` and `figures/rliable_*.png`: rliable's aggregate metrics per
  task kind (IQM, mean, optimality gap with stratified bootstrap CIs), performance profiles
  and probability of improvement (`stratdiff.experiments.rliable_stats`);
- `table_ablation_<key>.md/.tex`: Tables 5-8 layouts, one per ablated setting found;
- `figures/*.png`: learning curves per dataset (eval/score vs online step, mean +- std over
  seeds; Figures 3, 5, 6), exchange counts when runs logged `strat/exchange` (Figures 9,
  11), and the curves of each ablation (Figures 7, 8, 10);
- `report.md` linking all of it, with the scale read from the configs, the finished and
  unfinished run counts and the list of unfinished runs (never averaged in);
- `report.json`: the numbers behind the tables.

Runs are grouped by what their configs say, never by folder names: the method (`algo`),
the *variant* (every config field that differs from what `resolve_config` gives for that
method, dataset, environment and preset with no overrides, other than the scale fields)
and, when runs of several scales are present, the scale (preset and step counts).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
import textwrap
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stratdiff import runfiles
from stratdiff.experiments import health, rliable_stats, stats

# What names a run, and where its offline phase came from (`reuse_offline_from`: the same result
# as computing it, so never a variant).
IDENTITY_KEYS = ("algo", "dataset", "env", "seed", "reuse_offline_from")
# Scale: how long and how often, not what is learned. Reported, and part of a column's label
# only when runs of several scales are read together.
SCALE_KEYS = ("preset", "offline_steps", "online_steps", "online_warmup_steps", "log_every", "eval_every",
              "offline_eval_every", "eval_episodes", "checkpoint_every", "batch_size")
# The paper's ablations (Tables 5-8, Figure 4): labels for a value of each setting.
ABLATION_LABELS: dict[str, Any] = {
    "utd": lambda v: f"UTD={v}",
    "rho": lambda v: f"rho={v}",
    "stratifier.exchange_cap": lambda v: "unconstrained" if v is None else f"n_c={v}",
    "stratifier.guidance": lambda v: "with energy" if v else "w/o energy",
    "stratifier.stratify": lambda v: "stratified" if v else "w/o stratification",
    "agent.online_value_loss": lambda v: {"expectile": "expectile (Eq. 12)",
                                          "symmetric": "w/o expectile (Eq. 14, tau=0.5)",
                                          "linear": "w/o expectile (Eq. 14 literal)"}.get(v, f"online_value_loss={v}"),
    "stratifier.split_by_source": lambda v: "split by source" if v else "split by score",
}
# Defaults of those settings, used when a run's default config cannot be resolved (an
# unregistered method or environment) and for nested fields that configs leave unset.
# Scale fields that change no result (only when rows, evaluations and checkpoints happen):
# left out of column labels, so runs differing only in them share a column.
BOOKKEEPING_KEYS = ("log_every", "eval_every", "offline_eval_every", "checkpoint_every")
KNOWN_DEFAULTS: dict[str, Any] = {"utd": 1, "rho": 0.5, "stratifier.exchange_cap": None,
                                  "stratifier.guidance": True, "stratifier.stratify": True,
                                  "agent.online_value_loss": "expectile", "stratifier.split_by_source": False}
KINDS = ("locomotion", "antmaze", "other")
KIND_TITLES = {"locomotion": "locomotion", "antmaze": "AntMaze", "other": "other"}


class ReportError(ValueError):
    """Nothing to report, or an unreadable run folder file."""


# ---- reading run folders ----------------------------------------------------------------
@dataclasses.dataclass
class Run:
    """One run folder, parsed."""

    path: Path
    config: dict[str, Any]
    summary: dict[str, Any] | None
    metrics: dict[str, np.ndarray]  # column -> float values (NaN where a row has none)
    kind: str  # locomotion | antmaze | other
    variant: tuple[tuple[str, Any], ...] = ()  # (flat key, value) differing from the default
    scale: str = ""  # preset and scale fields differing from the preset's

    @property
    def algo(self) -> str:
        return str(self.config["algo"])

    @property
    def dataset(self) -> str:
        return dataset_label(self.config["dataset"])

    @property
    def env(self) -> str | None:
        return self.config.get("env") or (self.summary or {}).get("env")

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))

    @property
    def finished(self) -> bool:
        return self.summary is not None

    @property
    def offline_steps(self) -> int:
        return int(self.config.get("offline_steps", 0))

    @property
    def total_steps(self) -> int:
        return self.offline_steps + int(self.config.get("online_steps", 0))

    @property
    def last_step(self) -> int:
        steps = self.metrics.get("step")
        return int(np.nanmax(steps)) if steps is not None and steps.size else 0

    @property
    def final_score(self) -> float:
        """summary.json's final_score; else the last evaluation in metrics.csv."""
        value = (self.summary or {}).get("final_score")
        if value is not None:
            return float(value)
        scores = self.metrics.get("eval/score")
        if scores is not None and np.isfinite(scores).any():
            return float(scores[np.isfinite(scores)][-1])
        return math.nan

    def online_series(self, column: str) -> tuple[np.ndarray, np.ndarray]:
        """(online step, value) of a metrics column from the end of the offline phase on."""
        steps, values = self.metrics.get("step"), self.metrics.get(column)
        if steps is None or values is None:
            return np.zeros(0), np.zeros(0)
        keep = (steps >= self.offline_steps) & np.isfinite(values)
        return steps[keep] - self.offline_steps, values[keep]


def dataset_label(source: str) -> str:
    """A dataset source's name: the last path component without an .hdf5/.h5 suffix."""
    name = Path(str(source)).name
    return re.sub(r"\.(hdf5|h5)$", "", name)


def read_metrics(path: Path) -> dict[str, np.ndarray]:
    """metrics.csv as float columns (the `phase` column is dropped; empty cells are NaN). The file
    is checked first: a damaged one is a ReportError naming it and what to do."""
    try:
        header, rows = health.read_metrics_rows(path)
    except runfiles.DamagedFileError as e:
        raise ReportError(str(e)) from None
    return {k: np.array([float(r.get(k, "nan")) for r in rows]) for k in header if k != "phase"}


def warn(message: str) -> None:
    """A visible warning on stderr (`stratdiff report: warning: ...`), each message once per process."""
    if message not in _WARNED:
        _WARNED.add(message)
        print(f"stratdiff report: warning: {message}", file=sys.stderr, flush=True)


_WARNED: set[str] = set()


def _kind(env_id: str | None) -> tuple[str, str | None]:
    """(task kind, why it is "other" when no EnvSpec gave it)."""
    if not env_id:
        return "other", "its config and summary name no environment"
    try:
        from stratdiff.envs import get_spec

        spec = get_spec(env_id)
    except Exception as e:  # noqa: BLE001 - any failure is reported by name below
        return "other", f"environment {env_id!r} has no EnvSpec ({type(e).__name__}: {e})"
    if spec.goal_reaching:
        return "antmaze", None
    return ("locomotion", None) if spec.ref_min_score is not None else ("other", None)


def task_kind(env_id: str | None) -> str:
    """From the environment's EnvSpec: antmaze (goal reaching), locomotion, or other."""
    return _kind(env_id)[0]


def is_run_config(config: Any) -> bool:
    return isinstance(config, dict) and all(k in config for k in ("algo", "dataset", "offline_steps", "online_steps"))


def find_runs(root: str | Path, exclude: Iterable[Path] = ()) -> list[Run]:
    """Every run folder under `root` (any depth), sorted by path. Folders whose config.json
    is not a `stratdiff train` config (other tools' runs) are ignored."""
    root = Path(root)
    if not root.is_dir():
        raise ReportError(f"{root} is not a folder")
    excluded = [Path(p).resolve() for p in exclude]
    runs = []
    for cfg_path in sorted(root.rglob("config.json")):
        folder = cfg_path.parent
        if any(folder.resolve().is_relative_to(e) for e in excluded):
            continue
        try:
            config = json.loads(cfg_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ReportError(f"{cfg_path}: not readable JSON ({e})") from None
        if not is_run_config(config):
            continue
        summary = None
        if (folder / "summary.json").is_file():
            try:
                summary = json.loads((folder / "summary.json").read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise ReportError(f"{folder / 'summary.json'}: not readable JSON ({e})") from None
        env = config.get("env") or (summary or {}).get("env")
        kind, why = _kind(env)
        if why:
            warn(f"run {folder}: {why}; reported under 'other'")
        runs.append(Run(folder, config, summary, read_metrics(folder / "metrics.csv"), kind))
    _label_runs(runs)
    return runs


# ---- variants: config differences from the default ---------------------------------------
def flatten(config: dict[str, Any]) -> dict[str, Any]:
    """Nested component dicts (agent, stratifier) as `agent.FIELD` keys."""
    out = {}
    for k, v in config.items():
        if isinstance(v, dict):
            for kk, vv in v.items():
                out[f"{k}.{kk}"] = vv
        else:
            out[k] = v
    return out


_DEFAULTS_CACHE: dict[tuple, dict[str, Any] | None] = {}


def default_config(config: dict[str, Any], run: str | Path | None = None) -> dict[str, Any] | None:
    """The flat config `resolve_config` gives this run's method/dataset/env/preset with no
    overrides, with the per-dataset values a run fills for a dataset the paper does not list
    (`runner.with_dataset_values`); None, with a warning naming `run`, when it cannot be
    resolved (an unregistered method or environment)."""
    key = (config.get("algo"), config.get("dataset"), config.get("env"), config.get("preset"))
    if key not in _DEFAULTS_CACHE:
        try:
            from stratdiff import stratify
            from stratdiff.methods import METHODS, resolve_config, task_kind as env_kind

            cfg = resolve_config(config["algo"], config["dataset"], config.get("env"), config.get("preset"),
                                 int(config.get("seed", 0)), {})
            values, _ = stratify.dataset_values(METHODS[cfg.algo].stratifier, {}, str(cfg.dataset),
                                                env_kind(cfg.env))
            _DEFAULTS_CACHE[key] = flatten({**dataclasses.asdict(cfg), "stratifier": {**cfg.stratifier, **values}})
        except Exception as e:  # noqa: BLE001 - any failure is reported by name
            _DEFAULTS_CACHE[key] = None
            where = f"run {run}" if run is not None else f"config {key}"
            warn(f"{where}: its default config does not resolve ({type(e).__name__}: {e}); only the known "
                 f"ablation settings ({', '.join(KNOWN_DEFAULTS)}) label its variant")
    return _DEFAULTS_CACHE[key]


def _differs(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) \
            and not isinstance(b, bool):
        return not math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
    return a != b


def config_diff(config: dict[str, Any], keys: Sequence[str] | None = None,
                run: str | Path | None = None) -> dict[str, Any]:
    """Flat key -> value for every field differing from the run's default config (identity
    fields excluded; `keys` restricts the comparison)."""
    flat = flatten(config)
    default = default_config(config, run)
    if default is None:  # compare the known ablation settings only
        default = dict(KNOWN_DEFAULTS)
        candidates = [k for k in flat if k in KNOWN_DEFAULTS]
    else:
        candidates = sorted(set(flat) | set(default))
    out = {}
    for k in candidates:
        if k in IDENTITY_KEYS or (keys is not None and k not in keys):
            continue
        if k in flat and k in default:
            if _differs(flat[k], default[k]):
                out[k] = flat[k]
        elif k in flat:  # a nested field the default leaves to the component's own default
            if k not in KNOWN_DEFAULTS or _differs(flat[k], KNOWN_DEFAULTS[k]):
                out[k] = flat[k]
    return out


def _fmt_value(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def value_label(key: str, value: Any) -> str:
    if key in ABLATION_LABELS:
        return ABLATION_LABELS[key](value)
    return f"{key.split('.')[-1]}={_fmt_value(value)}"


def variant_label(variant: Sequence[tuple[str, Any]]) -> str:
    return ", ".join(value_label(k, v) for k, v in variant)


def _label_runs(runs: list[Run]) -> None:
    for run in runs:
        diff = config_diff(run.config, run=run.path)
        run.variant = tuple(sorted((k, v) for k, v in diff.items() if k not in SCALE_KEYS))
        scale_diff = {k: v for k, v in diff.items() if k in SCALE_KEYS and k not in ("preset", *BOOKKEEPING_KEYS)}
        parts = [str(run.config.get("preset", "?"))]
        if "offline_steps" in scale_diff or "online_steps" in scale_diff:
            scale_diff.pop("offline_steps", None), scale_diff.pop("online_steps", None)
            parts.append(f"{_fmt_steps(run.offline_steps)}+{_fmt_steps(run.total_steps - run.offline_steps)} steps")
        parts += [f"{k}={_fmt_value(v)}" for k, v in sorted(scale_diff.items())]
        run.scale = ", ".join(parts)


def _fmt_steps(n: int) -> str:
    if n >= 1_000_000 and n % 100_000 == 0:
        return f"{n / 1e6:g}M"
    if n >= 1000 and n % 100 == 0:
        return f"{n / 1e3:g}k"
    return str(n)


# ---- groups (table columns) ---------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Column:
    algo: str
    variant: tuple[tuple[str, Any], ...]
    scale: str
    label: str


def _backbone(algo: str) -> str:
    try:
        from stratdiff.methods import METHODS

        return METHODS[algo].agent if algo in METHODS else algo
    except Exception:
        return algo


def _column_order(col: Column) -> tuple:
    backbone = _backbone(col.algo)
    return (backbone, col.algo != backbone, col.algo, col.scale, len(col.variant),
            tuple((k, _sortable(v)) for k, v in col.variant))


def _columns(runs: Sequence[Run]) -> dict[Column, list[Run]]:
    multi_scale = len({r.scale for r in runs}) > 1
    groups: dict[Column, list[Run]] = defaultdict(list)
    for r in runs:
        label = r.algo
        if r.variant:
            label += f" [{variant_label(r.variant)}]"
        if multi_scale:
            label += f" ({r.scale})"
        groups[Column(r.algo, r.variant, r.scale if multi_scale else "", label)].append(r)
    return dict(sorted(groups.items(), key=lambda kv: _column_order(kv[0])))


def dedupe(runs: Sequence[Run]) -> tuple[list[Run], list[Run]]:
    """(kept, duplicates): a second finished run of the same method, variant, scale, dataset
    and seed (e.g. the same sweep run into two folders) is not averaged in twice."""
    seen, kept, dups = set(), [], []
    for r in runs:
        key = (r.algo, r.variant, r.scale, r.dataset, r.seed)
        if key in seen:
            dups.append(r)
        else:
            seen.add(key)
            kept.append(r)
    return kept, dups


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


def _score_cells(groups: dict[Column, list[Run]]) -> tuple[list[tuple[str, str]], dict]:
    rows, cells = {}, {}
    for col, runs in groups.items():
        by_ds: dict[str, list[Run]] = defaultdict(list)
        for r in runs:
            by_ds[r.dataset].append(r)
            rows[r.dataset] = r.kind
        for ds, rs in by_ds.items():
            rs = sorted(rs, key=lambda r: r.seed)
            for r in rs:
                if not math.isfinite(r.final_score):
                    warn(f"run {r.path}: final score {r.final_score} is not finite; left out of the cell "
                         f"{col.label} / {ds} (listed under 'Left out' in report.md)")
            scores = [r.final_score for r in rs if math.isfinite(r.final_score)]
            seeds = [r.seed for r in rs if math.isfinite(r.final_score)]
            cells[(ds, col.label)] = {"scores": scores, "seeds": seeds}
    order = sorted(rows.items(), key=lambda kv: (KINDS.index(kv[1]), kv[0]))
    return order, cells


def score_table(title: str, groups: dict[Column, list[Run]], caption: str = "") -> Table:
    rows, cells = _score_cells(groups)
    return Table(title, [c.label for c in groups], rows, cells, caption)


def _fmt(x: float, digits: int = 1) -> str:
    return "–" if not math.isfinite(x) else f"{x:.{digits}f}"


def _max_n(table: Table) -> int:
    return max((len(c["scores"]) for c in table.cells.values()), default=0)


def _mean_cell(cell: dict[str, Any] | None, max_n: int, latex: bool) -> tuple[str, float]:
    if not cell or not cell["scores"]:
        return ("--" if latex else "–"), -math.inf
    mean, std = stats.mean_std(cell["scores"])
    pm = r" $\pm$ " if latex else " ± "
    text = _fmt(mean) + (pm + _fmt(std) if math.isfinite(std) else "")
    n = len(cell["scores"])
    if n < max_n:
        text += f" (n={n})"
    return text, mean


def _iqm_cell(cell: dict[str, Any] | None, reps: int, seed: int, latex: bool) -> tuple[str, float]:
    if not cell or not cell["scores"]:
        return ("--" if latex else "–"), -math.inf
    point, lo, hi = stats.stratified_bootstrap_ci([cell["scores"]], stats.iqm, reps=reps, seed=seed)
    cell["iqm"], cell["ci"] = point, [lo, hi]
    return f"{_fmt(point)} [{_fmt(lo)}, {_fmt(hi)}]", point


def _bold(text: str, latex: bool) -> str:
    return rf"\textbf{{{text}}}" if latex else f"**{text}**"


def _latex_escape(text: str) -> str:
    return (text.replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("%", r"\%")
            .replace("&", r"\&").replace("#", r"\#").replace("±", r"$\pm$"))


def _render(header: list[str], body: list[list[str]], latex: bool, caption: str, rules: Sequence[int]) -> str:
    if latex:
        lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{_latex_escape(caption)}}}",
                 r"\begin{tabular}{l" + "c" * (len(header) - 1) + "}", r"\toprule",
                 " & ".join(_latex_escape(h) for h in header) + r" \\", r"\midrule"]
        for i, row in enumerate(body):
            if i in rules:
                lines.append(r"\midrule")
            lines.append(" & ".join(row) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
        return "\n".join(lines) + "\n"
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return (f"{caption}\n\n" if caption else "") + "\n".join(lines) + "\n"


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
        for ds in kind_rows:
            texts = [_mean_cell(table.cells.get((ds, c)), max_n, latex) for c in table.columns]
            best = max(v for _, v in texts)
            row = [_latex_escape(ds) if latex else ds]
            row += [_bold(t, latex) if v == best and math.isfinite(v) and len(texts) > 1 else t for t, v in texts]
            body.append(row)
        tot_row = [f"total ({KIND_TITLES[kind]})"]
        for c in table.columns:
            means = [stats.mean_std(table.cells[(d, c)]["scores"])[0] for d in kind_rows
                     if (d, c) in table.cells and table.cells[(d, c)]["scores"]]
            complete = len(means) == len(kind_rows)
            total = float(np.sum(means)) if means else math.nan
            totals.setdefault(c, []).append((total, complete))
            tot_row.append(_fmt(total) + ("" if complete or not means else "*"))
        rules.append(len(body))
        body.append(tot_row)
    if len(kinds) > 1:
        rules.append(len(body))
        grand = ["total"]
        for c in table.columns:
            parts = [t for t, _ in totals[c] if math.isfinite(t)]
            complete = all(ok for _, ok in totals[c])
            grand.append(_fmt(float(np.sum(parts)) if parts else math.nan) + ("" if complete or not parts else "*"))
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
        for ds in kind_rows:
            texts = [_iqm_cell(table.cells.get((ds, c)), reps, seed, latex) for c in table.columns]
            best = max(v for _, v in texts)
            row = [_latex_escape(ds) if latex else ds]
            row += [_bold(t, latex) if v == best and math.isfinite(v) and len(texts) > 1 else t for t, v in texts]
            body.append(row)
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
            agg.append(f"{_fmt(point)} [{_fmt(lo)}, {_fmt(hi)}]" + ("" if complete else "*"))
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
            chosen.append((not is_default, _sortable(value), col, runs, value))
        chosen.sort(key=lambda t: (t[0], t[1], _column_order(t[2])))
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


def _sortable(value: Any) -> tuple:
    if value is None:
        return (0, 0.0, "")
    if isinstance(value, (int, float)):
        return (1, float(value), "")
    return (2, 0.0, str(value))


# ---- figures ------------------------------------------------------------------------------
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


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


# ---- the report ---------------------------------------------------------------------------
def _scale_rows(groups: dict[Column, list[Run]]) -> list[list[str]]:
    rows = []
    for col, runs in groups.items():
        seeds = sorted({r.seed for r in runs})
        fields = lambda k: sorted({_fmt_value(r.config.get(k)) for r in runs})  # noqa: E731
        rows.append([col.label, ", ".join(fields("preset")), ", ".join(fields("offline_steps")),
                     ", ".join(fields("online_steps")), ", ".join(fields("utd")), ", ".join(fields("rho")),
                     ", ".join(fields("eval_episodes")), ", ".join(map(str, seeds)),
                     str(len({r.dataset for r in runs})), str(len(runs))])
    return rows


def _cost_rows(groups: dict[Column, list[Run]]) -> list[list[str]]:
    rows = []
    for col, runs in groups.items():
        def mean_of(key):
            vals = [float(r.summary[key]) for r in runs if r.summary and r.summary.get(key) is not None]
            return _fmt(float(np.mean(vals)), 1) if vals else "–"
        rows.append([col.label, mean_of("offline_updates_per_s"), mean_of("online_steps_per_s"),
                     mean_of("wall_seconds_this_call")])
    return rows


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":---"] * len(header)) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


def write_report(root: str | Path, out: str | Path | None = None, reps: int = 2000, seed: int = 0,
                 confidence: float = 0.95) -> Path:
    """Read the runs under `root` and write the report into `out` (default ROOT/report).
    Returns the path of report.md."""
    root = Path(root)
    out = Path(out) if out is not None else root / "report"
    runs = find_runs(root, exclude=[out])
    if not runs:
        raise ReportError(f"no run folders (config.json of `stratdiff train`) under {root}")
    try:
        in_sweep = health.sweep_status(root)
    except runfiles.DamagedFileError as e:
        raise ReportError(str(e)) from None
    finished = [r for r in runs if r.finished]
    diverged = [(r, health.divergence(r.path)) for r in runs if not r.finished]
    diverged = [(r, d) for r, d in diverged if d is not None]
    unfinished = [r for r in runs if not r.finished and all(r is not d for d, _ in diverged)]
    kept, dups = dedupe(finished)
    no_score = [r for r in kept if not math.isfinite(r.final_score)]
    groups = _columns(kept)
    figs = out / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    colors = {c.label: COLORS[i % len(COLORS)] for i, c in enumerate(groups)}

    # Table 1: default-variant columns, plus the variants of methods that have no default runs.
    has_default = {(c.algo, c.scale) for c in groups if c.variant == ()}
    main = {c: rs for c, rs in groups.items() if c.variant == () or (c.algo, c.scale) not in has_default}
    main_table = score_table("Normalised score after online fine-tuning", main,
                             "Normalised score after the online phase (final evaluation), "
                             "mean ± std over seeds.")
    numbers: dict[str, Any] = {}
    if main:
        (out / "table_main.md").write_text(render_mean_table(main_table))
        (out / "table_main.tex").write_text(render_mean_table(main_table, latex=True))
        (out / "table_iqm.md").write_text(render_iqm_table(main_table, reps, seed, confidence))
        (out / "table_iqm.tex").write_text(render_iqm_table(main_table, reps, seed, confidence, latex=True))
        numbers["main"] = {f"{d} | {c}": cell for (d, c), cell in main_table.cells.items()}
    raw = sorted({str(r.env) for r in kept if (r.summary or {}).get("score") == "raw return"})
    rliable_lines, rliable_figs, numbers["rliable"] = rliable_stats.write_section(
        {k: {c: main_table.column_scores(c, k) for c in main_table.columns} for k in KINDS}, out, figs, reps,
        seed, confidence, KIND_TITLES, "score (raw returns on some datasets)" if raw else "normalised score",
        colors)

    # Learning curves (Figures 3, 5, 6) per task kind and backbone; exchange counts (9, 11).
    curve_figs, exchange_figs, score_figs = [], [], []
    by_panel: dict[tuple[str, str], dict[Column, list[Run]]] = defaultdict(dict)
    for col, rs in main.items():
        for kind in KINDS:
            sub = [r for r in rs if r.kind == kind]
            if sub:
                by_panel[(kind, _backbone(col.algo))][col] = sub
    for (kind, backbone), sub in sorted(by_panel.items(), key=lambda kv: (KINDS.index(kv[0][0]), kv[0][1])):
        name = f"curves_{kind}_{_slug(backbone)}.png"
        if plot_curves(sub, "eval/score", figs / name, f"Online fine-tuning, {KIND_TITLES[kind]}, "
                       f"{backbone} backbone (mean ± std over seeds)", "normalised score", colors):
            curve_figs.append(name)
    by_backbone: dict[str, dict[Column, list[Run]]] = defaultdict(dict)
    for col, rs in main.items():
        by_backbone[_backbone(col.algo)][col] = rs
    for backbone, sub in sorted(by_backbone.items()):
        name = f"exchange_{_slug(backbone)}.png"
        if plot_curves(sub, "strat/exchange", figs / name, f"Offline-online samples exchanged per batch, "
                       f"{backbone} backbone (mean ± std over seeds)", "exchanged samples", colors):
            exchange_figs.append(name)
        name = f"scores_{_slug(backbone)}.png"
        if plot_curves(sub, [("strat/score_offline_mean", ", offline buffer"),
                             ("strat/score_online_mean", ", online buffer")], figs / name,
                       f"Stratification score (Eq. 10) by source buffer, {backbone} backbone "
                       f"(batch mean; mean ± std over seeds)", "score", colors, auto_log=True):
            score_figs.append(name)

    # Ablations (Tables 5-8, Figures 7, 8, 10).
    ablations = ablation_groups(groups)
    ablation_parts = []
    for key, cols in ablations.items():
        slug = _slug(key.split(".")[-1])
        table = score_table(f"Ablation: {key}", cols, f"Ablation of `{key}`: normalised score after the "
                            "online phase, mean ± std over seeds.")
        variant_rows = {r.dataset for c, rs in cols.items() if c.variant for r in rs}
        table.rows = [(d, k) for d, k in table.rows if d in variant_rows]
        (out / f"table_ablation_{slug}.md").write_text(render_mean_table(table))
        (out / f"table_ablation_{slug}.tex").write_text(render_mean_table(table, latex=True))
        numbers[f"ablation {key}"] = {f"{d} | {c}": cell for (d, c), cell in table.cells.items()
                                      if d in variant_rows}
        ab_colors = {c.label: COLORS[i % len(COLORS)] for i, c in enumerate(cols)}
        sub = {c: [r for r in rs if r.dataset in variant_rows] for c, rs in cols.items()}
        fig_name = f"ablation_{slug}_curves.png"
        has_fig = plot_curves(sub, "eval/score", figs / fig_name, f"Ablation of {key} (mean ± std over seeds)",
                              "normalised score", ab_colors)
        ex_name = f"ablation_{slug}_exchange.png"
        has_ex = plot_curves(sub, "strat/exchange", figs / ex_name, f"Exchanged samples per batch, ablation of "
                             f"{key} (mean ± std over seeds)", "exchanged samples", ab_colors)
        ablation_parts.append((key, slug, render_mean_table(table),
                               [n for n, ok in ((fig_name, has_fig), (ex_name, has_ex)) if ok]))

    # report.md
    presets = sorted({str(r.config.get("preset")) for r in runs})
    lines = [f"# StratDiff report: `{root}`", "",
             f"Runs read: {len(runs)} ({len(finished)} finished, {len(unfinished)} unfinished"
             f"{f', {len(diverged)} diverged' if diverged else ''}); "
             f"preset(s): {', '.join(presets)}.", ""]
    lines += ["## Scale", "", "Read from each run's config.json (steps: offline gradient steps, online "
              "environment steps).", "",
              _md_table(["method", "preset", "offline steps", "online steps", "UTD", "rho", "eval episodes",
                         "seeds", "datasets", "finished runs"], _scale_rows(groups)) if groups else
              "No finished runs.", ""]
    lines += ["Scores are D4RL-normalised returns (100 × (return − random) / (expert − random)); for AntMaze, "
              "the success rate × 100. A run's score is its final evaluation after the online phase "
              "(`final_score` in summary.json). Columns are grouped by config, not folder names: a "
              "`[...]` label lists the settings that differ from the method's defaults. Cells with fewer "
              "seeds than the fullest cell are marked (n=k); std is the sample std (ddof=1).", ""]
    if raw:
        lines += [f"Runs on {', '.join(raw)} have no reference scores: their scores are raw returns "
                  "(summary.json: `\"score\": \"raw return\"`), not normalised.", ""]
    if main:
        lines += ["## Table 1 layout: mean ± std", "", "[Markdown](table_main.md) · [LaTeX](table_main.tex)",
                  "", (out / "table_main.md").read_text(), ""]
        lines += ["## IQM with 95% bootstrap confidence intervals", "",
                  "[Markdown](table_iqm.md) · [LaTeX](table_iqm.tex)", "", (out / "table_iqm.md").read_text(), ""]
    if rliable_lines:
        lines += ["## Aggregate metrics with rliable", "",
                  "Every method on the datasets all methods ran, the same number of seeds each; profiles show "
                  "the fraction of runs above each score, probability of improvement P(X > Y) that a run of "
                  "X beats one of Y.", "", *rliable_lines]
    if curve_figs:
        lines += ["## Learning curves (Figures 3, 5, 6)", ""]
        lines += [f"![{n}](figures/{n})" for n in curve_figs] + [""]
    if exchange_figs:
        lines += ["## Exchange counts (Figures 9, 11)", "",
                  "`strat/exchange`: samples whose stratum differs from the buffer they came from, per "
                  "update batch, averaged over each logging window.", ""]
        lines += [f"![{n}](figures/{n})" for n in exchange_figs] + [""]
    if score_figs:
        lines += ["## Stratification scores by source buffer", "",
                  "`strat/score_offline_mean` and `strat/score_online_mean`: the batch mean of the Eq. 10 score "
                  "over samples drawn from the offline and from the online buffer; the split puts the lowest "
                  "scores in b_off.", ""]
        lines += [f"![{n}](figures/{n})" for n in score_figs] + [""]
    if ablation_parts:
        lines += ["## Ablations (Tables 5-8)", ""]
        for key, slug, text, figs_ in ablation_parts:
            lines += [f"### `{key}`", "", f"[Markdown](table_ablation_{slug}.md) · "
                      f"[LaTeX](table_ablation_{slug}.tex)", "", text, ""]
            lines += [f"![{fig}](figures/{fig})" for fig in figs_] + ([""] if figs_ else [])
    if groups:
        lines += ["## Cost", "", "Means over finished runs, from summary.json.", "",
                  _md_table(["method", "offline updates/s", "online env steps/s", "wall s (last call)"],
                            _cost_rows(groups)), ""]
    lines += ["## Unfinished runs", ""]
    if unfinished:
        lines += ["Not in any table or figure.", ""]
        rows = []
        for r in unfinished:
            ckpt = "yes" if (r.path / "checkpoint.msgpack").is_file() else "no"
            log = r.path / "train.log"
            sweep_entry = in_sweep.get(str(r.path.resolve()), {})
            rows.append([f"`{r.path}`", r.algo, r.dataset, str(r.seed), f"{r.last_step} / {r.total_steps}", ckpt,
                         f"`{log}`" if log.is_file() else "–", str(sweep_entry.get("status", "–"))])
        lines += [_md_table(["folder", "algo", "dataset", "seed", "step", "checkpoint", "log", "last sweep"], rows),
                  ""]
    else:
        lines += ["None.", ""]
    lines += health.diverged_lines([(r.path, r.algo, r.dataset, r.seed, d) for r, d in diverged])
    if dups or no_score:
        lines += ["## Left out", ""]
        lines += [f"- `{r.path}`: duplicate of another run with the same config and seed" for r in dups]
        lines += [f"- `{r.path}`: finished without a final evaluation score" for r in no_score]
        lines.append("")
    (out / "report.md").write_text("\n".join(lines))
    (out / "report.json").write_text(json.dumps({
        "root": str(root), "runs": len(runs), "finished": len(finished),
        "unfinished": [str(r.path) for r in unfinished], "duplicates": [str(r.path) for r in dups],
        "diverged": [{"dir": str(r.path), **d} for r, d in diverged],
        "bootstrap": {"reps": reps, "seed": seed, "confidence": confidence},
        "tables": numbers, "figures": curve_figs + exchange_figs + score_figs + rliable_figs +
        [n for p in ablation_parts for n in p[3]]}, indent=2, default=_json_default))
    return out / "report.md"


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o))
