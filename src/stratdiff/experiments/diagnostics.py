"""Diagnostics of a finished (or checkpointed) StratDiff run.

- `figure2`: the paper's Figure 2. On dataset states, how close to the dataset actions are the
  offline policy's actions, the behaviour diffusion model's and the guided model's.
- `split_agreement`: how each score setting (the default, fewer solver steps, the paper's single
  guided action, the run's amortised g, a random split) splits the run's mixed batches, judged
  against a reference that estimates what the default estimates with 8x the samples
  (gaussian_fit, M = 64, 15 solver steps), and against itself redrawn.
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
from stratdiff.stratify.split import random_split
from stratdiff.types import ONLINE

# The reference split: what the default estimates (the KL to a Gaussian fitted to the guided policy
# at each state, Eq. 10's `gaussian_fit`) estimated with many samples, so that its own sampling
# noise is small. (score form, guided samples M, solver steps)
REFERENCE = ("gaussian_fit", 64, 15)
REFERENCE_NAME = "gaussian_fit M=64, 15 steps (reference)"
# name -> (score form, M, solver steps): the settings judged against the reference
SPLIT_VARIANTS: dict[str, tuple[str, int, int]] = {
    "gaussian_fit M=8, 15 steps (default)": ("gaussian_fit", 8, 15),
    "gaussian_fit M=8, 5 steps (cpu preset)": ("gaussian_fit", 8, 5),
    "fixed_sigma, 15 steps (the paper's single guided action)": ("fixed_sigma", 1, 15),
    "fixed_sigma, 5 steps": ("fixed_sigma", 1, 5),
}
AMORTISED_VARIANT = "amortised (g of the run)"
RANDOM_VARIANT = "random split"


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
    """How each score setting splits the run's own mixed batches, judged against `REFERENCE`.

    Every setting (`SPLIT_VARIANTS`, the run's amortised g where it has one, the random split)
    splits each batch twice with independent sampler noise: `reference` is the share of samples
    whose stratum equals the reference's, `self` the share on which its two draws agree (the
    ceiling sampling noise sets on its agreement with anything). For the reference itself: its
    own redrawn agreement and `source_match`, the share of samples whose stratum is their source
    buffer's (0.5 when the split ignores the source). `energy_lags`: the reference with the
    energy net `n` CEP steps (with the run's current critic) further on, against the reference
    with the same noise, i.e. how far `n` CEP steps move the split. See `agreement_table`.
    """
    from stratdiff.data import mixed_batch

    strat, cfg = runner.stratifier, runner.cfg
    base = dataclasses.replace(strat.config, online_energy_updates=False, exchange_cap=None, stratify=True,
                               split_by_source=False, next_candidates=0)

    def setting(score: str, m: int, steps: int):
        return strat.replace(config=dataclasses.replace(base, score=score, num_guided=max(m, 2)),
                             sampler=dataclasses.replace(strat.sampler, steps=steps))

    splitters = {REFERENCE_NAME: setting(*REFERENCE)} | {name: setting(*spec) for name, spec in SPLIT_VARIANTS.items()}
    if getattr(strat, "amortised", None) is not None:
        # the split g makes at its next update call (one online step on fresh guided samples, then g's Gaussian)
        splitters[AMORTISED_VARIANT] = strat.replace(config=dataclasses.replace(base, score="amortised"))
    lagged = {}
    if strat.guidance_scale is not None and strat.config.online_energy_updates:
        ahead = splitters[REFERENCE_NAME]
        for lag in range(1, max(energy_lags, default=0) + 1):
            ahead, _ = _energy_step(ahead, runner.agent, jax.random.fold_in(key, 10_000 + lag))
            if lag in energy_lags:
                lagged[f"reference, energy {lag} CEP steps on"] = ahead
    names = [*splitters, RANDOM_VARIANT]
    draws: dict[str, tuple[list, list]] = {name: ([], []) for name in names}
    lag_draws: dict[str, list[np.ndarray]] = {name: [] for name in lagged}
    sources = []
    for i in range(batches):
        k_batch, k_split = jax.random.split(jax.random.fold_in(key, i))
        batch = mixed_batch(k_batch, runner.offline, runner.online, cfg.batch_size, cfg.rho)
        batch = jax.tree_util.tree_map(lambda x: x[None], batch)
        sources.append(np.asarray(batch.source[0] == ONLINE))
        for j, name in enumerate(names):
            for d in (0, 1):
                k = jax.random.fold_in(k_split, 2 * j + d)
                if name == RANDOM_VARIANT:
                    online_like = random_split(k, 1, cfg.batch_size, cfg.rho)
                else:
                    online_like = _split(splitters[name], runner.agent, batch, k)[1]
                draws[name][d].append(np.asarray(online_like[0]))
        for name, variant in lagged.items():  # the reference's first draw's noise: only the energy differs
            online_like = _split(variant, runner.agent, batch, jax.random.fold_in(k_split, 0))[1]
            lag_draws[name].append(np.asarray(online_like[0]))
    table = agreement_table({name: (np.concatenate(a), np.concatenate(b)) for name, (a, b) in draws.items()},
                            np.concatenate(sources), REFERENCE_NAME)
    ref = np.concatenate(draws[REFERENCE_NAME][0])
    table["energy_lag"] = {name: float(np.mean(np.concatenate(s) == ref)) for name, s in lag_draws.items()}
    return table | {"online_buffer": len(runner.online)}


def agreement_table(splits: dict[str, tuple[np.ndarray, np.ndarray]], from_online: np.ndarray,
                    reference: str) -> dict[str, Any]:
    """`splits`: name -> two independent draws of `online_like` (bool [N]) over the same samples;
    `from_online`: each sample's source buffer. Per name: `reference`, the share of its first
    draw equal to the reference's first draw, and `self`, the share on which its two draws
    agree; and the reference's `source_match`, the share of its first draw equal to the source,
    `online_offline_like`, the share of online-buffer samples it places offline-like, and
    `offline_online_like`, the share of offline-buffer samples it places online-like (None where
    the batches hold no sample of that buffer)."""
    ref = splits[reference][0]
    rows = {name: {"reference": float(np.mean(a == ref)), "self": float(np.mean(a == b))}
            for name, (a, b) in splits.items()}

    def share(values: np.ndarray) -> float | None:
        return float(np.mean(values)) if values.size else None

    return {"reference": reference, "settings": rows, "source_match": float(np.mean(ref == from_online)),
            "online_offline_like": share(~ref[from_online]), "offline_online_like": share(ref[~from_online]),
            "samples": int(ref.size)}


def _split(strat, agent, batch, key):
    """The split `strat` makes at its next update call (its schedule decided as in a run)."""
    return _split_jit(strat.scheduled(), agent, batch, key)


@jax.jit
def _split_jit(strat, agent, batch, key):
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
