"""Policies: tanh-Gaussian (SAC, Cal-QL) and tanh-mean Gaussian (IQL)."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from stratdiff.nn.layers import MLP

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
_HALF_LOG_2PI = 0.5 * jnp.log(2.0 * jnp.pi)


def gaussian_log_prob(x: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
    """Log density of a diagonal Gaussian, summed over the last axis."""
    z = (x - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * z**2 - log_std - _HALF_LOG_2PI, axis=-1)


def tanh_gaussian_sample(key: jax.Array, mean: jax.Array, log_std: jax.Array):
    """Reparameterised sample a = tanh(u), u ~ N(mean, std) and its log-probability.

    The log-det of tanh uses the stable form 2(log 2 - u - softplus(-2u)).
    """
    u = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
    log_prob = gaussian_log_prob(u, mean, log_std)
    log_prob -= jnp.sum(2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u)), axis=-1)
    return jnp.tanh(u), log_prob


class TanhGaussianPolicy(nn.Module):
    """MLP -> (mean, log_std) of a Gaussian squashed by tanh. Deterministic action: tanh(mean).

    With `log_std_multiplier` and `log_std_offset` given, log_std = m * out + c with m and c
    two learned scalars initialised to those values (CORL's and JaxCQL's Cal-QL policy: 1 and
    -1, so the initial std is about e^-1 = 0.37); without them log_std is the MLP's output.
    """

    hidden_dims: Sequence[int]
    action_dim: int
    orthogonal: bool = False
    log_std_multiplier: float | None = None
    log_std_offset: float | None = None

    @nn.compact
    def __call__(self, observations: jax.Array):
        out = MLP((*self.hidden_dims, 2 * self.action_dim), orthogonal=self.orthogonal,
                  final_scale=1e-2 if self.orthogonal else 1.0)(observations)
        mean, log_std = jnp.split(out, 2, axis=-1)
        if self.log_std_multiplier is not None:
            m = self.param("log_std_multiplier", nn.initializers.constant(self.log_std_multiplier), ())
            c = self.param("log_std_offset", nn.initializers.constant(self.log_std_offset or 0.0), ())
            log_std = m * log_std + c
        return mean, jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)


class GaussianPolicy(nn.Module):
    """IQL's actor: mean = tanh(MLP(s)), a state-independent learned log_std."""

    hidden_dims: Sequence[int]
    action_dim: int

    @nn.compact
    def __call__(self, observations: jax.Array):
        mean = jnp.tanh(MLP((*self.hidden_dims, self.action_dim))(observations))
        log_std = self.param("log_std", nn.initializers.zeros, (self.action_dim,))
        log_std = jnp.broadcast_to(jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX), mean.shape)
        return mean, log_std
