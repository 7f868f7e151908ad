"""Build D4RL-style locomotion datasets here, the way D4RL built its own.

Names are `<env>-<kind>-v5` with env in `ENVS` (halfcheetah, hopper, walker2d) and kind in:

- `random`, `medium`, `expert`: `size` transitions (default 1M) from that behaviour policy
  (uniform random; the committed SAC policies sampled with their own Gaussian noise, as
  D4RL did). Episodes are at most 1000 steps; terminals are true env terminations,
  timeouts the 1000-step limit. 64 environments step side by side with one jitted,
  batched policy call per step; only whole episodes are kept, in the order they finish,
  and the last one is cut to give exactly `size` transitions (its cut is a time-out).
- `medium-replay`: the SAC replay buffer up to the medium checkpoint, read from the
  compressed copy shipped with the medium policy (`replay.npz`); `size` keeps its first
  rows. It is shipped rather than recomputed: rerunning that part of SAC costs 30-60 CPU
  minutes here and is bit-for-bit reproducible only on the same machine and library
  versions, while the shipped file is ~10-20 MB and loads in a second.
- `medium-expert`: the `medium` and the `expert` datasets of the same seed and size,
  concatenated (2 x `size` transitions, as D4RL's 2M).

AntMaze names (`ANTMAZE`: antmaze-umaze-v0, antmaze-umaze-diverse-v0,
antmaze-medium-play-v0, antmaze-medium-diverse-v0) are collected as D4RL did, by the
committed goal-reaching ant (`ant-goal-v0`) steered through the maze by a waypoint planner,
with N(0, 0.2) action noise, 1000-step episodes and each dataset's rules for starts and
goals (`stratdiff.behaviour.antmaze`): 64 episodes side by side, one batched planner and
controller call per step, the simulators stepped on one thread per available core. Each
episode's goal is stored with the data as Minari step infos (`infos/goal`, read back by
`read_step_infos(dir, "goal")`).

The same name, size and seed give the same arrays (on the same machine and versions).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import stratdiff
from stratdiff import runfiles
from stratdiff.data.catalog import ANTMAZE, DATASETS, ENVS, KINDS, Recipe, is_buildable, recipe  # noqa: F401
from stratdiff.data.dataset import Dataset, DatasetInfo
from stratdiff.provenance import library_versions, machine
from stratdiff.rollouts import MAX_ENVS, join_episodes

DEFAULT_SIZE = 1_000_000


# ------------------------------------------------------------------------- rollouts


def rollout(policy, size: int, seed: int, num_envs: int | None = None,
            max_episode_steps: int | None = None) -> dict[str, np.ndarray]:
    """`size` transitions of `policy` (a `BehaviourPolicy`) in its environment.

    Environment i starts from `reset(seed=seed * 100_003 + i)` and keeps its own generator
    afterwards; the policy's noise at step t is `fold_in(PRNGKey(seed), t)`. Returns flat
    arrays in episode order (whole episodes in the order they end, the last one cut).
    """
    import jax
    import jax.numpy as jnp

    from stratdiff.envs import get_spec, make_env

    if size <= 0:
        raise ValueError(f"--size must be positive, not {size}")
    horizon = max_episode_steps or get_spec(policy.env_id).max_episode_steps
    n = num_envs or int(np.clip(size // (2 * horizon), 1, MAX_ENVS))
    wrapped = [make_env(policy.env_id) for _ in range(n)]
    # Step the bare simulators (the wrappers only check arguments and count steps, which
    # costs as much as the physics here); the time limit is counted below.
    envs = [env.unwrapped for env in wrapped]
    obs = np.stack([env.reset(seed=seed * 100_003 + i)[0] for i, env in enumerate(envs)]).astype(np.float32)
    key = jax.random.PRNGKey(seed)
    cur: list[dict[str, list]] = [_new_episode() for _ in range(n)]
    done_eps: list[dict[str, np.ndarray]] = []
    collected = 0
    t = 0
    while collected < size:
        actions = np.asarray(policy.sample(jnp.asarray(obs), jax.random.fold_in(key, t)))
        t += 1
        for i, env in enumerate(envs):
            nxt, r, term, _, _ = env.step(actions[i])
            ep = cur[i]
            trunc = len(ep["rewards"]) + 1 >= horizon
            ep["observations"].append(obs[i].copy())
            ep["actions"].append(actions[i])
            ep["rewards"].append(r)
            ep["next_observations"].append(nxt)
            ep["terminals"].append(term)
            ep["timeouts"].append(trunc and not term)
            if term or trunc:
                done_eps.append(_stack_episode(ep))
                collected += len(ep["rewards"])
                cur[i] = _new_episode()
                nxt, _ = env.reset()
            obs[i] = nxt
    for env in wrapped:
        env.close()
    return join_episodes(done_eps, size)


def _new_episode() -> dict[str, list]:
    return {k: [] for k in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")}


def _stack_episode(ep: dict[str, list]) -> dict[str, np.ndarray]:
    return {
        "observations": np.asarray(ep["observations"], np.float32),
        "actions": np.asarray(ep["actions"], np.float32),
        "rewards": np.asarray(ep["rewards"], np.float32),
        "next_observations": np.asarray(ep["next_observations"], np.float32),
        "terminals": np.asarray(ep["terminals"], bool),
        "timeouts": np.asarray(ep["timeouts"], bool),
    }


# ---------------------------------------------------------------------------- build


def _policy_meta(policy) -> dict[str, Any]:
    meta = policy.meta or {}
    out = {"level": policy.level}
    if policy.params is not None:
        ev = meta.get("evaluation", {}).get("stochastic", {})
        out.update({"sac_step": meta.get("step"), "sac_seed": meta.get("seed"),
                    "provisional": meta.get("provisional", False),
                    "normalized_score": ev.get("score"), "return": ev.get("return")})
    else:
        out["description"] = "uniform random actions in the action space"
    return out


def make_dataset(name: str, size: int | None = None, seed: int = 0,
                 policy_dirs: dict[str, str | Path] | None = None) -> Dataset:
    """The arrays of dataset `name` (not written). `policy_dirs` maps a level to a folder
    holding a policy (`actor.msgpack`, `policy.json`, and `replay.npz` for medium) to use
    instead of the committed one; AntMaze datasets take the controller from "controller"."""
    return _make(name, size, seed, policy_dirs)[0]


def _make(name: str, size: int | None, seed: int,
          policy_dirs: dict[str, str | Path] | None) -> tuple[Dataset, dict[str, np.ndarray]]:
    """(dataset, step infos to store with it: name -> [N, ...] arrays, one row per transition)."""
    from stratdiff.behaviour.policies import load_policy, load_replay
    from stratdiff.envs import reference_scores

    r = recipe(name)
    policy_dirs = policy_dirs or {}
    refs = reference_scores(r.env_id)
    info = DatasetInfo(name=name, env_id=r.env_id, ref_min_score=refs[0], ref_max_score=refs[1],
                       source=f"stratdiff data build {name}")
    if r.kind == "antmaze":
        return _make_antmaze(name, size or DEFAULT_SIZE, seed, policy_dirs.get("controller"), info)
    if r.kind in ("random", "medium", "expert"):
        policy = load_policy(r.env_id, r.kind, policy_dirs.get(r.kind))
        data = rollout(policy, size or DEFAULT_SIZE, seed)
        info.extra["behaviour_policy"] = _policy_meta(policy)
        return Dataset(**data, info=info), {}
    if r.kind == "medium-replay":
        folder = policy_dirs.get("medium")
        data = load_replay(r.env_id, None if folder is None else Path(folder) / "replay.npz")
        if size is not None:
            data = join_episodes([data], size)
        policy = load_policy(r.env_id, "medium", folder)
        info.extra["behaviour_policy"] = {"level": "medium-replay",
                                          "description": "SAC replay buffer up to the medium policy",
                                          **{k: v for k, v in _policy_meta(policy).items() if k != "level"}}
        return Dataset(**data, info=info), {}
    # medium-expert
    parts = [make_dataset(f"{name.split('-')[0]}-{kind}-v5", size, seed, policy_dirs)
             for kind in ("medium", "expert")]
    info.extra["behaviour_policy"] = {"level": "medium-expert",
                                      "medium": parts[0].info.extra["behaviour_policy"],
                                      "expert": parts[1].info.extra["behaviour_policy"]}
    return Dataset.concatenate(parts, info=info), {}


def _make_antmaze(name: str, size: int, seed: int, controller_dir: str | Path | None,
                  info: DatasetInfo) -> tuple[Dataset, dict[str, np.ndarray]]:
    from stratdiff.behaviour import antmaze

    policy = antmaze.load_controller(controller_dir)
    data, episodes = antmaze.collect(name, antmaze.policy_controller(policy), size, seed)
    goals = data.pop("goals")
    rules = antmaze.task(name)
    info.extra["behaviour_policy"] = {
        "level": "navigator",
        "description": "goal-reaching SAC ant steered by a BFS waypoint planner over the maze grid",
        "controller": {"env_id": antmaze.CONTROLLER_ENV, **_policy_meta(policy)},
        "action_noise_std": antmaze.NOISE_STD,
        "episode_steps": antmaze.EPISODE_STEPS,
        "starts": rules.starts, "goals": rules.goals,
        "goal_set": [list(c) for c in rules.goal_set],
        "episode_success_rate": float(episodes["success"].mean()),
    }
    info.extra["step_infos"] = ["goal"]
    return Dataset(**data, info=info), {"goal": goals}


# --------------------------------------------------------------------- step infos


def write_step_infos(out_dir: str | Path, dataset: Dataset, infos: dict[str, np.ndarray]) -> None:
    """Add per-transition arrays to a Minari dataset written by `write_minari` as each
    episode's `infos/<name>` (Minari's layout: T+1 rows, the last row repeated)."""
    import h5py
    from minari.dataset.minari_storage import MinariStorage

    if not infos:
        return
    data_path = Path(out_dir).expanduser().absolute() / "data"  # minari's size bookkeeping breaks on relative paths
    starts = dataset.episode_starts()
    ends = np.append(starts[1:], dataset.size)
    with h5py.File(data_path / "main_data.hdf5", "a") as f:
        for i, (s, e) in enumerate(zip(starts, ends)):
            group = f[f"episode_{i}"].require_group("infos")
            for key, values in infos.items():
                rows = values[s:e]
                group.create_dataset(key, data=np.concatenate([rows, rows[-1:]]))
    storage = MinariStorage.read(data_path)
    storage.update_metadata({"dataset_size": storage.get_size()})


def read_step_infos(source: str | Path, key: str) -> np.ndarray:
    """The per-transition step info `key` (e.g. "goal") of a Minari dataset folder or a
    built dataset name, one row per transition in dataset order."""
    import h5py

    from stratdiff.data.dataset import DatasetError
    from stratdiff.data.loaders import data_root

    folder = Path(source)
    if not folder.is_dir():
        folder = data_root() / str(source)
    path = folder / "data" / "main_data.hdf5"
    if not path.exists():
        raise DatasetError(f"{path}: no Minari data file")
    with h5py.File(path, "r") as f:
        names = sorted((k for k in f if k.startswith("episode_")), key=lambda k: int(k.split("_")[1]))
        parts = []
        for name in names:
            if "infos" not in f[name] or key not in f[name]["infos"]:
                raise DatasetError(f"{path}: {name} has no step info {key!r}")
            parts.append(f[name]["infos"][key][:-1])
    return np.concatenate(parts)


def build(name: str, size: int | None = None, out: str | Path | None = None, seed: int = 0,
          force: bool = False, command: str | None = None,
          policy_dirs: dict[str, str | Path] | None = None) -> tuple[Path, Dataset, float]:
    """Build dataset `name` and write it as a Minari dataset in `out` (default
    `data_root()/name`). Returns (folder, dataset, seconds taken).

    The dataset is written to a staging folder (`out/.partial`) and moved to `out/data` only
    once complete, so a build that fails or is killed never leaves a half-written dataset
    that `data list` or `load_dataset` would take for a built one; with `force`, the old
    dataset is replaced only then. The folder's `build.lock` keeps two builds out of it."""
    from stratdiff.data.loaders import data_root, write_minari
    from stratdiff.locks import holding

    r = recipe(name)
    out_dir = Path(out) if out is not None else data_root() / name
    final = out_dir / "data"

    def check_replaceable() -> None:
        if final.exists():
            if not force:
                raise FileExistsError(f"{out_dir}: dataset already built (pass --force to rebuild)")
            if not (final / "metadata.json").exists():
                raise FileExistsError(f"{out_dir}/data exists but is not a Minari dataset; not removing it")

    check_replaceable()  # before the rollouts, so a refused build costs nothing
    with holding(out_dir, "build.lock"):
        check_replaceable()
        staging = out_dir / ".partial"
        shutil.rmtree(staging, ignore_errors=True)  # left by a killed build (we hold the lock)
        t0, c0 = time.time(), time.process_time()
        ds, infos = _make(name, size, seed, policy_dirs)
        seconds = time.time() - t0
        meta = {
            "dataset_id": name,
            "env_id": r.env_id,
            "seed": seed,
            "size": ds.size,
            "stratdiff_version": stratdiff.__version__,
            "libraries": library_versions(),
            "machine": machine(),
            "command": command or " ".join(["stratdiff", *sys.argv[1:]]),
            "build_seconds": round(seconds, 1),
            "fingerprint": ds.fingerprint(),
            "description": f"{r.kind} data of {r.env_id} built by stratdiff (D4RL-style)",
        }
        try:
            write_minari(ds, staging, meta)
            write_step_infos(staging, ds, infos)
            if final.exists():
                shutil.rmtree(final)
            (staging / "data").rename(final)
        except OSError as e:  # a full disk: one line naming the folder and the free space
            shutil.rmtree(staging, ignore_errors=True)
            full = runfiles.disk_full(e, staging, "free some space and run the build again (nothing was kept)")
            if full is None:
                raise
            raise full from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        total, cpu = time.time() - t0, time.process_time() - c0
        # the whole build (rollouts + writing), kept next to the dataset for the docs' table
        timing = {"name": name, "size": ds.size, "episodes": ds.num_episodes, "seed": seed,
                  "wall_seconds": round(total, 1), "cpu_seconds": round(cpu, 1),
                  "normalized_score": ds.summary()["normalized_score"], "fingerprint": meta["fingerprint"],
                  "libraries": meta["libraries"],
                  "machine": meta["machine"]}
        if "episode_success_rate" in ds.info.extra.get("behaviour_policy", {}):
            timing["episode_success_rate"] = ds.info.extra["behaviour_policy"]["episode_success_rate"]
        try:
            (out_dir / "build_time.json").write_text(json.dumps(timing))
        except OSError as e:  # the dataset itself is complete; only its timing record is missing
            (out_dir / "build_time.json").unlink(missing_ok=True)
            raise runfiles.disk_full(e, out_dir / "build_time.json", "the dataset is complete in "
                                     f"{final}; only its build timing was not written") or e from None
    return out_dir, ds, total


