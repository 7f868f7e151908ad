"""Building blocks of the dataset rollouts (`stratdiff.data.builders.rollout` for the
locomotion datasets, `stratdiff.behaviour.antmaze.collect` for AntMaze): how many
environments step side by side, threads that step their simulators at once, and how finished
episodes become a dataset's flat arrays.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

MAX_ENVS = 64  # environments stepped side by side


def available_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class ChunkThreads:
    """Runs `fn(lo, hi)` over `threads` contiguous chunks of `range(n)` at once, the calling
    thread taking the last chunk. For work that releases the GIL (MuJoCo's `mj_step`): each
    chunk must touch only its own items, so the results do not depend on the thread count.
    Use as a context manager (or call `close`)."""

    def __init__(self, threads: int | None = None):
        self.threads = available_cores() if threads is None else int(threads)
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, not {threads}")
        self._pool = ThreadPoolExecutor(self.threads - 1) if self.threads > 1 else None

    def run(self, fn: Callable[[int, int], None], n: int) -> None:
        bounds = np.linspace(0, n, min(self.threads, max(n, 1)) + 1).astype(int)
        chunks = list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))
        if self._pool is None or len(chunks) == 1:
            fn(0, n)
            return
        futures = [self._pool.submit(fn, lo, hi) for lo, hi in chunks[:-1]]
        try:
            fn(*chunks[-1])
        finally:
            for f in futures:
                f.result()  # waits, and raises the first chunk's error

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    def __enter__(self) -> ChunkThreads:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def join_episodes(episodes: list[dict[str, np.ndarray]], size: int) -> dict[str, np.ndarray]:
    """Whole episodes, in the order given, as flat arrays cut to their first `size` rows; the
    last row becomes a time-out unless it is a terminal (the last episode was cut there)."""
    if not episodes:
        raise ValueError("no finished episodes to join")
    out = {k: np.concatenate([ep[k] for ep in episodes])[:size] for k in episodes[0]}
    if not (out["terminals"][-1] or out["timeouts"][-1]):
        out["timeouts"][-1] = True
    return out
