"""`stratdiff sweep`: every (algo, dataset, seed) as one `stratdiff train` run.

    stratdiff sweep --algos iql stratdiff-iql --datasets hopper-medium-v2 --seeds 0 1 2 \\
        --preset cpu --out runs/study --workers 2

Re-running the same command skips finished runs, resumes unfinished ones and retries
failed ones; see `stratdiff.experiments.sweep`. Exit code 0 when every run is finished (done, resumed or skipped).
This module does not import JAX.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Literal

import tyro


@dataclasses.dataclass
class SweepArgs:
    """Run algos x datasets x seeds as `stratdiff train` runs in OUT/ALGO/DATASET/seedN."""

    algos: tuple[str, ...]
    """Methods (as `stratdiff train --algo`)."""
    datasets: tuple[str, ...]
    """Dataset sources (as `stratdiff train --dataset`)."""
    out: Path
    """Sweep folder; runs go to OUT/ALGO/DATASET_NAME/seedN, the manifest to OUT/sweep.json."""
    seeds: tuple[int, ...] = (0, 1, 2)
    preset: Literal["smoke", "cpu", "study", "paper"] = "cpu"
    env: str | None = None
    """Environment id for every run, where a dataset file does not name its environment."""
    workers: int = 1
    """Local runs at once (each gets cpu_count/workers threads)."""
    ray: str | None = None
    """Run on a Ray cluster instead: its address, or `auto` (needs `pip install 'stratdiff[ray]'`)."""
    max_retries: int = 1
    """Extra attempts for a failed run (each resumes from its checkpoint when there is one)."""
    set: tuple[str, ...] = ()
    """KEY=VALUE overrides passed to every run (as `stratdiff train --set`)."""
    # StratDiff ablations, as in `stratdiff train` (shortcuts for --set stratifier.* / agent.*).
    no_energy: bool = False
    """StratDiff: score against the unguided behaviour model (Figure 4)."""
    no_stratification: bool = False
    """StratDiff: every sample offline-like, i.e. the backbone alone (Table 8, one reading)."""
    split_by_source: bool = False
    """StratDiff: offline-buffer samples offline-like, online-buffer samples online-like, no score split
    (Table 8, the other reading; see docs/paper.md)."""
    random_split: bool = False
    """StratDiff: split each batch uniformly at random, rho of it offline-like, instead of by the score: a
    control of this project, not in the paper; no behaviour model is trained (stratifier.score=random)."""
    no_online_expectile: bool = False
    """StratDiff-IQL (Table 6): the symmetric squared value loss on online-like samples (Eq. 14 bounded)."""
    exchange_cap: int | None = None
    """StratDiff: at most this many samples cross strata each way per batch (Table 7)."""
    share_offline: bool = False
    """A method on a backbone that also runs here (stratdiff-iql next to iql, same dataset and seed),
    or whose backbone run in --out already finished its offline phase (an earlier sweep), takes
    over that run's offline phase instead of repeating it (`reuse_offline_from`)."""
    wandb: bool = False
    """Every run also logs to Weights & Biases (pip install 'stratdiff[wandb]'), grouped by the sweep."""
    wandb_project: str = "stratdiff"
    """W&B project (with --wandb)."""
    wandb_group: str | None = None
    """W&B group (with --wandb; default: the name of the --out folder)."""
    dry_run: bool = False
    """Print the runs and their state (new / resume / finished / conflict) without running."""


def overrides(args: SweepArgs) -> tuple[str, ...]:
    """--set items plus the ablation flags as KEY=VALUE, mapped exactly as `stratdiff train` maps them."""
    from stratdiff.commands.train import overrides_from

    flags = overrides_from(dataclasses.replace(args, set=()))
    return tuple(args.set) + tuple(f"{k}={json.dumps(v)}" for k, v in flags.items())


def main(argv: list[str]) -> int:
    args = tyro.cli(SweepArgs, args=argv, prog="stratdiff sweep")
    from stratdiff.experiments import sweep

    try:
        cfg = sweep.SweepConfig(
            algos=args.algos, datasets=args.datasets, seeds=args.seeds, preset=args.preset, out=str(args.out),
            env=args.env, overrides=overrides(args), workers=args.workers, ray_address=args.ray,
            max_retries=args.max_retries, share_offline=args.share_offline,
            wandb=args.wandb, wandb_project=args.wandb_project, wandb_group=args.wandb_group)
        if args.dry_run:
            for run in sweep.plan(cfg):
                why = sweep.conflict(run, cfg)
                state = "conflict" if why else {"new": "new", "checkpoint": "resume", "finished": "finished",
                                                "diverged": "diverged"}[sweep.run_state(run.out_dir)]
                print(f"{state:<9} {run.name}  {run.out_dir}" + (f"  ({why})" if why else ""))
            return 0
        print(f"stratdiff sweep: {len(sweep.plan(cfg))} runs into {args.out}", flush=True)
        results = sweep.run_sweep(cfg, echo=lambda line: print(line, flush=True))
    except sweep.SweepError as e:
        print(f"stratdiff sweep: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"stratdiff sweep: interrupted; run it again to resume (manifest: {args.out / sweep.MANIFEST})",
              file=sys.stderr)
        return 130
    print(f"\nstatus ({args.out / sweep.MANIFEST}):")
    for entry in results:
        print("  " + sweep.status_line(entry))
    bad = [e for e in results if e["status"] not in ("done", "resumed", "skipped")]
    counts = {s: sum(e["status"] == s for e in results)
              for s in ("done", "resumed", "skipped", "failed", "diverged", "conflict", "busy")}
    print("  " + ", ".join(f"{v} {k}" for k, v in counts.items() if v))
    return 1 if bad else 0
