"""Reading and writing offline datasets: D4RL-layout HDF5 files and Minari datasets.

`load_dataset(source)` resolves `source` in this order:

1. an existing `.hdf5` / `.h5` file: D4RL layout (keys observations, actions, rewards,
   terminals, timeouts, optional next_observations; metadata in `metadata/*` attributes or
   scalar keys). Without next_observations the transitions are derived as D4RL's
   `qlearning_dataset` does: next_observations[i] = observations[i+1], and transitions that end
   in a time-out (and the last row) are dropped;
2. an existing directory: a Minari dataset directory (the folder holding `data/`, or `data/`
   itself), read in place (metadata with minari's classes, the episodes of its HDF5 format with h5py);
3. a name under `data_root()` (env var STRATDIFF_DATA_DIR, default `~/.stratdiff/datasets`):
   the Minari dataset directory `data_root()/NAME` (where `stratdiff data build` writes);
4. a Minari dataset id found in MINARI_DATASETS_PATH (default `~/.minari/datasets`);
5. a Minari dataset id (`mujoco/hopper/medium-v0`, `D4RL/door/human-v2`) downloaded from the Minari hub
   with minari into MINARI_DATASETS_PATH, when downloads are allowed (`download=True`, `--download`, or
   STRATDIFF_DOWNLOAD=1); otherwise, or without a connection, one clear error saying how to get it.

Every failure is one `DatasetError` naming the file and key. Reading opens files read-only
and never writes anything.
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from stratdiff.data.dataset import Dataset, DatasetError, DatasetInfo
from stratdiff.data.validation import (
    D4RL_KEYS,
    check_arrays,
    check_env_dims,
    env_dims_or_error,
    is_known_env,
)

HDF5_SUFFIXES = (".hdf5", ".h5")
DOWNLOAD_ENV = "STRATDIFF_DOWNLOAD"  # 1/true/yes: download missing Minari datasets from the hub
METADATA_KEY = "stratdiff"  # Minari metadata.json entry holding env_id and extra metadata
_INFO_FIELDS = ("name", "env_id", "ref_min_score", "ref_max_score")


def data_root() -> Path:
    """Where `stratdiff data build` puts datasets: $STRATDIFF_DATA_DIR or ~/.stratdiff/datasets."""
    return Path(os.environ.get("STRATDIFF_DATA_DIR") or Path.home() / ".stratdiff" / "datasets").expanduser()


def minari_root() -> Path:
    """Minari's local dataset folder (MINARI_DATASETS_PATH, default ~/.minari/datasets);
    computed here rather than with minari's helper, which creates the folder."""
    return Path(os.environ.get("MINARI_DATASETS_PATH") or Path.home() / ".minari" / "datasets").expanduser()


# ============================================================================ entry point
def load_dataset(
    source: str | Path,
    env_id: str | None = None,
    *,
    validate: bool = True,
    download: bool | None = None,
) -> Dataset:
    """Load a dataset from a D4RL HDF5 file, a Minari directory, a built name or a Minari id.

    `env_id` overrides the env id stored with the data; when an env id is known (either way)
    the observation/action sizes are checked against the environment. `validate=False` skips
    the NaN/inf, action-range and environment checks (keys and lengths are always checked).
    `download=True` downloads a Minari dataset id missing locally from the Minari hub (with minari's
    progress output); `False` never tries the network; None (default) asks $STRATDIFF_DOWNLOAD.
    """
    if env_id is not None and validate and not is_known_env(env_id):
        env_dims_or_error(env_id, f"--env {env_id}")  # raises the unknown-id error
    text = str(source)
    path = Path(text).expanduser()
    if path.is_file():
        if path.suffix.lower() in HDF5_SUFFIXES:
            return read_d4rl_hdf5(path, env_id, validate=validate)
        raise DatasetError(
            f"{path}: unsupported file type {path.suffix!r}; expected a D4RL-layout .hdf5/.h5 file "
            "or a Minari dataset directory"
        )
    if path.is_dir():
        return read_minari(path, env_id, validate=validate)
    if text and not os.path.isabs(text) and ".." not in Path(text).parts:
        built = data_root() / text
        if built.is_dir():
            return read_minari(built, env_id, validate=validate)
        local = minari_root() / text
        if (local / "data").is_dir():
            return read_minari(local, env_id, validate=validate)
    if path.suffix.lower() in HDF5_SUFFIXES or os.sep in text and text.startswith((".", os.sep, "~")):
        raise DatasetError(f"{text}: no such file or directory")
    if _is_buildable(text):
        raise DatasetError(f"dataset {text!r} is not built yet; run: stratdiff data build {text}")
    if _looks_like_minari_id(text) and download is not False:
        if download or os.environ.get(DOWNLOAD_ENV, "").strip().lower() in ("1", "true", "yes"):
            return _download_minari(text, env_id, validate=validate)
        raise DatasetError(
            f"Minari dataset {text!r} is not in {minari_root()} (MINARI_DATASETS_PATH); download it with "
            f"--download (or {DOWNLOAD_ENV}=1), or run `minari download {text}` and copy it there"
        )
    raise DatasetError(
        f"unknown dataset source {text!r}: not a file, not a directory, not a dataset in "
        f"{data_root()} (STRATDIFF_DATA_DIR) and not a Minari dataset in {minari_root()} "
        "(MINARI_DATASETS_PATH); a dataset this project builds is made with: stratdiff data build NAME"
    )


