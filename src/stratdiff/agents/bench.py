"""Updates per second of every registered agent with the paper's networks (`stratdiff bench`
prints and stores the result).

Each agent is created with its locomotion preset (the paper's networks) for a
HalfCheetah-sized problem (obs 17, act 6) and updated on a fixed random batch, one
gradient step per `update` call (UTD 1, the runner's usual call), once as the base
algorithm and once stratified (half of the batch online-like; IQL then also computes
its Eq. 13 max-target over its policy candidates).

Next to the speed, each agent's arithmetic: the FLOPs of one compiled update from XLA's
cost analysis, the FLOP rate achieved, and that rate as a fraction of a plain f32 matrix
product's rate measured on the same machine in the same conditions
(`matmul_peak_gflop_per_s`), with the updates/s that peak would allow
(`peak_limited_updates_per_s`): the ceiling for this arithmetic on this machine.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp

from stratdiff.agents import AGENTS
from stratdiff.benchtools import matmul_peak_gflop_per_s, usable_cores, xla_gflop
from stratdiff.types import Batch

OBS_DIM, ACT_DIM = 17, 6  # HalfCheetah / Walker2d sizes


def _random_batch(key: jax.Array, batch_size: int, obs_dim: int, act_dim: int) -> Batch:
    ks = jax.random.split(key, 5)
    shape = (1, batch_size)
    return Batch(
        observations=jax.random.normal(ks[0], (*shape, obs_dim)),
        actions=jax.random.uniform(ks[1], (*shape, act_dim), minval=-1.0, maxval=1.0),
        rewards=jax.random.normal(ks[2], shape),
        next_observations=jax.random.normal(ks[3], (*shape, obs_dim)),
        masks=jnp.ones(shape),
        mc_returns=jax.random.normal(ks[4], shape),
        source=jnp.zeros(shape, jnp.int32),
    )


def _time_updates(agent, batch: Batch, online_like, seconds: float) -> dict[str, float]:
    """Updates/s by wall clock and by process CPU time, CPU ms per update, compile seconds."""
    t0 = time.perf_counter()
    agent, metrics = agent.update(batch, online_like)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - t0
    n, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
    while True:
        agent, metrics = agent.update(batch, online_like)
        n += 1
        if n % 5 == 0:
            jax.block_until_ready(metrics)
            wall = time.perf_counter() - wall0
            if wall >= seconds:
                break
    cpu = time.process_time() - cpu0
    return {"updates_per_s": n / wall,
            "cpu_updates_per_s": n / max(cpu / usable_cores(), 1e-9),
            "cpu_ms_per_update": 1e3 * cpu / n,
            "compile_s": compile_s}


def bench_agents(batch_size: int = 256, seconds: float = 10.0, agents: tuple[str, ...] | None = None,
                 seed: int = 0) -> dict:
    """Measure updates/s and FLOPs of each registered agent (or of `agents`) -> a JSON-able dict.

    Per agent (keys are agent names only):

    - `updates_per_s`: wall clock, base algorithm; `stratified_updates_per_s`: half of
      each batch online-like.
    - `cpu_updates_per_s`: updates per second of process CPU time divided by the cores
      the process may use (`usable_cores`, 1 under `taskset -c 0`): what the wall
      figure would be on an otherwise idle machine if the update kept those cores busy
      (a guide when other jobs share the machine); `cpu_ms_per_update`: CPU time per update.
    - `gflop_per_update` (XLA cost analysis of the compiled update, UTD 1),
      `gflop_per_s` / `cpu_gflop_per_s` achieved (wall / CPU-time based), and
      `fraction_of_peak` / `cpu_fraction_of_peak` of `matmul_peak_gflop_per_s`
      (measured in the same process); `peak_limited_updates_per_s` = peak / FLOPs, the
      most this arithmetic allows here. The same with a `stratified_` prefix.
    - `load_avg_1m` at the start of the agent's run and `usable_cores`.
    """
    names = sorted(AGENTS) if agents is None else list(agents)
    unknown = [n for n in names if n not in AGENTS]
    if unknown:
        raise ValueError(f"bench_agents: unknown agent(s) {unknown}; registered: {sorted(AGENTS)}")
    peak = matmul_peak_gflop_per_s()
    key = jax.random.PRNGKey(seed)
    batch = _random_batch(key, batch_size, OBS_DIM, ACT_DIM)
    online_like = (jnp.arange(batch_size) % 2 == 0)[None]
    results: dict = {}
    for name in names:
        cls = AGENTS[name]
        load = os.getloadavg()[0]
        agent = cls.create(jax.random.PRNGKey(seed), OBS_DIM, ACT_DIM, cls.presets["locomotion"])
        entry: dict = {}
        for prefix, strata in (("", None), ("stratified_", online_like)):
            timing = _time_updates(agent, batch, strata, seconds)
            gflop = xla_gflop(type(agent).update, agent, batch, strata)
            entry |= {
                f"{prefix}updates_per_s": timing["updates_per_s"],
                f"{prefix}cpu_updates_per_s": timing["cpu_updates_per_s"],
                f"{prefix}cpu_ms_per_update": timing["cpu_ms_per_update"],
                f"{prefix}gflop_per_update": gflop,
                f"{prefix}gflop_per_s": gflop * timing["updates_per_s"],
                f"{prefix}cpu_gflop_per_s": gflop * timing["cpu_updates_per_s"],
                f"{prefix}fraction_of_peak": gflop * timing["updates_per_s"] / peak,
                f"{prefix}cpu_fraction_of_peak": gflop * timing["cpu_updates_per_s"] / peak,
                f"{prefix}peak_limited_updates_per_s": peak / gflop,
            }
            if not prefix:
                entry["compile_s"] = timing["compile_s"]
        results[name] = entry | {
            "matmul_peak_gflop_per_s": peak,
            "batch_size": batch_size,
            "obs_dim": OBS_DIM,
            "act_dim": ACT_DIM,
            "backend": jax.default_backend(),
            "cpu_count": os.cpu_count(),
            "usable_cores": usable_cores(),
            "load_avg_1m": load,  # other jobs on the machine at the start of this agent's run
        }
    return results


if __name__ == "__main__":  # python -m stratdiff.agents.bench
    import json

    print(json.dumps(bench_agents(), indent=2))
