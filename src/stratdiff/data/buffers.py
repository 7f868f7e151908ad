"""Replay buffers: the offline dataset on the device, the online ring buffer on the host,
and the mixed batch of Algorithm 1 (a share rho offline, the rest online, every sample tagged).

Transforms are applied once, when data enters a buffer: both buffers store normalised
observations (`StateNormalizer`) and transformed rewards (`RewardTransform`), and the MC
returns are computed from the transformed rewards with the same gamma and sparse rule, so
offline and online samples are on the same scale. Pass the *same fitted* normaliser and
reward transform to both buffers (fit them on the dataset, save them with the run).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from stratdiff.data.dataset import Dataset
from stratdiff.data.transforms import RewardTransform, StateNormalizer, make_reward_transform, mc_returns
from stratdiff.types import OFFLINE, ONLINE, Batch


def _as_reward_transform(reward_transform: str | RewardTransform, dataset: Dataset | None) -> RewardTransform:
    if isinstance(reward_transform, RewardTransform):
        return reward_transform
    if dataset is None:
        raise ValueError(f"reward transform {reward_transform!r} given by name needs a dataset to fit it on")
    return make_reward_transform(reward_transform, dataset)


# ============================================================================ offline
class OfflineBuffer(flax.struct.PyTreeNode):
    """The transformed offline dataset as device arrays; `sample` is a pure gather (jit-able)."""

    observations: jax.Array  # [N, obs] normalised
    actions: jax.Array  # [N, act]
    rewards: jax.Array  # [N] transformed
    next_observations: jax.Array  # [N, obs] normalised
    masks: jax.Array  # [N] 1 - terminal
    mc_returns: jax.Array  # [N] discounted return-to-go of the transformed rewards
    size: int = flax.struct.field(pytree_node=False, default=0)

    @classmethod
    def from_dataset(
        cls,
        dataset: Dataset,
        normalizer: StateNormalizer | None = None,
        reward_transform: str | RewardTransform = "identity",
        gamma: float = 0.99,
        sparse_failure_reward: float | None = None,
    ) -> OfflineBuffer:
        """Transform `dataset` and move it to the device.

        `normalizer=None` keeps raw observations; `reward_transform` is a fitted transform or
        a name (fitted on `dataset`); `sparse_failure_reward` is in transformed units (e.g. -5
        for "antmaze_calql", 0 or None for dense rewards).
        """
        tf = _as_reward_transform(reward_transform, dataset)
        norm = normalizer.normalize if normalizer is not None else (lambda o: o)
        rewards = tf(dataset.rewards)
        mc = mc_returns(rewards, dataset.episode_ends, gamma, sparse_failure_reward)
        return cls(
            observations=jnp.asarray(norm(dataset.observations)),
            actions=jnp.asarray(dataset.actions),
            rewards=jnp.asarray(rewards),
            next_observations=jnp.asarray(norm(dataset.next_observations)),
            masks=jnp.asarray(1.0 - dataset.terminals.astype(np.float32)),
            mc_returns=jnp.asarray(mc),
            size=dataset.size,
        )

    def __len__(self) -> int:
        return self.size

    def sample(self, key: jax.Array, n: int) -> Batch:
        """n transitions drawn uniformly with replacement (n static under jit)."""
        idx = jax.random.randint(key, (n,), 0, self.size)
        return self.gather(idx)

    def gather(self, idx: jax.Array) -> Batch:
        return Batch(
            observations=self.observations[idx],
            actions=self.actions[idx],
            rewards=self.rewards[idx],
            next_observations=self.next_observations[idx],
            masks=self.masks[idx],
            mc_returns=self.mc_returns[idx],
            source=jnp.full(idx.shape, OFFLINE, dtype=jnp.int32),
        )


_sample_offline = jax.jit(OfflineBuffer.sample, static_argnums=2)


# ============================================================================ online
class OnlineBuffer:
    """Host ring buffer of online transitions.

    `add(obs, action, reward, next_obs, terminal, timeout)` takes raw environment values and
    stores normalised observations, the transformed reward and mask = 1 - terminal. When an
    episode finishes (terminal or timeout, or `end_episode()` when the caller cuts it) the
    MC return-to-go of its slots is computed from the transformed rewards (Cal-QL keeps
    calibration on online, as the original Cal-QL does).

    Only transitions of finished episodes are sampled (their MC returns are known); the running
    episode joins the buffer when it ends, like Cal-QL's trajectory-wise insertion.
    `len(buffer)` counts sampleable transitions.
    """

    def __init__(
        self,
        capacity: int,
        obs_dim: int,
        act_dim: int,
        normalizer: StateNormalizer | None = None,
        reward_transform: RewardTransform | None = None,
        gamma: float = 0.99,
        sparse_failure_reward: float | None = None,
    ):
        if capacity <= 0:
            raise ValueError(f"OnlineBuffer: capacity must be positive, got {capacity}")
        self.capacity = int(capacity)
        self.obs_dim, self.act_dim = int(obs_dim), int(act_dim)
        self.normalizer = normalizer
        self.reward_transform = reward_transform or RewardTransform()
        self.gamma = float(gamma)
        self.sparse_failure_reward = sparse_failure_reward
        c = self.capacity
        self.observations = np.zeros((c, obs_dim), np.float32)
        self.actions = np.zeros((c, act_dim), np.float32)
        self.rewards = np.zeros(c, np.float32)
        self.next_observations = np.zeros((c, obs_dim), np.float32)
        self.masks = np.zeros(c, np.float32)
        self.mc_returns = np.zeros(c, np.float32)
        self.count = 0  # transitions ever added (absolute index of the next one)
        self.episode_start = 0  # absolute index where the running episode started

    # ------------------------------------------------------------------ sizes
    def __len__(self) -> int:
        lo = max(0, self.count - self.capacity)
        return max(0, self.episode_start - lo)

    @property
    def running_episode_length(self) -> int:
        return self.count - self.episode_start

    # ------------------------------------------------------------------ writing
    def add(self, obs, action, reward: float, next_obs, terminal: bool, timeout: bool = False) -> None:
        """Add one raw transition; ends the episode on terminal or timeout."""
        i = self.count % self.capacity
        o = np.asarray(obs, np.float32).reshape(self.obs_dim)
        o2 = np.asarray(next_obs, np.float32).reshape(self.obs_dim)
        if self.normalizer is not None:
            o, o2 = self.normalizer.normalize(o), self.normalizer.normalize(o2)
        self.observations[i] = o
        self.next_observations[i] = o2
        self.actions[i] = np.asarray(action, np.float32).reshape(self.act_dim)
        self.rewards[i] = self.reward_transform(np.float32(reward))
        self.masks[i] = 0.0 if terminal else 1.0
        self.mc_returns[i] = 0.0
        self.count += 1
        if terminal or timeout:
            self.end_episode()

    def end_episode(self) -> None:
        """Close the running episode: compute its MC returns and make it sampleable."""
        length = min(self.count - self.episode_start, self.capacity)
        if length > 0:
            slots = np.arange(self.count - length, self.count) % self.capacity
            ends = np.zeros(length, bool)
            ends[-1] = True
            self.mc_returns[slots] = mc_returns(self.rewards[slots], ends, self.gamma, self.sparse_failure_reward)
        self.episode_start = self.count

    # ------------------------------------------------------------------ sampling
    def sample_indices(self, key: jax.Array, n: int) -> np.ndarray:
        size = len(self)
        if size == 0:
            raise ValueError("OnlineBuffer.sample: no finished episode in the buffer yet")
        return self.positions(np.asarray(jax.random.randint(key, (n,), 0, size)))

    def positions(self, j: np.ndarray) -> np.ndarray:
        """Slots of the j-th oldest sampleable transitions (0 <= j < len(self))."""
        return (max(0, self.count - self.capacity) + j) % self.capacity

    def sample(self, key: jax.Array, n: int) -> Batch:
        """n transitions of finished episodes, uniformly with replacement (source = ONLINE)."""
        idx = self.sample_indices(key, n)
        return Batch(
            observations=jnp.asarray(self.observations[idx]),
            actions=jnp.asarray(self.actions[idx]),
            rewards=jnp.asarray(self.rewards[idx]),
            next_observations=jnp.asarray(self.next_observations[idx]),
            masks=jnp.asarray(self.masks[idx]),
            mc_returns=jnp.asarray(self.mc_returns[idx]),
            source=jnp.full((n,), ONLINE, dtype=jnp.int32),
        )

    # ------------------------------------------------------------------ checkpoints
    _ARRAYS = ("observations", "actions", "rewards", "next_observations", "masks", "mc_returns")

    def state_dict(self) -> dict[str, Any]:
        """numpy arrays (only the filled slots) and counters."""
        filled = min(self.count, self.capacity)
        out: dict[str, Any] = {k: getattr(self, k)[:filled].copy() for k in self._ARRAYS}
        out.update(capacity=self.capacity, count=self.count, episode_start=self.episode_start)
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["capacity"]) != self.capacity:
            raise ValueError(f"OnlineBuffer.load_state_dict: capacity {state['capacity']} != {self.capacity}")
        count = int(state["count"])
        filled = min(count, self.capacity)
        for k in self._ARRAYS:
            arr = np.asarray(state[k])
            if len(arr) != filled or arr.shape[1:] != getattr(self, k).shape[1:]:
                raise ValueError(f"OnlineBuffer.load_state_dict: key {k!r} has shape {arr.shape}")
            getattr(self, k)[:filled] = arr
        self.count, self.episode_start = count, int(state["episode_start"])


# ============================================================================ mixing
def n_offline(batch_size: int, rho: float) -> int:
    """Offline share of a batch of `batch_size`: round(rho * batch_size), halves rounded up.

    The one rounding rule for a batch's offline part (`mixed_batches`) and for the size of
    StratDiff's offline-like stratum (`stratify.split.split_by_score`), so that a batch with
    offline share rho has exactly as many offline samples as offline-like slots.
    """
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"rho must be in [0, 1], got {rho}")
    return int(np.floor(rho * batch_size + 0.5))


def concat_batches(*batches: Batch) -> Batch:
    return jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=0), *batches)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _draw(key: jax.Array, offline: OfflineBuffer, n_off: int, n_on: int, online_size: jax.Array):
    """One dispatch: the offline part of a mixed batch and the online buffer's random positions."""
    k_off, k_on = jax.random.split(key)
    return offline.sample(k_off, n_off), jax.random.randint(k_on, (n_on,), 0, online_size)