def _is_buildable(name: str) -> bool:
    """Whether `stratdiff data build` makes `name`."""
    from stratdiff.data.catalog import is_buildable

    return is_buildable(name)


def _looks_like_minari_id(name: str) -> bool:
    return re.fullmatch(r"([-\w]+/)*[-\w]+-v\d+", name) is not None


def _download_minari(dataset_id: str, env_id: str | None, *, validate: bool) -> Dataset:
    try:
        import minari

        minari.download_dataset(dataset_id)
    except ImportError as e:
        raise DatasetError(
            f"Minari dataset {dataset_id!r} is not in {minari_root()} (MINARI_DATASETS_PATH) and cannot be "
            f"downloaded: {e}"
        ) from None
    except Exception as e:  # noqa: BLE001  (network refused, unknown remote id, ...)
        msg = " ".join(str(e).split())[:300]
        raise DatasetError(
            f"Minari dataset {dataset_id!r} is not in {minari_root()} (MINARI_DATASETS_PATH) and downloading "
            f"it failed ({type(e).__name__}: {msg}); on a machine with a connection run `minari download "
            f"{dataset_id}` and copy {minari_root() / dataset_id} there, or pass a local file/directory"
        ) from None
    return read_minari(minari_root() / dataset_id, env_id, validate=validate)


# ============================================================================ D4RL HDF5
def _py(value: Any) -> Any:
    """HDF5 attribute / scalar -> plain JSON-friendly Python."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return value.tolist() if value.size <= 64 else None
    if isinstance(value, np.generic):
        return value.item()
    return value


def _split_metadata(meta: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Known info fields and the free-form rest (extra)."""
    meta = dict(meta)
    extra = meta.pop("extra", None)
    if isinstance(extra, str):
        try:
            extra = json.loads(extra)
        except json.JSONDecodeError:
            extra = {"extra": extra}
    fields = {}
    for k in _INFO_FIELDS:
        if k in meta:
            fields[k] = meta.pop(k)
    if "env_id" not in fields and "env_name" in meta:
        fields["env_id"] = meta.pop("env_name")
    for k in ("ref_min_score", "ref_max_score"):
        if fields.get(k) is not None:
            fields[k] = float(fields[k])
    rest = {k: v for k, v in meta.items() if v is not None}
    rest.update(extra or {})
    return fields, rest


