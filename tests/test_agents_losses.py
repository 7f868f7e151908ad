"""Numeric tests of the agents' loss pieces with hand-computed values, and the online
(online_like all True) forms of IQL (Eq. 12-14) and Cal-QL (Eq. 11)."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stratdiff.agents import CalQL, IQL, awr_weights, expectile_loss, make_config, masked_mean, soft_update
from stratdiff.agents.calql import calibrated_pi_q, cql_regulariser
from stratdiff.agents.iql import online_max_target, stratified_value_loss, target_candidates
from stratdiff.nn import GaussianPolicy
from stratdiff.types import Batch

OBS_DIM, ACT_DIM, B = 3, 2, 8


def test_expectile_loss_hand_values():
    u = jnp.array([-2.0, 1.0, 0.0, 3.0])
    np.testing.assert_allclose(expectile_loss(u, 0.7), [0.3 * 4, 0.7 * 1, 0.0, 0.7 * 9], rtol=1e-6)
    np.testing.assert_allclose(expectile_loss(u, 0.99), [0.01 * 4, 0.99, 0.0, 0.99 * 9], rtol=1e-6)
    np.testing.assert_allclose(jnp.mean(expectile_loss(u[:2], 0.7)), 0.95, rtol=1e-6)
    np.testing.assert_allclose(expectile_loss(u, 0.5), 0.5 * u**2, rtol=1e-6)  # tau 0.5 = half MSE


def test_awr_weights_hand_values_and_clip():
    adv = jnp.array([0.0, 1.0, -1.0, 2.0, 10.0])
    w = awr_weights(adv, beta=3.0, max_weight=100.0)
    np.testing.assert_allclose(w, [1.0, math.exp(3), math.exp(-3), 100.0, 100.0], rtol=1e-6)  # e^6 = 403 -> 100


def test_masked_mean_and_soft_update():
    x = jnp.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(masked_mean(x, jnp.array([True, False, True, False])), 2.0)
    assert float(masked_mean(x, jnp.zeros(4, bool))) == 0.0
    out = soft_update({"w": jnp.array([0.0, 10.0])}, {"w": jnp.array([1.0, 0.0])}, 0.1)
    np.testing.assert_allclose(out["w"], [0.1, 9.0], rtol=1e-6)


def test_calql_lower_bound():
    q = jnp.array([[[1.0, 5.0], [-2.0, -4.0]]])  # [E=1, B=2, N=2]
    mc = jnp.array([3.0, -3.0])
    np.testing.assert_allclose(calibrated_pi_q(q, mc), [[[3.0, 5.0], [-2.0, -3.0]]])


def _cql_case(importance_sample, calibration, clip_min=-200.0):
    # one critic, one state, one action of each kind, act_dim 1
    args = dict(q_data=jnp.array([[1.0]]), q_rand=jnp.array([[[0.5]]]), q_next_pi=jnp.array([[[0.2]]]),
                logp_next_pi=jnp.array([[-0.1]]), q_pi=jnp.array([[[0.3]]]), logp_pi=jnp.array([[0.4]]),
                mc_returns=jnp.array([0.25]))
    return float(cql_regulariser(**args, act_dim=1, temperature=1.0, importance_sample=importance_sample,
                                 calibration=calibration, clip_min=clip_min, clip_max=math.inf)[0, 0])


def test_cql_logsumexp_hand_values():
    log_half = math.log(0.5)
    # importance sampled + calibrated: q_next_pi 0.2 -> max(0.2, 0.25) = 0.25, q_pi 0.3 stays
    expected = math.log(math.exp(0.5 - log_half) + math.exp(0.25 + 0.1) + math.exp(0.3 - 0.4)) - 1.0
    assert _cql_case(True, True) == pytest.approx(expected, rel=1e-6)
    # without calibration q_next_pi stays 0.2
    expected = math.log(math.exp(0.5 - log_half) + math.exp(0.2 + 0.1) + math.exp(0.3 - 0.4)) - 1.0
    assert _cql_case(True, False) == pytest.approx(expected, rel=1e-6)
    # no importance sampling: plain logsumexp over [rand, data, next, pi]
    expected = math.log(math.exp(0.5) + math.exp(1.0) + math.exp(0.25) + math.exp(0.3)) - 1.0
    assert _cql_case(False, True) == pytest.approx(expected, rel=1e-6)
    # the per-sample clip
    assert _cql_case(True, True, clip_min=5.0) == 5.0


def test_cql_temperature():
    q = jnp.array([[1.0]])
    one = jnp.array([[[2.0]]])
    zero = jnp.zeros((1, 1))
    out = cql_regulariser(q, one, one, zero, one, zero, jnp.array([-10.0]), 1, 0.5, False, False, -200.0, math.inf)
    # 0.5 * log(e^{2/0.5} + e^{1/0.5} + e^{2/0.5} + e^{2/0.5}) - 1
    assert float(out[0, 0]) == pytest.approx(0.5 * math.log(3 * math.exp(4) + math.exp(2)) - 1.0, rel=1e-6)


def test_iql_online_max_target_hand_values():
    r = jnp.array([1.0, 0.5])
    m = jnp.array([1.0, 0.0])
    cand_q = jnp.array([[0.0, 3.0, -1.0], [9.0, 9.0, 9.0]])
    np.testing.assert_allclose(online_max_target(r, m, cand_q, 0.9), [1.0 + 0.9 * 3.0, 0.5], rtol=1e-6)


def test_iql_stratified_value_loss_hand_values():
    u = jnp.array([-2.0, 1.0, -2.0, 1.0])
    on = jnp.array([False, False, True, True])
    cfg = IQL.presets["locomotion"]
    np.testing.assert_allclose(stratified_value_loss(u, None, cfg), [0.3 * 4, 0.7, 0.3 * 4, 0.7], rtol=1e-6)
    np.testing.assert_allclose(stratified_value_loss(u, on, cfg), [0.3 * 4, 0.7, 0.01 * 4, 0.99], rtol=1e-6)
    linear = dataclasses.replace(cfg, online_value_loss="linear")  # Eq. 14: u itself on b_on
    np.testing.assert_allclose(stratified_value_loss(u, on, linear), [0.3 * 4, 0.7, -2.0, 1.0], rtol=1e-6)
    antmaze = IQL.presets["antmaze"]  # expectile 0.9
    np.testing.assert_allclose(stratified_value_loss(u, ~on, antmaze), [0.01 * 4, 0.99, 0.1 * 4, 0.9], rtol=1e-6)


def test_iql_target_candidates_layout():
    actor = GaussianPolicy((8,), ACT_DIM)
    params = actor.init(jax.random.PRNGKey(0), jnp.zeros((1, OBS_DIM)))
    obs = jax.random.normal(jax.random.PRNGKey(1), (B, OBS_DIM))
    extra = jnp.full((B, 3, ACT_DIM), 0.123)
    cands, mean = jax.jit(lambda p: (target_candidates(p, actor, obs, jax.random.PRNGKey(2), 5, extra),
                                     actor.apply(p, obs)[0]))(params)
    assert cands.shape == (B, 1 + 5 + 3, ACT_DIM)
    np.testing.assert_allclose(cands[:, 0], mean)  # the policy mean first
    np.testing.assert_array_equal(cands[:, 6:], extra)  # the caller's candidates last
    assert bool(jnp.all(jnp.abs(cands[:, 1:6]) <= 1.0))


# ------------------------------------------------------------ the online (b_on) forms


def _batch(key, u=1):
    ks = jax.random.split(key, 5)
    return Batch(observations=jax.random.normal(ks[0], (u, B, OBS_DIM)),
                 actions=jax.random.uniform(ks[1], (u, B, ACT_DIM), minval=-1.0, maxval=1.0),
                 rewards=jax.random.normal(ks[2], (u, B)),
                 next_observations=jax.random.normal(ks[3], (u, B, OBS_DIM)),
                 masks=jnp.array([1.0, 0.0] * (B // 2)) * jnp.ones((u, 1)),
                 mc_returns=jax.random.normal(ks[4], (u, B)), source=jnp.zeros((u, B), jnp.int32))


def _iql(**kw):
    config = dataclasses.replace(make_config(IQL, "locomotion"), hidden_dims=(16, 16), **kw)
    return IQL.create(jax.random.PRNGKey(0), OBS_DIM, ACT_DIM, config)


def test_iql_all_online_like_uses_eq12_13():
    """All samples online-like, no policy samples (num_target_candidates=0): the target's
    max runs over the policy mean and the given candidates, computed here by hand."""
    agent = _iql(num_target_candidates=0)
    batch = _batch(jax.random.PRNGKey(1))
    extra = jax.random.uniform(jax.random.PRNGKey(2), (1, B, 4, ACT_DIM), minval=-1.0, maxval=1.0)
    _, metrics = agent.update(batch, jnp.ones((1, B), bool), extra)

    @jax.jit
    def by_hand(agent, batch, extra):
        from stratdiff.agents.iql import _networks
        critic, value, actor = _networks(agent.config, ACT_DIM)
        b = jax.tree_util.tree_map(lambda x: x[0], batch)
        cands = jnp.concatenate([actor.apply(agent.actor_params, b.next_observations)[0][:, None], extra[0]], 1)
        cand_q = jnp.stack([critic.apply(agent.target_critic_params, b.next_observations, cands[:, j]).min(0)
                            for j in range(cands.shape[1])], axis=1)
        y = b.rewards + 0.99 * b.masks * cand_q.max(1)
        q = critic.apply(agent.critic_params, b.observations, b.actions)
        u = critic.apply(agent.target_critic_params, b.observations, b.actions).min(0) - value.apply(
            agent.value_params, b.observations)
        expected_v = jnp.mean(expectile_loss(u, 0.99))
        return jnp.mean((q - y) ** 2), expected_v

    expected_q, expected_v = by_hand(agent, batch, extra)
    np.testing.assert_allclose(metrics["critic_loss"], expected_q, rtol=1e-5)
    np.testing.assert_allclose(metrics["critic_loss_on"], metrics["critic_loss"], rtol=1e-6)
    np.testing.assert_allclose(metrics["value_loss"], expected_v, rtol=1e-5, atol=1e-7)


def test_iql_mixed_strata_split_losses():
    agent = _iql()
    batch = _batch(jax.random.PRNGKey(3))
    online_like = (jnp.arange(B) < 3)[None]
    _, m = agent.update(batch, online_like)
    assert float(m["frac_online_like"]) == pytest.approx(3 / B)
    # the batch loss is the sample-weighted mix of the two strata
    np.testing.assert_allclose(m["value_loss"], (3 * m["value_loss_on"] + 5 * m["value_loss_off"]) / B, rtol=1e-5)
    np.testing.assert_allclose(m["critic_loss"], (3 * m["critic_loss_on"] + 5 * m["critic_loss_off"]) / B,
                               rtol=1e-5)
    # the offline-like stratum is unaffected by the other samples' stratum
    _, base = agent.update(batch, jnp.zeros((1, B), bool))
    @jax.jit
    def by_hand(agent, batch):
        from stratdiff.agents.iql import _networks
        critic, value, _ = _networks(agent.config, ACT_DIM)
        b = jax.tree_util.tree_map(lambda x: x[0], batch)
        y = b.rewards + 0.99 * b.masks * value.apply(agent.value_params, b.next_observations)
        q = critic.apply(agent.critic_params, b.observations, b.actions)
        return jnp.mean((q - y) ** 2, axis=0)

    np.testing.assert_allclose(m["critic_loss_off"], by_hand(agent, batch)[3:].mean(), rtol=1e-5)


def _calql(**kw):
    config = dataclasses.replace(make_config(CalQL, "locomotion"), actor_hidden_dims=(16, 16),
                                 critic_hidden_dims=(16, 16), cql_n_actions=3, **kw)
    return CalQL.create(jax.random.PRNGKey(0), OBS_DIM, ACT_DIM, config)


def test_calql_all_online_like_drops_the_regulariser():
    """Eq. 11: with every sample online-like only the TD loss remains (same sampled actions
    and TD target as the base update, which does carry the regulariser)."""
    agent = _calql()
    batch = _batch(jax.random.PRNGKey(4))
    _, m_on = agent.update(batch, jnp.ones((1, B), bool))
    _, m_off = agent.update(batch, jnp.zeros((1, B), bool))  # same trace as m_on
    assert float(m_on["cql_loss"]) == 0.0 and float(m_on["cql_diff"]) == 0.0
    assert float(m_on["critic_loss"]) == float(m_on["td_loss"])
    np.testing.assert_allclose(m_on["td_loss"], m_off["td_loss"], rtol=1e-6)
    assert float(m_off["cql_loss"]) > 0.0
    np.testing.assert_allclose(m_off["critic_loss"], m_off["td_loss"] + m_off["cql_loss"], rtol=1e-6)


def test_calql_regulariser_averaged_over_offline_like_only():
    """Eq. 11 with a mixed batch: cql_diff is the mean of the per-sample regulariser over
    the offline-like samples; the TD loss still covers the whole batch."""
    agent = _calql()
    batch = _batch(jax.random.PRNGKey(5))
    online_like = (jnp.arange(B) % 2 == 0)[None]
    _, m_mix = agent.update(batch, online_like)
    _, m_all = agent.update(batch, jnp.zeros((1, B), bool))
    # identical key, so identical sampled actions and TD terms
    np.testing.assert_allclose(m_mix["td_loss"], m_all["td_loss"], rtol=1e-6)
    np.testing.assert_allclose(m_mix["td_loss"], (m_mix["critic_loss_on"] + m_mix["critic_loss_off"]) / 2,
                               rtol=1e-5)
    assert float(m_mix["cql_diff"]) != pytest.approx(float(m_all["cql_diff"]), rel=1e-4)
    np.testing.assert_allclose(m_mix["cql_loss"], 10.0 * 2 * m_mix["cql_diff"], rtol=1e-5)


@pytest.mark.parametrize("lagrange", [False, True])
def test_calql_gathered_regulariser_equals_masked_form(lagrange):
    """offline_rows=k computes the regulariser on k gathered rows: the same losses, metrics
    and updated parameters as the masked form to float rounding (same sampled actions); a
    bound above the count still matches; a bound below it gives a NaN loss, not a wrong one."""
    agent = _calql(cql_lagrange=lagrange, cql_target_action_gap=0.8)
    u_batch = jax.tree_util.tree_map(lambda x: jnp.concatenate([x, x[:, ::-1]]), _batch(jax.random.PRNGKey(7)))
    online_like = jnp.stack([jnp.arange(B) % 3 == 0, jnp.arange(B) >= 5])  # 5 and 5 offline-like of 8
    new_mask, m_mask = agent.update(u_batch, online_like)
    for k in (5, 6):
        new_k, m_k = agent.update(u_batch, online_like, offline_rows=k)
        for key in ("critic_loss", "td_loss", "cql_loss", "cql_diff", "alpha_prime_loss", "actor_loss"):
            np.testing.assert_allclose(m_k[key], m_mask[key], rtol=2e-6, atol=1e-7, err_msg=key)
        assert float(m_mask["cql_diff"]) != 0.0
        for a, b in zip(jax.tree_util.tree_leaves(new_k.critic_params),
                        jax.tree_util.tree_leaves(new_mask.critic_params), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(new_k.log_alpha_prime, new_mask.log_alpha_prime, rtol=1e-6)
    _, m_short = agent.update(u_batch, online_like, offline_rows=4)
    assert math.isnan(float(m_short["cql_loss"]))


def test_calql_lagrange_moves_alpha_prime_towards_the_gap():
    agent = _calql(cql_lagrange=True, cql_target_action_gap=1e6)  # regulariser far below the gap
    new, m = agent.update(_batch(jax.random.PRNGKey(6)))
    assert float(new.log_alpha_prime) < float(agent.log_alpha_prime)  # alpha' shrinks
    assert float(m["alpha_prime"]) == pytest.approx(math.e, rel=1e-6)  # exp(1), CORL's initial value
