"""The in-memory offline dataset: flat numpy transition arrays plus trajectory boundaries.

`Dataset` is what every loader returns and every builder produces; it holds no JAX
arrays (buffers move it to the device) so that `stratdiff data inspect` stays light.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from stratdiff.errors import UserError

# Two observations closer than this (max abs difference) count as the same state when
# trajectories are split where next_observations[t] != observations[t+1] (as CORL does).
CONTINUITY_ATOL = 1e-6


class DatasetError(UserError, ValueError):
    """Invalid or unreadable dataset; the message names the file (or source) and the key."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Metadata that travels with a dataset.

    `env_id` may be one of this project's ids (e.g. `antmaze-umaze-v0`) that gymnasium does not
    know; `ref_min_score`/`ref_max_score` are the returns scored 0 and 100 by the normalised score;
    `source` is where the data was read from; `extra` holds free-form metadata (builder
    settings, policy checkpoints, ...) that must be JSON-serialisable to survive a write.
    """

    name: str = "dataset"
    env_id: str | None = None
    ref_min_score: float | None = None
    ref_max_score: float | None = None
    source: str = ""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def ref_scores(self) -> tuple[float, float] | None:
        if self.ref_min_score is None or self.ref_max_score is None:
            return None
        return float(self.ref_min_score), float(self.ref_max_score)


def trajectory_ends(
    observations: np.ndarray,
    next_observations: np.ndarray,
    terminals: np.ndarray,
    timeouts: np.ndarray,
) -> np.ndarray:
    """True where a trajectory ends: a terminal, a time-out, a discontinuity
    (next_observations[t] != observations[t+1]) or the last row."""
    n = len(terminals)
    ends = np.asarray(terminals, dtype=bool) | np.asarray(timeouts, dtype=bool)
    if n:
        ends[:-1] |= _discontinuities(np.asarray(observations), np.asarray(next_observations))
        ends[-1] = True
    return ends


def _discontinuities(obs: np.ndarray, next_obs: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """[N-1] bool: max |next_obs[t] - obs[t+1]| > CONTINUITY_ATOL (chunked: cache-friendly, little memory)."""
    n = len(obs)
    out = np.zeros(max(n - 1, 0), dtype=bool)
    if n < 2 or obs.ndim != 2 or obs.shape[1] == 0:
        return out
    for s in range(0, n - 1, chunk):
        e = min(n - 1, s + chunk)
        d = np.subtract(next_obs[s:e], obs[s + 1 : e + 1], dtype=np.float32)
        np.abs(d, out=d)
        out[s:e] = d.max(axis=1) > CONTINUITY_ATOL
    return out


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: arrays have no truth value
class Dataset:
    """Offline transitions as flat numpy arrays (N rows).

    observations [N, obs] float32, actions [N, act] float32, rewards [N] float32,
    next_observations [N, obs] float32, terminals [N] bool (true environment end: masks 0),
    timeouts [N] bool (episode cut by a time limit: masks 1), episode_ends [N] bool.

    `episode_ends` is always the union of the rule (terminal, time-out, discontinuity
    next_observations[t] != observations[t+1], last row) and any ends passed in, so
    `Dataset(...)` may be built without it and `dataclasses.replace` keeps it consistent.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    episode_ends: np.ndarray | None = None
    info: DatasetInfo = dataclasses.field(default_factory=DatasetInfo)

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (frozen dataclass)
        for key in ("observations", "actions", "next_observations"):
            arr = np.asarray(getattr(self, key), dtype=np.float32)
            if arr.ndim == 1:
                arr = arr[:, None]
            set_(key, arr)
        set_("rewards", np.asarray(self.rewards, dtype=np.float32).reshape(-1))
        for key in ("terminals", "timeouts"):
            set_(key, np.asarray(getattr(self, key)).astype(bool, copy=False).reshape(-1))
        n = len(self.rewards)
        for key in ("observations", "actions", "next_observations", "terminals", "timeouts"):
            if len(getattr(self, key)) != n:
                raise DatasetError(
                    f"{self.info.source or self.info.name}: key {key!r} has {len(getattr(self, key))} rows, "
                    f"rewards has {n}"
                )
        if self.observations.shape[1:] != self.next_observations.shape[1:]:
            raise DatasetError(
                f"{self.info.source or self.info.name}: key 'next_observations' has shape "
                f"{self.next_observations.shape}, observations {self.observations.shape}"
            )
        ends = trajectory_ends(self.observations, self.next_observations, self.terminals, self.timeouts)
        if self.episode_ends is not None:
            given = np.asarray(self.episode_ends, dtype=bool).reshape(-1)
            if len(given) != n:
                raise DatasetError(f"{self.info.source or self.info.name}: key 'episode_ends' has {len(given)} rows, rewards has {n}")
            ends |= given
        set_("episode_ends", ends)

    # ---------------------------------------------------------------- sizes
    @property
    def size(self) -> int:
        return int(len(self.rewards))

    def __len__(self) -> int:
        return self.size

    @property
    def obs_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.actions.shape[1])

    @property
    def num_episodes(self) -> int:
        return int(self.episode_ends.sum())

    # ---------------------------------------------------------------- episodes
    def episode_starts(self) -> np.ndarray:
        """Row index where each trajectory starts."""
        if self.size == 0:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([[0], np.flatnonzero(self.episode_ends[:-1]) + 1]).astype(np.int64)

    def episode_lengths(self) -> np.ndarray:
        return np.diff(np.append(self.episode_starts(), self.size))

    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of each trajectory (float64), in dataset order."""
        if self.size == 0:
            return np.zeros(0)
        return np.add.reduceat(self.rewards.astype(np.float64), self.episode_starts())

    def episodes(self) -> Iterator[dict[str, np.ndarray]]:
        """Per-trajectory views (the same keys as `from_episodes` takes)."""
        starts = self.episode_starts()
        for s, e in zip(starts, np.append(starts[1:], self.size)):
            yield {k: getattr(self, k)[s:e] for k in _EPISODE_KEYS}

    # ---------------------------------------------------------------- constructors
    @classmethod
    def from_episodes(cls, episodes: Sequence[dict[str, Any]], info: DatasetInfo | None = None) -> Dataset:
        """Concatenate per-episode arrays into one dataset.

        Each dict holds `observations` [T, obs] and either `next_observations` [T, obs] or
        T+1 observations (Minari's layout: the last one is the final next observation),
        `actions` [T, act], `rewards` [T], and optionally `terminals` / `timeouts` [T]
        (default False; Minari's `terminations` / `truncations` are accepted too).
        The last row of every episode is an episode end.
        """
        info = info or DatasetInfo()
        if not episodes:
            raise DatasetError(f"{info.source or info.name}: no episodes")
        cols: dict[str, list] = {k: [] for k in _EPISODE_KEYS}
        for i, ep in enumerate(episodes):
            rew = np.asarray(ep["rewards"], dtype=np.float32).reshape(-1)
            t = len(rew)
            obs = np.asarray(ep["observations"], dtype=np.float32)
            if "next_observations" in ep:
                nxt = np.asarray(ep["next_observations"], dtype=np.float32)
            elif len(obs) == t + 1:
                obs, nxt = obs[:-1], obs[1:]
            else:
                raise DatasetError(
                    f"{info.source or info.name}: episode {i} has {len(obs)} observations for {t} rewards "
                    "and no 'next_observations' (expected T+1 observations)"
                )
            term = ep.get("terminals", ep.get("terminations", np.zeros(t, bool)))
            tout = ep.get("timeouts", ep.get("truncations", np.zeros(t, bool)))
            ends = np.zeros(t, bool)
            if t:
                ends[-1] = True
            cols["observations"].append(obs.reshape(t, -1) if t else obs.reshape(0, -1))
            cols["actions"].append(np.asarray(ep["actions"], dtype=np.float32).reshape(t, -1))
            cols["rewards"].append(rew)
            cols["next_observations"].append(nxt.reshape(t, -1) if t else nxt.reshape(0, -1))
            cols["terminals"].append(np.asarray(term, bool).reshape(-1))
            cols["timeouts"].append(np.asarray(tout, bool).reshape(-1))
            cols["episode_ends"].append(ends)
        return cls(**{k: np.concatenate(v) for k, v in cols.items()}, info=info)

    @classmethod
    def concatenate(cls, datasets: Sequence[Dataset], info: DatasetInfo | None = None) -> Dataset:
        """Datasets one after the other (e.g. medium + expert); each one's last row stays an end."""
        if not datasets:
            raise DatasetError("concatenate: no datasets")
        return cls(
            **{k: np.concatenate([getattr(d, k) for d in datasets]) for k in _EPISODE_KEYS},
            info=info or datasets[0].info,
        )

    def replace(self, **changes: Any) -> Dataset:
        return dataclasses.replace(self, **changes)

    def fingerprint(self) -> str:
        """The first 16 hex digits of a SHA-256 over the transition arrays (names, shapes, dtypes
        and bytes), metadata left out: two datasets with the same fingerprint hold the same data.
        A dataset rebuilt under the same name on another machine or with other library versions
        can differ (rollouts through MuJoCo and XLA are bit-reproducible only on the same set-up),
        and runs record this so that results on different data are never paired unnoticed."""
        h = hashlib.sha256()
        for key in _EPISODE_KEYS:
            arr = np.ascontiguousarray(getattr(self, key))
            h.update(f"{key}:{arr.dtype.str}:{arr.shape};".encode())
            h.update(memoryview(arr).cast("B"))
        return h.hexdigest()[:16]

    # ---------------------------------------------------------------- summary
    def summary(self, ref_scores: tuple[float, float] | None = None) -> dict[str, Any]:
        """Sizes and return statistics over trajectories (JSON-friendly). The normalised score
        100 * (mean return - min) / (max - min) uses `ref_scores`, else the dataset's own. For a
        goal-reaching environment (AntMaze) it is None and `goal_episode_share` is the share of
        episodes with a reward (that reach their goal): a sparse reward summed over episodes that
        go on at the goal is not a D4RL score."""
        returns = self.episode_returns()
        lengths = self.episode_lengths()
        refs = ref_scores or self.info.ref_scores
        out: dict[str, Any] = {
            "name": self.info.name,
            "source": self.info.source,
            "env_id": self.info.env_id,
            "transitions": self.size,
            "episodes": self.num_episodes,
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "terminals": int(self.terminals.sum()),
            "timeouts": int(self.timeouts.sum()),
            "episode_length_mean": float(lengths.mean()) if len(lengths) else 0.0,
            "return_mean": float(returns.mean()) if len(returns) else 0.0,
            "return_std": float(returns.std()) if len(returns) else 0.0,
            "return_min": float(returns.min()) if len(returns) else 0.0,
            "return_max": float(returns.max()) if len(returns) else 0.0,
            "ref_min_score": None if refs is None else refs[0],
            "ref_max_score": None if refs is None else refs[1],
            "normalized_score": None,
            "goal_episode_share": None,
            "fingerprint": self.fingerprint(),
        }
        if _goal_reaching(self.info.env_id):
            out["goal_episode_share"] = float((returns > 0).mean()) if len(returns) else 0.0
        elif refs is not None and refs[1] != refs[0] and len(returns):
            out["normalized_score"] = float(100.0 * (returns.mean() - refs[0]) / (refs[1] - refs[0]))
        return out


def _goal_reaching(env_id: str | None) -> bool:
    from stratdiff.envs import ENV_SPECS  # lazy: gymnasium is not needed to read data

    spec = ENV_SPECS.get(env_id or "")
    return spec is not None and spec.goal_reaching


_EPISODE_KEYS = (
    "observations",
    "actions",
    "rewards",
    "next_observations",
    "terminals",
    "timeouts",
    "episode_ends",
)
