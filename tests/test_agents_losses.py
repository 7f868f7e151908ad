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
    # the bound binds on both policy terms: MC return 2.0 lifts q_next_pi 0.2 and q_pi 0.3 to 2.0
    args = dict(q_data=jnp.array([[1.0]]), q_rand=jnp.array([[[0.5]]]), q_next_pi=jnp.array([[[0.2]]]),
                logp_next_pi=jnp.array([[-0.1]]), q_pi=jnp.array([[[0.3]]]), logp_pi=jnp.array([[0.4]]),
                mc_returns=jnp.array([2.0]))
    bound = cql_regulariser(**args, act_dim=1, temperature=1.0, importance_sample=True, calibration=True,
                            clip_min=-200.0, clip_max=math.inf)
    expected = math.log(math.exp(0.5 - log_half) + math.exp(2.0 + 0.1) + math.exp(2.0 - 0.4)) - 1.0
    assert float(bound[0, 0]) == pytest.approx(expected, rel=1e-6)
    free = cql_regulariser(**args, act_dim=1, temperature=1.0, importance_sample=True, calibration=False,
                           clip_min=-200.0, clip_max=math.inf)
    expected_free = math.log(math.exp(0.5 - log_half) + math.exp(0.2 + 0.1) + math.exp(0.3 - 0.4)) - 1.0
    assert float(free[0, 0]) == pytest.approx(expected_free, rel=1e-6)
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
    linear = dataclasses.replace(cfg, online_value_loss="linear")  # Eq. 14 literally: u itself on b_on
    np.testing.assert_allclose(stratified_value_loss(u, on, linear), [0.3 * 4, 0.7, -2.0, 1.0], rtol=1e-6)
    symmetric = dataclasses.replace(cfg, online_value_loss="symmetric")  # Eq. 14 bounded: 0.5 u^2 on b_on
    np.testing.assert_allclose(stratified_value_loss(u, on, symmetric), [0.3 * 4, 0.7, 0.5 * 4, 0.5], rtol=1e-6)
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
    # each sample's regulariser R_i, read off an update where it is the only offline-like one
    # (the same key: the same sampled actions); cql_diff must be their mean over b_off exactly
    per = np.array([float(agent.update(batch, (jnp.arange(B) != i)[None])[1]["cql_diff"]) for i in range(B)])
    off = ~np.asarray(online_like[0])
    np.testing.assert_allclose(float(m_mix["cql_diff"]), per[off].mean(), rtol=1e-5)
    np.testing.assert_allclose(float(m_all["cql_diff"]), per.mean(), rtol=1e-5)
    assert abs(per[off].mean() - per.mean()) > 1e-3  # the two means differ, so the check can fail
    np.testing.assert_allclose(m_mix["cql_loss"], 10.0 * 2 * m_mix["cql_diff"], rtol=1e-5)


def test_calql_update_feeds_the_batch_mc_returns_to_the_bound():
    """CalQL.update lower-bounds the policy-action Q values by batch.mc_returns: raising them
    above every Q raises the regulariser; without calibration they do nothing."""
    batch = _batch(jax.random.PRNGKey(10))
    high = batch.replace(mc_returns=jnp.full_like(batch.mc_returns, 50.0))
    agent = _calql()
    low_diff = float(agent.update(batch)[1]["cql_diff"])
    high_diff = float(agent.update(high)[1]["cql_diff"])
    assert high_diff > low_diff + 10.0  # logsumexp over values lifted to 50
    plain = _calql(calibration=False)
    np.testing.assert_allclose(plain.update(batch)[1]["cql_diff"], plain.update(high)[1]["cql_diff"], rtol=1e-6)


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


def test_no_online_expectile_default_is_bounded_and_the_literal_form_is_not():
    """Table 6's ablation: the symmetric loss (the --no-online-expectile default) has its minimum
    in V at Q (gradient 0 there), while Eq. 14's literal Q - V has gradient -1 in V everywhere."""
    from stratdiff.commands.train import TrainArgs, overrides_from

    assert overrides_from(TrainArgs(algo="stratdiff-iql", dataset="d", no_online_expectile=True)) == {
        "agent.online_value_loss": "symmetric"}
    cfg = IQL.presets["locomotion"]
    on = jnp.ones(3, bool)
    q = jnp.array([1.0, -2.0, 0.5])

    def grad_v(kind, v):
        c = dataclasses.replace(cfg, online_value_loss=kind)
        return jax.grad(lambda v: stratified_value_loss(q - v, on, c).sum())(v)

    np.testing.assert_allclose(grad_v("symmetric", q), 0.0, atol=1e-7)
    np.testing.assert_allclose(grad_v("symmetric", q + 1.0), [1.0, 1.0, 1.0], rtol=1e-6)  # pulls V back to Q
    np.testing.assert_allclose(grad_v("linear", q + 100.0), [-1.0, -1.0, -1.0])  # pushes V up at any V


