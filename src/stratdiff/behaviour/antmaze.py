"""AntMaze data collection the D4RL way: a goal-reaching ant steered through the maze by a
waypoint planner, with Gaussian action noise.

- The controller is a SAC policy trained on `ant-goal-v0` (`stratdiff.envs.AntGoal`):
  its observation is the waypoint relative to the ant in the ant's heading frame plus the
  27-d ant state, so a maze observation [x, y, state] becomes a controller observation by
  replacing x, y with `goal_in_ant_frame(xy, state, waypoint)`.
- The planner (`MazePlanner`) gives the waypoint: the next cell on the shortest cell path
  to the episode's goal, the goal itself in the goal's cell.
- Actions are the controller's deterministic action plus N(0, `noise_std`^2) noise
  (D4RL: 0.2), clipped to [-1, 1].
- Every episode lasts `episode_steps` (1000) steps with its own start and goal, chosen by
  the dataset's `MazeTask`; the ant is not stopped at the goal (reward 1 on every step
  within 0.5 of it, no terminals) and the time limit is a time-out.

`collect` runs `MAX_ENVS` (64) episodes side by side: per step one batched planner call
(`MazePlanner.waypoints`) and one batched, jitted controller call, then the 64 simulators
advance by `AntMazeD4RL.step_physics` (the state-changing part of the env's step, bit for
bit its observations) on one thread per available core (`MazeFleet`).

The randomness of episode e (start and goal cells, action noise) comes from
`np.random.default_rng([seed, e])` and its environment reset from `seed * 100_003 + e`, so
the data do not depend on how many environments step side by side, nor on the threads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np

from stratdiff.behaviour.planner import Cell, MazePlanner
from stratdiff.envs import MAZES, AntMazeD4RL, get_spec, goal_in_ant_frame, goal_reached, make_env
from stratdiff.rollouts import MAX_ENVS, ChunkThreads, join_episodes

CONTROLLER_ENV = "ant-goal-v0"  # the controller's training environment
CONTROLLER_LEVEL = "expert"  # committed as assets/policies/ant-goal-v0/expert/
NOISE_STD = 0.2  # D4RL's action noise
EPISODE_STEPS = 1000  # D4RL's data episodes

# medium-play's goals (our choice; D4RL hand-picked its own): dead ends, corners and
# junctions spread over the medium maze, the evaluation goal (6, 6) among them.
MEDIUM_PLAY_GOALS: tuple[Cell, ...] = ((1, 6), (2, 4), (4, 1), (4, 6), (5, 3), (6, 1), (6, 6))

# A controller maps controller observations [n, 29] to actions [n, 8] in [-1, 1].
Controller = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class MazeTask:
    """How a D4RL AntMaze dataset picks each episode's start and goal cells."""

    maze: str  # "umaze" | "medium" (stratdiff.envs.MAZES)
    starts: str  # "fixed": the map's "r" cell; "random": any free cell
    goals: str  # "fixed": the map's "g" cell; "random": any free cell; "set": one of goal_set
    goal_set: tuple[Cell, ...] = ()

    def cells(self, rng: np.random.Generator) -> tuple[Cell, Cell]:
        """(start, goal) cells of one episode; a random start differs from the goal."""
        grid = MAZES[self.maze]
        free = [(i, j) for i, row in enumerate(grid) for j, v in enumerate(row) if v != 1]
        marked = {v: (i, j) for i, row in enumerate(grid) for j, v in enumerate(row) if v in ("r", "g")}
        if self.goals == "fixed":
            goal = marked["g"]
        elif self.goals == "set":
            goal = self.goal_set[rng.integers(len(self.goal_set))]
        else:
            goal = free[rng.integers(len(free))]
        if self.starts == "fixed":
            return marked["r"], goal
        start = goal
        while start == goal:
            start = free[rng.integers(len(free))]
        return start, goal


TASKS: dict[str, MazeTask] = {
    "antmaze-umaze-v0": MazeTask("umaze", "fixed", "fixed"),
    "antmaze-umaze-diverse-v0": MazeTask("umaze", "random", "random"),
    "antmaze-medium-play-v0": MazeTask("medium", "random", "set", MEDIUM_PLAY_GOALS),
    "antmaze-medium-diverse-v0": MazeTask("medium", "random", "random"),
}


