"""BehaviourModel plumbing: CEP loss values, critic adapter, support actions, presets, save/load."""

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stratdiff.diffusion import (
    BehaviourModel,
    DiffusionConfig,
    SamplerConfig,
    action_similarity,
    cep_loss,
    dataset_defaults,
    draw_support_actions,
    energy_update,
    energy_update_with_critic,
    load_model,
    resolve_config,
    sample,
    save_model,
    support_actions,
    support_q_values,
    train_steps,
)

SMALL = DiffusionConfig(hidden_dims=(32, 16, 8), embed_dim=8, cond_dim=16, energy_hidden_dims=(32, 32),
                        batch_size=32, num_support=4, sampler=SamplerConfig(steps=5))


@pytest.fixture(scope="module")
def model():
    return BehaviourModel.create(jax.random.PRNGKey(0), 5, 3, SMALL)


class _ConstantNet:
    """Stands in for EnergyNet: f(s, a_t, t) = w_i for the i-th support action, whatever a_t and t."""

    def apply(self, params, observations, a_t, t):
        return jnp.broadcast_to(params["w"], a_t.shape[:-1])


def test_cep_loss_hand_computed():
    q = jnp.array([[0.0, 1.0]])
    w = jnp.array([0.0, np.log(2.0)])
    loss, info = cep_loss(_ConstantNet(), {"w": w}, jnp.zeros((1, 4)), jnp.zeros((1, 2, 3)), q,
                          jax.random.PRNGKey(0), beta=3.0)
    labels = np.array([1.0, np.exp(3.0)]) / (1.0 + np.exp(3.0))
    expected = -(labels[0] * np.log(1 / 3) + labels[1] * np.log(2 / 3))
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    # The gradient moves softmax(f) toward the labels softmax(beta Q): d loss / d w = softmax(w) - labels.
    grad = jax.grad(lambda p: cep_loss(_ConstantNet(), p, jnp.zeros((1, 4)), jnp.zeros((1, 2, 3)), q,
                                       jax.random.PRNGKey(0), 3.0)[0])({"w": w})["w"]
    np.testing.assert_allclose(np.asarray(grad), np.array([1 / 3, 2 / 3]) - labels, rtol=1e-5)
    assert float(info["cep_argmax_agree"]) == 1.0


class _Critic(flax.struct.PyTreeNode):
    w: jax.Array

    def q_value(self, observations, actions):
        return actions @ self.w + observations.sum(-1)


def test_support_q_values_adapter_and_critic_update(model):
    obs = jnp.arange(10.0).reshape(2, 5)
    support = jax.random.uniform(jax.random.PRNGKey(1), (2, 4, 3), minval=-1, maxval=1)
    critic = _Critic(jnp.array([1.0, -2.0, 0.5]))
    q = support_q_values(critic.q_value, obs, support)
    np.testing.assert_allclose(np.asarray(q), np.asarray(support @ critic.w + obs.sum(-1)[:, None]), rtol=1e-6)
    batched = support_q_values(lambda o, a: a @ critic.w + o.sum(-1)[:, None], obs, support, batched=True)
    np.testing.assert_allclose(np.asarray(batched), np.asarray(q), rtol=1e-6)
    with pytest.raises(ValueError, match="q_fn must map"):
        support_q_values(lambda o, a: jnp.zeros((3,)), obs, support)
    m1, info1 = energy_update_with_critic(model, critic, obs, support, jax.random.PRNGKey(2))
    m2, info2 = energy_update(model, obs, support, q, jax.random.PRNGKey(2))
    assert float(info1["cep_loss"]) == pytest.approx(float(info2["cep_loss"]), rel=1e-6)
    assert int(m1.energy_step) == 1
    # A new critic (new parameters) is a traced argument: no recompilation.
    compiled = energy_update_with_critic._cache_size()
    energy_update_with_critic(model, _Critic(jnp.ones(3)), obs, support, jax.random.PRNGKey(3))
    assert energy_update_with_critic._cache_size() == compiled


def test_support_actions_batched_and_chunked(model):
    obs = np.asarray(jax.random.normal(jax.random.PRNGKey(4), (10, 5)))
    key = jax.random.PRNGKey(5)
    sup = support_actions(model, jnp.asarray(obs), key)
    assert sup.shape == (10, 4, 3) and float(jnp.abs(sup).max()) <= 1.0
    drawn = draw_support_actions(model, obs, key, chunk=4)
    assert drawn.shape == (10, 4, 3) and drawn.dtype == np.float32
    # Chunk i uses fold_in(key, i): the first chunk equals a direct call on those 4 states.
    np.testing.assert_array_equal(drawn[:4], np.asarray(support_actions(model, jnp.asarray(obs[:4]),
                                                                         jax.random.fold_in(key, 0))))
    # The padded last chunk (2 real rows) equals the same rows of a direct call on the padded chunk.
    padded = np.concatenate([obs[8:], np.repeat(obs[-1:], 2, 0)])
    direct = support_actions(model, jnp.asarray(padded), jax.random.fold_in(key, 2))
    np.testing.assert_array_equal(drawn[8:], np.asarray(direct)[:2])


