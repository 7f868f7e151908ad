"""The true behaviour policy of a built dataset, at any of its rows (`true_behaviour`).

`stratdiff data build` draws every action from a known policy (`stratdiff.data.builders`), so the
density each logged action came from is known. Per dataset kind:

- random: U[-1, 1]^d at every row. Exact.
- medium, expert: the committed SAC policy of that level (tanh-Gaussian). Exact.
- medium-expert: the medium policy on the first half of the rows, the expert one on the second.
  Exact.
- medium-replay: row t is SAC's action at environment step t. Steps below the run's
  `start_steps` (10k) are uniform random (exact); later ones come from the actor after t - 9,999
  updates, of which only every `eval_every`-th (10k) is kept as a snapshot in the SAC run
  (`checkpoints/sac/<run>/snapshots/`). Row t is scored against the nearest snapshot, exact at
  multiples of 10k; the actor drifts between snapshots (5k updates away, the dataset's own
  actions can score 60 nats below the snapshot's typical samples), so `eligible_rows` keeps the
  rows within `max_gap` (default 50) steps of a multiple of 10k, evenly spread over the run.
  The behaviour model does not see the step, so where policies of different stages visited
  similar states its target is their mixture; the reference is the policy that logged the row.
  The run is the one whose snapshot at the medium step is byte-identical to the committed medium
  policy, and the dataset's rows are checked against the committed replay buffer.
- AntMaze: clip(controller(s, waypoint) + N(0, 0.2^2), -1, 1), the waypoint given by the maze
  planner from the ant's position and the episode's goal (stored with the data). Exact given the
  goal, but the behaviour model sees only the state, not the goal: what it can learn at a state
  is the mixture of these over the goals of the episodes passing there, which is not known. The
  goal-conditional policy is the reference; a model matching the goal mixture still scores a
  non-zero error wherever goals send the ant different ways. As a scale for that error, the notes
  give the RMS distance between the logged goal's mean action and the mean of an equal mixture
  over goals at every free cell's centre (`equal_goal_mixture_mean_error`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from stratdiff.behaviour.fidelity import CLIPPED, TANH, UNIFORM, FactorisedPolicy


def sac_checkpoints_root() -> Path:
    """`checkpoints/sac/` of the source tree (the SAC runs behind the committed policies)."""
    return Path(__file__).resolve().parents[3] / "checkpoints" / "sac"


def _check_unit_bounds(policy) -> None:
    if not (np.all(policy.action_low == -1.0) and np.all(policy.action_high == 1.0)):
        raise ValueError(f"{policy.env_id}: action bounds are not [-1, 1]; the fidelity check assumes "
                         f"actions in [-1, 1] (rescaling is not implemented)")


def _sac_gaussian(params, hidden_dims, action_dim: int, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(loc, scale) [n, d] of a SAC actor's Gaussian before tanh."""
    import jax.numpy as jnp

    from stratdiff.nn import TanhGaussianPolicy

    mean, log_std = TanhGaussianPolicy(tuple(hidden_dims), action_dim).apply({"params": params},
                                                                             jnp.asarray(obs, jnp.float32))
    return np.asarray(mean, np.float64), np.exp(np.asarray(log_std, np.float64))


def _policy_truth(policy, obs: np.ndarray) -> FactorisedPolicy:
    _check_unit_bounds(policy)
    if policy.params is None:
        return FactorisedPolicy(np.full(len(obs), UNIFORM), np.zeros((len(obs), policy.action_dim)),
                                np.ones((len(obs), policy.action_dim)))
    loc, scale = _sac_gaussian(policy.params, policy.hidden_dims, policy.action_dim, obs)
    return FactorisedPolicy(np.full(len(obs), TANH), loc, scale)


def _check_built_with(dataset, policy, key: str | None = None) -> None:
    """The dataset's metadata names the SAC step of the policy we score against."""
    meta = dataset.info.extra.get("behaviour_policy", {})
    meta = meta.get(key, {}) if key else meta
    step = meta.get("sac_step")
    if step is not None and policy.meta.get("step") is not None and int(step) != int(policy.meta["step"]):
        raise ValueError(f"{dataset.info.name}: built with the {policy.level} policy of SAC step {step}, but the "
                         f"committed one is step {policy.meta['step']}; rebuild the dataset")