def read_d4rl_hdf5(path: str | Path, env_id: str | None = None, *, validate: bool = True) -> Dataset:
    """Read a D4RL-layout HDF5 file (see the module docstring)."""
    import h5py

    path = Path(path)
    where = str(path)
    try:
        if path.stat().st_size == 0:
            raise DatasetError(f"{where}: the file is empty (0 bytes)")
    except OSError as e:
        raise DatasetError(f"{where}: cannot read the file ({e.strerror or e})") from None
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {}
    try:
        with h5py.File(path, "r") as f:
            keys = set(f.keys())
            missing = [k for k in D4RL_KEYS if k not in keys]
            if missing:
                raise DatasetError(
                    f"{where}: missing key {missing[0]!r} (a D4RL-layout file needs {', '.join(D4RL_KEYS)}; "
                    f"found: {', '.join(sorted(keys)) or 'no keys'})"
                )
            for key in (*D4RL_KEYS, "next_observations"):
                if key not in keys:
                    continue
                node = f[key]
                if not isinstance(node, h5py.Dataset):
                    raise DatasetError(f"{where}: key {key!r} is a group, expected an array")
                try:
                    arrays[key] = node[()]
                except Exception as e:  # noqa: BLE001  (corrupt chunk, bad filter, ...)
                    raise DatasetError(f"{where}: key {key!r} cannot be read ({_oneline(e)})") from None
            if "metadata" in keys:
                group = f["metadata"]
                meta.update({k: _py(v) for k, v in group.attrs.items()})
                if isinstance(group, h5py.Group):
                    for k, node in group.items():
                        if isinstance(node, h5py.Dataset) and node.size <= 64:
                            meta.setdefault(k, _py(node[()]))
            meta.update({k: _py(v) for k, v in f.attrs.items() if k not in meta})
    except DatasetError:
        raise
    except Exception as e:  # noqa: BLE001  (OSError: not HDF5 / truncated / no permission)
        raise DatasetError(f"{where}: not a readable HDF5 file ({_oneline(e)})") from None

    fields, extra = _split_metadata(meta)
    arrays["actions"] = _unit_actions(arrays["actions"], env_id or fields.get("env_id"), extra)
    if validate:
        arrays = check_arrays(arrays, where)
    else:
        arrays = _basic_shapes(arrays, where)
    info = DatasetInfo(
        name=str(fields.get("name") or path.stem),
        env_id=env_id or fields.get("env_id"),
        ref_min_score=fields.get("ref_min_score"),
        ref_max_score=fields.get("ref_max_score"),
        source=where,
        extra=extra,
    )
    obs = arrays["observations"]
    terminals = arrays["terminals"].astype(bool)
    timeouts = arrays["timeouts"].astype(bool)
    if "next_observations" in arrays:
        ds = Dataset(
            observations=obs,
            actions=arrays["actions"],
            rewards=arrays["rewards"],
            next_observations=arrays["next_observations"],
            terminals=terminals,
            timeouts=timeouts,
            info=info,
        )
    else:
        ds = qlearning_transitions(obs, arrays["actions"], arrays["rewards"], terminals, timeouts, info)
    _check_env(ds, env_id, validate)
    return ds


def qlearning_transitions(
    observations: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    terminals: np.ndarray,
    timeouts: np.ndarray,
    info: DatasetInfo,
) -> Dataset:
    """D4RL's `qlearning_dataset`: next_observations[i] = observations[i+1]; rows that end in a
    time-out and the last row are dropped (their next observation is not in the file). A kept
    row is an episode end when it is terminal or the following row was dropped."""
    n = len(rewards)
    keep = ~timeouts.copy()
    keep[-1] = False
    idx = np.flatnonzero(keep)
    if len(idx) == 0:
        raise DatasetError(
            f"{info.source}: no transitions left after dropping time-out rows (the file has no "
            "next_observations key, so every row needs a following row)"
        )
    following_dropped = ~keep[np.minimum(idx + 1, n - 1)] | (idx + 1 >= n)
    ends = terminals[idx] | following_dropped
    return Dataset(
        observations=observations[idx],
        actions=actions[idx],
        rewards=rewards[idx],
        next_observations=observations[idx + 1],
        terminals=terminals[idx],
        timeouts=np.zeros(len(idx), dtype=bool),
        episode_ends=ends,
        info=info,
    )


