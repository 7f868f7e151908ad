"""The amortised guided-policy score (stratifier.score=amortised): g recovers a known Gaussian
policy, scores like Eq. 10's Gaussian KL, splits the toy batch, keeps its schedule and survives a
checkpoint. A StratDiff-IQL smoke run with it, killed and resumed, is in
test_stratify_stratdiff_runs.py."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stratdiff.diffusion import sample
from stratdiff.stratify.amortised import MIN_STD, PRETRAIN_BATCH, AmortisedScore, Replay, online_update, pretrain
from stratdiff.stratify.split import score_gaussian, score_gaussian_fit
from test_stratify_stratdiff import ACT, N, OBS, behaviour_action, toy, toy_batch  # noqa: F401
from test_stratify_stratdiff import make_stratifier as exact_stratifier



def known_policy(obs):
    """A state-dependent Gaussian: mean 0.5 tanh(s), std 0.05 + 0.1 |s|."""
    return 0.5 * jnp.tanh(obs), 0.05 + 0.1 * jnp.abs(obs)


def test_g_recovers_a_known_gaussian_policy():
    key = jax.random.PRNGKey(0)
    g = AmortisedScore.create(key, OBS, ACT, (64, 64), lr=3e-3)

    @jax.jit
    def step(g, k):
        k_obs, k_a = jax.random.split(k)
        obs = jax.random.uniform(k_obs, (128, OBS), minval=-1.5, maxval=1.5)
        mean, std = known_policy(obs)
        samples = mean[:, None] + std[:, None] * jax.random.normal(k_a, (128, 8, OBS))
        return g.update(obs, samples)

    for i in range(1500):
        g, loss = step(g, jax.random.fold_in(key, i))
    obs = jax.random.uniform(jax.random.PRNGKey(1), (512, OBS), minval=-1.5, maxval=1.5)
    mean, std = g.mean_std(obs)
    true_mean, true_std = known_policy(obs)
    assert float(jnp.mean(jnp.abs(mean - true_mean))) < 0.02
    assert float(jnp.mean(jnp.abs(std / true_std - 1.0))) < 0.15
    assert int(g.step) == 1500


def clipped_policy_samples(obs, key, m=8):
    """Dimension 0: clip(1.5 + 0.3 N, -1, 1), on the bound for about 95% of draws (all M on it for
    two thirds of the states); dimension 1: 0.5 tanh(s) + 0.1 N, never clipped."""
    noise = jax.random.normal(key, (obs.shape[0], m, 2))
    dim0 = jnp.clip(1.5 + 0.3 * noise[..., 0], -1.0, 1.0)
    dim1 = 0.5 * jnp.tanh(obs[:, None, 0]) + 0.1 * noise[..., 1]
    return jnp.stack([dim0, dim1], axis=-1)


def test_fit_target_learns_the_floored_m_sample_fit_where_likelihood_learns_the_spread():
    """Where guided samples pile up on a clip bound, the exact form's fitted sigma of M = 8 samples
    is mostly the 1e-2 floor; g trained on `fit` predicts that (E log sigma_hat), g trained on
    `likelihood` predicts the population spread, orders of magnitude wider."""
    key = jax.random.PRNGKey(3)
    obs_dim = 3
    draws = clipped_policy_samples(jnp.zeros((20000, obs_dim)), jax.random.PRNGKey(9))
    expected_log_fit = np.asarray(jnp.mean(jnp.log(jnp.maximum(draws.std(1), MIN_STD)), axis=0))
    population_std = np.asarray(draws.reshape(-1, 2).std(0))
    learned = {}
    for target in ("likelihood", "fit"):
        g = AmortisedScore.create(key, obs_dim, 2, (64, 64), lr=3e-3, target=target)

        @jax.jit
        def step(g, k):
            k_obs, k_a = jax.random.split(k)
            obs = jax.random.uniform(k_obs, (128, obs_dim), minval=-1.5, maxval=1.5)
            return g.update(obs, clipped_policy_samples(obs, k_a))

        for i in range(1500):
            g, _ = step(g, jax.random.fold_in(key, i))
        mean, std = g.mean_std(jnp.zeros((1, obs_dim)))
        learned[target] = (np.asarray(mean[0]), np.log(np.asarray(std[0])))
    assert population_std[0] > 0.03 and expected_log_fit[0] < np.log(population_std[0]) - 0.8
    assert abs(learned["fit"][1][0] - expected_log_fit[0]) < 0.3
    assert abs(learned["likelihood"][1][0] - np.log(population_std[0])) < 0.3
    assert abs(learned["fit"][1][1] - expected_log_fit[1]) < 0.15  # the unclipped dimension: 8-sample fit
    for target in learned:
        assert abs(learned[target][0][1]) < 0.03 and abs(learned[target][0][0] - float(draws[..., 0].mean())) < 0.03
    with pytest.raises(ValueError, match="amortised_target"):
        AmortisedScore.create(key, obs_dim, 2, target="moments")


def test_score_gaussian_is_the_gaussian_fit_kl_and_floors_sigma():
    actions = jnp.array([[0.1, -0.2]])
    guided = jnp.array([[[0.0, 0.0], [0.2, -0.4], [0.1, -0.2], [0.3, 0.1]]])
    mean, std = guided.mean(1), guided.std(1)
    np.testing.assert_array_equal(score_gaussian(actions, mean, std, 0.01), score_gaussian_fit(actions, guided, 0.01))
    # by hand, one dimension: log(std / s0) + (s0^2 + d^2) / (2 std^2) - 1/2
    by_hand = np.log(0.5 / 0.01) + (0.01**2 + 0.3**2) / (2 * 0.25) - 0.5
    np.testing.assert_allclose(score_gaussian(jnp.array([0.3]), jnp.array([0.0]), jnp.array([0.5]), 0.01), by_hand,
                               rtol=1e-6)
    g = AmortisedScore.create(jax.random.PRNGKey(0), OBS, ACT, (8,))
    g = g.replace(params=jax.tree_util.tree_map(lambda p: jnp.full_like(p, -10.0), g.params))
    assert float(jnp.min(g.mean_std(jnp.ones((3, OBS)))[1])) == pytest.approx(MIN_STD)


def _amortised(model, obs, guidance_scale=None, steps=600, **options):
    g = AmortisedScore.create(jax.random.PRNGKey(11), OBS, ACT, (64, 64), lr=3e-3)
    g, meta = pretrain(g, model, np.asarray(obs[:1024]), jax.random.PRNGKey(12), guidance_scale, steps, 8,
                       model.config.sampler)
    support = jnp.repeat(behaviour_action(obs[:256], jax.random.PRNGKey(5))[:, None], 8, axis=1)
    from stratdiff.stratify.stratdiff import StratDiffConfig, make_stratifier

    strat = make_stratifier(model, obs[:256], support, StratDiffConfig(score="amortised", **options), 0.5,
                            guidance_scale, model.config.sampler, g)
    return strat, meta


def test_pretrained_g_matches_the_behaviour_model_and_splits_like_the_exact_score(toy):
    model, agent, obs = toy
    strat, meta = _amortised(model, obs)
    assert meta["loss"][-1] < meta["loss"][0] and meta["pool_states"] == 1024
    # g's Gaussian against 64 of the behaviour model's own samples per state (on held-out states)
    probe = obs[-256:]
    mean, std = strat.amortised.mean_std(probe)
    samples = sample(model, probe, jax.random.PRNGKey(13), None, num_samples=64)
    assert float(jnp.mean(jnp.abs(mean - samples.mean(1)))) < 0.02
    assert abs(float(jnp.median(std / samples.std(1))) - 1.0) < 0.2
    assert float(jnp.mean(jnp.abs(mean - 0.6 * jnp.tanh(probe)))) < 0.05  # the toy behaviour's mean
    split = jax.jit(lambda s, a, b, k: s.split(a, b, k))
    batch, key = toy_batch(jax.random.PRNGKey(7)), jax.random.PRNGKey(8)
    new, online_like, _, metrics = split(strat, agent, batch, key)
    online_like = np.asarray(online_like[0])
    accuracy = 0.5 * (np.mean(~online_like[:N]) + np.mean(online_like[N:]))
    assert accuracy >= 0.85, accuracy
    _, exact, _, _ = split(exact_stratifier(model, obs, None), agent, batch, key)
    assert np.mean(np.asarray(exact[0]) == online_like) >= 0.85
    # one online step of g per call, on fresh guided samples; its loss is logged
    assert int(new.amortised.step) == int(strat.amortised.step) + 1 and int(new.calls) == 1
    assert np.isfinite(float(metrics["strat/amortised_loss"])) and float(metrics["strat/amortised_loss"]) != 0.0


def test_amortised_every_schedule_and_checkpoint_state(toy):
    model, agent, obs = toy
    strat, _ = _amortised(model, obs, guidance_scale=1.0, steps=200, amortised_every=2, amortised_states=4)
    split = jax.jit(lambda s, a, b, k: s.split(a, b, k))
    batch = toy_batch(jax.random.PRNGKey(9))
    steps, losses = [], []
    for i in range(4):
        strat, _, _, metrics = split(strat.scheduled(), agent, batch, jax.random.PRNGKey(30 + i))
        steps.append(int(strat.amortised.step))
        losses.append(float(metrics["strat/amortised_loss"]))
    start = steps[0] - 1
    assert steps == [start + 1, start + 1, start + 2, start + 2]
    assert losses[0] == losses[1] and losses[2] == losses[3] and losses[2] != losses[0]
    fresh, _ = _amortised(model, obs, guidance_scale=1.0, steps=200, amortised_every=2, amortised_states=4)
    restored = fresh.load_state_dict(strat.state_dict())
    assert int(restored.amortised.step) == steps[-1] and float(restored.amortised_loss) == losses[-1]
    for a, b in zip(jax.tree_util.tree_leaves(restored.amortised.params),
                    jax.tree_util.tree_leaves(strat.amortised.params), strict=True):
        np.testing.assert_array_equal(a, b)
    # the exact score's checkpoint state has no amortised entries (older checkpoints still load)
    assert "amortised" not in exact_stratifier(model, obs, 1.0).state_dict()


def test_online_update_uses_the_requested_number_of_states(toy):
    model, _, obs = toy
    g = AmortisedScore.create(jax.random.PRNGKey(0), OBS, ACT, (16,))
    new, loss = online_update(g, model, obs[:100], jax.random.PRNGKey(1), None, 5, 4, model.config.sampler)
    assert int(new.step) == 1 and np.isfinite(float(loss))
    assert any(bool(jnp.any(a != b)) for a, b in zip(jax.tree_util.tree_leaves(new.params),
                                                     jax.tree_util.tree_leaves(g.params)))


def test_replay_takes_fresh_samples_in_place_of_the_oldest_and_steps_on_its_rows(toy):
    model, _, obs = toy
    g = AmortisedScore.create(jax.random.PRNGKey(0), OBS, ACT, (16,), replay=6, num_samples=4)
    g, _ = pretrain(g, model, np.asarray(obs[:50]), jax.random.PRNGKey(2), None, 200, 4, model.config.sampler)
    ring = g.replay
    # the replay starts as 6 distinct pool states with their samples
    assert int(ring.next) == 0 and len({tuple(np.round(np.asarray(r), 6)) for r in ring.observations}) == 6
    assert all(any(np.array_equal(r, p) for p in np.asarray(obs[:50])) for r in np.asarray(ring.observations))
    pool_rows = ring.observations
    added = ring.add(obs[100:104], jnp.full((4, 4, ACT), 0.5))
    np.testing.assert_array_equal(added.observations[:4], obs[100:104])
    np.testing.assert_array_equal(added.observations[4:], pool_rows[4:])
    assert int(added.next) == 4
    wrapped = added.add(obs[104:107], jnp.zeros((3, 4, ACT)))  # rows 4, 5, then 0
    np.testing.assert_array_equal(np.asarray(wrapped.observations)[[4, 5, 0]], obs[104:107])
    np.testing.assert_array_equal(wrapped.observations[1:4], obs[101:104])
    assert int(wrapped.next) == 1
    # an online step: 3 fresh states into the ring, then one Adam step on replay rows
    new, loss = online_update(g, model, obs[200:203], jax.random.PRNGKey(3), None, 3, 4, model.config.sampler)
    assert int(new.step) == int(g.step) + 1 and int(new.replay.next) == 3 and np.isfinite(float(loss))
    np.testing.assert_array_equal(np.sort(np.asarray(new.replay.observations[:3]), axis=0),
                                  np.sort(np.asarray(obs[200:203]), axis=0))
    np.testing.assert_array_equal(new.replay.observations[3:], g.replay.observations[3:])
    # its loss is the replay's (all 6 rows, drawn with replacement), not the 3 fresh samples'
    fresh_only = online_update(g.replace(replay=None), model, obs[200:203], jax.random.PRNGKey(3), None, 3, 4,
                               model.config.sampler)[1]
    assert float(loss) != float(fresh_only)
    assert PRETRAIN_BATCH > 6
    restored = AmortisedScore.create(jax.random.PRNGKey(9), OBS, ACT, (16,), replay=6, num_samples=4)
    restored = restored.load_state_dict(new.state_dict())
    np.testing.assert_array_equal(restored.replay.samples, new.replay.samples)
    assert int(restored.replay.next) == 3
    with pytest.raises(ValueError, match="amortised_replay=6 exceeds"):
        pretrain(AmortisedScore.create(jax.random.PRNGKey(0), OBS, ACT, (16,), replay=6), model,
                 np.asarray(obs[:5]), jax.random.PRNGKey(2), None, 200, 8, model.config.sampler)
    assert isinstance(Replay.empty(2, OBS, 4, ACT).next, jax.Array)


def test_a_pretrained_g_is_not_reused_under_other_options(toy, tmp_path):
    import dataclasses

    from stratdiff.stratify.stratdiff import StratDiffConfig, _build_amortised

    model, _, obs = toy
    cfg = StratDiffConfig(score="amortised", amortised_hidden_dims=(16,), amortised_pool_states=64,
                          amortised_pretrain_steps=200, amortised_replay=8, amortised_states=4)
    g = _build_amortised(tmp_path, cfg, model, np.asarray(obs[:64]), None, jax.random.PRNGKey(0), False)
    again = _build_amortised(tmp_path, cfg, model, np.asarray(obs[:64]), None, jax.random.PRNGKey(1), False)
    np.testing.assert_array_equal(again.replay.observations, g.replay.observations)  # loaded, not retrained
    meta = json.loads((tmp_path / "amortised.json").read_text())
    assert meta["replay"] == 8 and meta["pretrain_steps"] == 200 and meta["pool_states"] == 64
    with pytest.raises(ValueError, match="pretrain_steps: 200 there, 400 here"):
        _build_amortised(tmp_path, dataclasses.replace(cfg, amortised_pretrain_steps=400), model,
                         np.asarray(obs[:64]), None, jax.random.PRNGKey(0), False)
    with pytest.raises(ValueError, match="replay: 8 there, 16 here"):
        _build_amortised(tmp_path, dataclasses.replace(cfg, amortised_replay=16), model,
                         np.asarray(obs[:64]), None, jax.random.PRNGKey(0), False)
    with pytest.raises(ValueError, match="amortised_replay must be 0"):
        StratDiffConfig(score="amortised", amortised_replay=3, amortised_states=4)