@pytest.mark.parametrize("scale", [None, 4.0])
def test_m_samples_per_state_equal_repeated_states(model, scale):
    # sample(..., num_samples=m) computes the (s, t) condition once per state and broadcasts it over
    # the m samples; with the same key that must be the samples of the m-times-repeated states (up to
    # float rounding, which the solver's 1/alpha_t at t = 1 amplifies: ~1e-4 here, bit-identical at
    # the cpu preset's sizes on our machine). Mixing up states or samples moves them by O(1).
    obs = jax.random.normal(jax.random.PRNGKey(6), (7, 5))
    key = jax.random.PRNGKey(7)
    unclipped = SamplerConfig(steps=5, clip=None)  # the untrained model saturates at the clip otherwise
    per_state = sample(model, obs, key, scale, num_samples=6, sampler=unclipped)
    repeated = sample(model, jnp.repeat(obs, 6, axis=0), key, scale, sampler=unclipped)
    assert per_state.shape == (7, 6, 3)
    np.testing.assert_allclose(np.asarray(per_state).reshape(42, 3), np.asarray(repeated), rtol=1e-3, atol=1e-3)
    # Another state's samples from the same noise are elsewhere: the comparison above can fail.
    shifted = sample(model, jnp.repeat(jnp.roll(obs, 1, axis=0), 6, axis=0), key, scale, sampler=unclipped)
    assert float(jnp.abs(shifted - repeated).max()) > 1.0


def test_train_steps_counts_steps_and_reuses_compilation(model):
    obs = jax.random.normal(jax.random.PRNGKey(6), (256, 5))
    act = jnp.tanh(obs[:, :3])  # deterministic actions: learnable
    m, info0 = train_steps(model, obs, act, jax.random.PRNGKey(7), num_steps=5, batch_size=32)
    compiled = train_steps._cache_size()
    for i in range(6):
        m, info = train_steps(m, obs, act, jax.random.PRNGKey(8 + i), num_steps=5, batch_size=32)
    assert int(m.step) == 35
    assert np.isfinite(float(info["score_loss"]))
    assert train_steps._cache_size() == compiled  # later calls reuse the first compilation


def test_dataset_table_and_overrides():
    assert dataset_defaults("hopper-medium-v2").guidance_scale == 8.0
    assert dataset_defaults("hopper-medium-expert-v2").guidance_scale == 2.0
    assert dataset_defaults("mujoco/halfcheetah/medium-replay-v0").guidance_scale == 8.0
    assert dataset_defaults("walker2d_medium_v2").guidance_scale == 10.0
    assert dataset_defaults("antmaze-umaze-v2").guidance_scale == 3.0
    assert dataset_defaults("antmaze-umaze-diverse-v2").guidance_scale == 1.0
    assert dataset_defaults("D4RL/antmaze/medium-play-v1").guidance_scale == 4.0
    assert dataset_defaults("antmaze-medium-diverse-v2").num_support == 32
    assert dataset_defaults("hopper-random-v2") is None
    cfg = resolve_config(DiffusionConfig(), "halfcheetah-medium-expert-v2")
    assert (cfg.guidance_scale, cfg.num_support) == (3.0, 16)
    cfg = resolve_config(DiffusionConfig(guidance_scale=0.5, num_support=8), "antmaze-umaze-v2")
    assert (cfg.guidance_scale, cfg.num_support) == (0.5, 8)  # set values always win
    assert resolve_config(DiffusionConfig(), "my-own-data").guidance_scale is None


def test_save_load_round_trip(model, tmp_path):
    obs = jax.random.normal(jax.random.PRNGKey(9), (2, 5))
    support = np.asarray(jax.random.uniform(jax.random.PRNGKey(10), (2, 4, 3), minval=-1, maxval=1))
    m, _ = energy_update(model, obs, jnp.asarray(support), jnp.asarray(support.sum(-1)), jax.random.PRNGKey(12))
    # Distinct behaviour parameters too (host arrays: no extra compilation).
    m = m.replace(score_params=jax.tree.map(lambda x: np.asarray(x) + 0.01, m.score_params))
    save_model(tmp_path / "run", m, support={"observations": support}, meta={"dataset": "toy"})
    loaded, sup, meta = load_model(tmp_path / "run")
    assert meta == {"dataset": "toy"} and loaded.config == m.config
    np.testing.assert_array_equal(sup["observations"], support)
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(m)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(loaded.step) == 0 and int(loaded.energy_step) == 1
    key = jax.random.PRNGKey(13)
    np.testing.assert_array_equal(np.asarray(sample(loaded, obs, key, 2.0)), np.asarray(sample(m, obs, key, 2.0)))
    assert not list(tmp_path.glob("run/.*tmp*"))
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(tmp_path / "missing")


def test_action_similarity_values():
    ref = np.array([[1.0, 0.0], [0.0, 1.0]])
    same = action_similarity(ref, ref)
    assert same["mse"] == 0.0 and same["l2"] == 0.0 and same["cosine"] == pytest.approx(1.0)
    assert same["within_tol"] == 1.0 and same["corr"] == pytest.approx(1.0)
    shifted = action_similarity(ref, ref + np.array([0.3, 0.4]))
    assert shifted["mse"] == pytest.approx((0.09 + 0.16) / 2) and shifted["l2"] == pytest.approx(0.5)
    assert shifted["within_tol"] == 0.0
    many = action_similarity(ref, np.stack([ref + 0.5, ref], axis=1))  # [n, 2, act]
    assert many["l2_min"] == 0.0 and many["l2"] == pytest.approx(np.sqrt(0.5) / 2)
    with pytest.raises(ValueError, match="candidate"):
        action_similarity(ref, np.zeros((3, 2)))
