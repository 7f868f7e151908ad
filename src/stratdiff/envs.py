"""Environments, D4RL reference scores and policy evaluation.

Environment ids are gymnasium's MuJoCo v5 ids (`HalfCheetah-v5`, `Hopper-v5`,
`Walker2d-v5`, `Ant-v5`, plus any small gymnasium task such as
`InvertedPendulum-v5` for tests) and this project's D4RL-like AntMaze ids
(`antmaze-umaze-v0`, `antmaze-umaze-diverse-v0`, `antmaze-medium-play-v0`,
`antmaze-medium-diverse-v0`), built on gymnasium-robotics' AntMaze with
D4RL's grids, a flat 29-d observation (x, y + the 27-d ant state without
contact forces), a sparse reward of 1 within 0.5 of the goal, and episodes
that end on success (as D4RL's evaluation does).

`ant-goal-v0` is the open-floor goal-reaching ant (`AntGoal`) on which the AntMaze data
collector's low-level controller is trained with SAC: the same ant model and physics as
AntMaze, a 29-d observation (the goal relative to the ant in its heading frame + the 27-d
state), a reward for progress toward the goal and a new goal whenever one is reached.
`ant-goal-curriculum-v0` is the same task for training only: its goals start within a narrow
cone ahead of the ant that widens to the full circle over `GOAL_CURRICULUM_STEPS` steps
(`AntGoal`'s docstring says why); its evaluations (`evaluate`) run on `ant-goal-v0`.

Any other gymnasium id with a bounded Box action space works too (`get_spec`): without D4RL
reference scores its scores are raw returns. The agents act in [-1, 1]; where an environment's
bounds differ (`action_bounds`, e.g. InvertedPendulum's [-3, 3]), the runner maps actions to them
with `rescale_action`, and the dataset loaders map recorded actions the other way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import os
import sys
import tempfile
from collections.abc import Callable

import gymnasium as gym
import numpy as np

from stratdiff.errors import UserError


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """What the rest of the library needs to know about an environment id."""

    ref_min_score: float | None  # D4RL's random-policy return (None: no reference)
    ref_max_score: float | None  # D4RL's expert return
    max_episode_steps: int
    maze: str | None = None  # AntMaze grid name, None for a plain gymnasium env
    goal_reaching: bool = False  # score = success rate x 100
    controller: bool = False  # the open-floor goal-reaching ant (`AntGoal`)
    goal_curriculum: bool = False  # AntGoal with the goal-direction curriculum (training only)
    eval_env_id: str | None = None  # `evaluate` runs this id instead (None: the id itself)


# D4RL reference scores (D4RL's infos.py REF_MIN_SCORE / REF_MAX_SCORE); v5 envs share v2's references.
_HC = (-280.178953, 12135.0)
_HOP = (-20.272305, 3234.3)
_W2D = (1.629008, 4592.3)
_ANT = (-325.6, 3879.7)

ENV_SPECS: dict[str, EnvSpec] = {
    "HalfCheetah-v5": EnvSpec(*_HC, 1000),
    "Hopper-v5": EnvSpec(*_HOP, 1000),
    "Walker2d-v5": EnvSpec(*_W2D, 1000),
    "Ant-v5": EnvSpec(*_ANT, 1000),
    "antmaze-umaze-v0": EnvSpec(0.0, 1.0, 700, maze="umaze", goal_reaching=True),
    "antmaze-umaze-diverse-v0": EnvSpec(0.0, 1.0, 700, maze="umaze", goal_reaching=True),
    "antmaze-medium-play-v0": EnvSpec(0.0, 1.0, 1000, maze="medium", goal_reaching=True),
    "antmaze-medium-diverse-v0": EnvSpec(0.0, 1.0, 1000, maze="medium", goal_reaching=True),
    "ant-goal-v0": EnvSpec(None, None, 1000, controller=True),
    "ant-goal-curriculum-v0": EnvSpec(None, None, 1000, controller=True, goal_curriculum=True,
                                      eval_env_id="ant-goal-v0"),
}

# D4RL's maze grids (1 wall, 0 free) with the evaluation start "r" and goal "g".
MAZES: dict[str, list[list]] = {
    "umaze": [
        [1, 1, 1, 1, 1],
        [1, "r", 0, 0, 1],
        [1, 1, 1, 0, 1],
        [1, "g", 0, 0, 1],
        [1, 1, 1, 1, 1],
    ],
    "medium": [
        [1, 1, 1, 1, 1, 1, 1, 1],
        [1, "r", 0, 1, 1, 0, 0, 1],
        [1, 0, 0, 1, 0, 0, 0, 1],
        [1, 1, 0, 0, 0, 1, 1, 1],
        [1, 0, 0, 1, 0, 0, 0, 1],
        [1, 0, 1, 0, 0, 1, 0, 1],
        [1, 0, 0, 0, 1, 0, "g", 1],
        [1, 1, 1, 1, 1, 1, 1, 1],
    ],
}
GOAL_RADIUS = 0.5  # D4RL: reward 1 and success within 0.5 of the goal
MAZE_SCALING = 4.0  # size of one maze cell (gymnasium-robotics' and D4RL's AntMaze)
# ant-goal-curriculum-v0: goal directions within +-GOAL_CURRICULUM_START_ANGLE of the heading at
# step 0, widening linearly to the full circle (+-pi) at step GOAL_CURRICULUM_STEPS.
GOAL_CURRICULUM_START_ANGLE = np.pi / 12  # 15 degrees
GOAL_CURRICULUM_STEPS = 300_000


class UnknownEnvError(UserError, ValueError):
    pass


def get_spec(env_id: str) -> EnvSpec:
    """The EnvSpec of a known id; plain gymnasium ids get one without reference scores."""
    if env_id in ENV_SPECS:
        return ENV_SPECS[env_id]
    if env_id in gym.registry:
        steps = gym.registry[env_id].max_episode_steps or 1000
        return EnvSpec(None, None, steps)
    known = ", ".join(ENV_SPECS)
    raise UnknownEnvError(f"unknown environment id {env_id!r} (known: {known}, or any gymnasium id)")


# Printed to stderr by gymnasium-robotics 1.2.1-1.4.2 on import (from farama-notifications); it is
# about the Adroit hand environments, which stratdiff does not use, and in every run log it
# became the "last line" a failed sweep run reported.
_ADROIT_NOTICE = "AdroitHandRelocateDense-v1, AdroitHandHammerDense-v1, AdroitHandDoorDense-v1"


def _import_gymnasium_robotics():
    """gymnasium_robotics (registers AntMaze), without its import-time Adroit notice; anything
    else it writes to stderr is passed on."""
    captured = io.StringIO()
    with contextlib.redirect_stderr(captured):
        import gymnasium_robotics
    kept = [line for line in captured.getvalue().splitlines(keepends=True) if _ADROIT_NOTICE not in line]
    sys.stderr.write("".join(kept))
    return gymnasium_robotics


# MuJoCo (3.3+) warns on compiling a model with `<compiler settotalmass=...>`, which gymnasium's
# half_cheetah.xml uses: once per environment made, to stderr and to ./MUJOCO_LOG.TXT.
_SETTOTALMASS_WARNING = "compiler attribute 'settotalmass' is deprecated"


@contextlib.contextmanager
def _without_settotalmass_warning():
    """Drop MuJoCo's `settotalmass` deprecation warning while environments are made; any other
    MuJoCo warning goes on to the handler in place before (MuJoCo's own: stderr + log file)."""
    try:
        import mujoco
    except ImportError:  # a gymnasium task without MuJoCo
        yield
        return
    previous = mujoco.get_mju_user_warning()

    def handler(message: str) -> None:
        if _SETTOTALMASS_WARNING in message:
            return
        if previous is not None:
            previous(message)
        else:
            sys.stderr.write(f"WARNING: {message}\n")

    mujoco.set_mju_user_warning(handler)
    try:
        yield
    finally:
        mujoco.set_mju_user_warning(previous)


class AntMazeD4RL(gym.Wrapper):
    """gymnasium-robotics AntMaze made D4RL-like: flat 29-d observation, reward 1 within
    0.5 of the goal, termination on success. `maze_map` may carry "r"/"g" cells."""

    def __init__(self, maze_map: list[list], max_episode_steps: int, terminate_on_success: bool = True):
        """`terminate_on_success=False` never ends an episode before its time limit (the
        data-collection setting); the goal then stays where it is."""
        gym.register_envs(_import_gymnasium_robotics())
        # gymnasium-robotics writes a temporary XML per env; keep it in the temp folder.
        os.makedirs(tempfile.gettempdir(), exist_ok=True)
        env = gym.make(
            "AntMaze_UMaze-v5",
            maze_map=maze_map,
            continuing_task=not terminate_on_success,
            reset_target=False,
            include_cfrc_ext_in_observation=False,
            max_episode_steps=max_episode_steps,
        )
        super().__init__(env)
        self.terminate_on_success = terminate_on_success
        low = np.full(29, -np.inf, dtype=np.float32)
        self.observation_space = gym.spaces.Box(low, -low, dtype=np.float32)
        self.goal = np.zeros(2)
        self._ant = env.unwrapped.ant_env  # gymnasium's Ant-v5 inside the maze
        import mujoco  # loaded by gymnasium's MuJoCo envs already

        self._mj_step = mujoco.mj_step

    @staticmethod
    def flatten(obs: dict) -> np.ndarray:
        return np.concatenate([obs["achieved_goal"], obs["observation"]]).astype(np.float32)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.goal = obs["desired_goal"].copy()
        info["goal"] = self.goal.copy()
        return self.flatten(obs), info

    def step(self, action):
        obs, _, terminated, truncated, info = self.env.step(action)
        success = bool(goal_reached(obs["achieved_goal"], self.goal))
        info["success"] = success
        info["goal"] = self.goal.copy()
        terminated = bool(terminated) or (success and self.terminate_on_success)
        return self.flatten(obs), float(success), terminated, truncated, info

    def step_physics(self, action: np.ndarray) -> np.ndarray:
        """What `step` does to the simulation, without the wrappers' checks, Ant-v5's reward
        terms and the step count: set the controls, advance the ant's `frame_skip` MuJoCo
        steps and return the new [qpos, qvel] (float64, 29-d: x, y, then the 27-d ant state;
        `step` observes the same numbers as float32). MuJoCo releases the GIL while it steps,
        so threads can step different environments at once. Rewards and time limits are the
        caller's (`goal_reached(state[:2], self.goal)` is `step`'s reward)."""
        ant = self._ant
        ant.data.ctrl[:] = action
        self._mj_step(ant.model, ant.data, nstep=ant.frame_skip)
        return np.concatenate([ant.data.qpos, ant.data.qvel])


def goal_reached(xy: np.ndarray, goals: np.ndarray) -> np.ndarray:
    """Whether the ant(s) at `xy` [..., 2] are within `GOAL_RADIUS` of `goals` [..., 2]: the
    AntMaze reward and success."""
    return np.linalg.norm(np.asarray(xy) - goals, axis=-1) <= GOAL_RADIUS


def ant_yaw(states: np.ndarray) -> np.ndarray:
    """Heading (yaw, radians) of the ant from its 27-d state(s) [..., 27]: the torso
    quaternion (w, x, y, z) is state[1:5] (qpos[3:7])."""
    w, x, y, z = (states[..., i] for i in range(1, 5))
    return np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def goal_in_ant_frame(xy: np.ndarray, states: np.ndarray, goals: np.ndarray) -> np.ndarray:
    """The goal(s) relative to the ant, rotated into its heading frame: [..., 2], first
    coordinate ahead of the ant, second to its left."""
    d = np.asarray(goals, np.float64) - np.asarray(xy, np.float64)
    yaw = ant_yaw(np.asarray(states, np.float64))
    c, s = np.cos(yaw), np.sin(yaw)
    return np.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1]], axis=-1)


