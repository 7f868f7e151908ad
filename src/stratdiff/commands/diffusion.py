"""`stratdiff diffusion train`: fit the behaviour diffusion model on a dataset and draw support actions.

Writes to --out: config.json (the resolved DiffusionConfig, dataset, state normaliser, loss curve),
behaviour.msgpack, energy.msgpack (the energy net, initialised; it is trained by CEP against a
critic's Q during a StratDiff run) and support.npz (K support actions for each chosen dataset
state and its next state, plus the row indices). Load it with `stratdiff.diffusion.load_model`;
observations must be normalised with meta["state_normalizer"] before calling the model.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Literal

import tyro


@dataclasses.dataclass
class DiffusionTrainArgs:
    """Train the behaviour diffusion model (SfBC/QGPO ScoreNet, VP-SDE) and draw support actions."""

    dataset: str
    """Dataset source: a D4RL HDF5 file, a Minari dataset folder or id, or a name built with `stratdiff data build`."""
    out: Path
    """Output folder (created; an existing model there is overwritten)."""
    preset: Literal["smoke", "cpu", "study", "paper"] = "cpu"
    """Scale: smoke (seconds), cpu and study (20k steps at batch 256, support actions for 20k states), paper
    (600k x 4096)."""
    seed: int = 0
    env: str | None = None
    """Environment id, when the dataset does not name one."""
    steps: int | None = None
    """Training steps (default: the preset's)."""
    guidance_scale: float | None = None
    """Guidance scale s saved with the model (default: the dataset's Table 4 value, if any)."""
    num_support: int | None = None
    """K support actions per state (default: 16, or 32 for AntMaze datasets)."""
    support_states: int | None = None
    """Dataset states given support actions, a random subset (default: the preset's; 0: all)."""
    state_norm: Literal["standard", "identity"] = "standard"
    """Observation normalisation the model is trained with (saved in config.json meta)."""
    chunk: int = 500
    """Training steps per jitted call (progress and loss-curve granularity)."""
    resume: bool = False
    """Continue the model already in --out (same dataset, seed and network settings) up to --steps; the result
    equals one uninterrupted run when the saved step is a multiple of --chunk."""
    no_progress: bool = False
    """Hide progress output."""


def run(args: DiffusionTrainArgs) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from stratdiff.data import load_dataset, make_normalizer
    from stratdiff.diffusion.model import (
        PRESETS,
        BehaviourModel,
        draw_support_actions,
        resolve_config,
        save_model,
        train_steps,
    )

    dataset = load_dataset(args.dataset, args.env)
    name = dataset.info.name if dataset.info.name and dataset.info.name != "dataset" else Path(args.dataset).name
    cfg = PRESETS[args.preset]
    overrides = {k: v for k, v in (("train_steps", args.steps), ("guidance_scale", args.guidance_scale),
                                   ("num_support", args.num_support)) if v is not None}
    if args.support_states is not None:
        overrides["support_states"] = args.support_states or None
    cfg = resolve_config(dataclasses.replace(cfg, **overrides), name)
    normalizer = make_normalizer(args.state_norm, dataset)
    obs = normalizer.normalize(np.asarray(dataset.observations, np.float32))
    next_obs = normalizer.normalize(np.asarray(dataset.next_observations, np.float32))
    actions = np.clip(np.asarray(dataset.actions, np.float32), -1.0, 1.0)
    say = (lambda *a: None) if args.no_progress else (lambda *a: print(*a, file=sys.stderr, flush=True))

    key = jax.random.PRNGKey(args.seed)
    k_init, k_train, k_support, k_subset = jax.random.split(key, 4)
    model = BehaviourModel.create(k_init, obs.shape[1], actions.shape[1], cfg)
    curve, prior_s = [], 0.0
    if args.resume and (args.out / "behaviour.msgpack").is_file():
        model, curve, prior_s = _resumed(args, cfg, name)
        say(f"[diffusion] resuming {args.out} at step {int(model.step)}")
    obs_d, act_d = jnp.asarray(obs), jnp.asarray(actions)
    done, t0 = int(model.step), time.time() - prior_s
    while done < cfg.train_steps:
        n = min(args.chunk, cfg.train_steps - done)
        model, info = train_steps(model, obs_d, act_d, jax.random.fold_in(k_train, done), num_steps=n,
                                  batch_size=cfg.batch_size)
        done += n
        curve.append({"step": done, "score_loss": float(info["score_loss"]), "time_s": round(time.time() - t0, 2)})
        say(f"[diffusion] step {done}/{cfg.train_steps} loss {curve[-1]['score_loss']:.4f} "
            f"({done / (time.time() - t0):.1f} steps/s)")
    train_time = time.time() - t0

    n_rows = obs.shape[0]
    if cfg.support_states is None or cfg.support_states >= n_rows:
        idx = np.arange(n_rows)
    else:
        idx = np.sort(np.asarray(jax.random.choice(k_subset, n_rows, (cfg.support_states,), replace=False)))
    t1 = time.time()
    progress = None if args.no_progress else (lambda i, n: say(f"[diffusion] support actions {i}/{n}"))
    support = {
        "indices": idx,
        "observations": draw_support_actions(model, obs[idx], jax.random.fold_in(k_support, 0), progress=progress),
        "next_observations": draw_support_actions(model, next_obs[idx], jax.random.fold_in(k_support, 1),
                                                  progress=progress),
    }
    meta = {"dataset": str(args.dataset), "dataset_name": name, "env_id": args.env or dataset.info.env_id,
            "seed": args.seed, "preset": args.preset, "state_norm": args.state_norm,
            "state_normalizer": normalizer.to_dict(), "loss_curve": curve,
            "train_time_s": round(train_time, 1), "support_time_s": round(time.time() - t1, 1)}
    save_model(args.out, model, support=support, meta=meta)
    return {"out": str(args.out), "dataset": name, "steps": int(model.step), "final_loss": curve[-1]["score_loss"],
            "guidance_scale": cfg.guidance_scale, "num_support": cfg.num_support,
            "support_states": int(len(idx)), "train_time_s": meta["train_time_s"],
            "support_time_s": meta["support_time_s"]}


# Settings that do not change how the behaviour model trains (a resumed run may change them).
_NOT_TRAINING = ("train_steps", "num_support", "support_states", "guidance_scale")


def _resumed(args: DiffusionTrainArgs, cfg, name: str):
    """(the model saved in args.out, its loss curve, its training seconds), checked against this run."""
    from stratdiff.diffusion.model import load_model

    model, _, meta = load_model(args.out)
    saved, wanted = model.config.to_dict(), cfg.to_dict()
    differs = sorted(k for k in wanted if k not in _NOT_TRAINING and saved.get(k) != wanted[k])
    for key, value in (("dataset_name", name), ("seed", args.seed), ("state_norm", args.state_norm)):
        if meta.get(key) != value:
            differs.append(key)
    if cfg.lr_decay and saved["train_steps"] != cfg.train_steps:
        differs.append("train_steps (the lr schedule decays over it)")
    if differs:
        raise ValueError(f"{args.out}: --resume needs the saved model's settings; these differ: {', '.join(differs)}")
    if int(model.step) > cfg.train_steps:
        raise ValueError(f"{args.out}: the saved model has {int(model.step)} steps, "
                         f"more than --steps {cfg.train_steps}")
    return model.replace(config=cfg), list(meta.get("loss_curve", [])), float(meta.get("train_time_s", 0.0))


# subcommand -> module with `main(argv)`; `train` is defined here.
SUBCOMMANDS = {"similarity": "stratdiff.commands.diffusion_similarity",
               "fidelity": "stratdiff.commands.diffusion_fidelity",
               "fidelity-curve": "stratdiff.commands.diffusion_fidelity_curve"}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: stratdiff diffusion train --dataset SOURCE --out DIR [--preset smoke|cpu|paper] [--seed N] "
              "[--env ENV_ID] [--resume]\n       stratdiff diffusion similarity RUN ...\n"
              "       stratdiff diffusion fidelity MODEL ...\n"
              "       stratdiff diffusion fidelity-curve JSON ... --out PNG\n\n"
              "`stratdiff diffusion SUBCOMMAND --help` lists every option.")
        return 0
    if argv[0] in SUBCOMMANDS:
        import importlib

        return int(importlib.import_module(SUBCOMMANDS[argv[0]]).main(argv[1:]) or 0)
    if argv[0] != "train":
        known = ", ".join(["train", *SUBCOMMANDS])
        print(f"stratdiff diffusion: unknown subcommand {argv[0]!r} (known: {known})", file=sys.stderr)
        return 2
    args = tyro.cli(DiffusionTrainArgs, args=argv[1:], prog="stratdiff diffusion train")
    from stratdiff.data import DatasetError
    from stratdiff.envs import UnknownEnvError

    from stratdiff.commands import run_and_print

    return run_and_print("stratdiff diffusion train", lambda: run(args), (DatasetError, UnknownEnvError, ValueError))
