"""Sweep logic with a tiny real training command: skip, resume, retry, no overwrite, conflicts,
the manifest, the status lines and the CLI. Runs in a few seconds (no JAX in the fake runs)."""

from __future__ import annotations

import dataclasses

import json
import os
import sys
from pathlib import Path

import pytest

from stratdiff import locks
from stratdiff.experiments import sweep

# A stand-in for `stratdiff train`: parses the same options and behaves by seed.
#   seed 0: finishes; seed 1: writes a checkpoint and crashes the first time, needs --resume after;
#   seed 2: always crashes; seed 3: exits 0 without writing summary.json; seed 5: sleeps a minute.
FAKE_TRAIN = r'''
import json, sys
from pathlib import Path
argv = sys.argv[1:]
opt = lambda name: argv[argv.index(name) + 1]
out, seed = Path(opt("--out")), int(opt("--seed"))
resume = "--resume" in argv
out.mkdir(parents=True, exist_ok=True)
with open(out / "calls.txt", "a") as f:
    f.write(" ".join(argv) + "\n")
if not resume and (out / "checkpoint.msgpack").exists():
    sys.exit("refusing: checkpoint exists, pass --resume")
overrides = dict(kv.split("=", 1) for kv in argv[argv.index("--set") + 1:] if "=" in kv) if "--set" in argv else {}
cfg = {"algo": opt("--algo"), "dataset": opt("--dataset"), "seed": seed, "preset": opt("--preset"),
       "env": opt("--env") if "--env" in argv else None, "offline_steps": 10, "online_steps": 10,
       "agent": {}, "stratifier": {}}
for k, v in overrides.items():
    cfg[k] = json.loads(v)
(out / "config.json").write_text(json.dumps(cfg))
print("training", seed, "resume" if resume else "fresh")
if seed == 1 and not resume:
    (out / "checkpoint.msgpack").write_bytes(b"ckpt")
    raise RuntimeError("simulated crash after a checkpoint")
if seed == 2:
    raise RuntimeError("boom: simulated divergence")
if seed == 3:
    sys.exit(0)
if seed == 5:
    import os, time
    (out / "pid").write_text(str(os.getpid()))
    time.sleep(60)
(out / "checkpoint.msgpack").write_bytes(b"ckpt")
(out / "summary.json").write_text(json.dumps({"final_score": 10.0 * seed + 5.0, "seed": seed}))
'''


@pytest.fixture
def fake(tmp_path):
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAIN)
    return (sys.executable, str(script))


def config(tmp_path, fake, seeds, **kw):
    return sweep.SweepConfig(algos=("iql",), datasets=("data/hopper-medium.hdf5",), seeds=tuple(seeds),
                             preset="smoke", out=str(tmp_path / "sweep"), command=fake, **kw)


def calls(tmp_path, seed):
    path = tmp_path / "sweep" / "iql" / "hopper-medium.hdf5" / f"seed{seed}" / "calls.txt"
    return path.read_text().splitlines() if path.exists() else []


def test_share_offline_points_each_method_at_its_backbones_run(tmp_path):
    cfg = sweep.SweepConfig(algos=("stratdiff-iql", "edis-iql", "calql", "iql"), datasets=("y",), seeds=(1,),
                            preset="cpu", out="OUT", share_offline=True)
    runs = sweep.plan(cfg)
    assert [r.algo for r in runs] == ["calql", "iql", "stratdiff-iql", "edis-iql"]  # lenders first
    for run in runs[2:]:
        assert f"reuse_offline_from={json.dumps(str(Path('OUT/iql/y/seed1')))}" in run.options
    assert not any(o.startswith("reuse_offline_from") for r in runs[:2] for o in r.options)
    alone = sweep.plan(dataclasses.replace(cfg, algos=("stratdiff-calql",)))  # no calql run to lend one
    assert not any(o.startswith("reuse_offline_from") for o in alone[0].options)


def test_share_offline_reuses_a_backbone_run_left_by_an_earlier_sweep(tmp_path):
    cfg = sweep.SweepConfig(algos=("stratdiff-iql",), datasets=("y",), seeds=(0, 1), preset="cpu",
                            out=str(tmp_path), share_offline=True)
    donor = sweep.run_dir(tmp_path, "iql", "y", 1)
    donor.mkdir(parents=True)
    (donor / "offline_agent.json").write_text("{}")  # seed 1's IQL run finished its offline phase
    from stratdiff.runner import OFFLINE_META

    assert sweep.OFFLINE_META == OFFLINE_META  # the sweep names the runner's file without importing JAX
    reuse = [[o for o in r.options if o.startswith("reuse_offline_from=")] for r in sweep.plan(cfg)]
    assert reuse == [[], [f"reuse_offline_from={json.dumps(str(donor))}"]]  # seed 0 has no donor


