"""Calibrated Q-Learning (Nakamoto et al. 2023) with StratDiff's stratified regulariser.

Follows CORL's `cal_ql.py` and the original Cal-QL (paper Eq. 2, Table 2):

- actor: tanh-Gaussian, log_std = m * out + c with learned scalars m, c initialised to 1 and -1
  (initial std ~0.37, as CORL and JaxCQL), clamped to [-20, 2]; loss E[alpha * log pi(a~|s) - min_k Q_k(s, a~)];
  automatic entropy tuning, loss -E[log_alpha * (log pi + target_entropy)], target -act_dim.
- critic: twin critics as ONE ensemble, TD loss sum_k E[(Q_k(s, a) - y)^2] with
  y = r + gamma * m * min_k Q_target_k(s', a'), a' ~ pi(s') (max over `cql_n_actions` samples
  with `cql_max_target_backup`; no backup entropy unless `backup_entropy`).
- CQL regulariser R_k (Eq. 2): logsumexp over `cql_n_actions` uniform actions, pi(s) actions
  and pi(s') actions (importance sampled: minus log 0.5^act_dim and minus the log-probs),
  at temperature `cql_temperature`, minus Q_k(s, a), clipped to [clip_min, clip_max] per
  sample. Calibration: the pi-action Q values are lower-bounded by the batch's MC return,
  max(Q, mc_return), before the logsumexp (`calibrated_pi_q`).
  Loss alpha * sum_k R_k, or with `cql_lagrange` alpha' * alpha * sum_k (R_k - target_gap)
  with log alpha' trained to -(that) / 2.
- all losses use the pre-step parameters (as CORL); the target critic is Polyak-averaged.

All 1 + 3 * cql_n_actions action values per state are computed in ONE call of the batched
critic ensemble on a stacked [B, 1 + 3N, act_dim] action array.

StratDiff (paper Eq. 11): the TD loss runs on the whole batch; the (calibrated) CQL
regulariser is averaged over the offline-like samples only (weight 0 on online-like ones,
0 when the batch has none). Base Cal-QL is the same code with every sample offline-like.
With `offline_rows=k` (a static bound on the offline-like count, which the stratifier knows:
round(rho * B)), the 3N sampled actions go through the critics only for k gathered rows
(the offline-like ones first), and the regulariser is their weighted mean: the same loss to
float rounding as the masked form, at about k / B of its flops. `q_pi_mean` and
`bound_rate` are then means over those offline-like rows.
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from typing import ClassVar

import flax.struct
import jax
import jax.numpy as jnp
import optax

from stratdiff.agents.base import Metrics, check_update_inputs, masked_mean, run_utd, soft_update, stratum_metrics
from stratdiff.nn import Ensemble, StateActionValue, TanhGaussianPolicy
from stratdiff.nn.policies import tanh_gaussian_sample
from stratdiff.types import Batch


@dataclasses.dataclass(frozen=True)
class CalQLConfig:
    """Cal-QL hyper-parameters; defaults are the paper's locomotion values (Table 2)."""

    actor_hidden_dims: tuple[int, ...] = (256, 256, 256)  # policy MLP hidden layers (CORL: 3 x 256)
    critic_hidden_dims: tuple[int, ...] = (256, 256, 256)  # Q hidden layers: 3 x 256 (AntMaze 5 x 256)
    orthogonal_init: bool = True  # orthogonal init (gain sqrt 2, last layer 1e-2)
    log_std_multiplier: float | None = 1.0  # policy log_std = m * out + c, m, c learned (CORL / JaxCQL); None: out
    log_std_offset: float = -1.0  # initial c (initial std ~ e^-1)
    actor_lr: float = 1e-4  # policy (and entropy temperature) Adam learning rate
    critic_lr: float = 3e-4  # critic (and Lagrange alpha') Adam learning rate
    discount: float = 0.99  # gamma
    tau: float = 0.005  # target critic Polyak rate (updated every step)
    num_critics: int = 2  # critic ensemble size (twin critics)
    auto_entropy: bool = True  # learn the entropy temperature alpha
    target_entropy: float | None = None  # None: -act_dim
    alpha_multiplier: float = 1.0  # alpha = exp(log_alpha) * this (the fixed alpha when auto_entropy is off)
    backup_entropy: bool = False  # subtract alpha * log pi(a'|s') in the TD target
    cql_n_actions: int = 10  # sampled actions per kind (uniform, pi(s), pi(s'))
    cql_alpha: float = 10.0  # CQL regulariser weight (AntMaze 5)
    cql_importance_sample: bool = True  # subtract sampling log-densities inside the logsumexp
    cql_lagrange: bool = False  # tune alpha' so that the regulariser meets target_action_gap (AntMaze on)
    cql_target_action_gap: float = -1.0  # Lagrange target gap (AntMaze 0.8)
    cql_temperature: float = 1.0  # logsumexp temperature
    cql_max_target_backup: bool = False  # TD target max over cql_n_actions pi(s') samples (AntMaze on)
    cql_clip_diff_min: float = -200.0  # per-sample regulariser lower clip
    cql_clip_diff_max: float = math.inf  # per-sample regulariser upper clip
    calibration: bool = True  # Cal-QL: lower-bound pi-action Q values by the MC return

    def __post_init__(self):
        if self.cql_n_actions < 1 or self.num_critics < 1:
            raise ValueError("CalQLConfig: cql_n_actions >= 1 and num_critics >= 1 required")
        if self.cql_temperature <= 0:
            raise ValueError("CalQLConfig.cql_temperature must be > 0")


