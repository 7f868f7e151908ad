"""Speed of the diffusion pieces (a benchmark, never a timed test).

`bench_diffusion()` times, with the paper-size networks on random data (obs 17, act 6, as
HalfCheetah/Walker2d): behaviour-model training steps/s at batch 256 (and 4096), one 15-step
DPM-Solver++ sample of 256 actions, unguided and energy-guided, one CEP update (256 states x K=16)
and drawing K=16 support actions for 256 new states. Each number is the median of several
repeats after a warm-up call (compilation excluded); process-CPU milliseconds and XLA's flop
count of a training step are reported too, since wall-clock numbers on a shared machine depend on
other jobs. XLA counts a scan body once, so a sample's flops are those of a 1-step solve times
the steps (one paper-size ScoreNet evaluation is ~1.6 M multiply-adds per action, so 15 steps for
256 actions are ~12 GFLOP, ~15 GFLOP with the energy gradient).
Targets on the 2-core CPU: >= 170 training steps/s at batch 256 and <= 40 ms per guided sample
of 256 actions. With the flop counts these need ~430 and ~380 GFLOP/s, above the ~180 GFLOP/s a
large f32 matmul reaches on this machine (`stratdiff bench` reports both).
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from stratdiff.benchtools import xla_gflop
from stratdiff.diffusion.model import (
    BehaviourModel,
    DiffusionConfig,
    energy_update,
    sample,
    support_actions,
    train_steps,
)


def _median_time(fn, repeats: int) -> tuple[float, float]:
    """Median wall-clock and process-CPU seconds of one call (after a warm-up call)."""
    jax.block_until_ready(fn())  # compile + warm up
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn())
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return float(np.median(wall)), float(np.median(cpu))


def bench_diffusion(obs_dim: int = 17, action_dim: int = 6, repeats: int = 10, chunk: int = 50,
                    big_batch: bool = True, config: DiffusionConfig | None = None) -> dict:
    """Flat dict of measurements: steps/s and wall ms, process-CPU ms (less sensitive to other jobs
    on a shared machine) and XLA's GFLOP per call. `config`: network sizes (default: the paper's)."""
    cfg = DiffusionConfig(batch_size=256, num_support=16) if config is None else config
    model = BehaviourModel.create(jax.random.PRNGKey(0), obs_dim, action_dim, cfg)
    key = jax.random.PRNGKey(1)
    n_data = 100_000
    obs = jax.random.normal(key, (n_data, obs_dim))
    act = jnp.tanh(jax.random.normal(jax.random.fold_in(key, 1), (n_data, action_dim)))
    out: dict[str, float] = {"obs_dim": obs_dim, "action_dim": action_dim}

    wall, cpu = _median_time(lambda: train_steps(model, obs, act, key, num_steps=chunk, batch_size=256),
                             max(3, repeats // 3))
    out["train_steps_per_s_batch256"] = chunk / wall
    out["train_cpu_ms_per_step_batch256"] = 1e3 * cpu / chunk
    out["train_gflop_per_step_batch256"] = xla_gflop(train_steps, model, obs, act, key, num_steps=1, batch_size=256)
    if big_batch:
        wall, cpu = _median_time(lambda: train_steps(model, obs, act, key, num_steps=5, batch_size=4096), 3)
        out["train_steps_per_s_batch4096"] = 5 / wall
        out["train_cpu_ms_per_step_batch4096"] = 1e3 * cpu / 5

    states = obs[:256]
    one_step = dataclasses.replace(cfg.sampler, steps=1, order=1)
    for name, scale in (("unguided", None), ("guided", 3.0)):
        wall, cpu = _median_time(lambda: sample(model, states, key, scale), repeats)  # noqa: B023
        out[f"sample_ms_256_{name}"] = 1e3 * wall
        out[f"sample_cpu_ms_256_{name}"] = 1e3 * cpu
        out[f"sample_gflop_256_{name}"] = cfg.sampler.steps * xla_gflop(sample, model, states, key, scale,
                                                                     sampler=one_step)
    support = support_actions(model, states, key, 16)
    q = jnp.sum(support, axis=-1)
    wall, cpu = _median_time(lambda: energy_update(model, states, support, q, key), repeats)
    out["cep_update_ms_256x16"], out["cep_update_cpu_ms_256x16"] = 1e3 * wall, 1e3 * cpu
    wall, cpu = _median_time(lambda: support_actions(model, states, key, 16), max(3, repeats // 3))
    out["support_ms_256x16"], out["support_cpu_ms_256x16"] = 1e3 * wall, 1e3 * cpu
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(bench_diffusion(), indent=2))
