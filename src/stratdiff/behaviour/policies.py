"""Behaviour policies: the committed SAC policies, the uniform random policy, and the
tools that pick (`select_medium`) and commit (`export_policy`) a SAC snapshot.

Committed policies live in the package at `assets/policies/<env_id>/<level>/`:

- `actor.msgpack`: the tanh-Gaussian actor's parameters (flax msgpack);
- `policy.json`: env id, level, SAC step, seed, the run's training and SAC configs, the
  evaluation (normalised score of the stochastic and the deterministic policy) and
  `provisional` (true while training had not finished);
- `replay.npz` (medium only): the SAC replay buffer up to the medium step in the compact
  form of `compact_transitions`, the medium-replay data.

Every policy is a batched, jittable `sample(observations, key) -> actions` in the env's
action units (the tanh output rescaled from [-1, 1] to the action space's bounds).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

import stratdiff
from stratdiff.provenance import library_versions, machine

LEVELS = ("random", "medium", "expert")
# D4RL's average normalised return of its medium datasets (shared/notes/reference.md):
# the level a `medium` policy is picked at.
MEDIUM_TARGETS: dict[str, float] = {"HalfCheetah-v5": 40.0, "Hopper-v5": 44.0, "Walker2d-v5": 62.0}


def policies_root() -> Path:
    return Path(__file__).resolve().parent.parent / "assets" / "policies"


def policy_dir(env_id: str, level: str) -> Path:
    return policies_root() / env_id / level


@dataclasses.dataclass(frozen=True)
class BehaviourPolicy:
    """A batched behaviour policy of one environment.

    `params is None` is the uniform random policy; otherwise a SAC actor sampled with
    its own Gaussian noise (as D4RL's data collection did).
    """

    env_id: str
    level: str
    action_low: np.ndarray
    action_high: np.ndarray
    params: Any = None
    hidden_dims: tuple[int, ...] = (256, 256)
    meta: dict = dataclasses.field(default_factory=dict)

    @property
    def action_dim(self) -> int:
        return int(self.action_low.shape[0])

    def sample(self, observations, key):
        """Actions for a batch of observations (jax arrays in, jax array out)."""
        return _sample(self.params, observations, key, self.hidden_dims, self.action_dim,
                       tuple(self.action_low.tolist()), tuple(self.action_high.tolist()))

    def deterministic(self, observations):
        """tanh(mean) in the env's action units (SAC policies only)."""
        if self.params is None:
            raise ValueError("the random policy has no deterministic action")
        from stratdiff.agents.sac import deterministic_actions

        a = deterministic_actions(self.params, observations, self.hidden_dims, self.action_dim)
        return _rescale(a, self.action_low, self.action_high)


def _rescale(a, low, high):
    from stratdiff.envs import rescale_action

    return rescale_action(a, low, high)


def _sample_impl(params, observations, key, hidden_dims, action_dim, low, high):
    import jax
    import jax.numpy as jnp

    low, high = jnp.asarray(low, jnp.float32), jnp.asarray(high, jnp.float32)
    if params is None:
        a = jax.random.uniform(key, (observations.shape[0], action_dim), minval=-1.0, maxval=1.0)
    else:
        from stratdiff.nn import TanhGaussianPolicy
        from stratdiff.nn.policies import tanh_gaussian_sample

        mean, log_std = TanhGaussianPolicy(hidden_dims, action_dim).apply({"params": params},
                                                                          observations)
        a, _ = tanh_gaussian_sample(key, mean, log_std)
    return _rescale(a, low, high)


_SAMPLE_JIT = None


def _sample(params, observations, key, hidden_dims, action_dim, low, high):
    global _SAMPLE_JIT
    if _SAMPLE_JIT is None:
        import jax

        _SAMPLE_JIT = jax.jit(_sample_impl, static_argnums=(3, 4, 5, 6))
    return _SAMPLE_JIT(params, observations, key, hidden_dims, action_dim, low, high)


def _action_bounds(env_id: str) -> tuple[np.ndarray, np.ndarray]:
    from stratdiff.envs import make_env

    env = make_env(env_id)
    try:
        space = env.action_space
        return (np.asarray(space.low, np.float32).ravel(), np.asarray(space.high, np.float32).ravel())
    finally:
        env.close()


def load_policy(env_id: str, level: str, path: str | Path | None = None) -> BehaviourPolicy:
    """The committed `level` policy of `env_id` ("random" needs no file); `path` overrides
    the folder (one holding `actor.msgpack` and `policy.json`)."""
    if level not in LEVELS:
        raise ValueError(f"unknown behaviour level {level!r} (known: {', '.join(LEVELS)})")
    low, high = _action_bounds(env_id)
    if level == "random" and path is None:
        return BehaviourPolicy(env_id, level, low, high, meta={"level": "random", "env_id": env_id})
    folder = Path(path) if path is not None else policy_dir(env_id, level)
    meta_path, actor_path = folder / "policy.json", folder / "actor.msgpack"
    for p in (meta_path, actor_path):
        if not p.exists():
            raise FileNotFoundError(f"{p}: no committed {level} policy for {env_id} "
                                    f"(train one with `stratdiff sac train` and `stratdiff sac export`)")
    import flax.serialization

    meta = json.loads(meta_path.read_text())
    params = flax.serialization.msgpack_restore(actor_path.read_bytes())
    hidden = tuple(meta["sac_config"]["hidden_dims"])
    return BehaviourPolicy(env_id, level, low, high, params, hidden, meta)


def available_policies() -> dict[str, list[str]]:
    """env id -> committed levels."""
    root = policies_root()
    out: dict[str, list[str]] = {}
    if root.exists():
        for env_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            out[env_dir.name] = [lv for lv in LEVELS if (env_dir / lv / "policy.json").exists()]
    return out


# --------------------------------------------------------------- compact transitions


def compact_transitions(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Drop `next_observations` wherever it equals the next row's observation: keeps
    observations, actions, rewards, terminals, timeouts, plus `break_index` /
    `break_next_observations` for the rows where the chain breaks (episode ends)."""
    obs, nxt = data["observations"], data["next_observations"]
    n = len(obs)
    brk = np.ones(n, bool)
    if n > 1:
        brk[:-1] = np.any(nxt[:-1] != obs[1:], axis=1)
    idx = np.flatnonzero(brk)
    return {"observations": obs, "actions": data["actions"], "rewards": data["rewards"],
            "terminals": data["terminals"], "timeouts": data["timeouts"],
            "break_index": idx.astype(np.int64), "break_next_observations": nxt[idx]}


def expand_transitions(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Inverse of `compact_transitions`."""
    obs = data["observations"]
    nxt = np.empty_like(obs)
    nxt[:-1] = obs[1:]
    nxt[data["break_index"]] = data["break_next_observations"]
    return {"observations": obs, "actions": data["actions"], "rewards": data["rewards"],
            "next_observations": nxt, "terminals": data["terminals"], "timeouts": data["timeouts"]}


def load_replay(env_id: str, path: str | Path | None = None) -> dict[str, np.ndarray]:
    """The committed medium-replay transitions of `env_id` (or of the file `path`)."""
    p = Path(path) if path is not None else policy_dir(env_id, "medium") / "replay.npz"
    if not p.exists():
        raise FileNotFoundError(f"{p}: no shipped SAC replay buffer for {env_id}")
    with np.load(p) as z:
        return expand_transitions({k: z[k] for k in z.files})


# ------------------------------------------------------------- select and export


def _read_evals(run_dir: Path) -> list[dict[str, float]]:
    path = run_dir / "evals.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no evaluations in this run directory")
    with open(path) as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def _run_config(run_dir: Path) -> dict:
    path = run_dir / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: not a SAC run directory")
    return json.loads(path.read_text())


def evaluate_snapshot(run_dir: str | Path, step: int, episodes: int, seed: int = 2_000_000,
                      stochastic: bool = True) -> dict[str, float]:
    """Evaluate the actor snapshot of `step` with `episodes` episodes."""
    import jax
    import jax.numpy as jnp

    from stratdiff.envs import evaluate

    run_dir = Path(run_dir)
    env_id = _run_config(run_dir)["train"]["env_id"]
    policy = _snapshot_policy(run_dir, step, "snapshot")
    key = jax.random.PRNGKey(seed)
    calls = [0]

    def act(obs):
        obs = jnp.asarray(obs, jnp.float32)
        if not stochastic:
            return np.asarray(policy.deterministic(obs))
        calls[0] += 1
        return np.asarray(policy.sample(obs, jax.random.fold_in(key, calls[0])))

    return evaluate(act, env_id, episodes, seed)


def _snapshot_policy(run_dir: Path, step: int, level: str) -> BehaviourPolicy:
    from stratdiff.behaviour.train import load_actor

    config = _run_config(run_dir)
    env_id = config["train"]["env_id"]
    path = run_dir / "snapshots" / f"actor_{step:08d}.msgpack"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no actor snapshot at step {step}")
    low, high = _action_bounds(env_id)
    return BehaviourPolicy(env_id, level, low, high, load_actor(path),
                           tuple(config["sac"]["hidden_dims"]))


def select_medium(run_dir: str | Path, episodes: int = 30, window: int = 3,
                  tolerance: float = 8.0, log=print) -> int | None:
    """The first snapshot at D4RL's medium level (`MEDIUM_TARGETS` +- `tolerance`).

    Candidates are evaluation steps whose stochastic score, alone or averaged over the
    `window` evaluations starting there, is within the tolerance; each is re-evaluated
    with `episodes` episodes and the first that stays within it is chosen. The choice
    and every re-evaluation go to `medium_selection.json` in the run directory.
    """
    run_dir = Path(run_dir)
    env_id = _run_config(run_dir)["train"]["env_id"]
    if env_id not in MEDIUM_TARGETS:
        raise ValueError(f"no medium target for {env_id} (known: {', '.join(MEDIUM_TARGETS)})")
    target = MEDIUM_TARGETS[env_id]
    rows = _read_evals(run_dir)
    scores = np.array([r["stoch_score"] for r in rows])
    tried = []
    chosen = None
    for i, row in enumerate(rows):
        mean = scores[i:i + window].mean()
        if abs(scores[i] - target) > tolerance and abs(mean - target) > tolerance:
            continue
        step = int(row["step"])
        res = evaluate_snapshot(run_dir, step, episodes)
        tried.append({"step": step, "train_eval_score": float(scores[i]),
                      "window_mean": float(mean), "score": res["score"], "return": res["return"]})
        log(f"step {step}: {episodes}-episode score {res['score']:.1f} "
            f"(training eval {scores[i]:.1f}, window mean {mean:.1f})")
        if abs(res["score"] - target) <= tolerance:
            chosen = step
            break
    (run_dir / "medium_selection.json").write_text(json.dumps({
        "env_id": env_id, "target": target, "tolerance": tolerance, "episodes": episodes,
        "window": window, "chosen_step": chosen, "candidates": tried}, indent=2))
    return chosen


def export_policy(run_dir: str | Path, step: int, level: str, episodes: int = 30,
                  provisional: bool = False, dest: str | Path | None = None) -> Path:
    """Copy the snapshot of `step` into the committed policies (`dest` overrides the folder),
    with its evaluation; a medium policy also gets the replay buffer up to `step`."""
    from stratdiff.behaviour.train import read_buffer

    if level not in ("medium", "expert"):
        raise ValueError(f"--level must be medium or expert, not {level!r}")
    from stratdiff.envs import get_spec

    run_dir = Path(run_dir)
    config = _run_config(run_dir)
    # the task the policy solves: a run on a training variant (ant-goal-curriculum-v0) exports
    # as its evaluation id (ant-goal-v0), where the data builders look for it
    env_id = get_spec(config["train"]["env_id"]).eval_env_id or config["train"]["env_id"]
    out = Path(dest) if dest is not None else policy_dir(env_id, level)
    out.mkdir(parents=True, exist_ok=True)
    snap = run_dir / "snapshots" / f"actor_{step:08d}.msgpack"
    if not snap.exists():
        raise FileNotFoundError(f"{snap}: no actor snapshot at step {step}")
    stoch = evaluate_snapshot(run_dir, step, episodes, stochastic=True)
    det = evaluate_snapshot(run_dir, step, episodes, stochastic=False)
    train_row = next((r for r in _read_evals(run_dir) if int(r["step"]) == step), None)
    if level == "medium":
        buf = read_buffer(run_dir, step)
        tmp = out / "replay.tmp.npz"
        np.savez_compressed(tmp, **compact_transitions(buf))
        tmp.replace(out / "replay.npz")
    shutil.copyfile(snap, out / "actor.msgpack")
    meta = {
        "env_id": env_id, "level": level, "step": step, "seed": config["train"]["seed"],
        "provisional": provisional,
        "evaluation": {"episodes": episodes, "seed": 2_000_000,
                       "stochastic": stoch, "deterministic": det},
        "training_evaluation": train_row,
        "train_config": config["train"], "sac_config": config["sac"],
        "replay_transitions": step if level == "medium" else None,
        "stratdiff_version": stratdiff.__version__,
        "libraries": library_versions(),
        "machine": machine(),
        "exported": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if get_spec(env_id).controller:  # the AntMaze data controller: how often it reaches the goal
        from stratdiff.behaviour.antmaze import NOISE_STD, snapshot_controller, success_rate

        meta["antmaze_umaze_success"] = success_rate(snapshot_controller(run_dir, step), "antmaze-umaze-v0",
                                                     episodes, seed=2_000_000, noise_std=NOISE_STD)
    selection = run_dir / "medium_selection.json"
    if level == "medium" and selection.exists():
        meta["selection"] = json.loads(selection.read_text())
    (out / "policy.json").write_text(json.dumps(meta, indent=2))
    return out
