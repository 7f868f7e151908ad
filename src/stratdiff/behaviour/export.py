"""Pick (`select_medium`) and commit (`export_policy`) a snapshot of a SAC run
(`stratdiff sac select-medium` / `stratdiff sac export`) as a behaviour policy under
`assets/policies/<env_id>/<level>/` (the layout `stratdiff.behaviour.policies` reads).
"""

from __future__ import annotations

import csv
import datetime
import json
import shutil
from pathlib import Path

import numpy as np

import stratdiff
from stratdiff.behaviour.antmaze import NOISE_STD, snapshot_controller, success_rate
from stratdiff.behaviour.policies import (
    MEDIUM_TARGETS,
    BehaviourPolicy,
    _action_bounds,
    compact_transitions,
    load_actor,
    policy_dir,
)
from stratdiff.behaviour.train import read_buffer
from stratdiff.envs import get_spec
from stratdiff.provenance import library_versions, machine

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
    if level not in ("medium", "expert"):
        raise ValueError(f"--level must be medium or expert, not {level!r}")
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
        meta["antmaze_umaze_success"] = success_rate(snapshot_controller(run_dir, step), "antmaze-umaze-v0",
                                                     episodes, seed=2_000_000, noise_std=NOISE_STD)
    selection = run_dir / "medium_selection.json"
    if level == "medium" and selection.exists():
        meta["selection"] = json.loads(selection.read_text())
    (out / "policy.json").write_text(json.dumps(meta, indent=2))
    return out
