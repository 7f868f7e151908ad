"""`stratdiff sac ...`: train the SAC behaviour policies and pick/export them.

    stratdiff sac train --env Hopper-v5 --steps 1000000 --out runs/sac/hopper --seed 0
    stratdiff sac select --run runs/sac/hopper --level medium
    stratdiff sac export --run runs/sac/hopper --step 150000 --level medium
    stratdiff sac pack --run runs/sac/hopper --dest checkpoints/sac/hopper   # to keep
    stratdiff sac unpack --packed checkpoints/sac/hopper --out runs/sac/hopper  # to resume

`train` resumes from the run's own checkpoint when `--out` already holds one.
"""

from __future__ import annotations

import dataclasses
import sys

import tyro


@dataclasses.dataclass(frozen=True)
class Train:
    """Train (or resume) SAC on one environment."""

    out: str  # run directory (resumes when it holds a checkpoint)
    env: str = "Hopper-v5"  # gymnasium environment id
    steps: int = 1_000_000  # environment steps
    seed: int = 0  # random seed
    start_steps: int = 10_000  # uniform random actions before learning starts
    eval_every: int = 10_000  # evaluate + checkpoint every this many steps
    eval_episodes: int = 10  # episodes per evaluation
    batch_size: int = 256  # gradient-step batch
    hidden: tuple[int, ...] = (256, 256)  # hidden layers of actor and critics
    lr: float = 3e-4  # Adam learning rate (actor, critics, temperature)
    no_progress: bool = False  # no tqdm progress bar


@dataclasses.dataclass(frozen=True)
class Select:
    """Re-evaluate a run's snapshots with more episodes and pick the first at a target level."""

    run: str  # run directory
    level: str = "medium"  # only "medium" has a target level
    episodes: int = 30  # episodes per candidate evaluation (stochastic policy)
    window: int = 3  # candidates: steps whose mean stochastic score over this many evals is in range
    tolerance: float = 8.0  # +- normalised points around the target


@dataclasses.dataclass(frozen=True)
class Export:
    """Copy an actor snapshot into the committed policies with its config and evaluation."""

    run: str  # run directory
    step: int  # snapshot step
    level: str  # medium | expert
    episodes: int = 30  # evaluation episodes recorded in the JSON
    provisional: bool = False  # mark as provisional (training not finished)
    dest: str | None = None  # default: the package's assets/policies/<env>/<level>


@dataclasses.dataclass(frozen=True)
class Pack:
    """Copy what resuming a run needs (checkpoint, config, evaluations, compressed replay
    buffer) into a small folder that can be committed."""

    run: str  # run directory
    dest: str  # folder to write


@dataclasses.dataclass(frozen=True)
class Unpack:
    """Turn a packed run back into a run directory that `stratdiff sac train` resumes."""

    packed: str  # folder written by `stratdiff sac pack`
    out: str  # new run directory


def main(argv: list[str]) -> int:
    cmd = tyro.extras.subcommand_cli_from_dict(
        {"train": Train, "select": Select, "export": Export, "pack": Pack, "unpack": Unpack},
        args=argv, prog="stratdiff sac")
    from stratdiff.errors import user_errors

    try:
        return _run(cmd)
    except (*user_errors(), ValueError, FileNotFoundError) as e:
        print(f"stratdiff sac: error: {e}", file=sys.stderr)
        return 1


def _run(cmd) -> int:
    if isinstance(cmd, (Pack, Unpack)):
        from stratdiff.behaviour.train import pack_run, unpack_run

        print(pack_run(cmd.run, cmd.dest) if isinstance(cmd, Pack) else unpack_run(cmd.packed, cmd.out))
        return 0
    if isinstance(cmd, Train):
        from stratdiff.agents.sac import SACConfig
        from stratdiff.behaviour.train import TrainConfig, train

        cfg = TrainConfig(env_id=cmd.env, steps=cmd.steps, seed=cmd.seed,
                          start_steps=cmd.start_steps, batch_size=cmd.batch_size,
                          eval_every=cmd.eval_every, eval_episodes=cmd.eval_episodes,
                          buffer_size=max(cmd.steps, 1_000_000))
        sac = SACConfig(hidden_dims=cmd.hidden, actor_lr=cmd.lr, critic_lr=cmd.lr, temp_lr=cmd.lr)
        train(cfg, cmd.out, sac, progress=not cmd.no_progress)
        return 0
    from stratdiff.behaviour import export

    if isinstance(cmd, Select):
        step = export.select_medium(cmd.run, episodes=cmd.episodes, window=cmd.window,
                                    tolerance=cmd.tolerance)
        if step is None:
            print("no snapshot at the medium level yet", file=sys.stderr)
            return 1
        print(step)
        return 0
    if isinstance(cmd, Export):
        path = export.export_policy(cmd.run, cmd.step, cmd.level, episodes=cmd.episodes,
                                    provisional=cmd.provisional, dest=cmd.dest)
        print(path)
        return 0
    return 2
