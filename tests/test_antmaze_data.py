"""AntMaze data collection: the maze planner, the goal-reaching ant env, the D4RL rules for
starts and goals, and tiny builds written as Minari datasets with their goals."""

import json

import flax.serialization
import jax
import numpy as np
import pytest

from stratdiff import envs
from stratdiff.agents.sac import SACAgent, SACConfig
from stratdiff.behaviour import antmaze
from stratdiff.behaviour.planner import MazePlanner
from stratdiff.cli import main as cli_main
from stratdiff.data import builders
from stratdiff.data.loaders import load_dataset


@pytest.fixture(scope="module")
def controller_dir(tmp_path_factory):
    """An untrained SAC actor of ant-goal-v0 written the way `export_policy` writes one."""
    folder = tmp_path_factory.mktemp("ctrl") / "expert"
    folder.mkdir()
    agent = SACAgent.create(jax.random.PRNGKey(0), 29, 8, SACConfig(hidden_dims=(16, 16)))
    params = jax.tree_util.tree_map(np.asarray, agent.actor_params)
    (folder / "actor.msgpack").write_bytes(flax.serialization.msgpack_serialize(params))
    (folder / "policy.json").write_text(json.dumps({
        "env_id": "ant-goal-v0", "step": 0, "seed": 0, "provisional": True,
        "sac_config": {"hidden_dims": [16, 16]}, "evaluation": {}}))
    return folder


# ----------------------------------------------------------------------------- planner


@pytest.mark.parametrize("maze", ["umaze", "medium"])
def test_planner_paths_are_shortest_chains_of_free_cells(maze):
    planner = MazePlanner(envs.MAZES[maze])
    cells = planner.free_cells()
    assert len(cells) == {"umaze": 7, "medium": 26}[maze]
    for start in cells:
        for goal in cells:
            path = planner.path(start, goal)
            assert path[0] == start and path[-1] == goal
            assert all(planner.free[c] for c in path)
            steps = np.abs(np.diff(np.array(path), axis=0)).sum(axis=1)
            assert (steps == 1).all()  # neighbouring cells, no diagonal moves
            assert len(path) - 1 == planner.distances(goal)[start]
    if maze == "umaze":  # around the U from the evaluation start to the evaluation goal
        assert planner.path((1, 1), (3, 1)) == [(1, 1), (1, 2), (1, 3), (2, 3), (3, 3), (3, 2), (3, 1)]
    with pytest.raises(ValueError, match="wall"):
        planner.path((0, 0), cells[0])


@pytest.mark.parametrize("maze, env_id", [("umaze", "antmaze-umaze-v0"), ("medium", "antmaze-medium-play-v0")])
def test_planner_cells_match_gymnasium_robotics(maze, env_id):
    planner = MazePlanner(envs.MAZES[maze])
    env = envs.make_env(env_id)
    grid = env.unwrapped.maze
    for cell in planner.free_cells():
        np.testing.assert_allclose(planner.cell_center(cell), grid.cell_rowcol_to_xy(np.array(cell)))
        assert planner.cell_of(planner.cell_center(cell) + [1.9, -1.9]) == cell
    env.close()


@pytest.mark.parametrize("maze", ["umaze", "medium"])
def test_waypoints_lead_toward_the_goal_without_touching_walls(maze):
    """A point that walks toward the planner's waypoint (0.3 per step) reaches every goal
    from every start, from off-centre positions, and never enters a wall cell; from a cell
    centre, the waypoint lies in the next cell of the shortest path."""
    planner = MazePlanner(envs.MAZES[maze])
    cells = planner.free_cells()
    for start in cells:
        for goal_cell in cells:
            goal = planner.cell_center(goal_cell) + [0.7, -0.9]
            if start != goal_cell:
                w = planner.waypoint(planner.cell_center(start), goal)
                dist = planner.distances(goal_cell)
                assert dist[planner.cell_of(w)] == dist[start] - 1
            xy = planner.cell_center(start) + [1.3, 1.2]
            for _ in range(200):
                d = planner.waypoint(xy, goal) - xy
                xy = xy + d * min(1.0, 0.3 / max(np.linalg.norm(d), 1e-9))
                i = int(np.floor((planner._y_center - xy[1]) / planner.scaling))
                j = int(np.floor((xy[0] + planner._x_center) / planner.scaling))
                assert planner.free[i, j], (start, goal_cell, xy)
                if np.linalg.norm(xy - goal) < envs.GOAL_RADIUS:
                    break
            assert np.linalg.norm(xy - goal) < envs.GOAL_RADIUS, (start, goal_cell)


