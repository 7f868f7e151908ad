"""Cost of StratDiff's online update against its backbone's (`stratdiff bench --only stratdiff`).

Times one online update call (split + backbone update, as the runner makes it) on a
synthetic batch of 256 with locomotion-sized observations (17) and actions (6), the
paper's backbone networks, for each backbone alone and with the StratDiff stratifier at the
`cpu` scale (the `cpu` diffusion preset's half-width ScoreNet and `SCALE_DEFAULTS["cpu"]`) and
at the `paper` scale (paper networks, M = 8 guided actions, 15 solver steps, a CEP step every
call). Calls are timed in a row, so a schedule such as `energy_every` is averaged over. The
environment step and the policy's action, shared by all, add about 0.5 ms per step on top.

`bench_with_amortised` (the section `stratdiff bench --only stratdiff` runs) adds, in the same
run: each backbone's stratified update with a fixed split and no stratifier (Eq. 11-14's losses,
IQL's Eq. 13 candidates, Cal-QL's regulariser on the gathered offline-like rows), the
backbone with the random split (`--random-split`), and the backbone with the amortised score at
the `cpu` and `paper` settings (g's online step on its default number of states included; g is
untrained, which costs the same) and at the `study` preset's settings (a g step every 8th call
on samples drawn with 5 solver steps, a CEP step every 32nd), with the ratios of each to the
backbone alone and to the stratified update.
"""

from __future__ import annotations

import dataclasses
import math
import time

import jax
import jax.numpy as jnp

from stratdiff.agents import AGENTS
from stratdiff.agents.base import make_config
from stratdiff.benchtools import xla_gflop
from stratdiff.diffusion import PRESETS, BehaviourModel, energy_update, sample
from stratdiff.runner import _online_update
from stratdiff.stratify import NoStratifier
from stratdiff.stratify.stratdiff import (
    SCALE_DEFAULTS,
    RandomSplitStratifier,
    StratDiffConfig,
    StratDiffStratifier,
    make_stratifier,
    new_amortised,
)
from stratdiff.types import ONLINE, Batch

OBS, ACT, BATCH = 17, 6, 256


