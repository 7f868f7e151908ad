"""`stratdiff diffusion similarity RUN`: the paper's Figure 2 for a StratDiff run, plus how each
score setting splits that run's own batches, against a many-sample reference and against itself."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import tyro


@dataclasses.dataclass
class SimilarityArgs:
    """On dataset states: distance of the offline policy's, the diffusion model's and the guided
    model's actions to the dataset's actions (Figure 2); and the split agreement of Eq. 10's
    settings (the default gaussian_fit with M = 8, fewer solver steps, fixed_sigma, on runs with
    stratifier.score=amortised the run's g, and a random split) with a reference that estimates
    what the default estimates with many samples (gaussian_fit, M = 64, 15 solver steps), and
    with themselves redrawn; and the share of samples the reference places in their source
    buffer's stratum."""

    run: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="RUN")]
    """A `stratdiff train` folder of a stratdiff-* method (its checkpoint and behaviour/)."""
    states: int = 2048
    """Dataset states for Figure 2."""
    batches: int = 8
    """Mixed batches (of the run's batch size and rho) for the split agreement; 0 skips it."""
    seed: int = 0
    out: Path | None = None
    """Folder for similarity.json and similarity.png (default: RUN)."""


def run(args: SimilarityArgs) -> dict:
    import jax

    from stratdiff.experiments.diagnostics import figure2, load_run, plot_figure2, split_agreement
    from stratdiff.stratify.stratdiff import StratDiffStratifier

    runner = load_run(args.run)
    if not isinstance(runner.stratifier, StratDiffStratifier):
        raise ValueError(f"{args.run}: not a StratDiff run (algo {runner.cfg.algo!r} has no behaviour model)")
    key = jax.random.PRNGKey(args.seed)
    result = {"run": str(args.run), "step": runner.step,
              "figure2": figure2(runner, args.states, jax.random.fold_in(key, 0))}
    if args.batches:
        result["split_agreement"] = split_agreement(runner, args.batches, jax.random.fold_in(key, 1))
    out = args.out or args.run
    out.mkdir(parents=True, exist_ok=True)
    (out / "similarity.json").write_text(json.dumps(result, indent=2))
    result["figure"] = str(plot_figure2(result["figure2"], out / "similarity.png"))
    return result


def main(argv: list[str]) -> int:
    prog = "stratdiff diffusion similarity"
    args = tyro.cli(SimilarityArgs, args=argv, prog=prog)
    from stratdiff.commands import run_and_print
    from stratdiff.errors import user_errors

    return run_and_print(prog, lambda: run(args), (*user_errors(), ValueError, FileNotFoundError))
