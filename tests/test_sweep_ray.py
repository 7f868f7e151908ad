"""The sweep's Ray path on one local 2-CPU Ray instance started by this module (Ray is the
`ray` extra, which `make test` installs): a stand-in training script, real smoke-scale
`stratdiff train` runs, and a Ray worker killed mid-run whose retry ends with the same metrics."""

from __future__ import annotations

import csv
import json
import os
import sys
import tempfile
from pathlib import Path

import pytest

from stratdiff.experiments import sweep

# Ray's switch for "no cluster": every Ray process binds to and talks over loopback only (read by
# Ray at import, and by the Ray processes the fixture starts).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
ray = pytest.importorskip("ray")

# Stand-in for `stratdiff train`: seed 0 finishes; seed 1 crashes once after a checkpoint.
FAKE_TRAIN = r'''
import json, os, sys
from pathlib import Path
argv = sys.argv[1:]
out, seed = Path(argv[argv.index("--out") + 1]), int(argv[argv.index("--seed") + 1])
out.mkdir(parents=True, exist_ok=True)
with open(out / "calls.txt", "a") as f:
    f.write(" ".join(argv) + f" OMP={os.environ.get('OMP_NUM_THREADS')}\n")
if seed == 1 and "--resume" not in argv:
    (out / "checkpoint.msgpack").write_bytes(b"ckpt")
    raise RuntimeError("simulated crash")
(out / "summary.json").write_text(json.dumps({"final_score": 1.0 + seed}))
'''

# The real `stratdiff train`; on its first attempt (no --resume) it kills the Ray worker running
# it (its parent) right after the checkpoint that ends the offline phase, then waits to be killed
# with it (the sweep starts training processes with a parent-death signal on Linux).
KILL_WORKER_TRAIN = r'''
import os, signal, sys, time
from stratdiff import runner
from stratdiff.commands import train

if "--resume" not in sys.argv:
    save = runner.Runner.save

    def save_then_kill_worker(self):
        save(self)
        if self.step >= self.cfg.offline_steps:
            with open(self.out / "killed_worker.txt", "w") as f:
                f.write(f"{os.getppid()} at step {self.step}\n")
            os.kill(os.getppid(), signal.SIGKILL)
            time.sleep(120)
            sys.exit("the training process outlived its killed Ray worker")

    runner.Runner.save = save_then_kill_worker
sys.exit(train.main(sys.argv[1:]))
'''

TINY = ("offline_steps=20", "online_steps=20", "online_warmup_steps=5", "log_every=10", "eval_every=20",
        "checkpoint_every=20", "eval_episodes=1", "batch_size=16")


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance (2 CPUs, no dashboard, its own temp dir) for the whole module."""
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths have a length limit
    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=temp)
    try:
        assert context.address_info["node_ip_address"] == "127.0.0.1"
        yield
    finally:
        ray.shutdown()


def test_ray_runs_retries_and_skips(local_ray, tmp_path):
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAIN)
    cfg = sweep.SweepConfig(algos=("iql",), datasets=("hopper-medium",), seeds=(0, 1), preset="smoke",
                            out=str(tmp_path / "sweep"), ray_address="auto", max_retries=1,
                            command=(sys.executable, str(script)))
    results = sweep.run_sweep(cfg, echo=lambda _: None)
    assert [(e["status"], e["attempts"], e["final_score"]) for e in results] == \
        [("done", 1, 1.0), ("done", 2, 2.0)]
    calls1 = (tmp_path / "sweep" / "iql" / "hopper-medium" / "seed1" / "calls.txt").read_text().splitlines()
    assert "--resume" in calls1[1].split() and calls1[0].endswith("OMP=1")  # one CPU per Ray task
    again = sweep.run_sweep(cfg, echo=lambda _: None)
    assert [e["status"] for e in again] == ["skipped", "skipped"]
    manifest = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert manifest["config"]["ray_address"] == "auto" and len(manifest["history"]) == 1


def _learning_columns(folder: Path) -> list[dict[str, str]]:
    """metrics.csv less its wall-clock columns (perf/*): what a resumed run must reproduce."""
    with open(folder / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if not k.startswith("perf/")} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def ray_reference(local_ray, hopper_hdf5, tmp_path_factory) -> Path:
    """Two real smoke-scale IQL runs (seeds 0 and 1), both at once on the local Ray instance."""
    out = tmp_path_factory.mktemp("ray_real") / "sweep"
    cfg = sweep.SweepConfig(algos=("iql",), datasets=(str(hopper_hdf5),), seeds=(0, 1), preset="smoke",
                            out=str(out), env="Hopper-v5", overrides=TINY, ray_address="auto", max_retries=0)
    results = sweep.run_sweep(cfg, echo=lambda _: None)
    logs = "\n".join(Path(e["log"]).read_text()[-1500:] for e in results if Path(e["log"]).is_file())
    assert [e["status"] for e in results] == ["done", "done"], logs
    return out / "iql" / hopper_hdf5.name


@pytest.mark.slow
def test_real_train_runs_on_ray(ray_reference):
    for seed in (0, 1):
        summary = json.loads((ray_reference / f"seed{seed}" / "summary.json").read_text())
        assert (summary["seed"], summary["offline_steps"], summary["online_steps"]) == (seed, 20, 20)
        assert summary["final_score"] == summary["final_score"]  # a number, not NaN
        rows = _learning_columns(ray_reference / f"seed{seed}")
        assert [int(r["step"]) for r in rows] == [10, 20, 30, 40]
    # the two seeds learned differently (each run got its own seed)
    assert _learning_columns(ray_reference / "seed0") != _learning_columns(ray_reference / "seed1")


@pytest.mark.slow
def test_killed_ray_worker_is_retried_with_the_same_metrics(ray_reference, hopper_hdf5, tmp_path):
    script = tmp_path / "kill_worker_train.py"
    script.write_text(KILL_WORKER_TRAIN)
    cfg = sweep.SweepConfig(algos=("iql",), datasets=(str(hopper_hdf5),), seeds=(0,), preset="smoke",
                            out=str(tmp_path / "sweep"), env="Hopper-v5", overrides=TINY, ray_address="auto",
                            max_retries=1, command=(sys.executable, str(script)))
    [entry] = sweep.run_sweep(cfg, echo=lambda _: None)
    folder = tmp_path / "sweep" / "iql" / hopper_hdf5.name / "seed0"
    log = (folder / "train.log").read_text()
    assert entry["status"] == "resumed", log[-3000:]
    assert (folder / "killed_worker.txt").read_text().endswith("at step 20\n")  # the worker was killed
    assert log.count("=== stratdiff sweep: attempt 1 at") == 2 and "--resume" in log  # Ray ran the task again
    assert "outlived" not in log
    assert _learning_columns(folder) == _learning_columns(ray_reference / "seed0")
    mine = json.loads((folder / "summary.json").read_text())
    reference = json.loads((ray_reference / "seed0" / "summary.json").read_text())
    assert mine["final_score"] == reference["final_score"] and mine["best_score"] == reference["best_score"]