@pytest.mark.parametrize("maze", ["umaze", "medium"])
def test_batched_waypoints_and_cells_match_one_point_at_a_time(maze):
    """Points anywhere (walls and outside the map included) against goals in random cells:
    the batch gives each row what that row alone gives."""
    planner = MazePlanner(envs.MAZES[maze])
    rows, cols = planner.free.shape
    rng = np.random.default_rng(0)
    xy = rng.uniform(-1, 1, (300, 2)) * [2 * cols + 3, 2 * rows + 3]
    cells = np.array(planner.free_cells())
    goals = np.array([planner.cell_center(tuple(c)) for c in cells[rng.integers(len(cells), size=300)]])
    goals += rng.uniform(-1, 1, goals.shape)
    batch = planner.waypoints(xy, goals)
    np.testing.assert_array_equal(batch, np.stack([planner.waypoints(p[None], g[None])[0] for p, g in zip(xy, goals)]))
    found = planner.cells_of(xy)
    for p, cell in zip(xy, found):
        assert planner.free[tuple(cell)]
        inside = planner.cell_center(tuple(cell))
        if np.abs(p - inside).max() > planner.scaling / 2:  # in a wall or outside: the nearest free centre
            dist = [np.linalg.norm(planner.cell_center(c) - p) for c in planner.free_cells()]
            assert np.linalg.norm(inside - p) == pytest.approx(min(dist))


# ------------------------------------------------------------------- goal-reaching ant


def test_maze_physics_step_is_the_env_step():
    """`AntMazeD4RL.step_physics` (the data collection's step) gives `step`'s observations and
    rewards, bit for bit, through wall contacts."""
    maze = antmaze.open_map("umaze")
    a = envs.AntMazeD4RL(maze, 1000, terminate_on_success=False)
    b = envs.AntMazeD4RL(maze, 1000, terminate_on_success=False)
    options = {"reset_cell": np.array([1, 1]), "goal_cell": np.array([1, 2])}
    first, _ = a.reset(seed=4, options=options)
    np.testing.assert_array_equal(first, b.reset(seed=4, options=options)[0])
    rng = np.random.default_rng(0)
    for _ in range(300):
        action = np.clip(rng.normal(0.2, 0.8, 8), -1, 1).astype(np.float32)
        obs, reward, *_ = a.step(action)
        state = b.step_physics(action)
        np.testing.assert_array_equal(obs, state.astype(np.float32))
        assert reward == float(envs.goal_reached(state[:2], b.goal))
    assert np.abs(obs[:2] - first[:2]).max() > 0.5  # the ant moved
    a.close()
    b.close()


def test_goal_in_ant_frame_rotates_by_the_heading():
    state = np.zeros(27)
    yaw = np.pi / 2  # facing +y: quaternion (cos(yaw/2), 0, 0, sin(yaw/2))
    state[1:5] = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
    assert envs.ant_yaw(state) == pytest.approx(yaw)
    np.testing.assert_allclose(envs.goal_in_ant_frame(np.array([1.0, 1.0]), state, np.array([1.0, 3.0])),
                               [2.0, 0.0], atol=1e-12)  # 2 ahead
    np.testing.assert_allclose(envs.goal_in_ant_frame(np.array([1.0, 1.0]), state, np.array([0.0, 1.0])),
                               [0.0, 1.0], atol=1e-12)  # 1 to the left


def _step_with_velocity(goal_offset):
    env = envs.make_env("ant-goal-v0")
    env.reset(seed=3)
    data = env.unwrapped.data
    xy = data.qpos[:2].copy()
    env.goal = xy + np.asarray(goal_offset)
    qvel = data.qvel.copy()
    qvel[0] = 2.0  # the torso slides along +x
    env.unwrapped.set_state(data.qpos.copy(), qvel)
    _, reward, *_, info = env.step(np.zeros(8, np.float32))
    env.close()
    return reward, info


