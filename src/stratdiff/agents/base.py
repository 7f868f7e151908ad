"""What every agent shares: the interface, config presets and small pure helpers.

The interface (every agent in `stratdiff.agents.AGENTS` follows it, so the runner never
branches on an agent's name):

- ``Agent.create(key, obs_dim, act_dim, config) -> agent``: an immutable
  `flax.struct.PyTreeNode`; the config is a frozen dataclass stored as a compile-time
  (non-pytree) field, so one jitted `update` serves every config without re-tracing.
- ``agent.update(batch, online_like=None, next_candidates=None) -> (agent, metrics)``:
  jitted; `batch` arrays carry a leading UTD axis ``[U, B, ...]`` and the update runs U
  gradient steps with `lax.scan` (`run_utd`); metrics are the mean over the U steps.
  `online_like` (bool ``[U, B]``) is StratDiff's stratum: True = online-like (b_on),
  False = offline-like (b_off); None is the base algorithm (every sample offline-like).
- ``agent.act(observations, key, deterministic) -> actions`` in [-1, 1], batched.
- ``agent.q_value(observations, actions) -> Q``: min over the critic ensemble, the critic
  interface of the diffusion module's energy network.
- ``Agent.config_class`` and ``Agent.presets`` ({"locomotion": ..., "antmaze": ...}); use
  `make_config` to resolve a preset plus overrides.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol

import jax
import jax.numpy as jnp

from stratdiff.types import Batch

Metrics = dict[str, jax.Array]


class Agent(Protocol):
    """Structural type of an agent (see the module docstring)."""

    config_class: ClassVar[type]
    presets: ClassVar[Mapping[str, Any]]

    @classmethod
    def create(cls, key: jax.Array, obs_dim: int, act_dim: int, config: Any) -> Agent: ...

    def update(self, batch: Batch, online_like: jax.Array | None = None,
               next_candidates: jax.Array | None = None) -> tuple[Agent, Metrics]: ...

    def act(self, observations: jax.Array, key: jax.Array, deterministic: bool = False) -> jax.Array: ...

    def q_value(self, observations: jax.Array, actions: jax.Array) -> jax.Array: ...


# ----------------------------------------------------------------------------- configs


def make_config(agent_cls: type, preset: str = "locomotion", overrides: Mapping[str, Any] | None = None,
                offline_steps: int | None = None):
    """`agent_cls.presets[preset]` with `overrides` (field name -> value) applied, then, given the
    run's `offline_steps`, the config's own `for_run(offline_steps)` where it has one (values that
    default to a quantity of the run, e.g. IQL's actor lr schedule spanning the offline phase).

    Raises one ValueError naming the unknown preset or field.
    """
    presets = agent_cls.presets
    if preset not in presets:
        raise ValueError(f"{agent_cls.__name__}: unknown preset {preset!r}; choose one of {sorted(presets)}")
    config = presets[preset]
    overrides = dict(overrides or {})
    names = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"{type(config).__name__}: unknown option(s) {unknown}; valid options: {sorted(names)}")
    config = dataclasses.replace(config, **overrides)
    if offline_steps is not None and hasattr(config, "for_run"):
        config = config.for_run(offline_steps)
    return config


# ----------------------------------------------------------------------------- helpers


def soft_update(target: Any, online: Any, tau: float) -> Any:
    """Polyak averaging: target <- (1 - tau) * target + tau * online, leaf by leaf."""
    return jax.tree_util.tree_map(lambda t, o: (1.0 - tau) * t + tau * o, target, online)


def expectile_loss(diff: jax.Array, expectile: float | jax.Array) -> jax.Array:
    """Per-sample asymmetric L2 (paper Eq. 3, 12): |tau - 1(u < 0)| * u^2 with u = diff."""
    weight = jnp.where(diff < 0, 1.0 - expectile, expectile)
    return weight * diff**2


def awr_weights(advantage: jax.Array, beta: float, max_weight: float) -> jax.Array:
    """Advantage weights exp(beta * A), clipped above at `max_weight` (IQL's AWR, 100)."""
    return jnp.minimum(jnp.exp(beta * advantage), max_weight)


def masked_mean(values: jax.Array, mask: jax.Array, axis: int = -1) -> jax.Array:
    """Mean of `values` over the entries where `mask` is True (0 when none are)."""
    mask = mask.astype(values.dtype)
    return jnp.sum(values * mask, axis=axis) / jnp.maximum(jnp.sum(mask, axis=axis), 1.0)


def stratum_metrics(name: str, per_sample: jax.Array, online_like: jax.Array | None) -> Metrics:
    """`{name}_off` / `{name}_on`: a per-sample loss averaged over each stratum.

    Empty when `online_like` is None (the base algorithm has one stratum).
    """
    if online_like is None:
        return {}
    return {f"{name}_off": masked_mean(per_sample, ~online_like),
            f"{name}_on": masked_mean(per_sample, online_like)}


def check_update_inputs(agent_name: str, batch: Batch, online_like, next_candidates, obs_dim: int, act_dim: int):
    """Shape checks at trace time, one clear error naming the offending argument."""
    obs = batch.observations
    if obs.ndim != 3 or obs.shape[-1] != obs_dim:
        raise ValueError(f"{agent_name}.update: batch.observations must be [U, B, {obs_dim}] "
                         f"(leading UTD axis), got {obs.shape}")
    u, b = obs.shape[:2]
    if batch.actions.shape != (u, b, act_dim):
        raise ValueError(f"{agent_name}.update: batch.actions must be {(u, b, act_dim)}, got {batch.actions.shape}")
    for field in ("rewards", "masks", "mc_returns"):
        shape = getattr(batch, field).shape
        if shape != (u, b):
            raise ValueError(f"{agent_name}.update: batch.{field} must be {(u, b)}, got {shape}")
    if online_like is not None and (online_like.shape != (u, b) or online_like.dtype != jnp.bool_):
        raise ValueError(f"{agent_name}.update: online_like must be bool {(u, b)}, "
                         f"got {online_like.dtype} {online_like.shape}")
    if next_candidates is not None and (next_candidates.ndim != 4 or next_candidates.shape[:2] != (u, b)
                                        or next_candidates.shape[-1] != act_dim):
        raise ValueError(f"{agent_name}.update: next_candidates must be [U, B, M, {act_dim}], "
                         f"got {next_candidates.shape}")


def run_utd(step: Callable, agent, batch: Batch, online_like, next_candidates):
    """Run `step(agent, batch_t, online_like_t, next_candidates_t) -> (agent, metrics)` over
    the leading UTD axis with `lax.scan`; metrics are averaged over the steps."""

    def body(carry, xs):
        return step(carry, *xs)

    agent, metrics = jax.lax.scan(body, agent, (batch, online_like, next_candidates))
    return agent, jax.tree_util.tree_map(lambda m: jnp.mean(m, axis=0), metrics)
