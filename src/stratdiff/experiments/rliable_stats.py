"""Aggregate metrics and figures with rliable (Agarwal et al., 2021, "Deep RL at the Edge of the
Statistical Precipice"), the field's standard for few-seed RL results.

Input: for each method, a score matrix [runs, tasks] (tasks: datasets; runs: seeds). rliable
needs the same tasks and run count for every method, so `score_matrices` keeps the datasets
every method has scores on and the first `n` seeds of each cell (n: the fewest any cell has).

- `aggregate_rows`: IQM, mean and optimality gap (the mean shortfall below `gamma`, 100 for
  normalised scores) with stratified bootstrap confidence intervals (rliable's
  `get_interval_estimates`: seeds resampled within each task);
- `plot_performance_profile`: the fraction of runs scoring above tau, with bootstrap bands;
- `plot_probability_of_improvement`: P(X > Y) for each pair of methods, with intervals;
- `improvement_per_task`: P(X > Y) on each dataset alone, for given groups of methods (those
  sharing a backbone), with `render_improvement_table` to show it.

Every bootstrap draws from a NumPy RandomState made from `seed`: the same seed gives the same
numbers and figures.
"""

from __future__ import annotations

import contextlib
import itertools
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

METRICS = ("IQM", "mean", "optimality gap")
PAIR = "\x1f"  # joins two method labels into rliable's pair key; labels may hold commas


def score_matrices(scores: Mapping[str, Mapping[str, Sequence[float]]]) -> tuple[dict[str, np.ndarray], list[str]]:
    """{method: {dataset: per-seed scores}} -> ({method: [runs, tasks]}, tasks) on the datasets
    every method has scores on, `n` runs each (the fewest of any kept cell); ({}, []) when none."""
    methods = [m for m in scores if any(len(v) for v in scores[m].values())]
    if not methods:
        return {}, []
    tasks = [d for d in scores[methods[0]] if all(len(scores[m].get(d, ())) for m in methods)]
    if not tasks:
        return {}, []
    n = min(len(scores[m][d]) for m in methods for d in tasks)
    return {m: np.array([[float(scores[m][d][i]) for d in tasks] for i in range(n)]) for m in methods}, tasks


def aggregate_rows(matrices: Mapping[str, np.ndarray], reps: int, seed: int, confidence: float = 0.95,
                   gamma: float = 100.0) -> dict[str, dict[str, tuple[float, float, float]]]:
    """{method: {metric: (point, low, high)}} for IQM, mean and optimality gap (`METRICS`)."""
    from rliable import metrics

    def aggregate(x: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x),
                         metrics.aggregate_optimality_gap(x, gamma)])

    points, intervals = _interval_estimates(dict(matrices), aggregate, reps, seed, confidence)
    return {m: {name: (float(points[m][i]), float(intervals[m][0, i]), float(intervals[m][1, i]))
                for i, name in enumerate(METRICS)} for m in matrices}


def _interval_estimates(data: dict, func, reps: int, seed: int, confidence: float):
    """rliable's stratified bootstrap, each entry of `data` on its own RandomState(seed) (so an
    entry's interval does not depend on the others or their order) with NumPy's global RNG
    seeded too, for any draw that does not go through the given RandomState."""
    from rliable import library as rly

    points, intervals = {}, {}
    for name, value in data.items():
        with _global_numpy_seed(seed), warnings.catch_warnings():  # arch: random_state will change
            warnings.simplefilter("ignore", FutureWarning)
            p, i = rly.get_interval_estimates({name: value}, func, reps=reps, confidence_interval_size=confidence,
                                              random_state=np.random.RandomState(seed))
        points[name], intervals[name] = p[name], i[name]
    return points, intervals


