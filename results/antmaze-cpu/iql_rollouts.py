"""Where a trained policy's AntMaze episodes go: the mean action against sampled actions.

    python results/antmaze-cpu/iql_rollouts.py RUN_DIR {mean,sample} [EPISODES]

Loads the run's last checkpoint (RUN_DIR/checkpoint.msgpack; its dataset must be loadable, e.g.
STRATDIFF_DATA_DIR set as when it was trained), runs EPISODES evaluation episodes (default 20,
reset seeds 10,000 + i) and prints the ant's mean position at a few steps, the share of
episodes that came within 0.5 of their goal, each episode's closest distance and final x, y.
`mean` takes the policy's mean action (the evaluation protocol), `sample` draws from it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from stratdiff import envs
from stratdiff.methods import RunConfig
from stratdiff.runner import Runner


def main(run_dir: str, mode: str, episodes: int = 20) -> None:
    if mode not in ("mean", "sample"):
        raise SystemExit(f"mode must be 'mean' or 'sample', not {mode!r}")
    cfg = RunConfig.from_dict(json.loads((Path(run_dir) / "config.json").read_text()))
    runner = Runner(cfg, run_dir, progress=False)
    runner.load()
    steps = envs.get_spec(runner.env_id).max_episode_steps
    group = [envs.make_env(runner.env_id) for _ in range(episodes)]
    obs = np.stack([env.reset(seed=10_000 + i)[0] for i, env in enumerate(group)])
    goals = np.stack([env.goal for env in group])
    closest = np.full(episodes, np.inf)
    key = jax.random.PRNGKey(0)
    for t in range(steps):  # no early termination: where the ant ends up is the point
        key, k = jax.random.split(key)
        actions = np.asarray(runner.agent.act(jnp.asarray(runner.normalizer.normalize(obs)), k, mode == "mean"))
        for i, env in enumerate(group):
            obs[i] = env.step(actions[i])[0]
        closest = np.minimum(closest, np.linalg.norm(obs[:, :2] - goals, axis=1))
        if t + 1 in (100, 300, steps):
            print(f"step {t + 1}: mean x, y {obs[:, :2].mean(0).round(2)}")
    print(f"run {run_dir} at step {runner.step}, {mode} actions: {np.mean(closest <= envs.GOAL_RADIUS):.0%} of "
          f"{episodes} episodes came within {envs.GOAL_RADIUS} of the goal")
    print("closest distance to the goal:", np.sort(closest).round(2).tolist())
    print("final x, y:", obs[:, :2].round(1).tolist())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:4]))
