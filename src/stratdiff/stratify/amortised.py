"""The amortised guided-policy score (`stratifier.score=amortised`): this project's choice, not the paper's.

Eq. 10's `gaussian_fit` form fits a diagonal Gaussian N(mu_i, diag sigma_i^2) to M energy-guided
samples for every batch state at every update (M * solver-steps network evaluations per state).
The amortised form learns that Gaussian instead: a small network

    g(s) -> (mu(s), log sigma(s))  per action dimension,

trained by maximum likelihood on guided samples from the current behaviour model and energy,

    L(g) = E_s E_{a ~ pi_guided(.|s)} sum_d [ log sigma_d(s) + (a_d - mu_d(s))^2 / (2 sigma_d(s)^2) ],

or (`target="fit"`) by regression on the exact form's own fit of each state's M samples,

    L_fit(g) = E_s sum_d [ (mu_d(s) - mean_d)^2 + (log sigma_d(s) - log max(std_d, 1e-2))^2 ],

so that g predicts the M-sample mean and the floored M-sample spread that `gaussian_fit` would
compute (where all M samples sit on a clip bound, the floor, which a likelihood fit never reaches);
the score is Eq. 10's Gaussian KL with (mu, sigma) = g(s): one forward pass for the batch.
g is pretrained offline, after CEP, on a pool of guided samples for dataset states (`pretrain`),
and kept current online by one Adam step per update call (or every few calls) on fresh guided
samples for a few of the batch's states (`online_update`). With a replay (`Replay`), those fresh
samples replace the oldest rows of a small ring buffer of guided samples, and the step trains on
256 of its rows: as fresh as the ring's turnover, with the gradient noise of a full batch.
sigma is floored at the exact form's 1e-2 (`MIN_STD`), in training and in the score.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from stratdiff.diffusion import BehaviourModel, SamplerConfig, sample
from stratdiff.nn import MLP

MIN_STD = 1e-2  # the exact gaussian_fit form's floor on the fitted sigma
MAX_LOG_STD = 1.0  # sigma <= e: guided actions lie in [-1, 1]
TARGETS = ("likelihood", "fit")  # g's training objective (module docstring)


class Replay(flax.struct.PyTreeNode):
    """A ring buffer of guided samples for g's online steps: `size` states, `next` the oldest row."""

    observations: jax.Array  # [P, obs]
    samples: jax.Array  # [P, M, act]
    next: jax.Array  # the row the next fresh state overwrites

    @classmethod
    def empty(cls, size: int, obs_dim: int, num_samples: int, act_dim: int) -> Replay:
        return cls(observations=jnp.zeros((size, obs_dim), jnp.float32),
                   samples=jnp.zeros((size, num_samples, act_dim), jnp.float32), next=jnp.zeros((), jnp.int32))

    def add(self, observations: jax.Array, samples: jax.Array) -> Replay:
        """The oldest `n` rows replaced by `observations` [n, obs] and their `samples` [n, M, act]."""
        rows = (self.next + jnp.arange(observations.shape[0])) % self.observations.shape[0]
        return self.replace(observations=self.observations.at[rows].set(observations),
                            samples=self.samples.at[rows].set(samples),
                            next=(self.next + observations.shape[0]) % self.observations.shape[0])