@functools.partial(jax.jit, static_argnums=0)
def _assemble(utd: int, off: Batch, obs, act, rew, next_obs, masks, mc) -> Batch:
    """[utd, B, ...] rows: each row's share of the offline draw, then its share of the online draw."""
    on = Batch(obs, act, rew, next_obs, masks, mc, jnp.full(rew.shape, ONLINE, dtype=jnp.int32))
    rows = jax.tree.map(lambda x: x.reshape(utd, -1, *x.shape[1:]), (off, on))
    return jax.tree.map(lambda a, b: jnp.concatenate([a, b], axis=1), *rows)


def mixed_batches(
    key: jax.Array,
    offline: OfflineBuffer,
    online: OnlineBuffer | None,
    utd: int,
    batch_size: int,
    rho: float,
) -> Batch:
    """`utd` minibatches of Algorithm 1 as one [utd, batch_size, ...] batch: every row holds
    n_offline(batch_size, rho) offline samples followed by the rest from the online buffer,
    all drawn independently (uniformly, with replacement) and tagged OFFLINE / ONLINE in
    `source`; all offline while the online buffer has no finished episode. Two jitted
    dispatches and one small host gather per call."""
    n_off = n_offline(batch_size, rho)
    if online is None or len(online) == 0:
        n_off = batch_size
    if n_off == batch_size:
        flat = _sample_offline(offline, key, utd * batch_size)
    elif n_off == 0:
        flat = online.sample(key, utd * batch_size)
    else:
        off, j = _draw(key, offline, utd * n_off, utd * (batch_size - n_off), len(online))
        idx = online.positions(np.asarray(j))
        return _assemble(utd, off, *(getattr(online, k)[idx] for k in OnlineBuffer._ARRAYS))
    return jax.tree.map(lambda x: x.reshape(utd, batch_size, *x.shape[1:]), flat)


def mixed_batch(
    key: jax.Array,
    offline: OfflineBuffer,
    online: OnlineBuffer | None,
    batch_size: int,
    rho: float,
) -> Batch:
    """One [batch_size, ...] minibatch of `mixed_batches` (the same draw as its utd=1 row)."""
    return jax.tree.map(lambda x: x[0], mixed_batches(key, offline, online, 1, batch_size, rho))