@contextlib.contextmanager
def _global_numpy_seed(seed: int):
    """rliable's performance profile bootstraps with NumPy's global RNG: seed it, then restore it."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def plot_performance_profile(matrices: Mapping[str, np.ndarray], path: Path, title: str, xlabel: str,
                             reps: int, seed: int, confidence: float = 0.95,
                             colors: Mapping[str, str] | None = None) -> np.ndarray:
    """Score distributions (the fraction of runs above tau) with bootstrap bands; returns tau."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from rliable import library as rly
    from rliable import plot_utils

    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colors = {m: (colors or {}).get(m) or cycle[i % len(cycle)] for i, m in enumerate(matrices)}
    pooled = np.concatenate([m.ravel() for m in matrices.values()])
    lo, hi = float(pooled.min()), float(pooled.max())
    tau = np.linspace(lo, hi if hi > lo else lo + 1.0, 101)
    with _global_numpy_seed(seed), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        profiles, bands = rly.create_performance_profile(dict(matrices), tau, reps=reps,
                                                         confidence_interval_size=confidence)
    fig, ax = plt.subplots(figsize=(7, 4))
    plot_utils.plot_performance_profiles(profiles, tau, performance_profile_cis=bands, ax=ax,
                                         colors=colors, xlabel=xlabel,
                                         ylabel=r"fraction of runs with score $> \tau$")
    ax.set_title(title, fontsize=10)
    ax.legend([Line2D([], [], color=colors[m]) for m in matrices], list(matrices), fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return tau


def improvement_pairs(methods: Sequence[str]) -> list[tuple[str, str]]:
    """Each pair of methods once, in column order (X listed before Y)."""
    return list(itertools.combinations(methods, 2))


def probability_of_improvement(matrices: Mapping[str, np.ndarray], reps: int, seed: int,
                               confidence: float = 0.95) -> dict[tuple[str, str], tuple[float, float, float]]:
    """{(X, Y): (P(X > Y), low, high)} for each pair, with stratified bootstrap intervals."""
    from rliable import metrics

    pairs = improvement_pairs(list(matrices))
    data = {f"{x}{PAIR}{y}": (matrices[x], matrices[y]) for x, y in pairs}
    points, intervals = _interval_estimates(data, metrics.probability_of_improvement, reps, seed, confidence)
    out = {}
    for x, y in pairs:
        low, high = np.ravel(intervals[f"{x}{PAIR}{y}"])
        out[(x, y)] = (float(np.ravel(points[f"{x}{PAIR}{y}"])[0]), float(low), float(high))
    return out


def improvement_per_task(scores: Mapping[str, Mapping[str, Sequence[float]]], groups: Sequence[Sequence[str]],
                         reps: int, seed: int, confidence: float = 0.95,
                         tasks: Sequence[str] | None = None) -> dict[str, dict]:
    """{dataset: {"pairs": {(X, Y): (P(X > Y), low, high)}, "seeds": {(X, Y): n}}}: on each
    dataset alone (those of `tasks`, in its order; default: every dataset any method has),
    `probability_of_improvement` for each pair within each group of methods (X: the earlier in
    its group), over the first n seeds of each (n: the fewest of the group's methods with
    scores there; a method without any is left out)."""
    datasets = list(tasks) if tasks is not None else list(dict.fromkeys(d for m in scores for d in scores[m]))
    out: dict[str, dict] = {}
    for ds in datasets:
        for group in groups:
            matrices, _ = score_matrices({m: {ds: scores.get(m, {}).get(ds, ())} for m in group})
            if len(matrices) < 2:
                continue
            entry = out.setdefault(ds, {"pairs": {}, "seeds": {}})
            probs = probability_of_improvement(matrices, reps, seed, confidence)
            entry["pairs"].update(probs)
            entry["seeds"].update({pair: next(iter(matrices.values())).shape[0] for pair in probs})
    return out


def render_improvement_table(per_task: Mapping[str, Mapping], caption: str) -> str:
    """Markdown: a row per dataset and pair, P(X > Y) [low, high] and the seeds per method."""
    lines = ["| dataset | X | Y | P(X > Y) | seeds per method |", "|:---|:---|:---|---:|---:|"]
    for ds, entry in per_task.items():
        for (x, y), (p, lo, hi) in entry["pairs"].items():
            lines.append(f"| {ds} | {x} | {y} | {p:.2f} [{lo:.2f}, {hi:.2f}] | {entry['seeds'][(x, y)]} |")
    return (f"{caption}\n\n" if caption else "") + "\n".join(lines) + "\n"


def plot_probability_of_improvement(probabilities: Mapping[tuple[str, str], tuple[float, float, float]],
                                    path: Path, title: str) -> None:
    import matplotlib.pyplot as plt
    from rliable import plot_utils

    estimates = {f"{x}{PAIR}{y}": p for (x, y), (p, _, _) in probabilities.items()}
    intervals = {f"{x}{PAIR}{y}": np.array([lo, hi]) for (x, y), (_, lo, hi) in probabilities.items()}
    fig, ax = plt.subplots(figsize=(6, 1.2 + 0.5 * len(estimates)))
    plot_utils.plot_probability_of_improvement(estimates, intervals, pair_separator=PAIR, ax=ax)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110, bbox_inches="tight")  # room for the method names on both sides
    plt.close(fig)


