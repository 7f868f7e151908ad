"""StratDiff's alignment score (Eq. 10), the sorted split and the exchange cap.

The paper scores a sample by D_KL(a_i || â_i) without saying how a KL between two
actions is computed. Two documented forms are offered:

- `gaussian_fit` (default): draw M guided actions â_i^(1..M) ~ π0(·|s_i), fit a diagonal
  Gaussian N(μ̂_i, diag σ̂_i²) to them, and score the sample's action a_i, read as the narrow
  Gaussian N(a_i, σ0² I), by

      KL(N(a_i, σ0² I) || N(μ̂_i, diag σ̂_i²))
        = Σ_d [ log(σ̂_{i,d} / σ0) + (σ0² + (a_{i,d} − μ̂_{i,d})²) / (2 σ̂_{i,d}²) − 1/2 ].

  It accounts for how spread out the guided policy is at s_i: an action 0.3 away from the
  mean of a wide policy is more typical than the same distance under a narrow one.
- `fixed_sigma`: one guided sample â_i and both actions read as N(·, σ0² I):
  KL = ||a_i − â_i||² / (2 σ0²), which ranks like the squared distance.

Lower scores mean better alignment with the (guided) offline behaviour.

`random_scores` is the control `stratifier.score=random` (this project's, not the paper's): a
uniformly random ranking of each minibatch, so that `split_by_score` draws the offline-like
samples uniformly at random with the sorted split's size; `random_split` is that split.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from stratdiff.data.buffers import n_offline

SCORES = ("gaussian_fit", "fixed_sigma")


def score_fixed_sigma(actions: jax.Array, guided: jax.Array, sigma0: float) -> jax.Array:
    """Eq. 10 with one guided action per state: ||a − â||² / (2 σ0²). `guided` is [B, A] or [B, 1, A]."""
    if guided.ndim == actions.ndim + 1:
        guided = guided[..., 0, :]
    return jnp.sum((actions - guided) ** 2, axis=-1) / (2.0 * sigma0**2)


def score_gaussian(actions: jax.Array, mean: jax.Array, std: jax.Array, sigma0: float) -> jax.Array:
    """Eq. 10 as KL(N(a, σ0² I) || N(mean, diag std²)), summed over the action dimensions."""
    kl = jnp.log(std / sigma0) + (sigma0**2 + (actions - mean) ** 2) / (2.0 * std**2) - 0.5
    return jnp.sum(kl, axis=-1)


def score_gaussian_fit(actions: jax.Array, guided: jax.Array, sigma0: float,
                       min_std: float = 1e-2) -> jax.Array:
    """Eq. 10 as KL(N(a, σ0² I) || N(μ̂, diag σ̂²)) with μ̂, σ̂ fitted to `guided` [B, M, A].

    σ̂ is floored at `min_std` so a collapsed set of samples cannot give an infinite score.
    """
    mean = jnp.mean(guided, axis=-2)
    std = jnp.maximum(jnp.std(guided, axis=-2), min_std)
    return score_gaussian(actions, mean, std, sigma0)


def alignment_score(kind: str, actions: jax.Array, guided: jax.Array, sigma0: float) -> jax.Array:
    """Dispatch on the configured score form (a static string)."""
    if kind == "gaussian_fit":
        return score_gaussian_fit(actions, guided, sigma0)
    if kind == "fixed_sigma":
        return score_fixed_sigma(actions, guided, sigma0)
    raise ValueError(f"unknown score {kind!r} (choose from {', '.join(SCORES)})")


def split_by_score(scores: jax.Array, rho: float) -> jax.Array:
    """Sort the batch by score: the lowest n_offline(N, ρ) samples (round(ρ·N), halves up, the
    rule that sizes a batch's offline part) are offline-like (b_off), the rest online-like
    (b_on). Returns `online_like` (bool [..., N]: each row of `scores` [..., N] split on its
    own); ties break by position."""
    n = scores.shape[-1]
    n_off = n_offline(n, rho)
    rank = jnp.argsort(jnp.argsort(scores, stable=True), stable=True)
    return rank >= n_off


def random_scores(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Scores that rank each row (the last axis) in a uniformly random order: an independent
    random permutation of 0..N-1 per row, as float32, so no two samples of a row tie."""
    ranks = jnp.broadcast_to(jnp.arange(shape[-1], dtype=jnp.float32), shape)
    return jax.random.permutation(key, ranks, axis=-1, independent=True)


def random_split(key: jax.Array, utd: int, batch: int, rho: float) -> jax.Array:
    """`online_like` (bool [utd, batch]): in each row n_offline(batch, ρ) samples, drawn
    uniformly at random, are offline-like and the rest online-like (`split_by_score` on
    `random_scores`), whatever the samples' sources and actions."""
    return split_by_score(random_scores(key, (utd, batch)), rho)


def cap_exchange(online_like: jax.Array, scores: jax.Array, from_online: jax.Array,
                 cap: int | None) -> jax.Array:
    """Limit the exchange to at most `cap` samples crossing each way (Table 7's n_c).

    Samples cross when their stratum differs from their source buffer. Of the offline
    samples placed in b_on only the `cap` highest-scored stay there; of the online samples
    placed in b_off only the `cap` lowest-scored stay there; the others go back to the
    stratum of their buffer. When the batch's offline share equals ρ both directions have
    the same count, so stratum sizes are unchanged.
    """
    if cap is None:
        return online_like
    off_to_on = online_like & ~from_online
    on_to_off = ~online_like & from_online
    # rank crossing samples by how far they cross: high scores first for off->on, low for on->off
    key_up = jnp.where(off_to_on, -scores, jnp.inf)
    key_down = jnp.where(on_to_off, scores, jnp.inf)
    keep_up = off_to_on & (jnp.argsort(jnp.argsort(key_up, stable=True), stable=True) < cap)
    keep_down = on_to_off & (jnp.argsort(jnp.argsort(key_down, stable=True), stable=True) < cap)
    return jnp.where(from_online, ~keep_down, keep_up)


def exchange_stats(online_like: jax.Array, from_online: jax.Array) -> dict[str, jax.Array]:
    """The exchange count (samples whose stratum differs from their buffer) and its two directions."""
    off_to_on = jnp.sum(online_like & ~from_online)
    on_to_off = jnp.sum(~online_like & from_online)
    return {"strat/exchange": off_to_on + on_to_off, "strat/exchange_off_to_on": off_to_on,
            "strat/exchange_on_to_off": on_to_off, "strat/n_on": jnp.sum(online_like),
            "strat/n_off": jnp.sum(~online_like)}
