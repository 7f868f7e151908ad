"""`stratdiff train`: one offline -> online run of any registered method."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Literal

import tyro


@dataclasses.dataclass
class TrainArgs:
    """Pretrain offline on a dataset, then fine-tune online (see `stratdiff.methods`)."""

    algo: str
    """Method: iql, calql, stratdiff-iql, stratdiff-calql, edis-iql, edis-calql (those registered)."""
    dataset: str
    """Dataset source: a D4RL HDF5 file, a Minari dataset folder or id, or a name built with `stratdiff data build`."""
    env: str | None = None
    """Environment id, when the dataset does not name one."""
    download: bool = False
    """Download a Minari dataset id missing from MINARI_DATASETS_PATH from the hub (or STRATDIFF_DOWNLOAD=1)."""
    preset: Literal["smoke", "cpu", "study", "paper"] = "cpu"
    """Scale: smoke (seconds, tests), cpu (this 2-core machine), study (300k offline + 100k online steps, the
    cpu behaviour model), paper (1M offline + 200k online steps)."""
    seed: int = 0
    out: Path | None = None
    """Run folder (default: runs/ALGO/DATASET/seedN)."""
    resume: bool = False
    """Continue a killed run in --out from its last checkpoint."""
    force: bool = False
    """Start over in --out: delete the run's files there first (config.json, metrics.csv, tensorboard/,
    checkpoint, offline agent, summary.json, diverged.json, behaviour/), e.g. after a damaged metrics.csv."""
    set: tuple[str, ...] = ()
    """Overrides of any config field, KEY=VALUE (e.g. online_steps=20000 agent.expectile=0.8)."""
    no_progress: bool = False
    """Hide the progress bar."""
    # StratDiff ablations (Figure 4, Tables 5-8); shortcuts for stratifier.* overrides.
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
    """StratDiff-IQL (Table 6): no expectile on online-like samples, the symmetric squared loss (Eq. 14
    bounded; --set agent.online_value_loss=linear: Eq. 14's literal Q - V term, unbounded)."""
    exchange_cap: int | None = None
    """StratDiff: at most this many samples cross strata each way per batch (Table 7)."""
    wandb: bool = False
    """Also log the config and the metrics.csv rows to Weights & Biases (pip install 'stratdiff[wandb]')."""
    wandb_project: str = "stratdiff"
    """W&B project (with --wandb)."""
    wandb_group: str | None = None
    """W&B group (with --wandb; `stratdiff sweep --wandb` groups its runs by the sweep's folder name)."""


def overrides_from(args: TrainArgs) -> dict:
    from stratdiff.methods import ConfigError, parse_value

    out = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = parse_value(value.strip())
    if args.no_energy:
        out["stratifier.guidance"] = False
    if args.no_stratification:
        out["stratifier.stratify"] = False
    if args.split_by_source:
        out["stratifier.split_by_source"] = True
    if args.random_split:
        out["stratifier.score"] = "random"
    if args.no_online_expectile:
        out["agent.online_value_loss"] = "symmetric"
    if args.exchange_cap is not None:
        out["stratifier.exchange_cap"] = args.exchange_cap
    return out


def run(args: TrainArgs) -> dict:
    from stratdiff import api
    from stratdiff.wandb_logging import WandbOptions

    wandb = WandbOptions(project=args.wandb_project, group=args.wandb_group) if args.wandb else False
    return api.train(args.algo, args.dataset, env=args.env, preset=args.preset, seed=args.seed, out=args.out,
                     overrides=overrides_from(args), resume=args.resume, progress=not args.no_progress,
                     download=True if args.download else None, wandb=wandb, force=args.force)


def main(argv: list[str]) -> int:
    args = tyro.cli(TrainArgs, args=argv, prog="stratdiff train")
    from stratdiff.errors import user_errors

    try:
        summary = run(args)
    except user_errors() as e:
        print(f"stratdiff train: error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0
