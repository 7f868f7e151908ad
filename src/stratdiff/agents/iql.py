"""Implicit Q-Learning (Kostrikov et al. 2021) with StratDiff's stratified losses.

Base IQL, as CORL's `iql.py` (paper Table 3; paper Eq. 3-4):

- value:  L(V) = E[ L2_tau(min_k Q_target_k(s, a) - V(s)) ]                      (Eq. 3)
- critic: L(Q) = E[ (r + gamma * m * V(s') - Q_k(s, a))^2 ], averaged over the twins (Eq. 4)
- actor:  AWR, L(pi) = -E[ min(exp(beta * (Q_target(s, a) - V(s))), 100) * log pi(a|s) ]
  with a Gaussian policy (tanh mean, state-independent log_std); deterministic act = mean.
  All three losses use the parameters from before the step (CORL computes V(s') and the
  advantage before the value step); the target critic is Polyak-averaged after each step.

StratDiff (paper Eq. 12-14), per sample with the stratum `online_like`:

- value (Eq. 12): expectile `expectile` on offline-like samples, `online_expectile` (0.99)
  on online-like ones. The paper's ablation without the expectile (Eq. 14, Table 6) has two
  readings: `online_value_loss="symmetric"` (the `--no-online-expectile` default) removes
  the expectile, a symmetric squared loss (Q - V)^2 (tau = 0.5) on online-like samples;
  `online_value_loss="linear"` takes Eq. 14 literally, the term Q(s, a) - V(s) itself, whose
  gradient in V is -1 on every online-like sample, so V rises without bound there.
- critic (Eq. 13): target r + gamma*m*V(s') on offline-like samples and
  r + gamma*m*max_{a'} min_k Q_target_k(s', a') on online-like ones. The paper leaves the
  max over continuous actions open; here it runs over a candidate set at s': the current
  policy's mean, `num_target_candidates` samples of the current policy (clipped to
  [-1, 1]), and the caller's `next_candidates` (e.g. behaviour-model samples at s') when
  given. See `online_max_target`.
- actor: unchanged (AWR on every sample).

With `online_like=None` (base IQL) the online target is never computed; with an all-False
`online_like` the update equals base IQL exactly.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import ClassVar

import flax.struct
import jax
import jax.numpy as jnp
import optax

from stratdiff.agents.base import (
    Metrics,
    awr_weights,
    check_update_inputs,
    expectile_loss,
    run_utd,
    soft_update,
    stratum_metrics,
)
from stratdiff.nn import Ensemble, GaussianPolicy, StateActionValue, StateValue
from stratdiff.nn.policies import gaussian_log_prob
from stratdiff.types import Batch

ONLINE_VALUE_LOSSES = ("expectile", "symmetric", "linear")


@dataclasses.dataclass(frozen=True)
class IQLConfig:
    """IQL hyper-parameters; defaults are the paper's locomotion values (Table 3)."""

    hidden_dims: tuple[int, ...] = (256, 256)  # hidden layers of actor, critics and value net
    actor_lr: float = 3e-4  # Adam learning rate of the policy
    critic_lr: float = 3e-4  # Adam learning rate of the twin critics
    value_lr: float = 3e-4  # Adam learning rate of V
    # actor lr schedule (IQL, CORL, PEX): cosine decay from actor_lr towards 0 over the first N actor
    # updates (the offline phase), then the constant actor_lr (online, as PEX); 0: constant throughout.
    # None: N = the run's offline_steps (`for_run`; constant where no run sets it).
    actor_lr_decay_steps: int | None = None
    discount: float = 0.99  # gamma
    tau: float = 0.005  # target critic Polyak rate
    expectile: float = 0.7  # tau of the value expectile (0.9 AntMaze)
    beta: float = 3.0  # AWR inverse temperature (10 AntMaze)
    max_weight: float = 100.0  # AWR weights exp(beta * A) are clipped at this value
    num_critics: int = 2  # critic ensemble size (twin critics, min for targets)
    online_expectile: float = 0.99  # StratDiff Eq. 12: value expectile on online-like samples
    # online-like value loss: "expectile" (Eq. 12), "symmetric" (Eq. 14 bounded: tau = 0.5) or "linear" (Eq. 14 literal)
    online_value_loss: str = "expectile"
    num_target_candidates: int = 10  # Eq. 13 max: policy samples at s' (the policy mean is always added)

    def for_run(self, offline_steps: int) -> IQLConfig:
        """This config in a run with `offline_steps` offline updates: the actor's cosine decay
        spans the offline phase unless `actor_lr_decay_steps` was set."""
        if self.actor_lr_decay_steps is not None:
            return self
        return dataclasses.replace(self, actor_lr_decay_steps=int(offline_steps))

    def __post_init__(self):
        if self.actor_lr_decay_steps is not None and self.actor_lr_decay_steps < 0:
            raise ValueError(f"IQLConfig.actor_lr_decay_steps must be >= 0, got {self.actor_lr_decay_steps}")
        if self.online_value_loss not in ONLINE_VALUE_LOSSES:
            raise ValueError(f"IQLConfig.online_value_loss: {self.online_value_loss!r} is not one of "
                             f"{ONLINE_VALUE_LOSSES}")
        if not 0.0 < self.expectile < 1.0 or not 0.0 < self.online_expectile < 1.0:
            raise ValueError("IQLConfig.expectile and online_expectile must lie in (0, 1)")
        if self.num_critics < 1 or self.num_target_candidates < 0:
            raise ValueError("IQLConfig: num_critics >= 1 and num_target_candidates >= 0 required")