def find_sac_run(policy, root: str | Path | None = None) -> Path:
    """The SAC run folder whose snapshot at the policy's step is byte-identical to it."""
    from stratdiff.behaviour.policies import policy_dir

    root = Path(root) if root is not None else sac_checkpoints_root()
    actor = (policy_dir(policy.env_id, policy.level) / "actor.msgpack").read_bytes()
    step = int(policy.meta["step"])
    for run in sorted(p for p in root.glob("*") if (p / "config.json").is_file()):
        snap = run / "snapshots" / f"actor_{step:08d}.msgpack"
        if snap.is_file() and snap.read_bytes() == actor:
            return run
    raise FileNotFoundError(f"{root}: no SAC run with a snapshot at step {step} equal to the committed "
                            f"{policy.env_id} {policy.level} policy (pass --sac-runs)")


def _replay_truth(dataset, env_id: str, rows: np.ndarray, obs: np.ndarray,
                  sac_runs: str | Path | None) -> tuple[FactorisedPolicy, dict]:
    from stratdiff.behaviour.policies import load_policy, load_replay
    from stratdiff.behaviour.policies import load_actor

    policy = load_policy(env_id, "medium")
    _check_unit_bounds(policy)
    replay = load_replay(env_id)
    if len(replay["observations"]) < dataset.size or not np.array_equal(replay["observations"][rows], obs):
        raise ValueError(f"{dataset.info.name}: its rows are not the committed replay buffer's (rebuild it)")
    run = find_sac_run(policy, sac_runs)
    config = json.loads((run / "config.json").read_text())
    start, every = int(config["train"]["start_steps"]), int(config["train"]["eval_every"])
    if every != 10_000:
        raise ValueError(f"{run}: snapshots every {every} steps; `eligible_rows` assumes 10,000")
    last = int(policy.meta["step"])
    snap = np.clip(np.rint(rows / every).astype(np.int64) * every, every, last)
    n, d = len(rows), policy.action_dim
    family, loc, scale = np.full(n, TANH), np.zeros((n, d)), np.ones((n, d))
    family[rows < start] = UNIFORM
    for step in np.unique(snap[rows >= start]):
        sel = (rows >= start) & (snap == step)
        params = load_actor(run / "snapshots" / f"actor_{step:08d}.msgpack")
        loc[sel], scale[sel] = _sac_gaussian(params, policy.hidden_dims, d, obs[sel])
    gap = np.where(rows >= start, np.abs(rows - snap), 0)
    notes = {"reference": "SAC's policy at each row's step: uniform before start_steps, then the nearest "
                          "actor snapshot", "sac_run": run.name, "start_steps": start, "snapshot_every": every,
             "uniform_rows": int((rows < start).sum()), "max_updates_from_snapshot": int(gap.max()),
             "mean_updates_from_snapshot": float(gap[rows >= start].mean()) if (rows >= start).any() else 0.0,
             "exact": False}
    return FactorisedPolicy(family, loc, scale), notes


