"""END-TO-END: one real `stratdiff train --preset smoke` run (IQL, steps cut further with --set)
through `stratdiff sweep`, then `stratdiff report` on its folder, then the same sweep again
(skipped, untouched), and results/collect.sh on it. ~20-30 s on 2 busy cores, mostly JIT compilation."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from stratdiff.experiments import report, sweep

TINY = ("offline_steps=20", "online_steps=20", "online_warmup_steps=5", "log_every=10", "eval_every=20",
        "checkpoint_every=20", "eval_episodes=1", "batch_size=16")
REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_real_train_run_through_sweep_and_report(hopper_hdf5, tmp_path):
    cfg = sweep.SweepConfig(algos=("iql",), datasets=(str(hopper_hdf5),), seeds=(0,), preset="smoke",
                            out=str(tmp_path / "sweep"), env="Hopper-v5", overrides=TINY, max_retries=0)
    [entry] = sweep.run_sweep(cfg, echo=lambda _: None)
    folder = tmp_path / "sweep" / "iql" / "hopper-random.hdf5" / "seed0"
    assert entry["status"] == "done", (folder / "train.log").read_text()[-2000:]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["online_steps"] == 20 and entry["final_score"] == summary["final_score"]
    assert json.loads((folder / "config.json").read_text())["batch_size"] == 16

    md = report.write_report(tmp_path / "sweep", reps=100).read_text()
    assert "Runs read: 1 (1 finished, 0 unfinished); preset(s): smoke." in md
    # the --set step counts are scale, not a variant: the column is plain "iql"
    table = (tmp_path / "sweep" / "report" / "table_main.md").read_text()
    assert f"| hopper-random | {summary['final_score']:.1f} |" in table and "| dataset | iql |" in table
    assert (tmp_path / "sweep" / "report" / "figures" / "curves_locomotion_iql.png").is_file()

    before = (folder / "summary.json").stat().st_mtime_ns
    [again] = sweep.run_sweep(cfg, echo=lambda _: None)
    assert again["status"] == "skipped" and (folder / "summary.json").stat().st_mtime_ns == before

    # results/collect.sh --with-unfinished keeps an unfinished StratDiff run whole: its checkpoint
    # and its behaviour/ folder (else a resume on a fresh machine retrains the behaviour model)
    unfinished = folder.parent / "seed1"
    shutil.copytree(folder, unfinished)
    (unfinished / "summary.json").unlink()
    (unfinished / "checkpoint.msgpack").write_bytes(b"checkpoint")
    (unfinished / "behaviour").mkdir()
    (unfinished / "behaviour" / "support.npz").write_bytes(b"support actions")
    results = tmp_path / "results"
    done = subprocess.run([str(REPO / "results" / "collect.sh"), "--with-unfinished", str(tmp_path / "sweep"),
                           str(results)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    kept = results / "unfinished" / "iql" / "hopper-random.hdf5" / "seed1"
    assert (kept / "checkpoint.msgpack").read_bytes() == b"checkpoint"
    assert (kept / "behaviour" / "support.npz").read_bytes() == b"support actions"
    assert (kept / "metrics.csv").read_bytes() == (unfinished / "metrics.csv").read_bytes()
    assert sorted(p.name for p in (results / "runs" / "iql" / "hopper-random.hdf5").iterdir()) == ["seed0"]
    assert "Runs read: 1 (1 finished, 0 unfinished)" in (results / "report" / "report.md").read_text()
