"""`stratdiff diffusion fidelity-curve JSON ... --out PNG`: fidelity against the training budget.

Reads `stratdiff diffusion fidelity` outputs (fidelity.json), groups them by dataset and draws,
against the model's diffusion steps, the median per-state mean error, std error and log-likelihood
gap, with the true policy's own-sample floor dashed. Also writes the table as PNG.json and PNG.md.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import tyro

METRICS = (("mean_error", "median RMS error of the sample mean"),
           ("std_error", "median RMS error of the sample std"),
           ("loglik_gap", "median log-likelihood gap (nats)"))


@dataclasses.dataclass
class CurveArgs:
    """Plot fidelity.json files against their models' diffusion steps, one line per dataset."""

    inputs: Annotated[list[Path], tyro.conf.Positional, tyro.conf.arg(metavar="JSON")]
    """fidelity.json files (or folders holding one)."""
    out: Path = Path("fidelity-curve.png")


def curve_table(results: list[dict]) -> dict[str, list[dict]]:
    """dataset -> rows sorted by step: step, train_time_s and the medians of `METRICS` (model and floor)."""
    table: dict[str, list[dict]] = {}
    for r in results:
        s = r["summary"]
        row = {"step": r["model_step"], "train_time_s": r.get("train_time_s")}
        for key, _ in METRICS:
            if key == "loglik_gap":
                row[key] = s[key]["median"]
                row[f"{key}_mean"] = s[key]["mean"]
            else:
                row[f"model_{key}"] = s[f"model_{key}"]["median"]
                row[f"policy_{key}"] = s[f"policy_{key}"]["median"]
        row["model_std_ratio"] = s["model_std_ratio"]["median"]
        row["model_at_edge"] = s["model_at_edge"]["mean"]
        for who in ("diffusion", "true_policy"):
            f2 = r.get("figure2_metrics", {}).get(who, {})
            row[f"fig2_l2_{who}"], row[f"fig2_corr_{who}"] = f2.get("l2"), f2.get("corr")
        table.setdefault(r["dataset"], []).append(row)
    return {k: sorted(v, key=lambda row: row["step"]) for k, v in sorted(table.items())}


def markdown_table(table: dict[str, list[dict]]) -> str:
    """The curve table as markdown: per dataset and step, model (floor) medians and Figure 2's metric."""
    f = lambda v, d=3: "" if v is None else f"{v:.{d}f}"  # noqa: E731
    lines = ["| dataset | steps | train s | mean error | std error | std ratio | at +-1 | log-lik gap (median / mean) "
             "| Figure 2 L2: model / policy | corr: model / policy |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, rows in table.items():
        for r in rows:
            lines.append(
                f"| {name} | {r['step']} | {f(r['train_time_s'], 0)} "
                f"| {f(r['model_mean_error'])} ({f(r['policy_mean_error'])}) "
                f"| {f(r['model_std_error'])} ({f(r['policy_std_error'])}) | {f(r['model_std_ratio'], 2)} "
                f"| {f(r['model_at_edge'])} | {f(r['loglik_gap'], 1)} / {f(r['loglik_gap_mean'], 1)} "
                f"| {f(r['fig2_l2_diffusion'])} / {f(r['fig2_l2_true_policy'])} "
                f"| {f(r['fig2_corr_diffusion'])} / {f(r['fig2_corr_true_policy'])} |")
    return "\n".join(lines) + "\n"


def run(args: CurveArgs) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = []
    for p in args.inputs:
        path = p / "fidelity.json" if p.is_dir() else p
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no fidelity.json")
        results.append(json.loads(path.read_text()))
    table = curve_table(results)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for i, (name, rows) in enumerate(table.items()):
        steps = [r["step"] for r in rows]
        colour = f"C{i}"
        for ax, (key, label) in zip(axes, METRICS):
            if key == "loglik_gap":
                ax.plot(steps, [r[key] for r in rows], "o-", color=colour, label=name)
                ax.axhline(0.0, color="k", lw=0.6)
            else:
                ax.plot(steps, [r[f"model_{key}"] for r in rows], "o-", color=colour, label=name)
                ax.plot(steps, [r[f"policy_{key}"] for r in rows], "--", color=colour, lw=0.8)
            ax.set_xscale("log")
            ax.set_xlabel("diffusion training steps")
            ax.set_ylabel(label)
    axes[0].legend(fontsize=8, title="dashed: true policy's own samples", title_fontsize=7)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    plt.close(fig)
    args.out.with_suffix(".json").write_text(json.dumps(table, indent=2))
    args.out.with_suffix(".md").write_text(markdown_table(table))
    return {"figure": str(args.out), "table": table}


def main(argv: list[str]) -> int:
    prog = "stratdiff diffusion fidelity-curve"
    args = tyro.cli(CurveArgs, args=argv, prog=prog)
    from stratdiff.commands import run_and_print

    return run_and_print(prog, lambda: run(args), (FileNotFoundError, KeyError, json.JSONDecodeError))
