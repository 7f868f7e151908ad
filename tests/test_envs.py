"""Environments and scores: D4RL references, the D4RL-like AntMaze, batched evaluation."""

import numpy as np
import pytest

from stratdiff import envs


def test_normalised_score_uses_d4rl_references():
    lo, hi = envs.reference_scores("Hopper-v5")
    assert (lo, hi) == (-20.272305, 3234.3)
    assert envs.normalized_score(hi, lo, hi) == pytest.approx(100.0)
    assert envs.normalized_score(lo + 0.25 * (hi - lo), lo, hi) == pytest.approx(25.0)
    assert envs.reference_scores("InvertedPendulum-v5") is None
    with pytest.raises(envs.UnknownEnvError, match="no-such-env"):
        envs.get_spec("no-such-env-v0")


@pytest.mark.parametrize("env_id, steps", [("antmaze-umaze-v0", 700), ("antmaze-medium-play-v0", 1000)])
def test_antmaze_is_d4rl_like(env_id, steps):
    assert envs.env_dims(env_id) == (29, 8)
    assert envs.get_spec(env_id).max_episode_steps == steps
    env = envs.make_env(env_id)
    obs, info = env.reset(seed=0)
    # x, y first, then the 27-d ant state without contact forces
    assert obs.shape == (29,) and obs.dtype == np.float32
    np.testing.assert_allclose(obs[:2], env.unwrapped.data.qpos[:2], atol=1e-5)
    goal = info["goal"]
    obs, reward, terminated, truncated, info = env.step(np.zeros(8, np.float32))
    far = np.linalg.norm(obs[:2] - goal) > envs.GOAL_RADIUS
    assert reward == (0.0 if far else 1.0) and info["success"] == (not far)
    env.close()


def test_antmaze_success_rewards_one_and_ends_the_episode():
    env = envs.make_env("antmaze-umaze-v0")
    env.reset(seed=0)
    # put the goal under the ant: the next step is a success, rewarded 1, and ends the episode
    env.goal = env.unwrapped.data.qpos[:2].copy() + np.array([0.3, 0.0])
    _, reward, terminated, _, info = env.step(np.zeros(8, np.float32))
    assert reward == 1.0 and info["success"] and terminated
    env.close()


def test_evaluate_is_batched_deterministic_and_scored():
    calls = []

    def policy(obs):
        calls.append(len(obs))
        return np.zeros((len(obs), 3), np.float32)

    a = envs.evaluate(policy, "Hopper-v5", episodes=3, seed=7)
    b = envs.evaluate(policy, "Hopper-v5", episodes=3, seed=7)
    assert a == b and calls[0] == 3  # one policy call for all live episodes
    lo, hi = envs.reference_scores("Hopper-v5")
    assert a["score"] == pytest.approx(100 * (a["return"] - lo) / (hi - lo))
    maze = envs.evaluate(lambda o: np.zeros((len(o), 8)), "antmaze-umaze-v0", episodes=1, seed=0)
    assert maze["success"] == 0.0 and maze["score"] == 0.0 and maze["length"] == 700


def test_antmaze_import_drops_only_the_adroit_notice():
    # gymnasium-robotics prints a notice about its Adroit envs on import; a fresh process
    # shows whether stratdiff's import keeps it out of stderr (and so out of run logs).
    import subprocess
    import sys

    code = ("import sys; from stratdiff import envs; env = envs.make_env('antmaze-umaze-v0', seed=0); "
            "env.close(); print('late', file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert envs._ADROIT_NOTICE not in done.stderr
    assert done.stderr.strip().endswith("late")  # stderr itself is restored after the import