def _basic_shapes(arrays: dict[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    """Keys and row counts only (validate=False)."""
    out = {}
    for k, a in arrays.items():
        a = np.asarray(a)
        if k in ("rewards", "terminals", "timeouts"):
            a = a.reshape(len(a), -1)[:, 0] if a.ndim > 1 else a
        out[k] = a
    n = len(out["rewards"])
    if n == 0:
        raise DatasetError(f"{where}: the dataset is empty (key 'rewards' has 0 rows)")
    for k, a in out.items():
        if len(a) != n:
            raise DatasetError(f"{where}: length mismatch: key {k!r} has {len(a)} rows, 'rewards' has {n}")
    return out


def _check_env(ds: Dataset, explicit_env: str | None, validate: bool) -> None:
    env = ds.info.env_id
    if not validate or env is None:
        return
    # an env id read from the file that no one here knows (e.g. D4RL's "hopper-medium-v2") is kept
    # as metadata but cannot be checked; an id passed explicitly must be known.
    if explicit_env is not None or is_known_env(env):
        check_env_dims(ds.obs_dim, ds.act_dim, env, ds.info.source)


ACTIONS_RESCALED = "actions_rescaled_from"  # extra metadata: the env bounds the actions were mapped from


def _unit_actions(actions: np.ndarray, env_id: str | None, extra: dict[str, Any]) -> np.ndarray:
    """Actions recorded in an environment's own units (Box bounds other than [-1, 1], e.g.
    InvertedPendulum's [-3, 3]) -> [-1, 1], the agents' units; the bounds are noted in `extra`
    (ACTIONS_RESCALED), so a dataset written back out and read again is not mapped twice."""
    if env_id is None or ACTIONS_RESCALED in extra or not is_known_env(env_id):
        return actions
    from stratdiff.envs import action_bounds, unit_action

    bounds = action_bounds(env_id)
    actions = np.asarray(actions)
    if bounds is None or actions.ndim != 2 or actions.shape[1] != len(bounds[0]):
        return actions  # wrong sizes are reported by the environment check
    low, high = (np.asarray(b, dtype=np.float64) for b in bounds)
    extra[ACTIONS_RESCALED] = {"low": list(bounds[0]), "high": list(bounds[1])}
    return unit_action(actions.astype(np.float64), low, high).astype(actions.dtype)


def _oneline(e: BaseException) -> str:
    return " ".join(str(e).split())[:300] or type(e).__name__


def write_d4rl_hdf5(dataset: Dataset, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write `dataset` as a D4RL-layout HDF5 file (with next_observations, so every row survives a
    round trip), its info and `metadata` as attributes of the `metadata` group: name, env_id,
    ref_min_score, ref_max_score, and `extra` as a JSON string."""
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fields, extra = _merged_metadata(dataset, metadata)
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        for key in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts"):
            f.create_dataset(key, data=getattr(dataset, key))
        g = f.create_group("metadata")
        for k, v in fields.items():
            if v is not None:
                g.attrs[k] = v
        g.attrs["extra"] = json.dumps(extra, default=_json_default)
    os.replace(tmp, path)
    return path


def _merged_metadata(dataset: Dataset, metadata: dict[str, Any] | None) -> tuple[dict, dict]:
    info = dataset.info
    fields: dict[str, Any] = {
        "name": info.name,
        "env_id": info.env_id,
        "ref_min_score": info.ref_min_score,
        "ref_max_score": info.ref_max_score,
    }
    extra = dict(info.extra)
    for k, v in (metadata or {}).items():
        if k in fields:
            fields[k] = v
        elif k == "extra" and isinstance(v, dict):
            extra.update(v)
        else:
            extra[k] = v
    for k in ("ref_min_score", "ref_max_score"):
        if fields[k] is not None:
            fields[k] = float(fields[k])
    return fields, extra


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (set, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    return str(o)


# ============================================================================ Minari
def _minari_data_path(directory: Path) -> Path:
    if (directory / "data" / "metadata.json").is_file():
        return directory / "data"
    if (directory / "metadata.json").is_file():
        return directory
    raise DatasetError(
        f"{directory}: not a Minari dataset directory (no data/metadata.json); pass a D4RL .hdf5 file, "
        "a Minari dataset directory, a built dataset name or a Minari dataset id"
    )


def _flat_obs_fn(space, where: str):
    """Observation space -> function mapping the stored observations to [T+1, obs] arrays.
    Box spaces are flattened; goal-conditioned Dict spaces (achieved_goal, observation, ...)
    become [achieved_goal, observation], the layout of `stratdiff.envs.AntMazeD4RL`."""
    import gymnasium as gym

    if isinstance(space, gym.spaces.Box):
        return lambda o: np.asarray(o, dtype=np.float32).reshape(len(o), -1)
    if isinstance(space, gym.spaces.Dict) and {"achieved_goal", "observation"} <= set(space.spaces):
        return lambda o: np.concatenate(
            [np.asarray(o["achieved_goal"], np.float32), np.asarray(o["observation"], np.float32)], axis=1
        )
    raise DatasetError(f"{where}: unsupported observation space {space} (need a Box or a goal Dict)")


def read_minari(directory: str | Path, env_id: str | None = None, *, validate: bool = True) -> Dataset:
    """Read a Minari dataset directory in place (read-only). Minari's metadata and spaces are read
    with its MinariDataset; the episodes of an HDF5 dataset (minari's default format) are read
    straight from its `episode_{i}` groups with h5py, other formats through minari's episodes."""
    import gymnasium as gym

    directory = Path(directory)
    data_path = _minari_data_path(directory)
    where = str(directory)
    try:
        from minari import MinariDataset

        mds = MinariDataset(data_path)
        raw_meta = mds.storage.metadata
        obs_space, act_space = mds.observation_space, mds.action_space
    except DatasetError:
        raise
    except Exception as e:  # noqa: BLE001  (bad metadata.json, unsupported version, missing file)
        raise DatasetError(f"{where}: not a readable Minari dataset ({_oneline(e)})") from None
    if not isinstance(act_space, gym.spaces.Box):
        raise DatasetError(f"{where}: unsupported action space {act_space} (need a Box)")
    flat = _flat_obs_fn(obs_space, where)

    total = mds.total_episodes
    if total == 0:
        raise DatasetError(f"{where}: the dataset is empty (0 episodes)")
    obs_keys = _hdf5_obs_keys(mds)
    if obs_keys is not None:
        episodes = _read_minari_hdf5(data_path / _MINARI_DATA_FILE, total, obs_keys, flat, where)
    else:
        episodes = _read_minari_episodes(mds, flat, where)
    if not episodes or sum(len(ep[2]) for ep in episodes) == 0:
        raise DatasetError(f"{where}: the dataset is empty (0 episodes)")

    own = raw_meta.get(METADATA_KEY) or {}
    fields, extra = _split_metadata(own if isinstance(own, dict) else {})
    env_spec = raw_meta.get("env_spec")
    spec_id = None
    if isinstance(env_spec, str):
        try:
            spec_id = json.loads(env_spec).get("id")
        except (json.JSONDecodeError, AttributeError):
            spec_id = None
    ref_min = fields.get("ref_min_score", raw_meta.get("ref_min_score"))
    ref_max = fields.get("ref_max_score", raw_meta.get("ref_max_score"))
    info = DatasetInfo(
        name=str(fields.get("name") or raw_meta.get("dataset_id") or directory.name),
        env_id=env_id or fields.get("env_id") or spec_id,
        ref_min_score=None if ref_min is None else float(ref_min),
        ref_max_score=None if ref_max is None else float(ref_max),
        source=where,
        extra=extra,
    )
    arrays = _join_episodes(episodes, where)
    arrays["actions"] = _unit_actions(arrays["actions"], info.env_id, info.extra)
    if validate:
        arrays = check_arrays(arrays, where)
    ds = Dataset(**arrays, info=info)
    _check_env(ds, env_id, validate)
    return ds


_MINARI_DATA_FILE = "main_data.hdf5"  # minari's HDF5 storage: one group `episode_{i}` per episode
_MINARI_STEP_KEYS = ("actions", "rewards", "terminations", "truncations")


def _hdf5_obs_keys(mds) -> tuple[str, ...] | None:
    """The dataset paths of an episode's observations when the episodes can be read directly with
    h5py (minari's hdf5 format, Box or goal-Dict observations, no JPEG-encoded images); else None."""
    import gymnasium as gym
    from minari.dataset.minari_storage import is_image_space

    storage = mds.storage
    if getattr(storage, "FORMAT", None) != "hdf5":
        return None
    obs_space, act_space = mds.observation_space, mds.action_space
    if storage.jpeg_encoding and (is_image_space(obs_space) or is_image_space(act_space)):
        return None
    if isinstance(obs_space, gym.spaces.Box):
        return ("observations",)
    return ("observations/achieved_goal", "observations/observation")  # _flat_obs_fn accepted the Dict


def _read_minari_hdf5(path: Path, total: int, obs_keys: tuple[str, ...], flat, where: str) -> list[tuple]:
    """Episodes 0..total-1 of minari's HDF5 data file, read with h5py's low-level calls: about half
    a millisecond an episode, against ~1.2 ms through minari's per-episode dicts and EpisodeData."""
    import h5py
    from h5py import h5d, h5g, h5s

    def read(gid, key: str):
        did = h5d.open(gid, key.encode())
        dtype = did.dtype
        if dtype.kind not in "biuf":  # anything exotic: h5py's own reading
            return h5py.Dataset(did)[()]
        out = np.empty(did.shape, dtype)
        if out.size:
            did.read(h5s.ALL, h5s.ALL, out)
        return out

    def has(gid, key: str) -> bool:
        parts = key.split("/")
        return all(gid.links.exists("/".join(parts[: j + 1]).encode()) for j in range(len(parts)))

    episodes = []
    try:
        f = h5py.File(path, "r")
    except Exception as e:  # noqa: BLE001  (missing, empty or garbage data file)
        raise DatasetError(f"{where}: the data file cannot be read ({_oneline(e)})") from None
    with f:
        fid = f.id
        for i in range(total):
            name = f"episode_{i}"
            try:
                try:
                    gid = h5g.open(fid, name.encode())
                except Exception:  # noqa: BLE001
                    if not has(fid, name):
                        raise DatasetError(f"{where}: episode {i}: missing key {name!r}") from None
                    raise
                raw = {}
                for key in (*obs_keys, *_MINARI_STEP_KEYS):
                    try:
                        raw[key] = read(gid, key)
                    except Exception:  # noqa: BLE001
                        if not has(gid, key):
                            raise DatasetError(f"{where}: episode {i}: missing key {key.split('/')[-1]!r}") from None
                        raise
                obs = raw["observations"] if len(obs_keys) == 1 else {k.split("/")[-1]: raw[k] for k in obs_keys}
                episodes.append(_episode_arrays(flat(obs), raw["actions"], raw["rewards"], raw["terminations"],
                                                raw["truncations"], f"{where}: episode {i}"))
            except DatasetError:
                raise
            except Exception as e:  # noqa: BLE001  (corrupt or truncated data file)
                raise DatasetError(f"{where}: episode {i} cannot be read ({_oneline(e)})") from None
    return episodes


def _read_minari_episodes(mds, flat, where: str) -> list[tuple]:
    """Episodes through minari's own classes (formats other than hdf5, JPEG-encoded images)."""
    episodes = []
    i = -1
    try:
        for i, ep in enumerate(mds.iterate_episodes()):
            episodes.append(_minari_episode(ep, flat, f"{where}: episode {i}"))
    except DatasetError:
        raise
    except KeyError as e:
        m = re.search(r"object '([^']+)' doesn't exist", str(e))
        key = m.group(1) if m else str(e)
        raise DatasetError(f"{where}: episode {i + 1}: missing key {key!r}") from None
    except Exception as e:  # noqa: BLE001  (corrupt or truncated data file)
        what = "the data file" if i < 0 else f"episode {i + 1}"
        raise DatasetError(f"{where}: {what} cannot be read ({_oneline(e)})") from None
    return episodes


def _minari_episode(ep, flat, where: str) -> tuple:
    return _episode_arrays(flat(ep.observations), ep.actions, ep.rewards, ep.terminations, ep.truncations, where)


def _episode_arrays(obs, actions, rewards, terminations, truncations, where: str) -> tuple:
    """One Minari episode (T+1 flat observations, T steps) as float32/bool arrays, lengths checked:
    (observations [T+1, obs], actions [T, act], rewards [T], terminations [T], truncations [T])."""
    rewards = np.asarray(rewards, dtype=np.float32).reshape(-1)
    t = len(rewards)
    actions = np.asarray(actions, dtype=np.float32)
    actions = actions.reshape(len(actions), -1)
    checks = {
        "observations": (len(obs), t + 1),
        "actions": (len(actions), t),
        "terminations": (len(terminations), t),
        "truncations": (len(truncations), t),
    }
    for key, (got, want) in checks.items():
        if got != want:
            raise DatasetError(f"{where}: length mismatch: key {key!r} has {got} rows, expected {want} "
                               f"({t} rewards)")
    return (obs, actions, rewards, np.asarray(terminations, dtype=bool).reshape(-1),
            np.asarray(truncations, dtype=bool).reshape(-1))


def _join_episodes(episodes: list[tuple], where: str) -> dict[str, np.ndarray]:
    """Minari episodes (see `_episode_arrays`) -> transition arrays: observations[t] and
    next_observations[t] are an episode's observations t and t+1; the last step ends the episode."""
    lengths = np.array([len(ep[2]) for ep in episodes], dtype=np.int64)
    try:
        obs, actions, rewards, terminals, timeouts = (np.concatenate(column) for column in zip(*episodes))
    except ValueError as e:  # episodes whose observations or actions differ in size
        raise DatasetError(f"{where}: the episodes' arrays do not fit together ({_oneline(e)})") from None
    obs_end = np.cumsum(lengths + 1)  # one past each episode's last observation
    not_last, not_first = np.ones(len(obs), bool), np.ones(len(obs), bool)
    not_last[obs_end - 1] = False
    not_first[obs_end - 1 - lengths] = False
    ends = np.zeros(int(lengths.sum()), dtype=bool)
    ends[np.cumsum(lengths)[lengths > 0] - 1] = True
    return {
        "observations": obs[not_last],
        "actions": actions,
        "rewards": rewards,
        "next_observations": obs[not_first],
        "terminals": terminals,
        "timeouts": timeouts,
        "episode_ends": ends,
    }


def _minari_id(name: str) -> str:
    """A Minari-valid dataset id (minari needs a `-vN` suffix)."""
    name = re.sub(r"[^-\w/]", "_", name).strip("/") or "dataset"
    return name if re.search(r"-v\d+$", name) else f"{name}-v0"


def write_minari(dataset: Dataset, out_dir: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write `dataset` as a Minari dataset in `out_dir` (out_dir/data/{metadata.json,main_data.hdf5}),
    one Minari episode per trajectory (`episode_ends`), in minari's HDF5 layout: groups
    `episode_{i}` with attributes id, total_steps and the statistics of minari's
    EpisodeMetadataCallback, holding observations [T+1], actions, rewards, terminations and
    truncations. metadata.json is made with minari's storage API; the episodes are written in
    one pass with h5py (minari's per-episode calls cost ~5 ms an episode).

    Stored: `dataset_id` (metadata["dataset_id"], else the dataset name), top-level
    `ref_min_score`/`ref_max_score` (read by minari.get_normalized_score), the gymnasium
    `env_spec` when the env id is registered in gymnasium, and under the "stratdiff" key the
    env id, name, reference scores and extra metadata, so reading needs no environment.
    Writing `out_dir = MINARI_DATASETS_PATH/<dataset_id>` makes it loadable with
    `minari.load_dataset(dataset_id)`. Returns `out_dir`.
    """
    import gymnasium as gym
    from minari.dataset.minari_storage import MinariStorage

    out_dir = Path(out_dir).expanduser().absolute()  # minari's size bookkeeping breaks on relative paths
    data_path = out_dir / "data"
    if data_path.exists() and any(data_path.iterdir()):
        raise DatasetError(f"{out_dir}: a dataset already exists there; remove it or choose another folder")
    meta = dict(metadata or {})
    dataset_id = _minari_id(str(meta.pop("dataset_id", None) or dataset.info.name or out_dir.name))
    fields, extra = _merged_metadata(dataset, meta)
    env_spec = None
    if fields["env_id"] is not None and fields["env_id"] in gym.registry:
        env_spec = gym.spec(fields["env_id"])
    obs_space = gym.spaces.Box(-np.inf, np.inf, (dataset.obs_dim,), np.float32)
    act_space = gym.spaces.Box(-1.0, 1.0, (dataset.act_dim,), np.float32)

    data_path.mkdir(parents=True, exist_ok=True)
    storage = MinariStorage.new(
        data_path, observation_space=obs_space, action_space=act_space, env_spec=env_spec, data_format="hdf5"
    )
    top: dict[str, Any] = {"dataset_id": dataset_id, "minari_version": _minari_version()}
    if fields["ref_min_score"] is not None and fields["ref_max_score"] is not None:
        top["ref_min_score"] = fields["ref_min_score"]
        top["ref_max_score"] = fields["ref_max_score"]
    if "description" in extra and isinstance(extra["description"], str):
        top["description"] = extra["description"]
    top[METADATA_KEY] = json.loads(json.dumps({**fields, "extra": extra}, default=_json_default))
    storage.update_metadata(top)
    _write_minari_hdf5(data_path / _MINARI_DATA_FILE, dataset)
    # what minari's update_episodes / update_episode_metadata leave in metadata.json
    storage.update_metadata(
        {"total_steps": int(dataset.size), "total_episodes": int(dataset.num_episodes),
         "dataset_size": storage.get_size()}
    )
    return out_dir


@functools.lru_cache(maxsize=4096)
def _chunk_shape(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """The chunk shape h5py picks for minari's `create_dataset(chunks=True, maxshape=(None, ...))`
    (h5py's guess_chunk; one chunk for a short episode), so the files are chunked as minari's."""
    try:
        from h5py._hl.filters import guess_chunk

        return tuple(int(c) for c in guess_chunk(shape, (None, *shape[1:]), itemsize))
    except Exception:  # noqa: BLE001  (h5py without that helper: one chunk of at most 1 MiB)
        row_bytes = itemsize * int(np.prod(shape[1:], dtype=np.int64))
        return (max(1, min(shape[0], (1 << 20) // max(row_bytes, 1))), *(max(1, d) for d in shape[1:]))


def _episode_reward_stats(rewards: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> dict[str, np.ndarray]:
    """minari's EpisodeMetadataCallback for every episode at once: rewards_sum/mean/std/max/min of
    each episode's float32 rewards, float32 arithmetic as numpy does on one episode (each row of a
    [k, T] array is reduced as a [T] array is), so the values are the callback's to the bit."""
    rewards = np.asarray(rewards, dtype=np.float32)
    out = {k: np.empty(len(starts)) for k in ("rewards_sum", "rewards_mean", "rewards_std", "rewards_max",
                                               "rewards_min")}
    for t in np.unique(lengths):
        sel = np.flatnonzero(lengths == t)
        r = rewards[starts[sel, None] + np.arange(t)]
        out["rewards_sum"][sel] = r.sum(axis=1)
        out["rewards_mean"][sel] = r.mean(axis=1)
        out["rewards_std"][sel] = r.std(axis=1)
        out["rewards_max"][sel] = r.max(axis=1)
        out["rewards_min"][sel] = r.min(axis=1)
    return out


def _write_minari_hdf5(path: Path, dataset: Dataset) -> None:
    """minari's HDF5 data file for `dataset`, as its HDF5Storage.update_episodes followed by
    update_episode_metadata(apply(EpisodeMetadataCallback())) writes it, in one pass of h5py's
    low-level calls. Each `episode_{i}` group: attributes id and total_steps (int64) and
    rewards_sum/mean/std/max/min (float64); datasets observations [T+1, obs], actions [T, act],
    rewards [T] (float32), terminations and truncations [T] (bool), chunked as h5py chunks them
    and resizable along time (maxshape None), as minari makes them. One difference: the file is
    in HDF5 1.10's object format (readable by HDF5 >= 1.10, i.e. h5py >= 2.10); the oldest
    format, h5py's default, adds ~2 KB of chunk index to every array, which nearly triples the
    file for short episodes."""
    import h5py
    from h5py import h5a, h5d, h5g, h5p, h5s, h5t

    starts = dataset.episode_starts()
    lengths = dataset.episode_lengths()
    stats = _episode_reward_stats(dataset.rewards, starts, lengths)
    obs, next_obs = dataset.observations, dataset.next_observations
    lcpl = h5p.create(h5p.LINK_CREATE)  # as h5py names links: intermediate groups, ASCII names
    lcpl.set_create_intermediate_group(True)
    gcpl = h5p.create(h5p.GROUP_CREATE)
    gcpl.set_obj_track_times(False)  # h5py's default
    scalar = h5s.create(h5s.SCALAR)
    types: dict[np.dtype, Any] = {}
    dcpls: dict[tuple, Any] = {}

    def attr(gid, name: bytes, value: np.ndarray) -> None:
        if value.dtype not in types:
            types[value.dtype] = h5t.py_create(value.dtype, logical=True)
        h5a.create(gid, name, types[value.dtype], scalar).write(value)

    def array(gid, name: bytes, data: np.ndarray) -> None:
        data = np.ascontiguousarray(data)
        rest = data.shape[1:]
        chunk = _chunk_shape(data.shape, data.itemsize)
        if chunk not in dcpls:
            dcpl = h5p.create(h5p.DATASET_CREATE)
            dcpl.set_chunk(chunk)
            dcpl.set_obj_track_times(False)
            dcpls[chunk] = dcpl
        if data.dtype not in types:
            types[data.dtype] = h5t.py_create(data.dtype, logical=True)
        space = h5s.create_simple(data.shape, (h5s.UNLIMITED, *rest))
        did = h5d.create(gid, name, types[data.dtype], space, dcpl=dcpls[chunk], lcpl=lcpl)
        if chunk == data.shape and data.size:  # one chunk: written as it lies, past HDF5's conversions
            did.write_direct_chunk((0,) * data.ndim, data)
        elif data.size:
            did.write(h5s.ALL, h5s.ALL, data)

    # (minari asks for track_order but opens the empty file it made: its root group keeps no link order)
    with h5py.File(path, "w", track_order=False, libver="v110") as f:
        fid = f.id
        for i, (s, t) in enumerate(zip(starts.tolist(), lengths.tolist())):
            e = s + t
            gid = h5g.create(fid, b"episode_%d" % i, lcpl=lcpl, gcpl=gcpl)
            attr(gid, b"id", np.array(i, dtype=np.int64))
            attr(gid, b"total_steps", np.array(t, dtype=np.int64))
            array(gid, b"observations", np.concatenate([obs[s:e], next_obs[e - 1 : e]]))
            array(gid, b"actions", dataset.actions[s:e])
            array(gid, b"rewards", dataset.rewards[s:e])
            array(gid, b"terminations", dataset.terminals[s:e])
            array(gid, b"truncations", dataset.timeouts[s:e])
            for key, values in stats.items():
                attr(gid, key.encode(), np.array(values[i], dtype=np.float64))


def _minari_version() -> str:
    import minari

    return minari.__version__