IQL_PRESETS = {
    "locomotion": IQLConfig(),
    "antmaze": IQLConfig(expectile=0.9, beta=10.0),
}


def _networks(config: IQLConfig, act_dim: int):
    critic = Ensemble(StateActionValue, {"hidden_dims": config.hidden_dims}, num=config.num_critics)
    value = StateValue(config.hidden_dims)
    actor = GaussianPolicy(config.hidden_dims, act_dim)
    return critic, value, actor


def actor_learning_rate(config: IQLConfig):
    """The actor's learning rate per update count t (optax's count: 0 at the first update).

    With N = actor_lr_decay_steps > 0: lr * (1 + cos(pi * t / N)) / 2 for t < N (CORL's
    CosineAnnealingLR over the offline updates, as IQL's own cosine decay), then lr for every
    later update (PEX's constant online rate; optax's cosine_decay_schedule would stay at 0
    after N). A constant lr when N is 0 or None.
    """
    lr, n = config.actor_lr, config.actor_lr_decay_steps or 0
    if n <= 0:
        return lambda count: jnp.asarray(lr, jnp.float32)

    def schedule(count):
        cosine = 0.5 * lr * (1.0 + jnp.cos(jnp.pi * jnp.minimum(count, n) / n))
        return jnp.where(count < n, cosine, lr).astype(jnp.float32)

    return schedule


def _optimizers(config: IQLConfig):
    return optax.adam(actor_learning_rate(config)), optax.adam(config.critic_lr), optax.adam(config.value_lr)


def online_max_target(rewards: jax.Array, masks: jax.Array, candidate_q: jax.Array, discount: float) -> jax.Array:
    """Eq. 13's online-like target r + gamma * m * max_{a'} Q(s', a').

    `candidate_q` [B, K] holds min-over-ensemble target Q values of K candidate actions at s'.
    """
    return rewards + discount * masks * jnp.max(candidate_q, axis=-1)


def stratified_value_loss(u: jax.Array, online_like: jax.Array | None, config: IQLConfig) -> jax.Array:
    """Per-sample value loss of u = Q_target(s, a) - V(s): L2_tau(u) (Eq. 3); with strata,
    L2_tau on offline-like and, on online-like, L2_0.99 (Eq. 12), the symmetric u^2 / 2 =
    L2_0.5 (Eq. 14 without the expectile) or u itself (Eq. 14 literally)."""
    per = expectile_loss(u, config.expectile)
    if online_like is None:
        return per
    on = {"expectile": lambda: expectile_loss(u, config.online_expectile),
          "symmetric": lambda: expectile_loss(u, 0.5),
          "linear": lambda: u}[config.online_value_loss]()
    return jnp.where(online_like, on, per)