CALQL_PRESETS = {
    "locomotion": CalQLConfig(),
    "antmaze": CalQLConfig(critic_hidden_dims=(256,) * 5, cql_alpha=5.0, cql_lagrange=True,
                           cql_target_action_gap=0.8, cql_max_target_backup=True),
}


def _networks(config: CalQLConfig, act_dim: int):
    critic = Ensemble(StateActionValue, {"hidden_dims": config.critic_hidden_dims,
                                         "orthogonal": config.orthogonal_init}, num=config.num_critics)
    actor = TanhGaussianPolicy(config.actor_hidden_dims, act_dim, orthogonal=config.orthogonal_init,
                               log_std_multiplier=config.log_std_multiplier, log_std_offset=config.log_std_offset)
    return critic, actor


def _optimizers(config: CalQLConfig):
    """actor, critic, log_alpha (policy lr), log_alpha_prime (critic lr): Adam, as CORL."""
    return (optax.adam(config.actor_lr), optax.adam(config.critic_lr),
            optax.adam(config.actor_lr), optax.adam(config.critic_lr))


def calibrated_pi_q(q: jax.Array, mc_returns: jax.Array) -> jax.Array:
    """Cal-QL's lower bound (Eq. 2): max(Q(s, a~pi), V^mu(s)), with V^mu the MC return.

    q [..., B, N], mc_returns [B].
    """
    return jnp.maximum(q, mc_returns[:, None])


def cql_regulariser(q_data, q_rand, q_next_pi, logp_next_pi, q_pi, logp_pi, mc_returns, act_dim: int,
                    temperature: float, importance_sample: bool, calibration: bool,
                    clip_min: float, clip_max: float) -> jax.Array:
    """Per-sample CQL term R (Eq. 2) -> [..., B]: logsumexp of the sampled actions' values
    minus Q(s, a), clipped to [clip_min, clip_max].

    q_data [..., B]; q_rand, q_next_pi, q_pi [..., B, N] (pi(s') actions evaluated at s, as
    CQL); logp_* [B, N]; mc_returns [B].
    """
    if calibration:
        q_next_pi = calibrated_pi_q(q_next_pi, mc_returns)
        q_pi = calibrated_pi_q(q_pi, mc_returns)
    if importance_sample:
        random_density = act_dim * math.log(0.5)
        cat = jnp.concatenate([q_rand - random_density, q_next_pi - logp_next_pi, q_pi - logp_pi], axis=-1)
    else:
        cat = jnp.concatenate([q_rand, q_data[..., None], q_next_pi, q_pi], axis=-1)
    ood = jax.nn.logsumexp(cat / temperature, axis=-1) * temperature
    return jnp.clip(ood - q_data, clip_min, clip_max)


def _sample_n(key, mean, log_std, n: int):
    """n tanh-Gaussian samples per state: [B, n, A] actions and [B, n] log-probs."""
    shape = (mean.shape[0], n, mean.shape[-1])
    return tanh_gaussian_sample(key, jnp.broadcast_to(mean[:, None], shape), jnp.broadcast_to(log_std[:, None], shape))


def _q_many(critic, params, observations, actions):
    """Ensemble Q values of N actions per state, [B, obs] x [B, N, A] -> [E, B, N], as one
    call on B * N flattened rows (flat rows make faster matrix products than [B, N, .])."""
    b, n, a_dim = actions.shape
    obs = jnp.broadcast_to(observations[:, None], (b, n, observations.shape[-1])).reshape(b * n, -1)
    return critic.apply(params, obs, actions.reshape(b * n, a_dim)).reshape(-1, b, n)