class AmortisedScore(flax.struct.PyTreeNode):
    """g(s) -> (mu, sigma): parameters, Adam state, update count and (optionally) the replay."""

    params: dict
    opt_state: optax.OptState
    step: jax.Array
    act_dim: int = flax.struct.field(pytree_node=False)
    hidden_dims: tuple[int, ...] = flax.struct.field(pytree_node=False)
    lr: float = flax.struct.field(pytree_node=False)
    target: str = flax.struct.field(pytree_node=False, default="likelihood")
    replay: Replay | None = None  # online steps train on this ring buffer (None: on the fresh samples only)

    @classmethod
    def create(cls, key: jax.Array, obs_dim: int, act_dim: int, hidden_dims: Sequence[int] = (256, 256),
               lr: float = 1e-3, target: str = "likelihood", replay: int = 0,
               num_samples: int = 8) -> AmortisedScore:
        """`replay` > 0: a ring buffer of that many states with `num_samples` guided samples each
        (filled by `pretrain`)."""
        if target not in TARGETS:
            raise ValueError(f"stratifier.amortised_target must be one of {TARGETS}, got {target!r}")
        hidden_dims = tuple(hidden_dims)
        params = _net(hidden_dims, act_dim).init(key, jnp.zeros((1, obs_dim), jnp.float32))
        return cls(params=params, opt_state=optax.adam(lr).init(params), step=jnp.zeros((), jnp.int32),
                   act_dim=act_dim, hidden_dims=hidden_dims, lr=lr, target=target,
                   replay=Replay.empty(replay, obs_dim, num_samples, act_dim) if replay else None)

    def mean_log_std(self, observations: jax.Array, params: dict | None = None) -> tuple[jax.Array, jax.Array]:
        """g's raw outputs (mu, log sigma before the clip), each [n, act], for states [n, obs]."""
        out = _net(self.hidden_dims, self.act_dim).apply(self.params if params is None else params, observations)
        mean, log_std = jnp.split(out, 2, axis=-1)
        return mean, log_std

    def mean_std(self, observations: jax.Array, params: dict | None = None) -> tuple[jax.Array, jax.Array]:
        """(mu, sigma), each [n, act], for states [n, obs]; sigma clipped to [MIN_STD, e]."""
        mean, log_std = self.mean_log_std(observations, params)
        return mean, jnp.exp(jnp.clip(log_std, np.log(MIN_STD), MAX_LOG_STD))

    def nll(self, params: dict, observations: jax.Array, samples: jax.Array) -> jax.Array:
        """Mean Gaussian negative log-likelihood (per state and dimension, without log sqrt(2 pi))
        of `samples` [n, M, act] under g(s) for states [n, obs]."""
        mean, std = self.mean_std(observations, params)
        z = (samples - mean[:, None]) / std[:, None]
        return jnp.mean(jnp.sum(jnp.log(std)[:, None] + 0.5 * z**2, axis=-1))

    def fit_error(self, params: dict, observations: jax.Array, samples: jax.Array) -> jax.Array:
        """Mean squared error (per state, summed over dimensions) of g's (mu, log sigma) against
        the mean and floored standard deviation of `samples` [n, M, act], as `gaussian_fit` fits them.
        The raw log sigma is regressed (the targets lie inside the clip), so its gradient never
        vanishes at the floor."""
        mean, log_std = self.mean_log_std(observations, params)
        fit_mean = jnp.mean(samples, axis=1)
        fit_log_std = jnp.log(jnp.maximum(jnp.std(samples, axis=1), MIN_STD))
        return jnp.mean(jnp.sum((mean - fit_mean) ** 2 + (log_std - fit_log_std) ** 2, axis=-1))

    def loss(self, params: dict, observations: jax.Array, samples: jax.Array) -> jax.Array:
        """The training objective `target` names: `nll` or `fit_error`."""
        return (self.nll if self.target == "likelihood" else self.fit_error)(params, observations, samples)

    def update(self, observations: jax.Array, samples: jax.Array) -> tuple[AmortisedScore, jax.Array]:
        """One Adam step on `loss` -> (updated score, loss before the step)."""
        loss, grads = jax.value_and_grad(self.loss)(self.params, observations, samples)
        updates, opt_state = optax.adam(self.lr).update(grads, self.opt_state, self.params)
        return self.replace(params=optax.apply_updates(self.params, updates), opt_state=opt_state,
                            step=self.step + 1), loss

    def state_dict(self) -> dict:
        state = {"params": self.params, "opt_state": self.opt_state, "step": self.step}
        if self.replay is not None:
            state["replay"] = self.replay
        return state

    def load_state_dict(self, state: dict) -> AmortisedScore:
        """`state` has `state_dict()`'s structure (restored against it, so a replay is a `Replay`)."""
        g = self.replace(params=state["params"], opt_state=state["opt_state"], step=jnp.asarray(state["step"]))
        return g if self.replay is None else g.replace(replay=state["replay"])