def _antmaze_truth(dataset, source, rows: np.ndarray, obs: np.ndarray) -> tuple[FactorisedPolicy, dict]:
    from stratdiff.behaviour.antmaze import NOISE_STD, controller_obs, load_controller, task
    from stratdiff.behaviour.planner import MazePlanner
    from stratdiff.data.builders import read_step_infos
    from stratdiff.envs import MAZES

    name = dataset.info.name
    meta = dataset.info.extra.get("behaviour_policy", {})
    noise = float(meta.get("action_noise_std", NOISE_STD))
    controller = load_controller()
    _check_unit_bounds(controller)
    _check_built_with(dataset, controller, "controller")
    goals = read_step_infos(source, "goal")
    if len(goals) != dataset.size:
        raise ValueError(f"{name}: {len(goals)} stored goals for {dataset.size} rows")
    planner = MazePlanner(MAZES[task(name).maze])
    import jax.numpy as jnp

    def conditional(goal_xy: np.ndarray) -> FactorisedPolicy:
        waypoints = planner.waypoints(obs[:, :2].astype(np.float64), goal_xy)
        mean = np.asarray(controller.deterministic(jnp.asarray(controller_obs(obs, waypoints))), np.float32)
        return FactorisedPolicy(np.full(len(mean), CLIPPED), mean.astype(np.float64), np.full(mean.shape, noise))

    truth = conditional(goals[rows].astype(np.float64))
    # how far the goal-mixture's mean can be from the logged goal's: the mixture over the free
    # cells' centres, equally weighted (the true weights are not known)
    logged_mean, _ = truth.moments()
    cell_means = [conditional(np.repeat(planner.cell_center(c)[None], len(rows), axis=0)).moments()[0]
                  for c in planner.free_cells()]
    mixture_error = np.sqrt(np.mean((np.mean(cell_means, axis=0) - logged_mean) ** 2, axis=-1))
    notes = {"reference": "clip(controller action toward the planner's waypoint for the episode's goal "
                          "+ N(0, noise^2), -1, 1): exact given the goal; the behaviour model sees the "
                          "state only, so its target is the (unknown) mixture over goals", "noise_std": noise,
             "exact": "given the goal",
             "equal_goal_mixture_mean_error": {"median": float(np.median(mixture_error)),
                                               "mean": float(np.mean(mixture_error))}}
    return truth, notes


def _recipe(dataset):
    from stratdiff.data.builders import recipe

    try:
        return recipe(dataset.info.name)
    except ValueError as e:
        raise ValueError(f"{dataset.info.name!r} is not a dataset built by `stratdiff data build`, so its "
                         f"behaviour policy is not known ({e})") from None


def eligible_rows(dataset, max_gap: int = 50) -> np.ndarray:
    """Rows whose true policy `true_behaviour` knows well: for medium-replay those within `max_gap`
    steps of a multiple of the SAC run's snapshot interval (10k), every row otherwise."""
    rows = np.arange(dataset.size)
    if _recipe(dataset).kind != "medium-replay":
        return rows
    every = 10_000  # the committed runs' eval_every (checked against the run's config in true_behaviour)
    return rows[np.abs(rows - np.rint(rows / every) * every) <= max_gap]


def true_behaviour(dataset, rows, source: str | Path | None = None,
                   sac_runs: str | Path | None = None) -> tuple[FactorisedPolicy, dict]:
    """(the true behaviour policy at dataset rows `rows`, notes on how it was reconstructed).

    `dataset` is a loaded built dataset (its `info.name` a `stratdiff data build` name); `source`
    what it was loaded from (default: its name; AntMaze reads the stored goals from there);
    `sac_runs` overrides `checkpoints/sac/` for medium-replay. See the module docstring."""
    from stratdiff.behaviour.policies import load_policy

    rows = np.asarray(rows, np.int64)
    name = dataset.info.name
    r = _recipe(dataset)
    obs = np.asarray(dataset.observations[rows], np.float32)
    if r.kind in ("random", "medium", "expert"):
        policy = load_policy(r.env_id, r.kind)
        _check_built_with(dataset, policy)
        return _policy_truth(policy, obs), {"reference": f"the committed {r.kind} policy", "exact": True}
    if r.kind == "medium-expert":
        half = dataset.size // 2
        parts = [_policy_truth(load_policy(r.env_id, lv), obs) for lv in ("medium", "expert")]
        second = (rows >= half)[:, None]
        truth = FactorisedPolicy(np.where(second[:, 0], parts[1].family, parts[0].family),
                                 np.where(second, parts[1].loc, parts[0].loc),
                                 np.where(second, parts[1].scale, parts[0].scale))
        return truth, {"reference": "medium policy on the first half of the rows, expert on the second",
                       "exact": True}
    if r.kind == "medium-replay":
        return _replay_truth(dataset, r.env_id, rows, obs, sac_runs)
    return _antmaze_truth(dataset, source if source is not None else name, rows, obs)
