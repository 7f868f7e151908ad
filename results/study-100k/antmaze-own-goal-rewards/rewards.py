"""How often a built AntMaze dataset rewards its transitions, against each episode's own goal
(what `stratdiff data build` stores) and against the evaluation goal (what D4RL's datasets
reward: D4RL relabels every AntMaze dataset to the environment's target goal, sparse, within
0.5).

    python results/study-100k/antmaze-own-goal-rewards/rewards.py [NAME ...]

NAME: a dataset built with `stratdiff data build` (default antmaze-umaze-diverse-v0). The
evaluation goal is the mean of 200 evaluation resets' goals (each reset adds uniform noise).
"""

from __future__ import annotations

import sys

import numpy as np

from stratdiff.data import load_dataset
from stratdiff.data.builders import read_step_infos
from stratdiff.data.loaders import data_root
from stratdiff.envs import GOAL_RADIUS, make_env


def main(names: list[str]) -> int:
    for name in names or ["antmaze-umaze-diverse-v0"]:
        folder = data_root() / name
        data = load_dataset(folder)
        env = make_env(name, seed=0)
        target = np.mean([env.reset(seed=s)[1]["goal"] for s in range(200)], axis=0)
        xy = data.next_observations[:, :2]
        own = np.linalg.norm(xy - read_step_infos(folder, "goal"), axis=1) <= GOAL_RADIUS
        at_target = np.linalg.norm(xy - target, axis=1) <= GOAL_RADIUS
        ends = np.flatnonzero(data.timeouts | data.terminals)
        starts = np.r_[0, ends[:-1] + 1]
        passing = np.mean([at_target[a:b + 1].any() for a, b in zip(starts, ends)])
        print(f"{name}: evaluation goal {target.round(2)}; rewarded transitions: stored "
              f"{100 * data.rewards.mean():.1f}%, own goal {100 * own.mean():.1f}%, evaluation goal "
              f"{100 * at_target.mean():.1f}%; episodes passing within {GOAL_RADIUS} of the evaluation "
              f"goal {100 * passing:.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