class CalQL(flax.struct.PyTreeNode):
    """Cal-QL agent state: parameters, optimiser states, temperatures, PRNG key, step count."""

    actor_params: dict
    critic_params: dict
    target_critic_params: dict
    log_alpha: jax.Array
    log_alpha_prime: jax.Array
    actor_opt_state: optax.OptState
    critic_opt_state: optax.OptState
    alpha_opt_state: optax.OptState
    alpha_prime_opt_state: optax.OptState
    rng: jax.Array
    step: jax.Array
    obs_dim: int = flax.struct.field(pytree_node=False)
    act_dim: int = flax.struct.field(pytree_node=False)
    config: CalQLConfig = flax.struct.field(pytree_node=False)

    config_class: ClassVar[type] = CalQLConfig
    presets: ClassVar[dict] = CALQL_PRESETS

    @classmethod
    def create(cls, key: jax.Array, obs_dim: int, act_dim: int, config: CalQLConfig | None = None) -> CalQL:
        config = CalQLConfig() if config is None else config
        critic, actor = _networks(config, act_dim)
        k_actor, k_critic, rng = jax.random.split(key, 3)
        obs = jnp.zeros((1, obs_dim), jnp.float32)
        act = jnp.zeros((1, act_dim), jnp.float32)
        actor_params = actor.init(k_actor, obs)
        critic_params = critic.init(k_critic, obs, act)
        log_alpha = jnp.zeros((), jnp.float32)
        log_alpha_prime = jnp.ones((), jnp.float32)  # CORL: Scalar(1.0)
        actor_tx, critic_tx, alpha_tx, alpha_prime_tx = _optimizers(config)
        return cls(
            actor_params=actor_params,
            critic_params=critic_params,
            target_critic_params=critic_params,
            log_alpha=log_alpha,
            log_alpha_prime=log_alpha_prime,
            actor_opt_state=actor_tx.init(actor_params),
            critic_opt_state=critic_tx.init(critic_params),
            alpha_opt_state=alpha_tx.init(log_alpha),
            alpha_prime_opt_state=alpha_prime_tx.init(log_alpha_prime),
            rng=rng,
            step=jnp.zeros((), jnp.int32),
            obs_dim=obs_dim,
            act_dim=act_dim,
            config=config,
        )

    @partial(jax.jit, static_argnames="offline_rows")
    def update(self, batch: Batch, online_like: jax.Array | None = None,
               next_candidates: jax.Array | None = None,
               offline_rows: int | None = None) -> tuple[CalQL, Metrics]:
        """U = batch.observations.shape[0] gradient steps (module docstring).

        `next_candidates` is accepted for interface compatibility and unused (Cal-QL's
        TD target samples its own pi(s') actions). `offline_rows` (with `online_like`): at
        most this many samples per step are offline-like; the regulariser is computed on
        that many gathered rows only (module docstring)."""
        check_update_inputs("CalQL", batch, online_like, next_candidates, self.obs_dim, self.act_dim)
        if offline_rows is not None and not 0 <= offline_rows <= batch.actions.shape[1]:
            raise ValueError(f"CalQL.update: offline_rows must be in [0, {batch.actions.shape[1]}], "
                             f"got {offline_rows}")
        step = _update_step if online_like is None or offline_rows is None else partial(
            _update_step, offline_rows=offline_rows)
        return run_utd(step, self, batch, online_like, None)

    @partial(jax.jit, static_argnames="deterministic")
    def act(self, observations: jax.Array, key: jax.Array, deterministic: bool = False) -> jax.Array:
        """tanh(mean) when deterministic, else a tanh-Gaussian sample; always in [-1, 1]."""
        _, actor = _networks(self.config, self.act_dim)
        mean, log_std = actor.apply(self.actor_params, observations)
        if deterministic:
            return jnp.tanh(mean)
        return tanh_gaussian_sample(key, mean, log_std)[0]

    @jax.jit
    def q_value(self, observations: jax.Array, actions: jax.Array) -> jax.Array:
        """min_k Q_k(s, a) of the (online) critic ensemble."""
        critic, _ = _networks(self.config, self.act_dim)
        return critic.apply(self.critic_params, observations, actions).min(0)