def _policy_levels(r) -> list[str]:
    """The committed SAC policy levels a locomotion recipe rolls out."""
    return {"random": [], "medium": ["medium"], "expert": ["expert"],
            "medium-replay": ["medium"], "medium-expert": ["medium", "expert"]}[r.kind]


def provisional_policies(name: str) -> list[str]:
    """The committed policies `name` uses that are provisional (their SAC run had not finished),
    e.g. ["expert policy (SAC step 80000)"]."""
    from stratdiff.behaviour.policies import policy_dir

    r = recipe(name)
    if r.kind == "antmaze":
        return []
    out = []
    for lv in _policy_levels(r):
        path = policy_dir(r.env_id, lv) / "policy.json"
        if path.exists():
            meta = json.loads(path.read_text())
            if meta.get("provisional"):
                out.append(f"{lv} policy (SAC step {meta.get('step')})")
    return out


def missing_policies(name: str) -> list[str]:
    """What `name` needs that is not committed yet (e.g. ["expert policy"])."""
    from stratdiff.behaviour.policies import policy_dir

    r = recipe(name)
    if r.kind == "antmaze":
        from stratdiff.behaviour.antmaze import CONTROLLER_ENV, CONTROLLER_LEVEL

        ok = (policy_dir(CONTROLLER_ENV, CONTROLLER_LEVEL) / "policy.json").exists()
        return [] if ok else [f"{CONTROLLER_ENV} controller policy"]
    out = [f"{lv} policy" for lv in _policy_levels(r) if not (policy_dir(r.env_id, lv) / "policy.json").exists()]
    if r.kind == "medium-replay" and not (policy_dir(r.env_id, "medium") / "replay.npz").exists():
        out.append("medium replay buffer")
    return out