def target_candidates(actor_params, actor, next_observations, key, num_samples: int, next_candidates=None):
    """Candidate actions at s' for the Eq. 13 max: [policy mean, num_samples policy samples
    clipped to [-1, 1], next_candidates...] -> [B, 1 + num_samples (+ M), act_dim]."""
    mean, log_std = actor.apply(actor_params, next_observations)
    noise = jax.random.normal(key, (mean.shape[0], num_samples, mean.shape[-1]))
    samples = jnp.clip(mean[:, None] + jnp.exp(log_std)[:, None] * noise, -1.0, 1.0)
    parts = [mean[:, None], samples]
    if next_candidates is not None:
        parts.append(next_candidates)
    return jnp.concatenate(parts, axis=1)


class IQL(flax.struct.PyTreeNode):
    """IQL agent state: parameters, optimiser states, target critic, PRNG key, step count."""

    actor_params: dict
    critic_params: dict
    target_critic_params: dict
    value_params: dict
    actor_opt_state: optax.OptState
    critic_opt_state: optax.OptState
    value_opt_state: optax.OptState
    rng: jax.Array
    step: jax.Array
    obs_dim: int = flax.struct.field(pytree_node=False)
    act_dim: int = flax.struct.field(pytree_node=False)
    config: IQLConfig = flax.struct.field(pytree_node=False)

    config_class: ClassVar[type] = IQLConfig
    presets: ClassVar[dict] = IQL_PRESETS

    @classmethod
    def create(cls, key: jax.Array, obs_dim: int, act_dim: int, config: IQLConfig | None = None) -> IQL:
        config = IQLConfig() if config is None else config
        critic, value, actor = _networks(config, act_dim)
        k_actor, k_critic, k_value, rng = jax.random.split(key, 4)
        obs = jnp.zeros((1, obs_dim), jnp.float32)
        act = jnp.zeros((1, act_dim), jnp.float32)
        actor_params = actor.init(k_actor, obs)
        critic_params = critic.init(k_critic, obs, act)
        value_params = value.init(k_value, obs)
        actor_tx, critic_tx, value_tx = _optimizers(config)
        return cls(
            actor_params=actor_params,
            critic_params=critic_params,
            target_critic_params=critic_params,
            value_params=value_params,
            actor_opt_state=actor_tx.init(actor_params),
            critic_opt_state=critic_tx.init(critic_params),
            value_opt_state=value_tx.init(value_params),
            rng=rng,
            step=jnp.zeros((), jnp.int32),
            obs_dim=obs_dim,
            act_dim=act_dim,
            config=config,
        )

    @partial(jax.jit, static_argnames="offline_rows")
    def update(self, batch: Batch, online_like: jax.Array | None = None,
               next_candidates: jax.Array | None = None, offline_rows: int | None = None) -> tuple[IQL, Metrics]:
        """U = batch.observations.shape[0] gradient steps (see the module docstring).
        `offline_rows` is unused (IQL's losses cost the same on every row)."""
        check_update_inputs("IQL", batch, online_like, next_candidates, self.obs_dim, self.act_dim)
        return run_utd(_update_step, self, batch, online_like, next_candidates)

    @partial(jax.jit, static_argnames="deterministic")
    def act(self, observations: jax.Array, key: jax.Array, deterministic: bool = False) -> jax.Array:
        """Actions in [-1, 1]: the tanh mean, or a Gaussian sample around it clipped to [-1, 1]."""
        _, _, actor = _networks(self.config, self.act_dim)
        mean, log_std = actor.apply(self.actor_params, observations)
        if deterministic:
            return mean
        return jnp.clip(mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape), -1.0, 1.0)

    @jax.jit
    def q_value(self, observations: jax.Array, actions: jax.Array) -> jax.Array:
        """min_k Q_k(s, a) of the (online) critic ensemble."""
        critic, _, _ = _networks(self.config, self.act_dim)
        return critic.apply(self.critic_params, observations, actions).min(0)


