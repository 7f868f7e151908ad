"""What every `stratdiff bench` section shares: XLA's flop count of a compiled call, the
machine's measured matmul rate to compare it with, and the cores this process may use."""

from __future__ import annotations

import functools
import os
import time

import jax
import jax.numpy as jnp


def xla_gflop(fn, *args, **kwargs) -> float:
    """GFLOPs of one call of the jitted `fn` by XLA's cost analysis (matrix products,
    elementwise work and reductions), NaN where the backend gives none. XLA counts a scan
    body once: a call that scans counts one iteration."""
    try:
        cost = fn.lower(*args, **kwargs).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost  # older jax: one dict per device
        return float(cost.get("flops", float("nan"))) / 1e9
    except Exception:  # noqa: BLE001 - cost analysis is best effort
        return float("nan")


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity, e.g. 1 under `taskset -c 0`)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@functools.cache
def matmul_peak_gflop_per_s(n: int = 2048, seconds: float = 2.0) -> float:
    """GFLOP/s of one jitted n x n f32 matrix product (2 n^3 FLOPs), best of repeated
    runs over about `seconds`: the practical arithmetic peak of this machine as the
    process sees it now (its cores, its neighbours). Measured once per process."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    matmul(a, b).block_until_ready()
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        matmul(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best / 1e9