class AntGoal(gym.Wrapper):
    """Open-floor goal reaching with the AntMaze ant (gymnasium's Ant-v5 model, the one
    gymnasium-robotics' AntMaze loads, without contact forces).

    Observation (29-d): the goal relative to the ant in its heading frame
    (`goal_in_ant_frame`), then the 27-d ant state of AntMaze's observation. Reward:
    Ant-v5's reward with the forward velocity replaced by the velocity toward the goal,
    (d_before - d_after) / dt, plus Ant-v5's survive bonus, control and contact costs.
    Goals are drawn at a uniform distance in `goal_distance` and a uniform direction around
    the ant, at reset, when the ant comes within `GOAL_RADIUS` of the goal, and after
    `goal_steps` steps without reaching it. Episodes end as Ant-v5's do (torso height
    outside [0.2, 1.0]) or at the time limit. `info["goals_reached"]` counts the goals
    reached so far in the episode.

    Goal-direction curriculum (`curriculum_steps` > 0, the training env
    `ant-goal-curriculum-v0`): a goal's direction is drawn uniformly within
    +-`goal_half_angle()` of the ant's heading instead of the full circle; the half-angle
    grows linearly from `curriculum_start_angle` to pi (the full circle, the same
    distribution as without the curriculum) over the first `curriculum_steps` steps this env
    has taken (`train_step`, counted from the `train_step` given at construction, so a
    resumed training run continues its schedule). Why: SAC trained on the full-circle task
    (240k steps) only learns to stand (return ~900 per 1000
    steps = the survive bonus minus control costs; its ant drifts ~5 m per episode and
    reaches ~0.3 goals): with a uniformly random goal direction any fixed gait earns zero
    expected progress while the control and contact costs punish every movement, so standing
    is a strong local optimum and progress pays only once the gait is steered by the goal.
    With the goals ahead the task starts as Ant-v5's forward running (progress = forward
    velocity), which SAC learns in ~100-200k steps, and turning is learned as the cone
    widens. The rewards are unchanged.
    """

    def __init__(self, max_episode_steps: int = 1000, goal_distance: tuple[float, float] = (1.0, 6.0),
                 goal_steps: int = 200, curriculum_steps: int = 0,
                 curriculum_start_angle: float = GOAL_CURRICULUM_START_ANGLE, train_step: int = 0):
        env = gym.make("Ant-v5", exclude_current_positions_from_observation=False,
                       include_cfrc_ext_in_observation=False, max_episode_steps=max_episode_steps)
        super().__init__(env)
        low = np.full(29, -np.inf, dtype=np.float32)
        self.observation_space = gym.spaces.Box(low, -low, dtype=np.float32)
        self.goal_distance = goal_distance
        self.goal_steps = goal_steps
        self.goal = np.zeros(2)
        self._xy = np.zeros(2)
        self._goal_age = 0
        self._reached = 0
        self.curriculum_steps = curriculum_steps
        self.curriculum_start_angle = curriculum_start_angle
        self.train_step = train_step
        self._state = np.zeros(27)

    def goal_half_angle(self) -> float:
        """The largest angle between the ant's heading and a new goal's direction: pi without
        the curriculum, else linear in `train_step` up to pi at `curriculum_steps`."""
        if self.curriculum_steps <= 0:
            return float(np.pi)
        frac = min(1.0, self.train_step / self.curriculum_steps)
        return float(self.curriculum_start_angle + (np.pi - self.curriculum_start_angle) * frac)

    def _new_goal(self):
        r = self.np_random.uniform(*self.goal_distance)
        if self.curriculum_steps > 0:
            half = self.goal_half_angle()
            angle = float(ant_yaw(self._state)) + self.np_random.uniform(-half, half)
        else:  # ant-goal-v0's draws, unchanged
            angle = self.np_random.uniform(0.0, 2.0 * np.pi)
        self.goal = self._xy + r * np.array([np.cos(angle), np.sin(angle)])
        self._goal_age = 0

    def _obs(self, raw: np.ndarray) -> np.ndarray:
        state = raw[2:]
        return np.concatenate([goal_in_ant_frame(raw[:2], state, self.goal), state]).astype(np.float32)

    def reset(self, **kwargs):
        raw, info = self.env.reset(**kwargs)
        self._xy = raw[:2].copy()
        self._state = raw[2:].copy()
        self._reached = 0
        self._new_goal()
        info["goal"] = self.goal.copy()
        return self._obs(raw), info

    def step(self, action):
        before = np.linalg.norm(self.goal - self._xy)
        raw, _, terminated, truncated, info = self.env.step(action)
        self._xy = raw[:2].copy()
        self._state = raw[2:].copy()
        self.train_step += 1
        after = np.linalg.norm(self.goal - self._xy)
        progress = (before - after) / self.unwrapped.dt
        reward = progress + info["reward_survive"] + info["reward_ctrl"] + info["reward_contact"]
        info["reward_progress"] = progress
        info["goal"] = self.goal.copy()
        self._goal_age += 1
        if after <= GOAL_RADIUS:
            self._reached += 1
        if after <= GOAL_RADIUS or self._goal_age >= self.goal_steps:
            self._new_goal()
        info["goals_reached"] = self._reached
        return self._obs(raw), float(reward), terminated, truncated, info


