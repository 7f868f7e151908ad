"""Diagnostics of a finished (or checkpointed) StratDiff run.

- `figure2`: the paper's Figure 2. On dataset states, how close to the dataset actions are the
  offline policy's actions, the behaviour diffusion model's and the guided model's.
- `split_agreement`: how often cheaper score settings (fewer solver steps, one guided sample,
  and on runs with `stratifier.score=amortised` the amortised score) place a sample in the same
  stratum as the default (gaussian_fit, M = 8, 15 solver steps).
  The checks use mixed batches of the run's own offline data and online buffer.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import numpy as np

from stratdiff.diffusion import sample
from stratdiff.diffusion.similarity import similarity_table

# name -> (score form, guided samples M, solver steps, sampler noise); the first one is the
# reference. "same" noise: the variant's sampler starts from the reference's noise, so the
# agreement measures the setting alone; "other": fresh noise, so the reference against itself
# with other noise is the floor that sampling noise sets on any agreement.
SPLIT_VARIANTS: dict[str, tuple[str, int, int, str]] = {
    "gaussian_fit M=8, 15 steps (default)": ("gaussian_fit", 8, 15, "same"),
    "gaussian_fit M=8, 15 steps, other noise": ("gaussian_fit", 8, 15, "other"),
    "gaussian_fit M=8, 5 steps (cpu preset)": ("gaussian_fit", 8, 5, "same"),
    "gaussian_fit M=8, 3 steps": ("gaussian_fit", 8, 3, "same"),
    "gaussian_fit M=4, 5 steps": ("gaussian_fit", 4, 5, "same"),
    "fixed_sigma, 15 steps": ("fixed_sigma", 1, 15, "same"),
    "fixed_sigma, 5 steps": ("fixed_sigma", 1, 5, "same"),
}


def load_run(run_dir: str | Path):
    """A `Runner` restored from RUN's config.json and checkpoint (agent, stratifier, buffers)."""
    import json

    from stratdiff.methods import RunConfig
    from stratdiff.runner import Runner

    run_dir = Path(run_dir)
    cfg = RunConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    runner = Runner(cfg, run_dir, progress=False)
    runner.load()
    return runner


def figure2(runner, n: int, key: jax.Array) -> dict[str, dict[str, float]]:
    """Similarity of the policy's, the diffusion model's and the guided model's actions to the
    dataset's actions on `n` dataset states."""
    strat = runner.stratifier
    k_batch, k_pol, k_diff, k_guided = jax.random.split(key, 4)
    batch = runner.offline.sample(k_batch, n)
    candidates = {
        "offline policy": runner.agent.act(batch.observations, k_pol, True),
        "diffusion": sample(strat.model, batch.observations, k_diff, None),
    }
    if strat.guidance_scale is not None:
        candidates["guided diffusion"] = sample(strat.model, batch.observations, k_guided, strat.guidance_scale)
    return similarity_table(np.asarray(batch.actions), {k: np.asarray(v) for k, v in candidates.items()})


def split_agreement(runner, batches: int, key: jax.Array, energy_lags: tuple[int, ...] = (4, 16)) -> dict[str, Any]:
    """Share of samples whose stratum under each `SPLIT_VARIANTS` entry equals the reference's.

    `energy_lags`: also the reference against itself with the energy net `n` CEP steps (with
    the run's current critic) further on, i.e. as far as an `energy_every = n + 1` schedule lags.
    """
    from stratdiff.data import mixed_batch

    strat, cfg = runner.stratifier, runner.cfg
    base = dataclasses.replace(strat.config, online_energy_updates=False, exchange_cap=None, stratify=True,
                               next_candidates=0)
    variants = {name: (strat.replace(config=dataclasses.replace(base, score=score, num_guided=max(m, 2)),
                                     sampler=dataclasses.replace(strat.sampler, steps=steps)), noise)
                for name, (score, m, steps, noise) in SPLIT_VARIANTS.items()}
    variants |= amortised_variants(strat, base)
    reference = next(iter(variants.values()))[0]
    if strat.guidance_scale is not None and strat.config.online_energy_updates:
        ahead = reference
        for lag in range(1, max(energy_lags, default=0) + 1):
            ahead, _ = _energy_step(ahead, runner.agent, jax.random.fold_in(key, 10_000 + lag))
            if lag in energy_lags:
                # agreement is symmetric: the reference is `lag` CEP steps behind this energy
                variants[f"default, energy {lag} CEP steps behind"] = (ahead, "same")
    splits: dict[str, list[np.ndarray]] = {name: [] for name in variants}
    for i in range(batches):
        k_batch, k_split = jax.random.split(jax.random.fold_in(key, i))
        batch = mixed_batch(k_batch, runner.offline, runner.online, cfg.batch_size, cfg.rho)
        batch = jax.tree_util.tree_map(lambda x: x[None], batch)
        for name, (variant, noise) in variants.items():
            k = k_split if noise != "other" else jax.random.fold_in(k_split, 1)
            _, online_like, _, _ = _split(variant, runner.agent, batch, k)
            splits[name].append(np.asarray(online_like[0]))
    ref = np.concatenate(splits[next(iter(variants))])
    return {name: float(np.mean(np.concatenate(s) == ref)) for name, s in splits.items()} | {
        "samples": int(ref.size), "online_buffer": len(runner.online)}


AMORTISED_VARIANT = "amortised (g of the run)"


def amortised_variants(strat, base) -> dict[str, tuple[Any, str]]:
    """The run's amortised score g as a split variant, on runs that have one: the split it makes
    at its next update call (one online step of g on fresh guided samples, then g's Gaussian)."""
    if getattr(strat, "amortised", None) is None:
        return {}
    return {AMORTISED_VARIANT: (strat.replace(config=dataclasses.replace(base, score="amortised")), "same")}


@jax.jit
def _split(strat, agent, batch, key):
    return strat.split(agent, batch, key)


@jax.jit
def _energy_step(strat, agent, key):
    return strat.energy_step(agent, key)


def plot_figure2(table: dict[str, dict[str, float]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(table)
    metrics = [("l2", "mean distance to the dataset action (lower: closer)"),
               ("within_tol", "share within 0.1 in every dimension")]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.2))
    for ax, (m, title) in zip(axes, metrics):
        ax.bar(names, [table[n][m] for n in names], color=["#4c72b0", "#55a868", "#c44e52"][: len(names)])
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelsize=9)
    fig.suptitle("Actions on dataset states vs the dataset's actions (paper Figure 2)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