def test_iql_actor_learning_rate_cosine_offline_then_constant():
    """The actor's rate: lr * (1 + cos(pi t / N)) / 2 over the N offline updates, then lr (never 0)."""
    from stratdiff.agents.iql import actor_learning_rate

    cfg = dataclasses.replace(IQL.presets["locomotion"], actor_lr=3e-4, actor_lr_decay_steps=1000)
    rate = jax.jit(actor_learning_rate(cfg))
    assert float(rate(0)) == pytest.approx(3e-4, rel=1e-6)
    assert float(rate(250)) == pytest.approx(3e-4 * (1 + math.cos(math.pi / 4)) / 2, rel=1e-5)
    assert float(rate(500)) == pytest.approx(1.5e-4, rel=1e-5)
    assert float(rate(999)) == pytest.approx(3e-4 * (1 + math.cos(math.pi * 0.999)) / 2, rel=1e-2)  # float32
    assert 0.0 < float(rate(999)) < 1e-9
    for t in (1000, 1001, 5000, 10**7):  # the online phase: the configured rate
        assert float(rate(t)) == pytest.approx(3e-4, rel=1e-6)
    constant = actor_learning_rate(dataclasses.replace(cfg, actor_lr_decay_steps=0))
    assert float(constant(0)) == float(constant(500)) == pytest.approx(3e-4, rel=1e-6)
    # the runner's config: N = the run's offline steps unless set
    assert make_config(IQL, "locomotion", {}, offline_steps=5000).actor_lr_decay_steps == 5000
    assert make_config(IQL, "locomotion", {"actor_lr_decay_steps": 0}, offline_steps=5000).actor_lr_decay_steps == 0
    assert make_config(CalQL, "locomotion", {}, offline_steps=5000) == make_config(CalQL, "locomotion")


def test_iql_actor_step_size_follows_the_schedule():
    """The agent's actor steps by the scheduled rate at its own update count: from the same state,
    an update under the N = 4 cosine moves the actor by rate(count) / lr of the constant-rate move."""
    agent = _iql(actor_lr_decay_steps=4)
    batch = _batch(jax.random.PRNGKey(7))
    constant_cfg = dataclasses.replace(agent.config, actor_lr_decay_steps=0)

    def move(a):
        new, _ = a.update(batch)
        return new, jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda x, y: x - y, new.actor_params,
                                                                     a.actor_params))

    for t in range(6):
        count = int(jax.tree_util.tree_leaves(agent.actor_opt_state)[0])
        assert count == t == int(agent.step)
        nxt, scheduled = move(agent)
        _, constant = move(agent.replace(config=constant_cfg))
        factor = (1 + math.cos(math.pi * t / 4)) / 2 if t < 4 else 1.0
        for a, b in zip(scheduled, constant):
            np.testing.assert_allclose(a, factor * b, rtol=1e-3, atol=1e-7)  # float32 parameter deltas
        agent = nxt


def test_calql_policy_log_std_multiplier_and_offset():
    """Cal-QL's tanh-Gaussian as CORL / JaxCQL: log_std = m * out + c with learned m = 1, c = -1 at
    the start, so the initial std is ~e^-1 = 0.37 (the last layer's 1e-2 init keeps out ~ 0)."""
    from stratdiff.agents.calql import _networks

    agent = _calql()
    _, actor = _networks(agent.config, ACT_DIM)
    obs = jax.random.normal(jax.random.PRNGKey(8), (B, OBS_DIM))
    _, log_std = actor.apply(agent.actor_params, obs)
    np.testing.assert_allclose(log_std, -1.0, atol=0.05)
    p = agent.actor_params["params"]
    assert float(p["log_std_multiplier"]) == 1.0 and float(p["log_std_offset"]) == -1.0
    new, _ = agent.update(_batch(jax.random.PRNGKey(9)))
    assert float(new.actor_params["params"]["log_std_offset"]) != -1.0  # learned with the policy
    plain = _calql(log_std_multiplier=None)  # without them: the MLP's own output, std ~ 1
    _, plain_actor = _networks(plain.config, ACT_DIM)
    np.testing.assert_allclose(plain_actor.apply(plain.actor_params, obs)[1], 0.0, atol=0.05)