def make_env(env_id: str, seed: int | None = None, train_step: int = 0) -> gym.Env:
    """Make an environment by id (see the module docstring). `seed` seeds the action space;
    pass the episode seed to `reset`. `train_step`: the training step the env starts at
    (only a curriculum env uses it: a resumed run passes its step)."""
    spec = get_spec(env_id)
    with _without_settotalmass_warning():
        if spec.maze is not None:
            env: gym.Env = AntMazeD4RL(MAZES[spec.maze], spec.max_episode_steps)
        elif spec.controller:
            env = AntGoal(spec.max_episode_steps,
                          curriculum_steps=GOAL_CURRICULUM_STEPS if spec.goal_curriculum else 0,
                          train_step=train_step)
        else:
            env = gym.make(env_id, max_episode_steps=spec.max_episode_steps)
    if seed is not None:
        env.action_space.seed(seed)
    return env


@functools.lru_cache(maxsize=None)
def action_bounds(env_id: str) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """(low, high) of a plain gymnasium environment's Box actions where they are not [-1, 1]; None
    where they are (and for this project's own ids). Other action spaces are refused."""
    spec = get_spec(env_id)
    if spec.maze is not None or spec.controller:
        return None
    with _without_settotalmass_warning():
        env = gym.make(env_id)
    space = env.action_space
    env.close()
    if not isinstance(space, gym.spaces.Box):
        raise UnknownEnvError(f"environment {env_id!r} has a {type(space).__name__} action space; stratdiff "
                              "needs continuous (Box) actions")
    low, high = np.asarray(space.low, np.float64).ravel(), np.asarray(space.high, np.float64).ravel()
    if not (np.isfinite(low).all() and np.isfinite(high).all()):
        raise UnknownEnvError(f"environment {env_id!r} has unbounded Box actions; stratdiff needs finite bounds")
    if np.all(low == -1.0) and np.all(high == 1.0):
        return None
    return tuple(low.tolist()), tuple(high.tolist())


