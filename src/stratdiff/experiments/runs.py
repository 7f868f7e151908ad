"""Run folders read for a report: the parsed `Run`, its variant and scale labels, and the
table columns runs are grouped into.

`find_runs(root)` parses every `stratdiff train` run folder under `root`; each run's variant
(every config field differing from what `resolve_config` gives its method, dataset,
environment and preset, other than the scale fields) and scale (preset and step counts) come
from its config, never from folder names. `group_columns` groups runs into table columns by
method, variant and (when runs of several scales are read together) scale.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stratdiff import runfiles
from stratdiff.experiments import health

# What names a run, and where its offline phase came from (`reuse_offline_from`: the same result
# as computing it, so never a variant).
IDENTITY_KEYS = ("algo", "dataset", "env", "seed", "reuse_offline_from")
# Scale: how long and how often, not what is learned. Reported, and part of a column's label
# only when runs of several scales are read together.
SCALE_KEYS = ("preset", "offline_steps", "online_steps", "online_warmup_steps", "log_every", "eval_every",
              "offline_eval_every", "eval_episodes", "checkpoint_every", "batch_size")
# The paper's ablations (Tables 5-8, Figure 4) and the random-split control: labels for a value of
# each setting.
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
    # this project's control (--random-split) against the preset's score ("default": the value a
    # table's default column gets, tables._default_value); other scores read as score=NAME
    "stratifier.score": lambda v: {"random": "random split", "default": "split by score"}.get(v, f"score={v}"),
}
# Defaults of those settings, used when a run's default config cannot be resolved (an
# unregistered method or environment) and for nested fields that configs leave unset.
# Scale fields that change no result (only when rows, evaluations and checkpoints happen):
# left out of column labels, so runs differing only in them share a column.
BOOKKEEPING_KEYS = ("log_every", "eval_every", "offline_eval_every", "checkpoint_every")
KNOWN_DEFAULTS: dict[str, Any] = {"utd": 1, "rho": 0.5, "stratifier.exchange_cap": None,
                                  "stratifier.guidance": True, "stratifier.stratify": True,
                                  "agent.online_value_loss": "expectile", "stratifier.split_by_source": False}
# Controls: variants reported as methods of their own (a column in every main table and figure,
# compared with the default), not only in their setting's ablation table. The random split
# (--random-split) asks what the split does beyond splitting at all.
CONTROLS: frozenset[tuple[str, Any]] = frozenset({("stratifier.score", "random")})
KINDS = ("locomotion", "antmaze", "other")
KIND_TITLES = {"locomotion": "locomotion", "antmaze": "AntMaze", "other": "other"}


class ReportError(ValueError):
    """Nothing to report, or an unreadable run folder file (`stratdiff.experiments.report` exports it)."""


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

    def last_scores_mean(self, n: int = 3) -> float:
        """The mean of eval/score over the last `n` evaluation rows of metrics.csv (fewer when
        the run evaluated fewer times); NaN without any."""
        scores = self.metrics.get("eval/score")
        if scores is None:
            return math.nan
        scores = scores[np.isfinite(scores)]
        return float(np.mean(scores[-n:])) if scores.size else math.nan

    def online_mean(self, column: str, last_fraction: float = 1.0) -> float:
        """The mean of a metrics column over the online phase's rows, or over the rows logged in
        its last `last_fraction` of online steps (a row ends its logging window: one at exactly
        the cut covers steps before it and is left out); NaN without any."""
        xs, ys = self.online_series(column)
        if last_fraction < 1.0:
            ys = ys[xs > (1.0 - last_fraction) * (self.total_steps - self.offline_steps)]
        return float(np.mean(ys)) if ys.size else math.nan

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


def fmt_value(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def value_label(key: str, value: Any) -> str:
    if key in ABLATION_LABELS:
        return ABLATION_LABELS[key](value)
    return f"{key.split('.')[-1]}={fmt_value(value)}"


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
        parts += [f"{k}={fmt_value(v)}" for k, v in sorted(scale_diff.items())]
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


def backbone_of(algo: str) -> str:
    try:
        from stratdiff.methods import METHODS

        return METHODS[algo].agent if algo in METHODS else algo
    except Exception:
        return algo


def is_control(variant: Sequence[tuple[str, Any]]) -> bool:
    """Whether a variant is a control (`CONTROLS`): a method of its own in the report."""
    return bool(variant) and all((k, v) in CONTROLS for k, v in variant)


def main_columns(groups: dict[Column, list[Run]]) -> dict[Column, list[Run]]:
    """The columns of the main table (Table 1 layout) and its figures: every method's default
    variant and its controls, and the variants of a method (at a scale) with no default runs."""
    has_default = {(c.algo, c.scale) for c in groups if c.variant == ()}
    return {c: rs for c, rs in groups.items()
            if c.variant == () or is_control(c.variant) or (c.algo, c.scale) not in has_default}


def comparisons(columns: Sequence[Column]) -> list[list[str]]:
    """The column labels to compare pairwise, one list per backbone (and scale) holding two
    columns or more, ordered so that each earlier label is X in P(X > Y): methods building on
    the backbone first, then their controls, then the backbone itself (StratDiff-IQL, its
    random split, IQL)."""
    def rank(col: Column) -> int:
        return 2 if col.algo == backbone_of(col.algo) and not col.variant else 1 if col.variant else 0

    by_backbone: dict[tuple[str, str], list[Column]] = defaultdict(list)
    for col in sorted(columns, key=column_order):
        by_backbone[(backbone_of(col.algo), col.scale)].append(col)
    return [[c.label for c in sorted(cols, key=rank)] for cols in by_backbone.values() if len(cols) > 1]


def column_order(col: Column) -> tuple:
    backbone = backbone_of(col.algo)
    return (backbone, col.algo != backbone, col.algo, col.scale, len(col.variant),
            tuple((k, sortable(v)) for k, v in col.variant))


def group_columns(runs: Sequence[Run]) -> dict[Column, list[Run]]:
    multi_scale = len({r.scale for r in runs}) > 1
    groups: dict[Column, list[Run]] = defaultdict(list)
    for r in runs:
        label = r.algo
        if r.variant:
            label += f" [{variant_label(r.variant)}]"
        if multi_scale:
            label += f" ({r.scale})"
        groups[Column(r.algo, r.variant, r.scale if multi_scale else "", label)].append(r)
    return dict(sorted(groups.items(), key=lambda kv: column_order(kv[0])))


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


def sortable(value: Any) -> tuple:
    if value is None:
        return (0, 0.0, "")
    if isinstance(value, (int, float)):
        return (1, float(value), "")
    return (2, 0.0, str(value))