def test_goal_env_rewards_moving_toward_the_goal():
    assert envs.env_dims("ant-goal-v0") == (29, 8)
    env = envs.make_env("ant-goal-v0")
    obs, info = env.reset(seed=0)
    xy = env.unwrapped.data.qpos[:2]
    np.testing.assert_allclose(obs[:2], envs.goal_in_ant_frame(xy, obs[2:], info["goal"]), atol=1e-5)
    assert 1.0 <= np.linalg.norm(info["goal"] - xy) <= 6.0
    env.close()
    toward, info_t = _step_with_velocity([5.0, 0.0])
    away, info_a = _step_with_velocity([-5.0, 0.0])
    assert info_t["reward_progress"] > 0.5 > -0.5 > info_a["reward_progress"]
    assert toward - away == pytest.approx(info_t["reward_progress"] - info_a["reward_progress"])
    assert toward > away


def test_goal_env_draws_a_new_goal_when_one_is_reached():
    env = envs.make_env("ant-goal-v0")
    env.reset(seed=1)
    old = env.unwrapped.data.qpos[:2].copy() + [0.1, 0.0]
    env.goal = old.copy()
    _, _, _, _, info = env.step(np.zeros(8, np.float32))
    assert info["goals_reached"] == 1 and not np.allclose(env.goal, old)
    env.close()


def _goal_angles(env_id, train_step, n=200):
    """Angles between the ant's heading and the first goal of n resets [n], and the env."""
    env = envs.make_env(env_id, train_step=train_step)
    angles = np.array([np.arctan2(*env.reset(seed=k)[0][1::-1]) for k in range(n)])
    return angles, env