def test_plan_folders_and_options(tmp_path):
    cfg = sweep.SweepConfig(algos=("iql", "stratdiff-iql"), datasets=("a/x.hdf5", "y"), seeds=(0, 4),
                            preset="cpu", out="OUT", env="Hopper-v5", overrides=("utd=10", "agent.expectile=0.8"))
    runs = sweep.plan(cfg)
    assert len(runs) == 8
    assert runs[1].out_dir == str(Path("OUT/iql/x.hdf5/seed4"))
    assert runs[-1].out_dir == str(Path("OUT/stratdiff-iql/y/seed4"))
    opts = list(runs[0].options)
    assert opts[opts.index("--seed") + 1] == "0" and opts[opts.index("--env") + 1] == "Hopper-v5"
    assert opts[opts.index("--set") + 1:] == ["utd=10", "agent.expectile=0.8"]
    assert "--resume" not in opts and "--no-progress" in opts
    with pytest.raises(sweep.SweepError, match="share the run folder"):
        sweep.plan(sweep.SweepConfig(algos=("iql",), datasets=("a/x", "b/x"), seeds=(0,), preset="cpu", out="O"))
    with pytest.raises(sweep.SweepError, match="KEY=VALUE"):
        sweep.SweepConfig(algos=("iql",), datasets=("x",), seeds=(0,), preset="cpu", out="O", overrides=("utd",))


def test_retry_resume_skip_and_no_overwrite(tmp_path, fake):
    lines = []
    cfg = config(tmp_path, fake, (0, 1, 2, 3), workers=2, max_retries=1)
    results = sweep.run_sweep(cfg, echo=lines.append)
    by_seed = {e["seed"]: e for e in results}
    assert [by_seed[s]["status"] for s in range(4)] == ["done", "done", "failed", "failed"]
    assert [by_seed[s]["attempts"] for s in range(4)] == [1, 2, 2, 2]
    assert by_seed[0]["final_score"] == 5.0 and by_seed[1]["final_score"] == 15.0
    # the retry of seed 1 resumed from the checkpoint the crash left
    c1 = calls(tmp_path, 1)
    assert len(c1) == 2 and "--resume" not in c1[0].split() and c1[1].split()[-1] == "--resume"
    # failures name their log, which holds the run's own output and the error
    log = Path(by_seed[2]["log"])
    assert log.name == "train.log" and "boom: simulated divergence" in log.read_text()
    assert "boom: simulated divergence" in by_seed[2]["error"]
    assert "no summary.json" in by_seed[3]["error"]
    assert len(lines) == 4 and all(line.startswith("[") for line in lines)
    manifest = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert [r["status"] for r in manifest["runs"]] == ["done", "done", "failed", "failed"]
    assert manifest["finished"] is not None and manifest["history"] == []

    # the same sweep again: finished runs are skipped untouched, failed ones retried
    summary0 = tmp_path / "sweep" / "iql" / "hopper-medium.hdf5" / "seed0" / "summary.json"
    before = (summary0.read_bytes(), summary0.stat().st_mtime_ns)
    results = sweep.run_sweep(config(tmp_path, fake, (0, 1, 2), max_retries=0), echo=lambda _: None)
    assert [e["status"] for e in results] == ["skipped", "skipped", "failed"]
    assert (summary0.read_bytes(), summary0.stat().st_mtime_ns) == before
    assert len(calls(tmp_path, 0)) == 1 and len(calls(tmp_path, 1)) == 2 and len(calls(tmp_path, 2)) == 3
    manifest = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert len(manifest["history"]) == 1 and len(manifest["runs"]) == 3
    line = sweep.status_line(results[2])
    assert line.startswith("failed") and str(Path(results[2]["log"])) in line


def test_unfinished_run_is_resumed_and_conflicts_are_left_alone(tmp_path, fake):
    seed0 = tmp_path / "sweep" / "iql" / "hopper-medium.hdf5" / "seed0"
    seed0.mkdir(parents=True)
    (seed0 / "checkpoint.msgpack").write_bytes(b"old")
    (seed0 / "config.json").write_text(json.dumps({"algo": "iql", "seed": 0, "preset": "smoke",
                                                   "dataset": "data/hopper-medium.hdf5", "utd": 1}))
    # seed 1's folder holds a finished run of another algo: must not be skipped as "ours" nor touched
    seed1 = seed0.parent / "seed1"
    seed1.mkdir()
    (seed1 / "config.json").write_text(json.dumps({"algo": "calql", "seed": 1, "preset": "smoke", "utd": 1}))
    (seed1 / "summary.json").write_text("{}")
    results = sweep.run_sweep(config(tmp_path, fake, (0, 1), overrides=("utd=1",)), echo=lambda _: None)
    assert [e["status"] for e in results] == ["resumed", "conflict"]
    assert calls(tmp_path, 0)[0].split()[-1] == "--resume"
    assert "algo='calql'" in results[1]["error"] and calls(tmp_path, 1) == []
    assert (seed1 / "summary.json").read_text() == "{}"
    # another override value than the stored run's: a conflict too
    results = sweep.run_sweep(config(tmp_path, fake, (0,), overrides=("utd=10",)), echo=lambda _: None)
    assert results[0]["status"] == "conflict" and "utd=1 (sweep: 10)" in results[0]["error"]


