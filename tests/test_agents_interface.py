"""Shared tester run over every registered agent: create, update, shapes, action bounds,
save/load, no re-tracing, and the stratum contract (all-False = the base loss)."""

from __future__ import annotations

import dataclasses

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stratdiff.agents import AGENTS, make_config
from stratdiff.types import Batch

OBS_DIM, ACT_DIM, U, B = 5, 2, 2, 16


def tiny_config(cls, **overrides):
    """The agent's locomotion preset with 32-wide two-layer nets and few sampled actions."""
    config = make_config(cls, "locomotion")
    small = {f.name: (32, 32) for f in dataclasses.fields(config) if f.name.endswith("hidden_dims")}
    small |= {f.name: 4 for f in dataclasses.fields(config) if f.name in ("cql_n_actions", "num_target_candidates")}
    return dataclasses.replace(config, **(small | overrides))


def random_batch(key, u=U, b=B):
    ks = jax.random.split(key, 5)
    return Batch(
        observations=jax.random.normal(ks[0], (u, b, OBS_DIM)),
        actions=jax.random.uniform(ks[1], (u, b, ACT_DIM), minval=-1.0, maxval=1.0),
        rewards=jax.random.normal(ks[2], (u, b)),
        next_observations=jax.random.normal(ks[3], (u, b, OBS_DIM)),
        masks=(jnp.arange(b) % 5 != 0).astype(jnp.float32) * jnp.ones((u, 1)),
        mc_returns=jax.random.normal(ks[4], (u, b)),
        source=jnp.zeros((u, b), jnp.int32),
    )


def trees_equal(a, b) -> bool:
    leaves_a, tree_a = jax.tree_util.tree_flatten(a)
    leaves_b, tree_b = jax.tree_util.tree_flatten(b)
    return tree_a == tree_b and all(np.array_equal(x, y) for x, y in zip(leaves_a, leaves_b))


@pytest.fixture(scope="module", params=sorted(AGENTS))
def setup(request):
    cls = AGENTS[request.param]
    agent = cls.create(jax.random.PRNGKey(0), OBS_DIM, ACT_DIM, tiny_config(cls))
    batch = random_batch(jax.random.PRNGKey(1))
    new_agent, metrics = agent.update(batch)
    return cls, agent, batch, new_agent, metrics


def test_registry_configs_and_presets():
    for name, cls in AGENTS.items():
        assert dataclasses.is_dataclass(cls.config_class), name
        assert set(cls.presets) >= {"locomotion", "antmaze"}, name
        assert cls.presets["locomotion"] == cls.config_class(), f"{name}: locomotion preset != defaults"
        assert cls.presets["antmaze"] != cls.presets["locomotion"], name
        with pytest.raises(ValueError, match="unknown option"):
            make_config(cls, "locomotion", {"no_such_field": 1})
        with pytest.raises(ValueError, match="unknown preset"):
            make_config(cls, "no_such_preset")


def test_update_finite_metrics_and_step(setup):
    _, agent, _, new_agent, metrics = setup
    assert {"critic_loss", "q_mean", "actor_loss"} <= set(metrics)
    for key, value in metrics.items():
        assert np.ndim(value) == 0 and np.isfinite(value), key
    assert int(new_agent.step) == int(agent.step) + U
    # parameters moved, shapes kept
    assert not trees_equal(agent.critic_params, new_agent.critic_params)
    assert jax.tree_util.tree_map(jnp.shape, agent) == jax.tree_util.tree_map(jnp.shape, new_agent)


def test_parameter_shapes(setup):
    cls, agent, _, _, _ = setup
    num = agent.config.num_critics
    for leaf in jax.tree_util.tree_leaves(agent.critic_params):
        assert leaf.shape[0] == num  # one batched ensemble, leading member axis
    kernels = [x for path, x in jax.tree_util.tree_leaves_with_path(agent.critic_params)
               if "kernel" in jax.tree_util.keystr(path)]
    assert sorted(k.shape for k in kernels)[-1] in {(num, OBS_DIM + ACT_DIM, 32), (num, 32, 32)}
    assert {k.shape[1:] for k in kernels} == {(OBS_DIM + ACT_DIM, 32), (32, 32), (32, 1)}
    q = agent.q_value(jnp.zeros((7, OBS_DIM)), jnp.zeros((7, ACT_DIM)))
    assert q.shape == (7,)


def test_actions_within_bounds(setup):
    _, _, _, agent, _ = setup
    obs = 10.0 * jax.random.normal(jax.random.PRNGKey(2), (64, OBS_DIM))
    for deterministic in (True, False):
        a = agent.act(obs, jax.random.PRNGKey(3), deterministic=deterministic)
        assert a.shape == (64, ACT_DIM)
        assert bool(jnp.all(jnp.abs(a) <= 1.0))
    a1 = agent.act(obs, jax.random.PRNGKey(3), deterministic=False)
    a2 = agent.act(obs, jax.random.PRNGKey(4), deterministic=False)
    assert not np.array_equal(a1, a2)
    np.testing.assert_array_equal(agent.act(obs, jax.random.PRNGKey(3), deterministic=False), a1)


def test_save_load_round_trip(setup):
    cls, _, batch, agent, _ = setup
    data = flax.serialization.to_bytes(agent)
    template = cls.create(jax.random.PRNGKey(42), OBS_DIM, ACT_DIM, agent.config)
    restored = flax.serialization.from_bytes(template, data)
    assert trees_equal(restored, agent)
    a1, m1 = agent.update(batch)
    a2, m2 = restored.update(batch)
    assert trees_equal(a1, a2) and trees_equal(m1, m2)


def test_no_recompilation_on_second_update(setup):
    cls, _, _, agent, _ = setup  # the fixture's call compiled this config's update
    size = cls.update._cache_size()
    agent, _ = agent.update(random_batch(jax.random.PRNGKey(6)))
    agent, _ = agent.update(random_batch(jax.random.PRNGKey(7)))
    assert cls.update._cache_size() == size


def test_all_offline_like_equals_base_update_exactly(setup):
    _, agent, batch, base_agent, base_metrics = setup
    strat_agent, strat_metrics = agent.update(batch, jnp.zeros((U, B), bool))
    assert trees_equal(base_agent, strat_agent)
    for key, value in base_metrics.items():
        np.testing.assert_array_equal(value, strat_metrics[key], err_msg=key)
    assert float(strat_metrics["frac_online_like"]) == 0.0
    assert float(strat_metrics["critic_loss_off"]) > 0.0
    assert float(strat_metrics["critic_loss_on"]) == 0.0


def test_all_online_like_changes_update(setup):
    _, agent, batch, base_agent, base_metrics = setup
    on_agent, on_metrics = agent.update(batch, jnp.ones((U, B), bool))
    assert float(on_metrics["frac_online_like"]) == 1.0
    assert float(on_metrics["critic_loss_off"]) == 0.0
    assert float(on_metrics["critic_loss_on"]) > 0.0
    assert not trees_equal(base_agent.critic_params, on_agent.critic_params)


def test_bad_batch_shape_is_a_clear_error(setup):
    _, agent, batch, _, _ = setup
    flat = jax.tree_util.tree_map(lambda x: x[0], batch)  # forgot the UTD axis
    with pytest.raises(ValueError, match="leading UTD axis"):
        agent.update(flat)
    with pytest.raises(ValueError, match="online_like"):
        agent.update(batch, jnp.zeros((U, B), jnp.float32))