def task(name: str) -> MazeTask:
    if name not in TASKS:
        raise ValueError(f"unknown AntMaze dataset {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name]


def open_map(maze: str) -> list[list]:
    """The maze's grid without its "r"/"g" marks (starts and goals are passed at reset)."""
    return [[1 if v == 1 else 0 for v in row] for row in MAZES[maze]]


# ------------------------------------------------------------------------- steering


def controller_obs(obs: np.ndarray, waypoints: np.ndarray) -> np.ndarray:
    """Maze observations [n, 29] (x, y, 27-d state) -> controller observations [n, 29]."""
    state = obs[:, 2:]
    return np.concatenate([goal_in_ant_frame(obs[:, :2], state, waypoints), state], axis=1).astype(np.float32)


def navigate(controller: Controller, planner: MazePlanner, obs: np.ndarray, goals: np.ndarray) -> np.ndarray:
    """The controller's actions [n, 8] steering ants at `obs` [n, 29] toward `goals` [n, 2]."""
    waypoints = planner.waypoints(obs[:, :2], goals)
    return np.asarray(controller(controller_obs(obs, waypoints)), np.float32)


def policy_controller(policy) -> Controller:
    """A `BehaviourPolicy` (SAC actor of `ant-goal-v0`) as a deterministic controller."""
    import jax.numpy as jnp

    return lambda o: np.asarray(policy.deterministic(jnp.asarray(o, jnp.float32)))


def load_controller(path: str | Path | None = None):
    """The committed controller policy (or the one in folder `path`) as a `BehaviourPolicy`."""
    from stratdiff.behaviour.policies import load_policy

    return load_policy(CONTROLLER_ENV, CONTROLLER_LEVEL, path)


def snapshot_controller(run_dir: str | Path, step: int) -> Controller:
    """The actor snapshot of `step` of a SAC run on `ant-goal-v0` (or `ant-goal-curriculum-v0`,
    the same task) as a controller."""
    import json

    from stratdiff.behaviour.policies import BehaviourPolicy, load_actor

    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    if not get_spec(config["train"]["env_id"]).controller:  # ant-goal-v0 or its curriculum
        raise ValueError(f"{run_dir}: a run on {config['train']['env_id']}, not {CONTROLLER_ENV}")
    path = run_dir / "snapshots" / f"actor_{step:08d}.msgpack"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no actor snapshot at step {step}")
    one = np.ones(8, np.float32)
    policy = BehaviourPolicy(CONTROLLER_ENV, CONTROLLER_LEVEL, -one, one, load_actor(path),
                             tuple(config["sac"]["hidden_dims"]))
    return policy_controller(policy)


# ----------------------------------------------------------------------- collection


def collect(name: str, controller: Controller, size: int, seed: int = 0,
            noise_std: float = NOISE_STD, episode_steps: int = EPISODE_STEPS,
            num_envs: int | None = None,
            threads: int | None = None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """`size` transitions of dataset `name` (module docstring).

    Episodes run in groups of `num_envs` (default `MAX_ENVS`) environments side by side: per
    step, one batched planner call and one batched controller call for the group, then the
    group's simulators advance on `threads` threads (default: the cores available;
    `MazeFleet`). Returns (transitions, episodes): transitions hold observations, actions,
    rewards, next_observations, terminals, timeouts and goals [N, 2] (the episode's goal on
    every row), in episode order, the last episode cut to give exactly `size` rows (its cut
    is a time-out); episodes hold start_cells, goal_cells [E, 2] and success [E] (the ant
    came within 0.5 of the goal at least once).
    """
    if size <= 0:
        raise ValueError(f"--size must be positive, not {size}")
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, not {noise_std}")
    rules = task(name)
    planner = MazePlanner(MAZES[rules.maze])
    lengths = [episode_steps] * (size // episode_steps) + ([size % episode_steps] if size % episode_steps else [])
    n = min(num_envs or MAX_ENVS, len(lengths))
    parts: list[dict[str, np.ndarray]] = []
    episodes: dict[str, list] = {"start_cells": [], "goal_cells": [], "success": []}
    with MazeFleet(rules.maze, n, episode_steps, threads) as fleet:
        for first in range(0, len(lengths), n):
            ids = list(range(first, min(first + n, len(lengths))))
            horizon = max(lengths[e] for e in ids)
            obs, goals, noise = [], [], []
            for j, e in enumerate(ids):
                rng = np.random.default_rng([seed, e])
                start, goal = rules.cells(rng)
                o, g = fleet.reset(j, seed * 100_003 + e, start, goal)
                obs.append(o)
                goals.append(g)
                noise.append(rng.normal(0.0, noise_std, (horizon, 8)) if noise_std else np.zeros((horizon, 8)))
                episodes["start_cells"].append(start)
                episodes["goal_cells"].append(goal)
            goals, noise = np.stack(goals), np.stack(noise)  # noise [envs, horizon, 8]
            observations = np.empty((len(ids), horizon + 1, obs[0].shape[0]), np.float32)
            observations[:, 0] = obs
            actions = np.empty((len(ids), horizon, 8), np.float32)
            rewards = np.empty((len(ids), horizon), np.float32)
            for t in range(horizon):
                steer = navigate(controller, planner, observations[:, t], goals)
                actions[:, t] = np.clip(steer + noise[:, t], -1.0, 1.0)
                state = fleet.step(actions[:, t])
                observations[:, t + 1] = state
                rewards[:, t] = goal_reached(state[:, :2], goals)
            for j, e in enumerate(ids):
                t = lengths[e]
                ep = {"observations": observations[j, :t], "actions": actions[j, :t], "rewards": rewards[j, :t],
                      "next_observations": observations[j, 1:t + 1], "terminals": np.zeros(t, bool),
                      "timeouts": np.arange(t) == t - 1,
                      "goals": np.repeat(goals[j][None].astype(np.float32), t, axis=0)}
                episodes["success"].append(bool((ep["rewards"] > 0).any()))
                parts.append(ep)
    return join_episodes(parts, size), {k: np.asarray(v) for k, v in episodes.items()}


class MazeFleet:
    """`n` AntMaze simulators of one maze for data collection (no early ends, the goal stays
    put): `reset` one by gymnasium-robotics' reset, `step` all of them by `AntMazeD4RL.step_physics`
    split over `threads` threads (`ChunkThreads`; MuJoCo releases the GIL while it steps)."""

    def __init__(self, maze: str, n: int, episode_steps: int, threads: int | None = None):
        self.envs = [AntMazeD4RL(open_map(maze), episode_steps, terminate_on_success=False) for _ in range(n)]
        self._threads = ChunkThreads(threads)
        self._actions = np.zeros((n, 8), np.float32)
        self._states = np.zeros((n, 29))

    def reset(self, i: int, seed: int, start: Cell, goal: Cell) -> tuple[np.ndarray, np.ndarray]:
        """Reset environment i (seeded) with the ant in cell `start` and the goal in cell
        `goal` (gymnasium-robotics adds its uniform noise to both): (observation, goal xy)."""
        obs, info = self.envs[i].reset(seed=seed, options={"reset_cell": np.array(start),
                                                           "goal_cell": np.array(goal)})
        return obs, info["goal"]

    def step(self, actions: np.ndarray) -> np.ndarray:
        """Step environments 0..m-1 with `actions` [m, 8]: their states [m, 29] (float64)."""
        m = len(actions)
        self._actions[:m] = actions

        def chunk(lo: int, hi: int) -> None:
            for i in range(lo, hi):
                self._states[i] = self.envs[i].step_physics(self._actions[i])

        self._threads.run(chunk, m)
        return self._states[:m].copy()

    def close(self) -> None:
        self._threads.close()
        for env in self.envs:
            env.close()

    def __enter__(self) -> MazeFleet:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def success_rate(controller: Controller, env_id: str = "antmaze-umaze-v0", episodes: int = 20,
                 seed: int = 0, noise_std: float = 0.0) -> dict[str, float]:
    """How often the planner + `controller` reaches the evaluation goal of `env_id` within
    its time limit (D4RL's evaluation: 700 steps umaze / 1000 medium, success within 0.5),
    episodes side by side, episode i reset with seed `seed + i`."""
    spec = get_spec(env_id)
    if spec.maze is None:
        raise ValueError(f"--env must be an AntMaze id, not {env_id!r}")
    planner = MazePlanner(MAZES[spec.maze])
    rng = np.random.default_rng(seed)
    envs = [make_env(env_id) for _ in range(episodes)]
    resets = [env.reset(seed=seed + i) for i, env in enumerate(envs)]
    obs = np.stack([o for o, _ in resets])
    goals = np.stack([info["goal"] for _, info in resets])
    alive = np.ones(episodes, bool)
    success = np.zeros(episodes, bool)
    lengths = np.zeros(episodes, np.int64)
    while alive.any():
        idx = np.flatnonzero(alive)
        actions = navigate(controller, planner, obs[idx], goals[idx])
        if noise_std:
            actions = np.clip(actions + rng.normal(0.0, noise_std, actions.shape), -1.0, 1.0)
        for j, i in enumerate(idx):
            obs[i], _, term, trunc, info = envs[i].step(actions[j])
            lengths[i] += 1
            success[i] |= bool(info["success"])
            if term or trunc:
                alive[i] = False
    for env in envs:
        env.close()
    return {"success": float(success.mean()), "episodes": episodes,
            "length": float(lengths.mean()), "noise_std": noise_std}


def main(argv: list[str] | None = None) -> int:
    """`python -m stratdiff.behaviour.antmaze --run DIR --step N`: the success rate of a
    SAC snapshot of `ant-goal-v0` steered by the planner on an AntMaze evaluation task."""
    import argparse
    import json

    p = argparse.ArgumentParser(prog="python -m stratdiff.behaviour.antmaze", description=main.__doc__)
    p.add_argument("--run", required=True, help="SAC run directory on ant-goal-v0")
    p.add_argument("--step", type=int, required=True, help="actor snapshot step")
    p.add_argument("--env", default="antmaze-umaze-v0", help="AntMaze evaluation id")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise", type=float, default=0.0, help="action noise std (D4RL data: 0.2)")
    a = p.parse_args(argv)
    out = success_rate(snapshot_controller(a.run, a.step), a.env, a.episodes, a.seed, a.noise)
    print(json.dumps({"run": a.run, "step": a.step, "env": a.env, **out}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
