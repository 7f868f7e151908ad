"""Shared test fixtures: small real datasets written to disk.

The suite shares one on-disk XLA compilation cache (JAX's persistent cache) between its
workers and the `stratdiff` processes the tests start, so a function compiled for the same
shapes in another test is loaded rather than compiled again. A cached executable is the same
compiled code, so the numbers do not change. `STRATDIFF_TEST_XLA_CACHE=` (empty) turns it off.

The tests compile far more than they run (hundreds of small functions, each called a few
times), so they compile without XLA's backend (LLVM) optimisations
(`--xla_backend_optimization_level=0`, added to `XLA_FLAGS` here and inherited by every
process a test starts): the same programs, compiled in about 40% less CPU time.
`STRATDIFF_TEST_XLA_OPT=1` keeps the optimisations (the compilation the runs themselves use).

Each compiled function holds some 300-500 memory mappings, and a process may hold 65,530
(`vm.max_map_count`): a worker that kept every function of the suite compiled would run out
(LLVM's "Cannot allocate memory", then a segmentation fault). JAX's in-memory caches are
therefore cleared after each test file; a later file that needs a function again loads it from
the on-disk cache.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_XLA_CACHE = os.environ.get("STRATDIFF_TEST_XLA_CACHE", str(Path(tempfile.gettempdir()) / "stratdiff-test-xla-cache"))
if _XLA_CACHE:  # set before JAX is imported, here and in every process a test starts
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _XLA_CACHE)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
if os.environ.get("STRATDIFF_TEST_XLA_OPT") != "1" and "xla_backend_optimization_level" not in os.environ.get(
        "XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import gc
import sys

import h5py
import numpy as np
import pytest


@pytest.fixture(scope="module", autouse=True)
def _release_compiled_functions():
    """Free the compiled functions of a test file once it has run (see the module docstring)."""
    yield
    if "jax" in sys.modules:
        sys.modules["jax"].clear_caches()
        gc.collect()


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
