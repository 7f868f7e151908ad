"""What every `stratdiff bench` section shares: XLA's flop count of a compiled call, the
machine's measured matmul rate to compare it with, and the cores this process may use."""

from __future__ import annotations

import functools
import os
import sys
import time

import jax
import jax.numpy as jnp


def xla_gflop(fn, *args, **kwargs) -> float:
    """GFLOPs of one call of the jitted `fn` by XLA's cost analysis (matrix products,
    elementwise work and reductions), NaN where the backend gives none, with a warning on
    stderr naming the call and why. XLA counts a scan body once: a call that scans counts one
    iteration."""
    name = getattr(fn, "__name__", repr(fn))
    try:
        cost = fn.lower(*args, **kwargs).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost  # older jax: one dict per device
    except Exception as e:  # noqa: BLE001 - cost analysis is best effort, its failure is said
        print(f"[bench] warning: no flop count for {name} ({type(e).__name__}: {e}); reported as NaN",
              file=sys.stderr, flush=True)
        return float("nan")
    if not cost or "flops" not in cost:
        print(f"[bench] warning: no flop count for {name} (the backend's cost analysis has none); "
              "reported as NaN", file=sys.stderr, flush=True)
        return float("nan")
    return float(cost["flops"]) / 1e9


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