def _update_step(agent: IQL, batch: Batch, online_like, next_candidates) -> tuple[IQL, Metrics]:
    """One IQL gradient step on a [B, ...] batch (stratified when online_like is given)."""
    cfg = agent.config
    critic, value, actor = _networks(cfg, agent.act_dim)
    actor_tx, critic_tx, value_tx = _optimizers(cfg)
    rng, key = jax.random.split(agent.rng)
    obs, act = batch.observations, batch.actions

    # Targets from the pre-step parameters.
    target_q = critic.apply(agent.target_critic_params, obs, act).min(0)
    next_v = value.apply(agent.value_params, batch.next_observations)
    q_target = batch.rewards + cfg.discount * batch.masks * next_v
    if online_like is not None:
        cands = target_candidates(agent.actor_params, actor, batch.next_observations, key,
                                  cfg.num_target_candidates, next_candidates)
        b, k, a_dim = cands.shape
        next_obs = jnp.broadcast_to(batch.next_observations[:, None], (b, k, agent.obs_dim)).reshape(b * k, -1)
        cand_q = critic.apply(agent.target_critic_params, next_obs, cands.reshape(b * k, a_dim)).min(0).reshape(b, k)
        q_target = jnp.where(online_like, online_max_target(batch.rewards, batch.masks, cand_q, cfg.discount),
                             q_target)

    # Value step (Eq. 3 / 12 / 14).
    def value_loss_fn(params):
        v = value.apply(params, obs)
        per = stratified_value_loss(target_q - v, online_like, cfg)
        return per.mean(), (per, v)

    (value_loss, (value_per, v)), value_grads = jax.value_and_grad(value_loss_fn, has_aux=True)(agent.value_params)
    updates, value_opt_state = value_tx.update(value_grads, agent.value_opt_state, agent.value_params)
    value_params = optax.apply_updates(agent.value_params, updates)

    # Critic step (Eq. 4 / 13).
    def critic_loss_fn(params):
        qs = critic.apply(params, obs, act)
        per = jnp.mean((qs - q_target) ** 2, axis=0)
        return per.mean(), (per, qs)

    (critic_loss, (critic_per, qs)), critic_grads = jax.value_and_grad(critic_loss_fn, has_aux=True)(
        agent.critic_params)
    updates, critic_opt_state = critic_tx.update(critic_grads, agent.critic_opt_state, agent.critic_params)
    critic_params = optax.apply_updates(agent.critic_params, updates)

    # Actor step (AWR) with the pre-step advantage.
    adv = target_q - v
    weights = awr_weights(adv, cfg.beta, cfg.max_weight)

    def actor_loss_fn(params):
        mean, log_std = actor.apply(params, obs)
        return -jnp.mean(weights * gaussian_log_prob(act, mean, log_std)), log_std

    (actor_loss, log_std), actor_grads = jax.value_and_grad(actor_loss_fn, has_aux=True)(agent.actor_params)
    updates, actor_opt_state = actor_tx.update(actor_grads, agent.actor_opt_state, agent.actor_params)
    actor_params = optax.apply_updates(agent.actor_params, updates)

    new_agent = agent.replace(
        actor_params=actor_params,
        critic_params=critic_params,
        target_critic_params=soft_update(agent.target_critic_params, critic_params, cfg.tau),
        value_params=value_params,
        actor_opt_state=actor_opt_state,
        critic_opt_state=critic_opt_state,
        value_opt_state=value_opt_state,
        rng=rng,
        step=agent.step + 1,
    )
    metrics = {
        "value_loss": value_loss,
        "critic_loss": critic_loss,
        "actor_loss": actor_loss,
        "q_mean": qs.mean(),
        "v_mean": v.mean(),
        "target_q_mean": q_target.mean(),
        "adv_mean": adv.mean(),
        "awr_weight_mean": weights.mean(),
        "awr_weight_clip_frac": jnp.mean(weights >= cfg.max_weight),
        "actor_log_std_mean": log_std.mean(),
    }
    if online_like is not None:
        metrics["frac_online_like"] = online_like.mean()
        metrics |= stratum_metrics("value_loss", value_per, online_like)
        metrics |= stratum_metrics("critic_loss", critic_per, online_like)
    return new_agent, metrics
