"""Are EDIS's generated halfcheetah transitions physically consistent?

HalfCheetah-v5's reward is linear in the x-velocity and the squared action, both in the
transition. Fit r ~ s'[8] + s[8] + |a|^2 + 1 on a run's online (real) transitions by least
squares and report R^2 on the real ones and on the final generated pool; compare simple
statistics. Reads runs/study-halfcheetah-medium-32.6/edis-iql/halfcheetah-medium-v5/seed*/checkpoint.msgpack (the
last checkpoint holds the online buffer and the pool).

    .venv/bin/python results/study-cpu/edis_pool_check.py [RUN_DIR ...]
"""

import sys
from glob import glob

import numpy as np
from flax.serialization import msgpack_restore


def features(t):
    return np.column_stack([t["next_observations"][:, 8], t["observations"][:, 8],
                            (t["actions"] ** 2).sum(1), np.ones(len(t["rewards"]))])


def main(runs):
    for run in runs:
        state = msgpack_restore(open(f"{run}/checkpoint.msgpack", "rb").read())["state"]
        online, pool = state["online"], state["source"]["pool"]
        w, *_ = np.linalg.lstsq(features(online), online["rewards"], rcond=None)

        def r2(t):
            err = t["rewards"] - features(t) @ w
            return 1 - err.var() / t["rewards"].var()

        print(f"{run}: R^2 of the reward model fitted on real online transitions: "
              f"real {r2(online):.3f}, generated {r2(pool):.3f}")
        for name, t in (("real online", online), ("generated", pool)):
            print(f"  {name:11s} reward mean {t['rewards'].mean():.3f} std {t['rewards'].std():.3f}"
                  f" | |a|^2 {(t['actions'] ** 2).sum(1).mean():.2f}"
                  f" | share of |a| at the bound {np.mean(np.abs(t['actions']) > 0.999):.2f}"
                  f" | std of s' - s {(t['next_observations'] - t['observations']).std():.3f}")


if __name__ == "__main__":
    main(sys.argv[1:] or sorted(glob("runs/study-halfcheetah-medium-32.6/edis-iql/halfcheetah-medium-v5/seed*")))
