"""Reports over run folders: the paper's tables and figures from `stratdiff train` runs.

`write_report(root, out)` reads every run folder under `root` (any depth: a folder whose
config.json is a run config) and writes to `out`:

- `table_main.md/.tex`: Table 1 layout, the normalised score after the online phase (the
  final evaluation, summary.json's `final_score`), mean +- std over seeds (sample std,
  ddof=1), datasets as rows, methods as columns, totals (sums of the means) for the
  locomotion and AntMaze datasets (the task kind comes from the run's environment:
  `stratdiff.envs.get_spec(env).goal_reaching`). Its columns are each method's default and
  its controls (`runs.CONTROLS`: the random split), which every table and figure below
  that compares methods shows as methods of their own;
- `table_last3.md/.tex`: the same layout for the mean of the last three evaluations
  (eval/score in metrics.csv), less sensitive to one evaluation's noise;
- `table_per_seed.csv`: dataset, method, seed, final score and last-three mean of every run;
- `table_improvement_per_dataset.md`: on each dataset alone, rliable's probability of
  improvement P(X > Y) with its stratified bootstrap CI for each pair of methods sharing a
  backbone (the method over its controls and the backbone, a control over the backbone);
- `table_exchange.md/.tex`: `strat/exchange` averaged over the online phase and over its last
  20% per dataset and split method, mean +- std over seeds (when runs logged it);
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
and, when runs of several scales are present, the scale (preset and step counts)
(`stratdiff.experiments.runs`). The tables are built in `stratdiff.experiments.tables`, the
figures drawn in `stratdiff.experiments.figures`; this module puts them together.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from stratdiff import runfiles
from stratdiff.experiments import health, rliable_stats
from stratdiff.experiments.figures import COLORS, plot_curves
from stratdiff.experiments.runs import (KIND_TITLES, KINDS, Column, ReportError, Run, backbone_of, comparisons,
                                        dedupe, find_runs, fmt_value, group_columns, is_control, main_columns)
from stratdiff.experiments.tables import (PER_SEED_HEADER, ablation_groups, fmt_number, online_mean_cells,
                                          per_seed_rows, render_iqm_table, render_mean_table,
                                          render_online_mean_table, score_table)

__all__ = ["ReportError", "write_report"]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


def _scale_rows(groups: dict[Column, list[Run]]) -> list[list[str]]:
    rows = []
    for col, runs in groups.items():
        seeds = sorted({r.seed for r in runs})
        fields = lambda k: sorted({fmt_value(r.config.get(k)) for r in runs})  # noqa: E731
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
            return fmt_number(float(np.mean(vals)), 1) if vals else "–"
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
    groups = group_columns(kept)
    figs = out / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    colors = {c.label: COLORS[i % len(COLORS)] for i, c in enumerate(groups)}

    # Table 1: default-variant columns and controls, plus the variants of methods that have no
    # default runs.
    main = main_columns(groups)
    main_table = score_table("Normalised score after online fine-tuning", main,
                             "Normalised score after the online phase (final evaluation), "
                             "mean ± std over seeds.")
    last3_table = score_table("Mean of the last three evaluations", main,
                              "Mean of the last three evaluations (eval/score in metrics.csv) of each run, "
                              "mean ± std over seeds.", value=lambda r: r.last_scores_mean(3),
                              what="mean of the last three evaluations")
    numbers: dict[str, Any] = {}
    improvement: dict[str, dict] = {}
    if main:
        (out / "table_main.md").write_text(render_mean_table(main_table))
        (out / "table_main.tex").write_text(render_mean_table(main_table, latex=True))
        (out / "table_last3.md").write_text(render_mean_table(last3_table))
        (out / "table_last3.tex").write_text(render_mean_table(last3_table, latex=True))
        (out / "table_iqm.md").write_text(render_iqm_table(main_table, reps, seed, confidence))
        (out / "table_iqm.tex").write_text(render_iqm_table(main_table, reps, seed, confidence, latex=True))
        numbers["main"] = {f"{d} | {c}": cell for (d, c), cell in main_table.cells.items()}
        numbers["last3"] = {f"{d} | {c}": cell for (d, c), cell in last3_table.cells.items()}
        improvement = rliable_stats.improvement_per_task(
            {c: main_table.column_scores(c) for c in main_table.columns}, comparisons(list(main)), reps, seed,
            confidence, tasks=[d for d, _ in main_table.rows])
        numbers["improvement_per_dataset"] = {
            ds: {f"{x} > {y}": {"probability": p, "ci": [lo, hi], "seeds_per_method": e["seeds"][(x, y)]}
                 for (x, y), (p, lo, hi) in e["pairs"].items()} for ds, e in improvement.items()}
    improvement_md = ""
    if improvement:
        improvement_md = rliable_stats.render_improvement_table(
            improvement, f"Probability of improvement P(X > Y) on each dataset alone: the chance that a run of X "
            f"ends above a run of Y (ties count half), for each pair of methods sharing a backbone, with its "
            f"{round(confidence * 100)}% stratified bootstrap CI (rliable, {reps} resamples, seed {seed}); the "
            f"first n seeds of each method, n the fewest either has. With few seeds the interval is wide.")
        (out / "table_improvement_per_dataset.md").write_text(improvement_md)
    if groups:
        with open(out / "table_per_seed.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(PER_SEED_HEADER)
            writer.writerows([ds, label, seed_, _csv_number(final), _csv_number(last3)]
                             for ds, label, seed_, final, last3 in per_seed_rows(groups))
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
                by_panel[(kind, backbone_of(col.algo))][col] = sub
    for (kind, backbone), sub in sorted(by_panel.items(), key=lambda kv: (KINDS.index(kv[0][0]), kv[0][1])):
        name = f"curves_{kind}_{_slug(backbone)}.png"
        if plot_curves(sub, "eval/score", figs / name, f"Online fine-tuning, {KIND_TITLES[kind]}, "
                       f"{backbone} backbone (mean ± std over seeds)", "normalised score", colors):
            curve_figs.append(name)
    by_backbone: dict[str, dict[Column, list[Run]]] = defaultdict(dict)
    for col, rs in main.items():
        by_backbone[backbone_of(col.algo)][col] = rs
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

    # Exchange counts per dataset and split method.
    exchange_caption = ("`strat/exchange` (samples per update batch whose stratum differs from their buffer), "
                        "averaged over a run's online phase and over the logging windows ending in its last 20% "
                        "of online steps, mean ± std over seeds.")
    exchange = online_mean_cells(groups, "strat/exchange", 0.2)
    exchange_md = ""
    if exchange:
        exchange_md = render_online_mean_table(exchange, 0.2, caption=exchange_caption)
        (out / "table_exchange.md").write_text(exchange_md)
        (out / "table_exchange.tex").write_text(render_online_mean_table(exchange, 0.2, latex=True,
                                                                         caption=exchange_caption))
        numbers["exchange"] = {f"{ds} | {label}": {"seeds": c["seeds"], "online": c["online"], "last 20%": c["last"]}
                               for (_, ds, label), c in exchange.items()}

    # Ablations (Tables 5-8, Figures 7, 8, 10).
    ablations = ablation_groups(groups)
    ablation_parts = []
    main_labels = {(m.algo, m.variant, m.scale): m.label for m in main}
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
        controls = [main_labels[k] for k in ((c.algo, c.variant, c.scale) for c in cols)
                    if is_control(k[1]) and k in main_labels]
        ablation_parts.append((key, slug, render_mean_table(table),
                               [n for n, ok in ((fig_name, has_fig), (ex_name, has_ex)) if ok], controls))

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
              "`[...]` label lists the settings that differ from the method's defaults; a control (the random "
              "split, `[random split]`) is a method of its own in every table and figure comparing methods. "
              "Cells with fewer seeds than the fullest cell are marked (n=k); std is the sample std (ddof=1). "
              "Every run's numbers: [table_per_seed.csv](table_per_seed.csv).", ""]
    if raw:
        lines += [f"Runs on {', '.join(raw)} have no reference scores: their scores are raw returns "
                  "(summary.json: `\"score\": \"raw return\"`), not normalised.", ""]
    if main:
        lines += ["## Table 1 layout: mean ± std", "", "[Markdown](table_main.md) · [LaTeX](table_main.tex)",
                  "", (out / "table_main.md").read_text(), ""]
        lines += ["## Mean of the last three evaluations", "", "[Markdown](table_last3.md) · [LaTeX](table_last3.tex)",
                  "", (out / "table_last3.md").read_text(), ""]
        lines += ["## IQM with 95% bootstrap confidence intervals", "",
                  "[Markdown](table_iqm.md) · [LaTeX](table_iqm.tex)", "", (out / "table_iqm.md").read_text(), ""]
    if rliable_lines:
        lines += ["## Aggregate metrics with rliable", "",
                  "Every method on the datasets all methods ran, the same number of seeds each; profiles show "
                  "the fraction of runs above each score, probability of improvement P(X > Y) that a run of "
                  "X beats one of Y.", "", *rliable_lines]
    if improvement_md:
        lines += ["## Probability of improvement per dataset", "",
                  "[Markdown](table_improvement_per_dataset.md)", "", improvement_md, ""]
    if curve_figs:
        lines += ["## Learning curves (Figures 3, 5, 6)", ""]
        lines += [f"![{n}](figures/{n})" for n in curve_figs] + [""]
    if exchange_figs:
        lines += ["## Exchange counts (Figures 9, 11)", "",
                  "`strat/exchange`: samples whose stratum differs from the buffer they came from, per "
                  "update batch, averaged over each logging window.", ""]
        lines += [f"![{n}](figures/{n})" for n in exchange_figs] + [""]
    if exchange_md:
        lines += ["## Exchange counts per dataset", "", "[Markdown](table_exchange.md) · [LaTeX](table_exchange.tex)",
                  "", exchange_md, ""]
    if score_figs:
        lines += ["## Stratification scores by source buffer", "",
                  "`strat/score_offline_mean` and `strat/score_online_mean`: the batch mean of the Eq. 10 score "
                  "over samples drawn from the offline and from the online buffer; the split puts the lowest "
                  "scores in b_off.", ""]
        lines += [f"![{n}](figures/{n})" for n in score_figs] + [""]
    if ablation_parts:
        lines += ["## Ablations (Tables 5-8)", ""]
        for key, slug, text, figs_, controls in ablation_parts:
            lines += [f"### `{key}`", "", f"[Markdown](table_ablation_{slug}.md) · "
                      f"[LaTeX](table_ablation_{slug}.tex)", "", text, ""]
            if controls:
                lines += [f"Control(s) {', '.join(f'`{c}`' for c in controls)}: the same runs as their own column in "
                          "the tables above, here beside the default on the datasets where they ran.", ""]
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


def _csv_number(x: float) -> str:
    return repr(float(x)) if math.isfinite(x) else ""


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o))