def test_thread_env_splits_cores_and_keeps_user_settings():
    env = sweep.thread_env(1, base={"PATH": "/bin"})
    assert env["OMP_NUM_THREADS"] == "1" and env["OPENBLAS_NUM_THREADS"] == "1"
    assert "intra_op_parallelism_threads=1" in env["XLA_FLAGS"]
    assert "--xla_cpu_multi_thread_eigen=false" in env["XLA_FLAGS"]
    env = sweep.thread_env(4, base={"OMP_NUM_THREADS": "7", "XLA_FLAGS": "--xla_foo=1"})
    assert env["OMP_NUM_THREADS"] == "7" and env["MKL_NUM_THREADS"] == "4"
    assert env["XLA_FLAGS"] == "--xla_foo=1 intra_op_parallelism_threads=4"


def test_cli_reports_status_and_exit_code(tmp_path, fake, monkeypatch, capsys):
    from stratdiff.commands import sweep as command

    monkeypatch.setenv(sweep.COMMAND_ENV, " ".join(fake))
    out = tmp_path / "sweep"
    argv = ["--algos", "iql", "--datasets", "data/hopper-medium.hdf5", "--seeds", "0", "2", "--preset", "smoke",
            "--out", str(out), "--max-retries", "0"]
    assert command.main(argv + ["--dry-run"]) == 0
    assert "new" in capsys.readouterr().out
    assert command.main(argv) == 1  # seed 2 fails
    text = capsys.readouterr().out
    assert "done     iql/hopper-medium.hdf5/seed0" in text
    assert "failed   iql/hopper-medium.hdf5/seed2" in text and "train.log" in text
    assert "1 done, 1 failed" in text
    assert command.main(argv + ["--seeds", "0"]) == 0
    assert "skipped  iql/hopper-medium.hdf5/seed0" in capsys.readouterr().out
    assert os.environ[sweep.COMMAND_ENV]  # still set for the subprocesses


def test_lock_busy_and_stale(tmp_path, fake):
    import socket

    seed0 = tmp_path / "sweep" / "iql" / "hopper-medium.hdf5" / "seed0"
    seed0.mkdir(parents=True)
    (seed0 / sweep.LOCK).write_text(f"{socket.gethostname()} {os.getpid()}")  # a live holder: this process
    [entry] = sweep.run_sweep(config(tmp_path, fake, (0,)), echo=lambda _: None)
    assert entry["status"] == "busy" and calls(tmp_path, 0) == [] and "another sweep" in entry["error"]
    dead = 2 ** 22 + 12345  # above the default pid_max: no such process
    (seed0 / sweep.LOCK).write_text(f"{socket.gethostname()} {dead}")
    [entry] = sweep.run_sweep(config(tmp_path, fake, (0,)), echo=lambda _: None)
    assert entry["status"] == "done" and not (seed0 / sweep.LOCK).exists()


def test_interrupt_terminates_started_runs(tmp_path, fake):
    import time

    folder5 = tmp_path / "sweep" / "iql" / "hopper-medium.hdf5" / "seed5"

    def echo(line):
        # stop after the first finished run, once the long run has surely started (slow machines)
        for _ in range(300):
            if (folder5 / "pid").exists():
                break
            time.sleep(0.1)
        raise KeyboardInterrupt("stop after the first finished run")

    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(config(tmp_path, fake, (5, 0), workers=2, max_retries=3), echo=echo)
    assert time.perf_counter() - t0 < 45
    pid = int((folder5 / "pid").read_text())
    for _ in range(50):
        if not locks._alive(pid):
            break
        time.sleep(0.1)
    assert not locks._alive(pid) and len(calls(tmp_path, 5)) == 1  # terminated, not retried
    manifest = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert {r["seed"]: r["status"] for r in manifest["runs"]} == {5: "interrupted", 0: "done"}
    assert not (folder5 / sweep.LOCK).exists()


def test_cli_ablation_flags_become_overrides():
    from stratdiff.commands import sweep as command

    args = command.SweepArgs(algos=("stratdiff-iql",), datasets=("d",), out=Path("o"), set=("utd=10",),
                             no_energy=True, no_online_expectile=True, exchange_cap=8, split_by_source=True)
    assert command.overrides(args) == ("utd=10", "stratifier.guidance=false", "stratifier.split_by_source=true",
                                       "agent.online_value_loss=\"symmetric\"", "stratifier.exchange_cap=8")


def test_a_lock_held_by_an_exited_unreaped_process_is_stale(tmp_path):
    """A killed process that its parent has not reaped yet (a zombie) holds no lock."""
    import socket
    import subprocess
    import time

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        for _ in range(200):  # until it has exited; Popen does not reap it before poll()/wait()
            stat = Path(f"/proc/{child.pid}/stat").read_text()
            if stat[stat.rindex(")") + 2:].startswith("Z"):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the child did not exit")
        assert not locks._alive(child.pid) and locks._alive(os.getpid())
        lock = tmp_path / sweep.LOCK
        lock.write_text(f"{socket.gethostname()} {child.pid}")
        assert locks.acquire_lock(lock) is None  # taken over
        assert lock.read_text() == f"{socket.gethostname()} {os.getpid()}"
    finally:
        child.wait()
