"""Copy a running `stratdiff train` folder each time its checkpoint reaches one of the given steps.

    python results/amortised-score/snapshot.py RUN SNAPSHOTS STEP [STEP ...]

Polls RUN/checkpoint.msgpack; when the checkpoint's step is one of STEP, copies RUN (without
tensorboard/) to SNAPSHOTS/stepSTEP, so that `stratdiff diffusion similarity` can measure the
split at that point of the run later. Exits once every step is copied or the run has finished
(summary.json) and no further step can come.
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
                step = int(checkpoint.load_raw(path)["counters"]["step"])
            except Exception:  # replaced while reading: try again at the next poll
                seen_mtime = None
                step = None
            if step in steps:
                dst = snapshots / f"step{step}"
                shutil.rmtree(dst, ignore_errors=True)
                shutil.copytree(run, dst, ignore=shutil.ignore_patterns("tensorboard", "run.lock"))
                if int(checkpoint.load_raw(dst / "checkpoint.msgpack")["counters"]["step"]) == step:
                    print(f"snapshot {dst}", flush=True)
                    steps.discard(step)
                else:  # the run checkpointed again while this copied
                    shutil.rmtree(dst)
        if (run / "summary.json").is_file() and seen_mtime == path.stat().st_mtime:
            break
        time.sleep(5)
    return 0 if not steps else 1


if __name__ == "__main__":
    sys.exit(main())
