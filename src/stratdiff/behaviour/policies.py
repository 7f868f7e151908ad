"""Behaviour policies: the committed SAC policies and the uniform random policy (the tools
that pick and commit a SAC snapshot are in `stratdiff.behaviour.export`).

Committed policies live in the package at `assets/policies/<env_id>/<level>/`:

- `actor.msgpack`: the tanh-Gaussian actor's parameters (flax msgpack);
- `policy.json`: env id, level, SAC step, seed, the run's training and SAC configs, the
  evaluation (normalised score of the stochastic and the deterministic policy) and
  `provisional` (true while training had not finished);
- `replay.npz` (medium only): the SAC replay buffer up to the medium step in the compact
  form of `compact_transitions`, the medium-replay data.

Every policy is a batched, jittable `sample(observations, key) -> actions` in the env's
action units (the tanh output rescaled from [-1, 1] to the action space's bounds).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

LEVELS = ("random", "medium", "expert")
# D4RL's average normalised return of its medium datasets (docs/datasets.md):
# the level a `medium` policy is picked at.
MEDIUM_TARGETS: dict[str, float] = {"HalfCheetah-v5": 40.0, "Hopper-v5": 44.0, "Walker2d-v5": 62.0}


def policies_root() -> Path:
    return Path(__file__).resolve().parent.parent / "assets" / "policies"


def policy_dir(env_id: str, level: str) -> Path:
    return policies_root() / env_id / level


@dataclasses.dataclass(frozen=True)
class BehaviourPolicy:
    """A batched behaviour policy of one environment.

    `params is None` is the uniform random policy; otherwise a SAC actor sampled with
    its own Gaussian noise (as D4RL's data collection did).
    """

    env_id: str
    level: str
    action_low: np.ndarray
    action_high: np.ndarray
    params: Any = None
    hidden_dims: tuple[int, ...] = (256, 256)
    meta: dict = dataclasses.field(default_factory=dict)

    @property
    def action_dim(self) -> int:
        return int(self.action_low.shape[0])

    def sample(self, observations, key):
        """Actions for a batch of observations (jax arrays in, jax array out)."""
        return _sample(self.params, observations, key, self.hidden_dims, self.action_dim,
                       tuple(self.action_low.tolist()), tuple(self.action_high.tolist()))

    def deterministic(self, observations):
        """tanh(mean) in the env's action units (SAC policies only)."""
        if self.params is None:
            raise ValueError("the random policy has no deterministic action")
        from stratdiff.agents.sac import deterministic_actions

        a = deterministic_actions(self.params, observations, self.hidden_dims, self.action_dim)
        return _rescale(a, self.action_low, self.action_high)


def _rescale(a, low, high):
    from stratdiff.envs import rescale_action

    return rescale_action(a, low, high)


def _sample_impl(params, observations, key, hidden_dims, action_dim, low, high):
    import jax
    import jax.numpy as jnp

    low, high = jnp.asarray(low, jnp.float32), jnp.asarray(high, jnp.float32)
    if params is None:
        a = jax.random.uniform(key, (observations.shape[0], action_dim), minval=-1.0, maxval=1.0)
    else:
        from stratdiff.nn import TanhGaussianPolicy
        from stratdiff.nn.policies import tanh_gaussian_sample

        mean, log_std = TanhGaussianPolicy(hidden_dims, action_dim).apply({"params": params},
                                                                          observations)
        a, _ = tanh_gaussian_sample(key, mean, log_std)
    return _rescale(a, low, high)


_SAMPLE_JIT = None


def _sample(params, observations, key, hidden_dims, action_dim, low, high):
    global _SAMPLE_JIT
    if _SAMPLE_JIT is None:
        import jax

        _SAMPLE_JIT = jax.jit(_sample_impl, static_argnums=(3, 4, 5, 6))
    return _SAMPLE_JIT(params, observations, key, hidden_dims, action_dim, low, high)


def _action_bounds(env_id: str) -> tuple[np.ndarray, np.ndarray]:
    from stratdiff.envs import make_env

    env = make_env(env_id)
    try:
        space = env.action_space
        return (np.asarray(space.low, np.float32).ravel(), np.asarray(space.high, np.float32).ravel())
    finally:
        env.close()


def load_policy(env_id: str, level: str, path: str | Path | None = None) -> BehaviourPolicy:
    """The committed `level` policy of `env_id` ("random" needs no file); `path` overrides
    the folder (one holding `actor.msgpack` and `policy.json`)."""
    if level not in LEVELS:
        raise ValueError(f"unknown behaviour level {level!r} (known: {', '.join(LEVELS)})")
    low, high = _action_bounds(env_id)
    if level == "random" and path is None:
        return BehaviourPolicy(env_id, level, low, high, meta={"level": "random", "env_id": env_id})
    folder = Path(path) if path is not None else policy_dir(env_id, level)
    meta_path, actor_path = folder / "policy.json", folder / "actor.msgpack"
    for p in (meta_path, actor_path):
        if not p.exists():
            raise FileNotFoundError(f"{p}: no committed {level} policy for {env_id} "
                                    f"(train one with `stratdiff sac train` and `stratdiff sac export`)")
    meta = json.loads(meta_path.read_text())
    params = load_actor(actor_path)
    hidden = tuple(meta["sac_config"]["hidden_dims"])
    return BehaviourPolicy(env_id, level, low, high, params, hidden, meta)


def load_actor(path: str | Path):
    """Actor parameters from a `.msgpack` file (a SAC run's snapshot or a committed `actor.msgpack`)."""
    import flax.serialization

    return flax.serialization.msgpack_restore(Path(path).read_bytes())


def available_policies() -> dict[str, list[str]]:
    """env id -> committed levels."""
    root = policies_root()
    out: dict[str, list[str]] = {}
    if root.exists():
        for env_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            out[env_dir.name] = [lv for lv in LEVELS if (env_dir / lv / "policy.json").exists()]
    return out


# --------------------------------------------------------------- compact transitions


def compact_transitions(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Drop `next_observations` wherever it equals the next row's observation: keeps
    observations, actions, rewards, terminals, timeouts, plus `break_index` /
    `break_next_observations` for the rows where the chain breaks (episode ends)."""
    obs, nxt = data["observations"], data["next_observations"]
    n = len(obs)
    brk = np.ones(n, bool)
    if n > 1:
        brk[:-1] = np.any(nxt[:-1] != obs[1:], axis=1)
    idx = np.flatnonzero(brk)
    return {"observations": obs, "actions": data["actions"], "rewards": data["rewards"],
            "terminals": data["terminals"], "timeouts": data["timeouts"],
            "break_index": idx.astype(np.int64), "break_next_observations": nxt[idx]}


def expand_transitions(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Inverse of `compact_transitions`."""
    obs = data["observations"]
    nxt = np.empty_like(obs)
    nxt[:-1] = obs[1:]
    nxt[data["break_index"]] = data["break_next_observations"]
    return {"observations": obs, "actions": data["actions"], "rewards": data["rewards"],
            "next_observations": nxt, "terminals": data["terminals"], "timeouts": data["timeouts"]}


def load_replay(env_id: str, path: str | Path | None = None) -> dict[str, np.ndarray]:
    """The committed medium-replay transitions of `env_id` (or of the file `path`)."""
    p = Path(path) if path is not None else policy_dir(env_id, "medium") / "replay.npz"
    if not p.exists():
        raise FileNotFoundError(f"{p}: no shipped SAC replay buffer for {env_id}")
    with np.load(p) as z:
        return expand_transitions({k: z[k] for k in z.files})