def offline_like_rows(online_like: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """The first k rows in offline-like-first order, and which of them are offline-like:
    ([k] int indices, [k] bool). Every offline-like row is among them when there are <= k."""
    rows = jnp.argsort(online_like, stable=True)[:k]
    return rows, ~online_like[rows]


def _update_step(agent: CalQL, batch: Batch, online_like, _unused,
                 offline_rows: int | None = None) -> tuple[CalQL, Metrics]:
    """One Cal-QL gradient step on a [B, ...] batch (Eq. 11 when online_like is given;
    with `offline_rows` the regulariser runs on the gathered offline-like rows only)."""
    cfg = agent.config
    critic, actor = _networks(cfg, agent.act_dim)
    actor_tx, critic_tx, alpha_tx, alpha_prime_tx = _optimizers(cfg)
    rng, k_actor, k_target, k_rand, k_pi, k_next_pi = jax.random.split(agent.rng, 6)
    obs, act, next_obs = batch.observations, batch.actions, batch.next_observations
    n, b, a_dim = cfg.cql_n_actions, obs.shape[0], agent.act_dim
    target_entropy = -float(a_dim) if cfg.target_entropy is None else cfg.target_entropy
    alpha = jnp.exp(agent.log_alpha) * cfg.alpha_multiplier if cfg.auto_entropy else jnp.float32(cfg.alpha_multiplier)

    # Actor and temperature losses (pre-step critic).
    def actor_loss_fn(params):
        mean, log_std = actor.apply(params, obs)
        new_act, logp = tanh_gaussian_sample(k_actor, mean, log_std)
        q_new = critic.apply(agent.critic_params, obs, new_act).min(0)
        return jnp.mean(alpha * logp - q_new), (logp, mean, log_std)

    (actor_loss, (logp, mean_s, log_std_s)), actor_grads = jax.value_and_grad(actor_loss_fn, has_aux=True)(
        agent.actor_params)
    alpha_loss_fn = lambda la: -jnp.mean(la * jax.lax.stop_gradient(logp + target_entropy))  # noqa: E731
    alpha_loss, alpha_grad = jax.value_and_grad(alpha_loss_fn)(agent.log_alpha)

    # Sampled actions (pre-step policy, no gradient): pi(s'), uniform, pi(s). The policy at s
    # is the actor loss's forward pass (same pre-step parameters), not a second one.
    mean_n, log_std_n = actor.apply(agent.actor_params, next_obs)
    n_target = n if cfg.cql_max_target_backup else 1
    next_act, next_logp = _sample_n(k_target, mean_n, log_std_n, n_target)
    target_q_all = _q_many(critic, agent.target_critic_params, next_obs, next_act).min(0)  # [B, n_target]
    idx = jnp.argmax(target_q_all, axis=-1)
    target_q = jnp.take_along_axis(target_q_all, idx[:, None], axis=-1)[:, 0]
    if cfg.backup_entropy:
        target_q = target_q - alpha * jnp.take_along_axis(next_logp, idx[:, None], axis=-1)[:, 0]
    td_target = batch.rewards + cfg.discount * batch.masks * target_q

    rand_act = jax.random.uniform(k_rand, (b, n, a_dim), minval=-1.0, maxval=1.0)
    pi_act, pi_logp = _sample_n(k_pi, mean_s, log_std_s, n)
    next_pi_act, next_pi_logp = _sample_n(k_next_pi, mean_n, log_std_n, n)
    stacked = jax.lax.stop_gradient(jnp.concatenate([act[:, None], rand_act, next_pi_act, pi_act], axis=1))
    pi_logp, next_pi_logp = jax.lax.stop_gradient(pi_logp), jax.lax.stop_gradient(next_pi_logp)
    alpha_prime = jnp.clip(jnp.exp(agent.log_alpha_prime), 0.0, 1e6)
    offline_like = None if online_like is None else ~online_like
    if offline_rows is not None:  # the regulariser's rows: gathered, with their stratum as weight
        rows, row_weight = offline_like_rows(online_like, offline_rows)

    def critic_loss_fn(params):
        mc = batch.mc_returns
        if offline_rows is None:
            q_all = _q_many(critic, params, obs, stacked)  # [E, B, 1 + 3N], one call
            q_data = q_data_reg = q_all[..., 0]
            q_sampled = q_all[..., 1:]
            logp_next, logp_pi = next_pi_logp, pi_logp
        else:
            q_data = critic.apply(params, obs, act)  # [E, B]
            q_data_reg = q_data[:, rows]
            q_sampled = _q_many(critic, params, obs[rows], stacked[rows, 1:])  # [E, k, 3N]
            logp_next, logp_pi, mc = next_pi_logp[rows], pi_logp[rows], mc[rows]
        q_rand, q_next_pi, q_pi = q_sampled[..., :n], q_sampled[..., n:2 * n], q_sampled[..., 2 * n:]
        td_per = (q_data - td_target) ** 2  # [E, B]
        td_loss = td_per.mean(-1).sum()
        reg = cql_regulariser(q_data_reg, q_rand, q_next_pi, logp_next, q_pi, logp_pi, mc, a_dim,
                              cfg.cql_temperature, cfg.cql_importance_sample, cfg.calibration,
                              cfg.cql_clip_diff_min, cfg.cql_clip_diff_max)  # [E, B] (gathered: [E, k])
        if offline_rows is not None:  # NaN (caught by the runner) if the bound k was wrong
            cql_diff = jnp.where(jnp.sum(offline_like) > offline_rows, jnp.nan,
                                 masked_mean(reg, row_weight[None], axis=-1))  # [E]
        else:
            cql_diff = reg.mean(-1) if offline_like is None else masked_mean(reg, offline_like[None], axis=-1)
        if cfg.cql_lagrange:
            cql_loss = jnp.sum(jax.lax.stop_gradient(alpha_prime) * cfg.cql_alpha
                               * (cql_diff - cfg.cql_target_action_gap))
        else:
            cql_loss = jnp.sum(cfg.cql_alpha * cql_diff)
        aux = {"td_per": td_per.sum(0), "td_loss": td_loss, "cql_loss": cql_loss, "cql_diff": cql_diff,
               "q_data": q_data, "q_pi": q_pi, "mc": mc}
        return td_loss + cql_loss, aux

    (critic_loss, aux), critic_grads = jax.value_and_grad(critic_loss_fn, has_aux=True)(agent.critic_params)

    new_agent = agent.replace(rng=rng, step=agent.step + 1)
    updates, actor_opt_state = actor_tx.update(actor_grads, agent.actor_opt_state, agent.actor_params)
    new_agent = new_agent.replace(actor_params=optax.apply_updates(agent.actor_params, updates),
                                  actor_opt_state=actor_opt_state)
    updates, critic_opt_state = critic_tx.update(critic_grads, agent.critic_opt_state, agent.critic_params)
    critic_params = optax.apply_updates(agent.critic_params, updates)
    new_agent = new_agent.replace(critic_params=critic_params, critic_opt_state=critic_opt_state,
                                  target_critic_params=soft_update(agent.target_critic_params, critic_params, cfg.tau))
    if cfg.auto_entropy:
        updates, alpha_opt_state = alpha_tx.update(alpha_grad, agent.alpha_opt_state, agent.log_alpha)
        new_agent = new_agent.replace(log_alpha=optax.apply_updates(agent.log_alpha, updates),
                                      alpha_opt_state=alpha_opt_state)
    alpha_prime_loss = jnp.zeros(())
    if cfg.cql_lagrange:
        gap = jax.lax.stop_gradient(aux["cql_diff"]) - cfg.cql_target_action_gap
        if offline_like is not None:  # no offline-like sample: no regulariser to tune alpha' on
            gap = jnp.where(jnp.any(offline_like), gap, 0.0)

        def alpha_prime_loss_fn(lap):
            ap = jnp.clip(jnp.exp(lap), 0.0, 1e6)
            return -0.5 * jnp.sum(ap * cfg.cql_alpha * gap)

        alpha_prime_loss, ap_grad = jax.value_and_grad(alpha_prime_loss_fn)(agent.log_alpha_prime)
        updates, ap_opt_state = alpha_prime_tx.update(ap_grad, agent.alpha_prime_opt_state, agent.log_alpha_prime)
        new_agent = new_agent.replace(log_alpha_prime=optax.apply_updates(agent.log_alpha_prime, updates),
                                      alpha_prime_opt_state=ap_opt_state)

    metrics = {
        "critic_loss": critic_loss,
        "td_loss": aux["td_loss"],
        "cql_loss": aux["cql_loss"],
        "cql_diff": aux["cql_diff"].mean(),
        "q_mean": aux["q_data"].mean(),
        "q_pi_mean": aux["q_pi"].mean() if offline_rows is None else masked_mean(
            aux["q_pi"].mean((0, 2)), row_weight),
        "target_q_mean": target_q.mean(),
        "bound_rate": jnp.mean(aux["q_pi"] < aux["mc"][:, None]) if offline_rows is None else masked_mean(
            jnp.mean(aux["q_pi"] < aux["mc"][:, None], axis=(0, 2)), row_weight),
        "actor_loss": actor_loss,
        "entropy": -logp.mean(),
        "alpha": alpha,
        "alpha_loss": alpha_loss,
        "alpha_prime": alpha_prime if cfg.cql_lagrange else jnp.zeros(()),
        "alpha_prime_loss": alpha_prime_loss,
    }
    if online_like is not None:
        metrics["frac_online_like"] = online_like.mean()
        metrics |= stratum_metrics("critic_loss", aux["td_per"], online_like)
    return new_agent, metrics
