"""`stratdiff bench --only data`: the speed of the data transforms computed once per run."""

from __future__ import annotations

import time

import numpy as np

from stratdiff.data.transforms import mc_returns


def bench_data(n: int = 1_000_000, episode_length: int = 1000) -> dict[str, float]:
    """MC returns-to-go (`mc_returns`) of `n` transitions in episodes of `episode_length`, with
    the sparse-failure rule on: seconds for the dataset and transitions per second (best of 3)."""
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=n).astype(np.float32)
    ends = np.zeros(n, bool)
    ends[episode_length - 1::episode_length] = True
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        mc_returns(rewards, ends, 0.99, sparse_failure_reward=0.0)
        best = min(best, time.perf_counter() - t)
    return {"mc_returns_transitions": n, "mc_returns_seconds": best, "mc_returns_per_s": n / best}