def _batch(key) -> Batch:
    k = jax.random.split(key, 4)
    obs = jax.random.normal(k[0], (1, BATCH, OBS))
    act = jax.random.uniform(k[1], (1, BATCH, ACT), minval=-1, maxval=1)
    source = (jnp.arange(BATCH) >= BATCH // 2).astype(jnp.int32)[None]
    return Batch(obs, act, jax.random.normal(k[2], (1, BATCH)), jax.random.normal(k[3], (1, BATCH, OBS)),
                 jnp.ones((1, BATCH)), jnp.zeros((1, BATCH)), source)


def _stratifier(scale: str, **overrides) -> StratDiffStratifier:
    options = {k: v for k, v in SCALE_DEFAULTS[scale].items()
               if k not in ("diffusion_steps", "support_states", "energy_pretrain_steps")} | overrides
    diff_cfg = dataclasses.replace(PRESETS[scale], num_support=16, guidance_scale=3.0)
    model = BehaviourModel.create(jax.random.PRNGKey(1), OBS, ACT, diff_cfg)
    cfg = StratDiffConfig(**options)
    steps = cfg.sampler_steps or diff_cfg.sampler.steps
    support_obs = jax.random.normal(jax.random.PRNGKey(2), (4096, OBS))
    support = jax.random.uniform(jax.random.PRNGKey(3), (4096, 16, ACT), minval=-1, maxval=1)
    amortised = None
    if cfg.score == "amortised":
        amortised = new_amortised(cfg, jax.random.PRNGKey(5), OBS, ACT)
    return make_stratifier(model, support_obs, support, cfg, 0.5, 3.0,
                           dataclasses.replace(diff_cfg.sampler, steps=steps), amortised)


def _schedule_cycle(stratifier) -> int:
    """Update calls after which a stratifier's schedule (its CEP and g steps) repeats."""
    if not isinstance(stratifier, StratDiffStratifier):
        return 1
    return math.lcm(stratifier.config.energy_every, stratifier.config.amortised_every)


def _time(agent, stratifier, seconds: float) -> float:
    """Milliseconds per online update call (median-free: total time over as many calls as fit)."""
    batch = _batch(jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(4)
    for n in range(_schedule_cycle(stratifier)):  # compile each call's variant of the schedule
        _, stratifier, metrics = _online_update(agent, stratifier.scheduled(), batch, jax.random.fold_in(key, 1_000_000 + n))
        jax.block_until_ready(metrics)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < 3:
        # the stratifier's state carries on (its schedules run as in a run); the agent is reset
        _, stratifier, metrics = _online_update(agent, stratifier.scheduled(), batch, jax.random.fold_in(key, n))
        jax.block_until_ready(metrics)
        n += 1
    return 1000.0 * (time.perf_counter() - t0) / n


def stratifier_gflop(strat: StratDiffStratifier) -> dict[str, float]:
    """XLA's flop count of what the stratifier adds to one online update: the guided samples
    (a 1-step solve times the solver's steps, since XLA counts a scan body once) and the CEP
    step averaged over its `energy_every` schedule."""
    obs = jnp.zeros((BATCH, OBS))
    key = jax.random.PRNGKey(0)
    m = strat.config.num_guided if strat.config.score == "gaussian_fit" else 1
    one_step = dataclasses.replace(strat.sampler, steps=1, order=1)
    guided = strat.sampler.steps * xla_gflop(sample, strat.model, obs, key, strat.guidance_scale,
                                             num_samples=m, sampler=one_step)
    n = strat.model.config.energy_batch_size
    cep = xla_gflop(energy_update, strat.model, strat.support_obs[:n], strat.support[:n],
                    jnp.zeros(strat.support.shape[:2])[:n], key) / strat.config.energy_every
    return {"guided_gflop": guided, "cep_gflop_per_call": cep}


def bench_online_step(seconds: float = 10.0) -> dict[str, float]:
    """ms per online update for each backbone, alone and with StratDiff (cpu and paper settings),
    and the GFLOPs StratDiff adds per update at each setting."""
    out: dict[str, float] = {}
    for scale in ("cpu", "paper"):
        out |= {f"{scale}_settings_{k}": v for k, v in stratifier_gflop(_stratifier(scale)).items()}
    for name in ("iql", "calql"):
        cls = AGENTS[name]
        agent = cls.create(jax.random.PRNGKey(0), OBS, ACT, make_config(cls, "locomotion"))
        base = _time(agent, NoStratifier(), seconds)
        out[f"{name}_ms"] = base
        for scale in ("cpu", "paper"):
            ms = _time(agent, _stratifier(scale), seconds)
            out[f"stratdiff-{name}_{scale}_settings_ms"] = ms
            out[f"stratdiff-{name}_{scale}_settings_ratio"] = ms / base
    return out


class FixedSplit(NoStratifier):
    """No stratifier work: the batch's own source as the strata (the stratified losses' cost alone)."""

    def split(self, agent, batch, key):
        del agent, key
        return self, batch.source == ONLINE, None, {}

    def offline_rows(self, batch_size: int) -> int:
        return batch_size - batch_size // 2  # _batch: the first half offline


def amortised_gflop(strat: StratDiffStratifier) -> dict[str, float]:
    """XLA's flop count of what the amortised score adds to one online update: g's training
    samples (averaged over `amortised_every`), g's forward pass on the batch, and the CEP step
    averaged over `energy_every`."""
    cfg, obs, key = strat.config, jnp.zeros((BATCH, OBS)), jax.random.PRNGKey(0)
    one_step = dataclasses.replace(strat.amortised_sampler, steps=1, order=1)
    draw = jax.jit(lambda m, o, k: sample(m, o, k, strat.guidance_scale, num_samples=cfg.amortised_samples,
                                          sampler=one_step))
    samples = strat.amortised_sampler.steps * xla_gflop(draw, strat.model, obs[:cfg.amortised_states], key)
    forward = xla_gflop(jax.jit(lambda g, o: g.mean_std(o)), strat.amortised, obs)
    cep = stratifier_gflop(strat)["cep_gflop_per_call"]
    return {"g_samples_gflop_per_call": samples / cfg.amortised_every, "g_forward_gflop": forward,
            "cep_gflop_per_call": cep}


def stratified_update_gflop(agent) -> float:
    """XLA's flop count of the backbone's stratified update (FixedSplit's strata)."""
    batch = _batch(jax.random.PRNGKey(0))
    rows = FixedSplit().offline_rows(BATCH)
    return xla_gflop(jax.jit(lambda a, b: a.update(b, b.source == ONLINE, None, offline_rows=rows)), agent, batch)


AMORTISED_SCALES = ("cpu", "paper", "study")  # study: SCALE_DEFAULTS["study"]'s cheaper g and CEP schedules


def bench_with_amortised(seconds: float = 10.0) -> dict[str, float]:
    """`bench_online_step`, plus each backbone's stratified update without a stratifier and with
    the amortised score at the `cpu` and `paper` settings; ratios to the backbone alone
    (`..._ratio`) and to the stratified update (`..._ratio_to_stratified`)."""
    out = bench_online_step(seconds)
    for scale in AMORTISED_SCALES:
        out |= {f"amortised_{scale}_settings_{k}": v
                for k, v in amortised_gflop(_stratifier(scale, score="amortised")).items()}
    for name in ("iql", "calql"):
        cls = AGENTS[name]
        agent = cls.create(jax.random.PRNGKey(0), OBS, ACT, make_config(cls, "locomotion"))
        base = out[f"{name}_ms"]
        stratified = _time(agent, FixedSplit(), seconds)
        out[f"{name}_stratified_update_gflop"] = stratified_update_gflop(agent)
        out[f"{name}_stratified_update_ms"] = stratified
        out[f"{name}_stratified_update_ratio"] = stratified / base
        random_split = _time(agent, RandomSplitStratifier(StratDiffConfig(score="random"), 0.5), seconds)
        out[f"stratdiff-{name}_random_split_ms"] = random_split
        out[f"stratdiff-{name}_random_split_ratio_to_stratified"] = random_split / stratified
        for scale in AMORTISED_SCALES:
            ms = _time(agent, _stratifier(scale, score="amortised"), seconds)
            out[f"stratdiff-{name}_amortised_{scale}_settings_ms"] = ms
            out[f"stratdiff-{name}_amortised_{scale}_settings_ratio"] = ms / base
            out[f"stratdiff-{name}_amortised_{scale}_settings_ratio_to_stratified"] = ms / stratified
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(bench_online_step(), indent=2))