def rescale_action(a, low, high):
    """[-1, 1] -> [low, high], elementwise (NumPy or JAX arrays)."""
    return low + (a + 1.0) * 0.5 * (high - low)


def unit_action(a, low, high):
    """[low, high] -> [-1, 1], the inverse of `rescale_action`."""
    return 2.0 * (a - low) / (high - low) - 1.0


def env_dims(env_id: str) -> tuple[int, int]:
    """(observation size, action size) of an environment."""
    env = make_env(env_id)
    try:
        return int(np.prod(env.observation_space.shape)), int(np.prod(env.action_space.shape))
    finally:
        env.close()


def normalized_score(value: float | np.ndarray, ref_min: float, ref_max: float):
    """D4RL's normalised score 100 * (R - min) / (max - min)."""
    return 100.0 * (np.asarray(value) - ref_min) / (ref_max - ref_min)


def reference_scores(env_id: str) -> tuple[float, float] | None:
    spec = get_spec(env_id)
    if spec.ref_min_score is None or spec.ref_max_score is None:
        return None
    return spec.ref_min_score, spec.ref_max_score


def evaluate(
    policy: Callable[[np.ndarray], np.ndarray],
    env_id: str,
    episodes: int,
    seed: int,
    ref_scores: tuple[float, float] | None = None,
) -> dict[str, float]:
    """Run `episodes` episodes side by side with a batched `policy(obs[n, d]) -> actions[n, k]`.

    Returns the mean return, its normalised score (with `ref_scores`, or the env's D4RL
    references when known) and, for goal-reaching tasks, the success rate. Episode i is
    reset with seed `seed + i`, so the same seed gives the same evaluation. An id with an
    `eval_env_id` (`ant-goal-curriculum-v0`) is evaluated on that id (`ant-goal-v0`). For the
    goal-reaching ant `goals_reached` is the mean number of goals reached per episode.
    """
    env_id = get_spec(env_id).eval_env_id or env_id
    envs = [make_env(env_id) for _ in range(episodes)]
    obs = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(envs)])
    returns = np.zeros(episodes)
    lengths = np.zeros(episodes, dtype=np.int64)
    success = np.zeros(episodes, dtype=bool)
    goals = np.zeros(episodes)
    alive = np.ones(episodes, dtype=bool)
    while alive.any():
        idx = np.flatnonzero(alive)
        actions = np.asarray(policy(obs[idx]))
        for j, i in enumerate(idx):
            o, r, term, trunc, info = envs[i].step(actions[j])
            obs[i] = o
            returns[i] += r
            lengths[i] += 1
            success[i] |= bool(info.get("success", False))
            goals[i] = info.get("goals_reached", 0)
            if term or trunc:
                alive[i] = False
    for env in envs:
        env.close()
    out = {"return": float(returns.mean()), "return_std": float(returns.std()),
           "length": float(lengths.mean())}
    spec = get_spec(env_id)
    refs = ref_scores or reference_scores(env_id)
    if spec.controller:
        out["goals_reached"] = float(goals.mean())
    if spec.goal_reaching:
        out["success"] = float(success.mean())
        out["score"] = 100.0 * out["success"]
    elif refs is not None:
        out["score"] = float(normalized_score(returns, *refs).mean())
    return out
