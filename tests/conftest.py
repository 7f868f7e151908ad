"""Shared test fixtures: small real datasets written to disk.

The suite shares one on-disk XLA compilation cache (JAX's persistent cache) between its
workers and the `stratdiff` processes the tests start, so a function compiled for the same
shapes in another test is loaded rather than compiled again. A cached executable is the same
compiled code, so the numbers do not change. `STRATDIFF_TEST_XLA_CACHE=` (empty) turns it off.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_XLA_CACHE = os.environ.get("STRATDIFF_TEST_XLA_CACHE", str(Path(tempfile.gettempdir()) / "stratdiff-test-xla-cache"))
if _XLA_CACHE:  # set before JAX is imported, here and in every process a test starts
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _XLA_CACHE)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

import h5py
import numpy as np
import pytest


def rollout_hdf5(path: Path, env_id: str, n: int, seed: int, noise: float = 1.0,
                 reward_scale: float = 1.0) -> Path:
    """Roll a uniform-random (noise=1) policy in `env_id` for `n` steps and write D4RL's layout."""
    from stratdiff.envs import make_env

    env = make_env(env_id, seed=seed)
    rng = np.random.default_rng(seed)
    keys = {k: [] for k in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")}
    obs, _ = env.reset(seed=seed)
    act_dim = env.action_space.shape[0]
    episode = 0
    for t in range(n):
        action = np.clip(noise * rng.uniform(-1, 1, act_dim), -1, 1).astype(np.float32)
        next_obs, reward, term, trunc, _ = env.step(action)
        for k, v in zip(keys, (obs, action, reward * reward_scale, next_obs, term, trunc or t == n - 1)):
            keys[k].append(v)
        obs = next_obs
        if term or trunc:
            episode += 1
            obs, _ = env.reset(seed=seed + episode)
    env.close()
    with h5py.File(path, "w") as f:
        for k, v in keys.items():
            f[k] = np.asarray(v, dtype=bool if k in ("terminals", "timeouts") else np.float32)
    return path


@pytest.fixture(scope="session")
def rollout():
    """The `rollout_hdf5` function, for tests that need a dataset of their own."""
    return rollout_hdf5


@pytest.fixture(scope="session")
def hopper_hdf5(tmp_path_factory) -> Path:
    """2000 uniform-random Hopper-v5 transitions in D4RL's HDF5 layout."""
    return rollout_hdf5(tmp_path_factory.mktemp("data") / "hopper-random.hdf5", "Hopper-v5", 2000, seed=0)