def _net(hidden_dims: tuple[int, ...], act_dim: int) -> MLP:
    return MLP((*hidden_dims, 2 * act_dim))


def guided_samples(model: BehaviourModel, observations: jax.Array, key: jax.Array, guidance_scale: float | None,
                   num_samples: int, sampler: SamplerConfig) -> jax.Array:
    """[n, M, act] energy-guided samples (Eq. 8-9): g's training targets."""
    return sample(model, observations, key, guidance_scale, num_samples=num_samples, sampler=sampler)


def online_update(score: AmortisedScore, model: BehaviourModel, observations: jax.Array, key: jax.Array,
                  guidance_scale: float | None, num_states: int, num_samples: int,
                  sampler: SamplerConfig) -> tuple[AmortisedScore, jax.Array]:
    """Fresh guided samples for `num_states` states drawn from `observations` [n, obs], then one
    step: on those samples, or, with a replay, on `PRETRAIN_BATCH` rows of the replay after the
    fresh ones replaced its oldest."""
    k_rows, k_sample, k_replay = jax.random.split(key, 3)
    rows = jax.random.choice(k_rows, observations.shape[0], (min(num_states, observations.shape[0]),),
                             replace=False)
    obs = observations[rows]
    fresh = guided_samples(model, obs, k_sample, guidance_scale, num_samples, sampler)
    if score.replay is None:
        return score.update(obs, fresh)
    replay = score.replay.add(obs, fresh)
    size = replay.observations.shape[0]
    picked = jax.random.randint(k_replay, (min(PRETRAIN_BATCH, size),), 0, size)
    return score.replace(replay=replay).update(replay.observations[picked], replay.samples[picked])


PRETRAIN_BATCH = 256  # pool states per pretraining step (and replay rows per online step)


@jax.jit
def _train_chunk(score: AmortisedScore, observations, samples, key):
    """200 Adam steps on random pool batches -> (score, [200] losses)."""
    n = observations.shape[0]

    def body(s, k):
        idx = jax.random.randint(k, (min(PRETRAIN_BATCH, n),), 0, n)
        return s.update(observations[idx], samples[idx])

    return jax.lax.scan(body, score, jax.random.split(key, 200))


def pretrain(score: AmortisedScore, model: BehaviourModel, observations: np.ndarray, key: jax.Array,
             guidance_scale: float | None, steps: int, num_samples: int, sampler: SamplerConfig,
             progress: Callable[[str, int, int], None] | None = None) -> tuple[AmortisedScore, dict]:
    """Draw `num_samples` guided samples for each of `observations` (the pool, chunks of 1024),
    then take `steps` Adam steps (rounded up to a multiple of 200) on batches of 256 pool states;
    a replay (`score.replay`) starts with a random subset of the pool's rows.
    `progress(stage, done, total)` is called as the pool and the steps advance."""
    k_pool, k_train = jax.random.split(key)
    k_replay = jax.random.fold_in(key, 2)
    n = observations.shape[0]
    pool = []
    for start in range(0, n, 1024):
        obs = jnp.asarray(observations[start:start + 1024])
        pool.append(np.asarray(guided_samples(model, obs, jax.random.fold_in(k_pool, start), guidance_scale,
                                              num_samples, sampler)))
        if progress:
            progress("pool", min(start + 1024, n), n)
    obs_j, pool_j = jnp.asarray(observations), jnp.asarray(np.concatenate(pool))
    losses = []
    for i in range(-(-steps // 200)):
        score, loss = _train_chunk(score, obs_j, pool_j, jax.random.fold_in(k_train, i))
        losses.append(float(jnp.mean(loss)))
        if progress:
            progress("train", min((i + 1) * 200, steps), steps)
    if score.replay is not None:
        size = score.replay.observations.shape[0]
        if size > n:
            raise ValueError(f"stratifier.amortised_replay={size} exceeds the {n} pretraining pool states")
        rows = jax.random.choice(k_replay, n, (size,), replace=False)
        score = score.replace(replay=score.replay.replace(observations=obs_j[rows], samples=pool_j[rows],
                                                          next=jnp.zeros((), jnp.int32)))
    return score, {"pool_states": int(n), "target": score.target, "loss": losses}
