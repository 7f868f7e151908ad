"""Copy a run folder saved at the start of its online phase, rewound to the end of its offline phase.

    python results/score-reference/rewind.py SNAPSHOT RUN

SNAPSHOT: a copy of a `stratdiff train` folder taken when its stratifier had just been built
(`snapshots/stepOFF` of measure.sh). RUN receives that folder with the amortised g removed
(behaviour/amortised.*) and its checkpoint marked as taken before the stratifier was built, so
that `stratdiff train --resume` builds the stratifier again, from the same behaviour model and
energy, with the score options of the current `study` preset, and then runs the online phase:
the state a run from scratch reaches at the end of the same offline phase. RUN's config.json
records the behaviour model's training steps (`stratifier.diffusion_steps`, read from
behaviour/config.json), as measure.sh passes them.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from stratdiff import checkpoint


def main() -> int:
    snapshot, run = Path(sys.argv[1]), Path(sys.argv[2])
    if not (snapshot / "checkpoint.msgpack").is_file():
        raise SystemExit(f"{snapshot} holds no checkpoint.msgpack")
    if run.exists():
        raise SystemExit(f"{run} exists: move it away first")
    shutil.copytree(snapshot, run)
    for name in ("amortised.msgpack", "amortised.json"):
        (run / "behaviour" / name).unlink(missing_ok=True)
    (run / "summary.json").unlink(missing_ok=True)
    config = json.loads((run / "config.json").read_text())
    trained = json.loads((run / "behaviour" / "config.json").read_text())["config"]["train_steps"]
    config["stratifier"] = {**config.get("stratifier", {}), "diffusion_steps": trained}
    checkpoint.atomic_write_bytes(run / "config.json", json.dumps(config, indent=2).encode())
    state = checkpoint.load_raw(run / "checkpoint.msgpack")
    state["counters"]["stratifier_built"] = 0
    checkpoint.save(run / "checkpoint.msgpack", state)
    print(f"{run}: offline phase of {snapshot}, stratifier to be built on resume")
    return 0


if __name__ == "__main__":
    sys.exit(main())
