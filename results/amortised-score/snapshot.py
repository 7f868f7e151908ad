"""Copy a running `stratdiff train` folder each time its checkpoint reaches one of the given steps.

    python results/amortised-score/snapshot.py RUN SNAPSHOTS STEP [STEP ...]

Polls RUN/checkpoint.msgpack; at the first checkpoint with a built stratifier (the online phase
has begun) whose step N is at or past one of STEP, copies RUN (without tensorboard/) to
SNAPSHOTS/stepN, so that `stratdiff diffusion similarity` can measure the split at that point of
the run later. (Online checkpoints are written at the first episode end after each
`checkpoint_every` steps, so N can lie a little past STEP.) Exits once every step is copied or
the run has finished (summary.json) and no further step can come.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from stratdiff import checkpoint


def main() -> int:
    run, snapshots, steps = Path(sys.argv[1]), Path(sys.argv[2]), {int(s) for s in sys.argv[3:]}
    seen_mtime = None
    while steps:
        path = run / "checkpoint.msgpack"
        if path.is_file() and path.stat().st_mtime != seen_mtime:
            seen_mtime = path.stat().st_mtime
            try:
                counters = checkpoint.load_raw(path)["counters"]
                # the offline phase's last checkpoint has the same step as the one saved once the
                # stratifier is built: only the latter is the online phase's start
                step = int(counters["step"]) if int(counters.get("stratifier_built", 0)) else None
            except Exception:  # replaced while reading: try again at the next poll
                seen_mtime = None
                step = None
            if step is not None and step >= min(steps, default=step + 1):
                dst = snapshots / f"step{step}"
                shutil.rmtree(dst, ignore_errors=True)
                shutil.copytree(run, dst, ignore=shutil.ignore_patterns("tensorboard", "run.lock"))
                if int(checkpoint.load_raw(dst / "checkpoint.msgpack")["counters"]["step"]) == step:
                    print(f"snapshot {dst}", flush=True)
                    steps = {s for s in steps if s > step}
                else:  # the run checkpointed again while this copied
                    shutil.rmtree(dst)
        if (run / "summary.json").is_file() and seen_mtime == path.stat().st_mtime:
            break
        time.sleep(5)
    return 0 if not steps else 1


if __name__ == "__main__":
    sys.exit(main())
