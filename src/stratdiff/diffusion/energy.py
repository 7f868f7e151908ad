"""Energy network f(s, a_t, t), the CEP loss (Eq. 7) and energy-guided noise (Eq. 8-9).

Sign convention (the paper's Section 3.2, with the energy E = -Q): the target policy is
pi(a|s) ∝ mu(a|s) exp(beta Q(s, a)), the intermediate energy is
E_t(s, a_t) = log E_{mu(a_0|a_t, s)}[exp(beta Q(s, a_0))], and f_phi ≈ E_t up to a constant in a_t.
CEP trains f with labels softmax_i(beta Q(s, a_i)) against log softmax_i(f(s, a_t^i, t)), so f is
HIGH where Q is high. The guided score is grad log mu_t + s grad f (Eq. 9), i.e. in noise form

    eps_guided(a_t | s, t) = eps_theta(a_t | s, t) - s * sigma_t * grad_{a_t} f(s, a_t, t),

and s = 0 gives back eps_theta exactly. `tests/test_diffusion_guidance.py` checks on a toy
problem that this sign moves samples toward higher Q with the exp(beta Q) weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from stratdiff.diffusion import schedule
from stratdiff.diffusion.scorenet import split_lecun
from stratdiff.nn.time import FourierFeatures


class EnergyNet(nn.Module):
    """f(s, a_t, t): [a_t, time features (Fourier 32 -> Linear 32), s] -> 4 x 256 SiLU -> 1.

    The first layer over the concatenation is written as three slices (action, time, state) so
    the state slice can be computed once per sampling call and the time slice once per solver
    step; the function is the same as one Linear over [a_t, time, s].
    """

    obs_dim: int
    action_dim: int
    hidden_dims: Sequence[int] = (256, 256, 256, 256)
    embed_dim: int = 32
    fourier_scale: float = 30.0

    def setup(self):
        fan = self.obs_dim + self.action_dim + self.embed_dim
        width = self.hidden_dims[0]
        self.time_features = FourierFeatures(self.embed_dim, self.fourier_scale)
        self.time_dense = nn.Dense(self.embed_dim)
        self.in_action = nn.Dense(width, kernel_init=split_lecun(self.action_dim / fan))
        self.in_time = nn.Dense(width, use_bias=False, kernel_init=split_lecun(self.embed_dim / fan))
        self.in_state = nn.Dense(width, use_bias=False, kernel_init=split_lecun(self.obs_dim / fan))
        self.hidden = [nn.Dense(w) for w in self.hidden_dims[1:]]
        self.out = nn.Dense(1)

    def state_part(self, observations: jax.Array) -> jax.Array:
        """The state slice of the first layer, [..., width]."""
        return self.in_state(observations)

    def time_part(self, t: jax.Array) -> jax.Array:
        """The time slice of the first layer, [..., width]; t has shape [...]."""
        return self.in_time(self.time_dense(self.time_features(t)))

    def from_parts(self, a_t: jax.Array, state_part: jax.Array, time_part: jax.Array) -> jax.Array:
        """f given the noisy action and the two precomputed slices (broadcasting), [...]."""
        h = nn.silu(self.in_action(a_t) + time_part + state_part)
        for layer in self.hidden:
            h = nn.silu(layer(h))
        return self.out(h)[..., 0]

    def __call__(self, observations: jax.Array, a_t: jax.Array, t: jax.Array) -> jax.Array:
        """f(s, a_t, t) -> [...]; observations [..., obs], a_t [..., act], t [...] broadcast."""
        return self.from_parts(a_t, self.state_part(observations), self.time_part(t))


def cep_loss(net: EnergyNet, params, observations: jax.Array, support: jax.Array, q_values: jax.Array,
             key: jax.Array, beta: float) -> tuple[jax.Array, dict]:
    """Contrastive Energy Prediction, Eq. 7 of the paper (Lu et al. 2023, with E = -Q).

    observations [n, obs], support actions a^(1..K) [n, K, act] drawn from the behaviour model,
    q_values Q(s, a^(i)) [n, K]. One t ~ U[1e-3, 1] per state, shared by its K actions;
    a_t^(i) = alpha_t a^(i) + sigma_t z^(i);
    loss = -mean_s sum_i softmax_i(beta Q(s, a^(i))) log softmax_i(f(s, a_t^(i), t)).
    """
    n, k, _ = support.shape
    key_t, key_z = jax.random.split(key)
    t = jax.random.uniform(key_t, (n,), minval=schedule.T_MIN, maxval=1.0)
    z = jax.random.normal(key_z, support.shape)
    a_t = schedule.perturb(support, z, t[:, None])
    labels = jax.nn.softmax(beta * jax.lax.stop_gradient(q_values), axis=-1)
    # f on the n*K rows as 2-d arrays (each state and time repeated K times): the same function as
    # f(s[:, None], a_t, t[:, None]), with a faster gradient on XLA's CPU
    f = net.apply(params, jnp.repeat(observations, k, axis=0), a_t.reshape(n * k, -1),
                  jnp.repeat(t, k)).reshape(n, k)
    log_p = jax.nn.log_softmax(f, axis=-1)
    loss = -jnp.mean(jnp.sum(labels * log_p, axis=-1))
    # Diagnostics: label entropy (how peaked exp(beta Q) is) and agreement of the argmax.
    label_entropy = -jnp.mean(jnp.sum(labels * jnp.log(labels + 1e-12), axis=-1))
    agree = jnp.mean(jnp.argmax(f, -1) == jnp.argmax(q_values, -1))
    return loss, {"cep_loss": loss, "cep_label_entropy": label_entropy, "cep_argmax_agree": agree}


def guided_noise_fn(eps_fn, energy_grad_fn, scale):
    """Eq. 9 in noise form: (x, t, sigma_t) -> eps(x, t) - scale * sigma_t * grad_x f(x, t).

    `eps_fn(x, t)` is the behaviour model's noise estimate, `energy_grad_fn(x, t)` the gradient of
    f with respect to the noisy action. `scale` may be traced; scale = 0 returns eps exactly.
    """

    def noise_fn(x, t, sigma_t):
        return eps_fn(x, t) - (scale * sigma_t) * energy_grad_fn(x, t)

    return noise_fn
