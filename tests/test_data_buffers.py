"""Offline (device) and online (host ring) buffers and the mixed batch of Algorithm 1."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stratdiff.data import (
    Dataset,
    DatasetInfo,
    OfflineBuffer,
    OnlineBuffer,
    RewardTransform,
    StateNormalizer,
    mc_returns,
    mixed_batch,
    mixed_batches,
    n_offline,
)
from stratdiff.types import OFFLINE, ONLINE


def small_dataset(n=50, seed=0):
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n + 1, 3)).astype(np.float32)
    term = np.zeros(n, bool)
    term[19] = True
    tout = np.zeros(n, bool)
    tout[34] = True
    return Dataset(obs[:-1], rng.uniform(-1, 1, (n, 2)), rng.integers(0, 2, n).astype(np.float32), obs[1:], term,
                   tout, info=DatasetInfo(name="small"))


def test_offline_buffer_contents():
    ds = small_dataset()
    norm = StateNormalizer.fit(ds.observations)
    buf = OfflineBuffer.from_dataset(ds, norm, "antmaze_calql", gamma=0.9, sparse_failure_reward=-5.0)
    assert len(buf) == 50
    np.testing.assert_allclose(np.asarray(buf.observations), norm.normalize(ds.observations), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(buf.next_observations), norm.normalize(ds.next_observations), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(buf.rewards), ds.rewards * 10 - 5)
    np.testing.assert_array_equal(np.asarray(buf.masks), 1.0 - ds.terminals)
    np.testing.assert_allclose(np.asarray(buf.mc_returns), mc_returns(ds.rewards * 10 - 5, ds.episode_ends, 0.9, -5.0))


def test_offline_sample_in_jit_is_deterministic():
    ds = small_dataset()
    buf = OfflineBuffer.from_dataset(ds)
    sample = jax.jit(lambda b, k: b.sample(k, 64))
    a, b = sample(buf, jax.random.key(3)), sample(buf, jax.random.key(3))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert a.observations.shape == (64, 3) and a.actions.shape == (64, 2) and a.rewards.shape == (64,)
    assert (np.asarray(a.source) == OFFLINE).all()
    # each sampled row is a dataset row
    rows = {tuple(o) for o in np.asarray(buf.observations).round(5)}
    assert all(tuple(o) in rows for o in np.asarray(a.observations).round(5))
    c = sample(buf, jax.random.key(4))
    assert not np.array_equal(np.asarray(a.observations), np.asarray(c.observations))


def _episode(buf, length, reward, terminal=True, start=0.0):
    for t in range(length):
        o = np.full(3, start + t, np.float32)
        buf.add(o, np.zeros(2), reward, o + 1, terminal=terminal and t == length - 1)


def test_online_buffer_mc_returns_at_episode_end_and_visibility():
    tf = RewardTransform("antmaze_calql", 10.0, -5.0)
    norm = StateNormalizer(np.full(3, 1.0), np.full(3, 2.0))
    buf = OnlineBuffer(100, 3, 2, norm, tf, gamma=0.5, sparse_failure_reward=-5.0)
    buf.add(np.zeros(3), np.zeros(2), 1.0, np.ones(3), terminal=False)
    buf.add(np.ones(3), np.zeros(2), 0.0, np.full(3, 2.0), terminal=False)
    assert len(buf) == 0  # the running episode is not sampleable yet
    with pytest.raises(ValueError, match="no finished episode"):
        buf.sample(jax.random.key(0), 4)
    buf.add(np.full(3, 2.0), np.zeros(2), 1.0, np.full(3, 3.0), terminal=True)
    assert len(buf) == 3
    # stored: normalised obs, transformed rewards 5, -5, 5, mask 0 at the terminal
    np.testing.assert_allclose(buf.observations[:3, 0], [-0.5, 0.0, 0.5])
    np.testing.assert_allclose(buf.rewards[:3], [5, -5, 5])
    np.testing.assert_array_equal(buf.masks[:3], [1, 1, 0])
    np.testing.assert_allclose(buf.mc_returns[:3], [5 - 2.5 + 1.25, -5 + 2.5, 5])
    # a failing episode (all rewards 0 -> -5) cut by the caller gets -5 / (1 - 0.5) = -10 everywhere
    _episode(buf, 4, 0.0, terminal=False, start=10)
    buf.end_episode()
    np.testing.assert_allclose(buf.mc_returns[3:7], [-10, -10, -10, -10])
    assert len(buf) == 7


def test_online_ring_buffer_wraps_and_state_dict_round_trips():
    buf = OnlineBuffer(10, 3, 2, gamma=0.9)
    _episode(buf, 6, 1.0, start=0)
    _episode(buf, 6, 2.0, start=100)  # overwrites slots 0, 1
    assert buf.count == 12 and len(buf) == 10
    _episode(buf, 3, 3.0, terminal=False, start=200)  # running: its 3 slots are not sampleable
    assert len(buf) == 7
    idx = buf.sample_indices(jax.random.key(0), 500)
    assert set(idx.tolist()) == {5, 6, 7, 8, 9, 0, 1}  # the second episode and the end of the first
    batch = buf.sample(jax.random.key(1), 16)
    assert (np.asarray(batch.source) == ONLINE).all()
    assert set(np.asarray(batch.rewards).tolist()) <= {1.0, 2.0}
    state = buf.state_dict()
    other = OnlineBuffer(10, 3, 2, gamma=0.9)
    other.load_state_dict(state)
    again = other.sample(jax.random.key(1), 16)
    for x, y in zip(jax.tree.leaves(batch), jax.tree.leaves(again)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # state dict of a half-filled buffer holds only the filled slots
    small = OnlineBuffer(10, 3, 2)
    _episode(small, 4, 1.0)
    assert small.state_dict()["observations"].shape == (4, 3)


def test_mixed_batch_share_tags_and_determinism():
    ds = small_dataset()
    offline = OfflineBuffer.from_dataset(ds)
    online = OnlineBuffer(100, 3, 2)
    key = jax.random.key(0)
    all_off = mixed_batch(key, offline, online, 32, 0.5)  # online empty -> all offline
    assert all_off.observations.shape == (32, 3) and (np.asarray(all_off.source) == OFFLINE).all()
    _episode(online, 10, 7.0, start=1000)  # online rewards 7 are easy to tell apart
    batch = mixed_batch(key, offline, online, 32, 0.25)
    src = np.asarray(batch.source)
    np.testing.assert_array_equal(src, [OFFLINE] * 8 + [ONLINE] * 24)
    rew = np.asarray(batch.rewards)
    assert (rew[8:] == 7.0).all() and (rew[:8] != 7.0).all()
    assert (np.asarray(batch.observations)[8:] >= 1000).all()
    again = mixed_batch(key, offline, online, 32, 0.25)
    for x, y in zip(jax.tree.leaves(batch), jax.tree.leaves(again)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert n_offline(256, 0.5) == 128 and n_offline(255, 0.5) == 128 and n_offline(10, 0.0) == 0
    only_online = mixed_batch(key, offline, online, 16, 0.0)
    assert (np.asarray(only_online.source) == ONLINE).all()
    assert (np.asarray(mixed_batch(key, offline, online, 16, 1.0).source) == OFFLINE).all()


def test_mixed_batches_every_utd_row_holds_exact_source_counts():
    """UTD > 1: each of the U minibatches holds n_offline(B, rho) offline and the rest online
    samples (not U * B rows split once, which would leave whole rows offline or online)."""
    ds = small_dataset()
    offline = OfflineBuffer.from_dataset(ds)
    online = OnlineBuffer(100, 3, 2)
    _episode(online, 10, 7.0, start=1000)
    key = jax.random.key(3)
    for rho, n_off in ((0.5, 5), (0.25, 3), (0.0, 0), (1.0, 10)):
        batch = mixed_batches(key, offline, online, 4, 10, rho)
        assert batch.observations.shape == (4, 10, 3) and batch.rewards.shape == (4, 10)
        src = np.asarray(batch.source)
        assert (src == OFFLINE).sum(axis=1).tolist() == [n_off] * 4
        assert (src[:, :n_off] == OFFLINE).all() and (src[:, n_off:] == ONLINE).all()
        rew = np.asarray(batch.rewards)
        assert ((rew == 7.0) == (src == ONLINE)).all()  # the tags say where each row came from
    batch = mixed_batches(key, offline, online, 4, 10, 0.5)
    rows = np.asarray(batch.observations)
    assert not any(np.array_equal(rows[0], rows[i]) for i in range(1, 4))  # rows drawn independently
    # the utd=1 draw is the single minibatch of mixed_batch
    for x, y in zip(jax.tree.leaves(mixed_batches(key, offline, online, 1, 10, 0.25)),
                    jax.tree.leaves(mixed_batch(key, offline, online, 10, 0.25))):
        np.testing.assert_array_equal(np.asarray(x)[0], np.asarray(y))


def test_split_size_and_batch_share_use_one_rounding():
    """n = 10, rho = 0.25: the batch holds 3 offline samples and the split marks 3 offline-like
    (round half up in both), so with every sample in its buffer's stratum nothing is exchanged."""
    from stratdiff.stratify.split import exchange_stats, split_by_score

    assert n_offline(10, 0.25) == 3 and n_offline(10, 0.35) == 4 and n_offline(6, 0.25) == 2
    ds = small_dataset()
    offline = OfflineBuffer.from_dataset(ds)
    online = OnlineBuffer(100, 3, 2)
    _episode(online, 10, 7.0, start=1000)
    batch = mixed_batch(jax.random.key(0), offline, online, 10, 0.25)
    from_online = batch.source == ONLINE
    scores = jnp.where(from_online, 1.0, 0.0) + jnp.arange(10) * 1e-3  # offline samples score lowest
    online_like = split_by_score(scores, 0.25)
    assert int((~online_like).sum()) == int((~from_online).sum()) == 3
    assert int(exchange_stats(online_like, from_online)["strat/exchange"]) == 0
