"""Dataset trajectory splitting, state normalisation, reward transforms and MC returns,
against hand-computed values."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stratdiff.data import (
    REWARD_TRANSFORMS,
    Dataset,
    DatasetInfo,
    RewardTransform,
    StateNormalizer,
    apply_reward_transform,
    make_reward_transform,
    mc_returns,
)


def chain_dataset(rewards, terminals=(), timeouts=(), breaks=()):
    """1-d observations 0, 1, 2, ... with next_obs = obs + 1, except at `breaks` rows."""
    n = len(rewards)
    obs = np.arange(n, dtype=np.float32)[:, None]
    nxt = obs + 1
    for b in breaks:
        nxt[b] += 100.0
    flag = lambda rows: np.isin(np.arange(n), rows)  # noqa: E731
    return Dataset(obs, np.zeros((n, 1)), np.asarray(rewards, np.float32), nxt, flag(terminals), flag(timeouts),
                   info=DatasetInfo(name="chain"))


def test_trajectory_splitting_at_terminals_timeouts_and_discontinuities():
    ds = chain_dataset(np.arange(10), terminals=[1], timeouts=[4], breaks=[6])
    np.testing.assert_array_equal(np.flatnonzero(ds.episode_ends), [1, 4, 6, 9])
    assert ds.num_episodes == 4
    np.testing.assert_array_equal(ds.episode_starts(), [0, 2, 5, 7])
    np.testing.assert_array_equal(ds.episode_lengths(), [2, 3, 2, 3])
    np.testing.assert_allclose(ds.episode_returns(), [0 + 1, 2 + 3 + 4, 5 + 6, 7 + 8 + 9])
    # next_obs equal to the following obs within tolerance 1e-6 is continuous
    obs = np.zeros((3, 2), np.float32)
    nxt = obs + np.float32(5e-7)
    assert Dataset(obs, np.zeros((3, 1)), np.zeros(3), nxt, np.zeros(3), np.zeros(3)).num_episodes == 1


def test_from_episodes_and_concatenate():
    ep = lambda t, v: dict(observations=np.full((t + 1, 2), v), actions=np.zeros((t, 1)),  # noqa: E731
                           rewards=np.full(t, v), terminations=np.eye(t, dtype=bool)[-1])
    ds = Dataset.from_episodes([ep(3, 1.0), ep(2, 2.0)], DatasetInfo(name="x"))
    assert ds.size == 5 and ds.num_episodes == 2
    np.testing.assert_array_equal(ds.terminals, [0, 0, 1, 0, 1])
    both = Dataset.concatenate([ds, ds])
    assert both.size == 10 and both.num_episodes == 4
    np.testing.assert_allclose(both.episode_returns(), [3, 4, 3, 4])


def test_mc_returns_hand_computed():
    r = np.array([1, 2, 3, 4, 5], np.float32)
    ends = np.array([0, 0, 1, 0, 0], bool)
    np.testing.assert_allclose(mc_returns(r, ends, 0.5), [2.75, 3.5, 3.0, 6.5, 5.0])
    # the last row always ends a trajectory; gamma 1 is the plain reverse cumsum
    np.testing.assert_allclose(mc_returns(r, np.zeros(5, bool), 1.0), [15, 14, 12, 9, 5])
    # on a dataset: split at the terminal (row 1), time-out (row 4), discontinuity (row 6)
    ds = chain_dataset(np.ones(10), terminals=[1], timeouts=[4], breaks=[6])
    g = 0.9
    expected = [1 + g, 1, 1 + g + g * g, 1 + g, 1, 1 + g, 1, 1 + g + g * g, 1 + g, 1]
    np.testing.assert_allclose(mc_returns(ds.rewards, ds.episode_ends, g), expected, rtol=1e-6)


def test_mc_returns_sparse_rule():
    r = np.array([-5, -5, -5, -5, 5], np.float32)  # antmaze_calql units: failure -5, success +5
    ends = np.array([0, 0, 1, 0, 1], bool)
    out = mc_returns(r, ends, 0.9, sparse_failure_reward=-5.0)
    np.testing.assert_allclose(out, [-50, -50, -50, -5 + 0.9 * 5, 5], rtol=1e-6)
    # without the rule the failing trajectory is an ordinary discounted sum
    np.testing.assert_allclose(mc_returns(r, ends, 0.9)[:3], [-5 - 4.5 - 4.05, -9.5, -5], rtol=1e-6)


def test_mc_returns_matches_loop():
    rng = np.random.default_rng(0)
    n = 5000
    r = rng.normal(size=n).astype(np.float32)
    ends = rng.random(n) < 0.01
    ref = np.zeros(n)
    g = 0.0
    for i in range(n - 1, -1, -1):
        g = r[i] + 0.99 * (0.0 if ends[i] or i == n - 1 else g)
        ref[i] = g
    np.testing.assert_allclose(mc_returns(r, ends, 0.99), ref, rtol=1e-5, atol=1e-5)
    # its speed is measured by `stratdiff bench --only data` (a benchmark, not a timed test)
    from stratdiff.data.bench import bench_data

    out = bench_data(n=2000, episode_length=100)
    assert out["mc_returns_transitions"] == 2000 and out["mc_returns_per_s"] > 0


def test_state_normalizer_numpy_jax_and_round_trip():
    obs = np.array([[0.0, 10.0], [2.0, 10.0]], np.float32)
    norm = StateNormalizer.fit(obs)
    np.testing.assert_allclose(norm.mean, [1.0, 10.0])
    np.testing.assert_allclose(norm.std, [1.0 + 1e-3, 1e-3])
    x = np.array([[3.0, 10.002]], np.float32)
    expected = [[2.0 / 1.001, 2.0]]
    out_np = norm.normalize(x)
    assert isinstance(out_np, np.ndarray) and out_np.dtype == np.float32
    np.testing.assert_allclose(out_np, expected, rtol=1e-3)
    out_jax = jax.jit(norm.normalize)(jnp.asarray(x))
    assert isinstance(out_jax, jax.Array)
    np.testing.assert_allclose(np.asarray(out_jax), out_np, rtol=1e-6)
    back = StateNormalizer.from_dict(json.loads(json.dumps(norm.to_dict())))
    np.testing.assert_array_equal(back.mean, norm.mean)
    np.testing.assert_array_equal(back.std, norm.std)
    ident = StateNormalizer.identity(2)
    np.testing.assert_array_equal(ident.normalize(x), x)
    np.testing.assert_allclose(norm.denormalize(out_np), x, rtol=1e-5)


def test_reward_transforms():
    # two trajectories with returns 10 and 30 -> locomotion scale 1000 / 20 = 50
    ds = chain_dataset([4, 6, 10, 20], terminals=[1])
    assert set(REWARD_TRANSFORMS) == {"identity", "locomotion", "antmaze_calql", "antmaze_iql"}
    np.testing.assert_allclose(apply_reward_transform("locomotion", ds).rewards, [200, 300, 500, 1000])
    np.testing.assert_allclose(apply_reward_transform("antmaze_calql", ds).rewards, [35, 55, 95, 195])
    np.testing.assert_allclose(apply_reward_transform("antmaze_iql", ds).rewards, [3, 5, 9, 19])
    np.testing.assert_allclose(apply_reward_transform("identity", ds).rewards, [4, 6, 10, 20])
    tf = make_reward_transform("locomotion", ds)
    assert tf == RewardTransform("locomotion", 50.0, 0.0)
    assert RewardTransform.from_dict(json.loads(json.dumps(tf.to_dict()))) == tf
    assert float(tf(jnp.float32(2.0))) == 100.0
    with pytest.raises(ValueError, match="unknown reward transform 'hopper'"):
        make_reward_transform("hopper", ds)
    with pytest.raises(ValueError, match="different returns"):
        make_reward_transform("locomotion", chain_dataset([1, 1]))