def _cell(point: float, low: float, high: float) -> str:
    return f"{point:.1f} [{low:.1f}, {high:.1f}]"


def render_aggregate_table(rows: Mapping[str, Mapping[str, tuple[float, float, float]]], caption: str,
                           latex: bool = False) -> str:
    """Methods as rows; IQM, mean and optimality gap as `point [low, high]` columns."""
    header = ["method", *METRICS]
    body = [[m, *(_cell(*rows[m][k]) for k in METRICS)] for m in rows]
    if latex:
        esc = lambda t: t.replace("_", r"\_").replace("%", r"\%")  # noqa: E731
        lines = [r"\begin{table}[h]", r"\centering", r"\begin{tabular}{l" + "c" * len(METRICS) + "}", r"\toprule",
                 " & ".join(header) + r" \\", r"\midrule"]
        lines += [" & ".join(esc(c) for c in row) + r" \\" for row in body]
        lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{esc(caption)}}}", r"\end{table}"]
        return "\n".join(lines) + "\n"
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + f"\n\n{caption}\n"


def write_section(scores_by_kind: Mapping[str, Mapping[str, Mapping[str, Sequence[float]]]], out: Path,
                  figures: Path, reps: int, seed: int, confidence: float, kind_titles: Mapping[str, str],
                  score_label: str, colors: Mapping[str, str] | None = None) -> tuple[list[str], list[str], dict]:
    """For each task kind, {method: {dataset: scores}} -> `table_rliable_KIND.md/.tex`, a performance
    profile and (two methods or more) a probability-of-improvement figure. Returns the report's
    Markdown lines, the figure names and the numbers (for report.json)."""
    lines, names, numbers = [], [], {}
    for kind, scores in scores_by_kind.items():
        matrices, tasks = score_matrices(scores)
        if not matrices:
            continue
        n = next(iter(matrices.values())).shape[0]
        title = kind_titles.get(kind, kind)
        rows = aggregate_rows(matrices, reps, seed, confidence)
        caption = (f"{title}: {score_label} after the online phase over {len(tasks)} dataset(s) "
                   f"({', '.join(tasks)}) x {n} seed(s) per method; IQM (middle 50% of all runs), mean and "
                   f"optimality gap (mean shortfall below 100) with {round(confidence * 100)}% stratified "
                   f"bootstrap CIs (rliable, {reps} resamples, seed {seed}).")
        (out / f"table_rliable_{kind}.md").write_text(render_aggregate_table(rows, caption))
        (out / f"table_rliable_{kind}.tex").write_text(render_aggregate_table(rows, caption, latex=True))
        lines += [f"### {title}", "", f"[Markdown](table_rliable_{kind}.md) · [LaTeX](table_rliable_{kind}.tex)",
                  "", render_aggregate_table(rows, caption), ""]
        profile = f"rliable_profile_{kind}.png"
        plot_performance_profile(matrices, figures / profile, f"Performance profile, {title} "
                                 f"({len(tasks)} datasets x {n} seeds)", score_label, reps, seed, confidence, colors)
        names.append(profile)
        lines += [f"![{profile}](figures/{profile})", ""]
        entry = {"datasets": tasks, "seeds_per_dataset": n,
                 "aggregates": {m: {k: list(v) for k, v in r.items()} for m, r in rows.items()}}
        if len(matrices) > 1:
            probs = probability_of_improvement(matrices, reps, seed, confidence)
            poi = f"rliable_improvement_{kind}.png"
            plot_probability_of_improvement(probs, figures / poi, f"Probability of improvement, {title}")
            names.append(poi)
            lines += [f"![{poi}](figures/{poi})", ""]
            entry["probability_of_improvement"] = {f"{x} > {y}": list(v) for (x, y), v in probs.items()}
        numbers[kind] = entry
    return lines, names, numbers