def test_goal_curriculum_widens_from_ahead_to_the_full_circle():
    steps, start = envs.GOAL_CURRICULUM_STEPS, envs.GOAL_CURRICULUM_START_ANGLE
    assert start == pytest.approx(np.pi / 12) and steps == 300_000
    assert envs.env_dims("ant-goal-curriculum-v0") == (29, 8)
    ahead, env = _goal_angles("ant-goal-curriculum-v0", 0)
    assert env.goal_half_angle() == pytest.approx(np.pi / 12)
    assert np.abs(ahead).max() <= np.pi / 12 + 1e-4 and np.abs(ahead).max() > 0.8 * np.pi / 12
    half, env = _goal_angles("ant-goal-curriculum-v0", steps // 2)
    assert env.goal_half_angle() == pytest.approx((np.pi / 12 + np.pi) / 2)  # 97.5 degrees
    assert np.abs(half).max() <= np.deg2rad(97.5) + 1e-4 and np.abs(half).max() > np.deg2rad(80)
    env.step(np.zeros(8, np.float32))  # every step advances the schedule
    assert env.train_step == steps // 2 + 1
    full, env = _goal_angles("ant-goal-curriculum-v0", 2 * steps)
    assert env.goal_half_angle() == pytest.approx(np.pi)
    assert (np.abs(full) > np.pi / 2).mean() > 0.35  # behind the ant about half the time
    plain, env = _goal_angles("ant-goal-v0", 0)
    assert env.goal_half_angle() == pytest.approx(np.pi) and (np.abs(plain) > np.pi / 2).mean() > 0.35
    env.close()
    # the training env is evaluated on ant-goal-v0's full-circle goals
    assert envs.get_spec("ant-goal-curriculum-v0").eval_env_id == "ant-goal-v0"
    zero = lambda o: np.zeros((len(o), 8))  # noqa: E731
    assert envs.evaluate(zero, "ant-goal-curriculum-v0", 1, 5) == envs.evaluate(zero, "ant-goal-v0", 1, 5)


# ------------------------------------------------------------------- rules and builds


def test_start_and_goal_rules_follow_d4rl():
    rng = np.random.default_rng(0)
    umaze = [antmaze.task("antmaze-umaze-v0").cells(rng) for _ in range(20)]
    assert set(umaze) == {((1, 1), (3, 1))}  # fixed start and goal: the map's r and g
    diverse = [antmaze.task("antmaze-medium-diverse-v0").cells(rng) for _ in range(200)]
    assert all(s != g for s, g in diverse)
    assert len({s for s, _ in diverse}) > 20 and len({g for _, g in diverse}) > 20
    play = [antmaze.task("antmaze-medium-play-v0").cells(rng) for _ in range(200)]
    assert {g for _, g in play} == set(antmaze.MEDIUM_PLAY_GOALS) and len({s for s, _ in play}) > 20
    with pytest.raises(ValueError, match="antmaze-large-v0"):
        antmaze.task("antmaze-large-v0")


def test_collection_does_not_depend_on_the_number_of_side_by_side_envs_or_threads():
    def controller(o):
        return np.tanh(o[:, :8])  # any deterministic function of the observation

    a, ea = antmaze.collect("antmaze-umaze-diverse-v0", controller, 130, seed=2, episode_steps=50, num_envs=1)
    for num_envs, threads in ((3, 1), (3, 2), (2, 3)):
        b, eb = antmaze.collect("antmaze-umaze-diverse-v0", controller, 130, seed=2, episode_steps=50,
                                num_envs=num_envs, threads=threads)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
        np.testing.assert_array_equal(ea["goal_cells"], eb["goal_cells"])
        np.testing.assert_array_equal(ea["success"], eb["success"])
    assert len(ea["goal_cells"]) == 3 and a["timeouts"].sum() == 3 and not a["terminals"].any()
    assert np.abs(a["actions"]).max() <= 1.0


def test_tiny_antmaze_build_writes_minari_with_goals(tmp_path, controller_dir, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative --out, as typed on the command line
    _, ds, _ = builders.build("antmaze-medium-play-v0", size=2300, out="amp", seed=1,
                                policy_dirs={"controller": controller_dir},
                                command="stratdiff data build antmaze-medium-play-v0 --size 2300")
    back = load_dataset(tmp_path / "amp")
    assert back.size == 2300 and back.num_episodes == 3 and back.obs_dim == 29 and back.act_dim == 8
    np.testing.assert_array_equal(back.episode_lengths(), [1000, 1000, 300])
    assert back.timeouts.sum() == 3 and back.terminals.sum() == 0
    np.testing.assert_array_equal(back.observations, ds.observations)
    # x, y first; reward 1 exactly within 0.5 of the episode's goal
    goals = builders.read_step_infos(tmp_path / "amp", "goal")
    assert goals.shape == (2300, 2)
    near = np.linalg.norm(back.next_observations[:, :2] - goals, axis=1) <= envs.GOAL_RADIUS
    np.testing.assert_array_equal(back.rewards, near.astype(np.float32))
    planner = MazePlanner(envs.MAZES["medium"])
    for s, e in zip(back.episode_starts(), np.append(back.episode_starts()[1:], back.size)):
        assert (goals[s:e] == goals[s]).all()  # one goal per episode, from the play set
        assert planner.cell_of(goals[s]) in antmaze.MEDIUM_PLAY_GOALS
    behaviour = back.info.extra["behaviour_policy"]
    assert behaviour["level"] == "navigator" and behaviour["action_noise_std"] == 0.2
    assert behaviour["controller"]["env_id"] == "ant-goal-v0" and back.info.extra["step_infos"] == ["goal"]
    assert back.info.env_id == "antmaze-medium-play-v0" and back.info.ref_scores == (0.0, 1.0)
    assert cli_main(["data", "inspect", str(tmp_path / "amp"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["transitions"] == 2300 and summary["episodes"] == 3 and summary["obs_dim"] == 29
    reached = [bool(back.rewards[s:s + 1000].any()) for s in back.episode_starts()]
    assert summary["goal_episode_share"] == pytest.approx(np.mean(reached)) and summary["normalized_score"] is None
    timing = json.loads((tmp_path / "amp" / "build_time.json").read_text())
    assert timing["episode_success_rate"] == behaviour["episode_success_rate"]


def test_antmaze_names_are_listed_and_bad_input_is_one_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("STRATDIFF_DATA_DIR", str(tmp_path))
    assert cli_main(["data", "list", "--json"]) == 0
    rows = {r["name"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    for name in builders.ANTMAZE:
        assert rows[name]["kind"] == "antmaze" and rows[name]["env_id"] == name
    with pytest.raises(FileNotFoundError, match="policy.json"):
        builders.make_dataset("antmaze-umaze-v0", 100, policy_dirs={"controller": tmp_path / "none"})
    with pytest.raises(ValueError, match="antmaze-large-v0"):
        builders.make_dataset("antmaze-large-v0", 100)
    with pytest.raises(ValueError, match="--size"):
        antmaze.collect("antmaze-umaze-v0", lambda o: o[:, :8], 0)
    with pytest.raises(ValueError, match="--env"):
        antmaze.success_rate(lambda o: o[:, :8], "Hopper-v5", episodes=1)


def test_success_rate_of_a_scripted_controller_on_the_evaluation_task():
    out = antmaze.success_rate(lambda o: np.zeros((len(o), 8), np.float32), "antmaze-umaze-v0",
                               episodes=2, seed=0)
    assert out["success"] == 0.0 and out["length"] == 700 and out["episodes"] == 2


def test_sac_driver_trains_resumes_and_exports_the_controller(tmp_path):
    from stratdiff.behaviour.export import export_policy
    from stratdiff.behaviour.train import TrainConfig, read_checkpoint_step, train

    cfg = TrainConfig(env_id="ant-goal-curriculum-v0", steps=200, start_steps=100, eval_every=100,
                      eval_episodes=1, buffer_size=200)
    sac = SACConfig(hidden_dims=(16, 16))
    train(TrainConfig(**{**cfg.__dict__, "steps": 100}), tmp_path / "run", sac, progress=False, log=lambda m: None)
    train(cfg, tmp_path / "run", sac, progress=False, log=lambda m: None)  # resumes at 100
    assert read_checkpoint_step(tmp_path / "run") == 200
    rows = (tmp_path / "run" / "evals.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("step,")
    act = antmaze.snapshot_controller(tmp_path / "run", 200)(np.zeros((2, 29), np.float32))
    assert act.shape == (2, 8) and np.abs(act).max() <= 1.0
    # exported as the controller of the task it solves, with its planner-steered success rate
    out = export_policy(tmp_path / "run", 200, "expert", episodes=2, dest=tmp_path / "controller")
    meta = json.loads((out / "policy.json").read_text())
    assert meta["env_id"] == "ant-goal-v0" and meta["train_config"]["env_id"] == "ant-goal-curriculum-v0"
    success = meta["antmaze_umaze_success"]
    assert success["episodes"] == 2 and success["noise_std"] == 0.2 and 0.0 <= success["success"] <= 1.0
    policy = antmaze.load_controller(out)
    np.testing.assert_array_equal(antmaze.policy_controller(policy)(np.zeros((2, 29), np.float32)), act)


def test_committed_controller_reaches_the_umaze_goal_through_the_planner():
    """The shipped data controller (SAC, ant-goal-curriculum-v0, 800k steps) steered by the
    planner around the U: 8/8 deterministic episodes measured here, in about 270 steps."""
    controller = antmaze.policy_controller(antmaze.load_controller())
    out = antmaze.success_rate(controller, "antmaze-umaze-v0", episodes=8, seed=0)
    assert out["success"] >= 0.75 and out["length"] < 500


def test_data_build_cli_uses_the_committed_controller_and_reports_goal_success(tmp_path, capsys):
    assert cli_main(["data", "build", "antmaze-umaze-v0", "--size", "1000", "--out", str(tmp_path / "u")]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    timing = json.loads((tmp_path / "u" / "build_time.json").read_text())
    assert line.startswith("antmaze-umaze-v0: 1000 transitions, 1 episodes, ")
    assert f"{100 * timing['episode_success_rate']:.1f}% of episodes reach their goal" in line
    meta = load_dataset(tmp_path / "u").info.extra["behaviour_policy"]["controller"]
    assert meta["env_id"] == "ant-goal-v0" and meta["sac_step"] == 800_000 and not meta["provisional"]
