"""Faults: a full disk, damaged run files, a diverging run inside a sweep, and a chaos test
(a small sweep SIGKILLed at seeded random moments, once inside a checkpoint write, ends with
the metrics of an undisturbed one).

The full-disk tests write to a small tmpfs when this process may mount one (root); otherwise
to a folder whose writes raise ENOSPC past a byte budget (`open` patched), which exercises the
same code paths. Every test here uses the smoke scale cut to 40 + 40 steps.
"""

from __future__ import annotations

import builtins
import csv
import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stratdiff import checkpoint, runfiles
from stratdiff.commands import data as data_cmd
from stratdiff.experiments import report, sweep
from stratdiff.logging import MetricsLogger, _EventWriter
from stratdiff.methods import parse_value, resolve_config
from stratdiff.runfiles import DamagedFileError, DiskFullError
from stratdiff.runner import CHECKPOINT, train

TINY = ("offline_steps=40", "online_steps=40", "online_warmup_steps=10", "log_every=10", "eval_every=20",
        "checkpoint_every=20", "eval_episodes=1", "batch_size=16")


def tiny(dataset, seed=0, **extra):
    overrides = {k: parse_value(v) for k, v in (item.split("=", 1) for item in TINY)}
    return resolve_config("iql", str(dataset), "Hopper-v5", "smoke", seed, {**overrides, **extra})


def metric_rows(folder: Path) -> list[dict[str, str]]:
    """metrics.csv without the wall-clock columns."""
    with open(folder / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in csv.DictReader(f)]


def temporaries(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if ".tmp" in p.name)


@pytest.fixture(scope="module")
def baseline(hopper_hdf5, tmp_path_factory):
    """Undisturbed runs, seeds 0 and 1: folder -> their metrics rows, and the checkpoint size."""
    out = {}
    for seed in (0, 1):
        folder = tmp_path_factory.mktemp("baseline") / f"seed{seed}"
        train(tiny(hopper_hdf5, seed), folder, progress=False)
        out[seed] = metric_rows(folder)
        out["folder"] = out.get("folder", folder)
    out["checkpoint_bytes"] = (out["folder"] / CHECKPOINT).stat().st_size
    return out


# ---- a small disk --------------------------------------------------------------------------
class _Budgeted:
    """A file whose writes raise ENOSPC once the files under the disk's folder would exceed its budget."""

    def __init__(self, f, disk):
        self._f, self._disk = f, disk

    def write(self, data):
        free = self._disk.free()
        size = len(data.encode() if isinstance(data, str) else data)
        if size > free:
            self._f.write(data[: max(free, 0)])
            self._f.flush()
            raise OSError(errno.ENOSPC, "No space left on device")
        n = self._f.write(data)
        self._f.flush()
        return n

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()

    def __getattr__(self, name):
        return getattr(self._f, name)


class SmallDisk:
    """A folder on a file system of `size` bytes: a tmpfs mount where permitted, else a budget."""

    def __init__(self, path: Path, monkeypatch):
        self.path, self.monkeypatch = path, monkeypatch
        self.path.mkdir()
        self.mounted = False
        self.budget = 0

    def mount(self, size: int) -> None:
        size = -(-size // 4096) * 4096
        if os.geteuid() == 0 and shutil.which("mount"):
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(self.path)],
                                  capture_output=True)
            self.mounted = done.returncode == 0
        if self.mounted:
            return
        self.budget = size
        real_open = io.open
        root = self.path.resolve()

        def budgeted_open(file, mode="r", *args, **kwargs):
            f = real_open(file, mode, *args, **kwargs)
            if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+") and \
                    Path(file).resolve().is_relative_to(root):
                return _Budgeted(f, self)
            return f

        self.monkeypatch.setattr(builtins, "open", budgeted_open)
        self.monkeypatch.setattr(io, "open", budgeted_open)

    def free(self) -> int:
        if self.mounted:
            return shutil.disk_usage(self.path).free
        used = sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())
        return self.budget - used

    def resize(self, size: int) -> None:
        if self.mounted:
            subprocess.run(["mount", "-o", f"remount,size={size}", str(self.path)], check=True)
        else:
            self.budget = size

    def fill(self, leave: int) -> Path:
        """A filler file leaving about `leave` bytes free."""
        filler = self.path / "filler"
        with open(filler, "wb") as f:
            f.write(b"\0" * max(self.free() - leave, 0))
        return filler

    def close(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], check=False)


@pytest.fixture
def small_disk(tmp_path, monkeypatch):
    disk = SmallDisk(tmp_path / "disk", monkeypatch)
    yield disk
    disk.close()


# ---- 1. a full disk ------------------------------------------------------------------------
def test_full_disk_stops_a_run_with_one_line_and_resume_continues(hopper_hdf5, baseline, small_disk):
    """Room for one checkpoint and a half: the second checkpoint write fails. The run stops with
    one line naming the file and the free space, removes its temporary file, keeps the first
    checkpoint, and once space is back --resume ends with the undisturbed run's metrics."""
    small_disk.mount(int(1.5 * baseline["checkpoint_bytes"]))
    run = small_disk.path / "run"
    with pytest.raises(DiskFullError) as err:
        train(tiny(hopper_hdf5), run, progress=False)
    msg = str(err.value)
    assert str(run / CHECKPOINT) in msg and "free there" in msg and "--resume" in msg and "\n" not in msg
    assert temporaries(run) == []
    assert int(checkpoint.load_raw(run / CHECKPOINT)["counters"]["step"]) == 20  # the last good one
    assert not (run / "summary.json").exists()

    small_disk.resize(64 * 2**20)
    train(tiny(hopper_hdf5), run, resume=True, progress=False)
    assert metric_rows(run) == baseline[0]
    assert temporaries(run) == []


def test_full_disk_in_each_writer_is_one_clear_error_and_leaves_whole_files(small_disk):
    """The atomic writer keeps the old file; metrics.csv never keeps half a row; TensorBoard's
    writes fail in the run's own thread with the same error."""
    small_disk.mount(512 * 1024)
    d = small_disk.path
    checkpoint.atomic_write_bytes(d / CHECKPOINT, b"old")
    with pytest.raises(DiskFullError, match=r"checkpoint.msgpack \(.* free there\)"):
        checkpoint.atomic_write_bytes(d / CHECKPOINT, b"x" * 1024 * 1024)
    assert (d / CHECKPOINT).read_bytes() == b"old" and temporaries(d) == []

    filler = small_disk.fill(leave=16 * 1024)
    (d / "metrics").mkdir()
    logger = MetricsLogger(d / "metrics", tensorboard=False)
    logged = 0
    with pytest.raises(DiskFullError, match=r"metrics\.csv \(.* free there\); free some space"):
        for step in range(1, 10_000):
            logger.log({"step": step, "phase": "offline", "loss": step * 1.2345678901234567,
                        "other": step / 7.0, "third": step / 3.0})
            logged = step
    _, rows = runfiles.read_metrics_csv(d / "metrics" / "metrics.csv", "fix")  # whole rows only
    assert logged > 10 and [int(r["step"]) for r in rows] == list(range(1, logged + 1))
    assert temporaries(d) == []

    filler.unlink()
    small_disk.fill(leave=16 * 1024)
    tb = _EventWriter(d / "tensorboard")
    with pytest.raises(DiskFullError, match=r"tensorboard \(.* free there\)"):
        for step in range(1, 10_000):
            tb.write(step, {f"loss_{i}": float(step + i) for i in range(20)})


def test_full_disk_in_a_dataset_build_is_one_line_and_keeps_nothing(small_disk, capsys, monkeypatch):
    small_disk.mount(4 * 2**20)
    out = small_disk.path / "hopper-random"
    if small_disk.mounted:
        filler = small_disk.fill(leave=4096)
    else:  # HDF5 writes from C, past the patched `open`: the full disk is raised where it writes
        def full_write_minari(ds, staging, meta):
            (staging / "data").mkdir(parents=True, exist_ok=True)
            (staging / "data" / "main_data.hdf5").write_bytes(b"\0" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device")

        import stratdiff.data.loaders as loaders

        monkeypatch.setattr(loaders, "write_minari", full_write_minari)
    rc = data_cmd.main(["build", "hopper-random-v5", "--size", "300", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1, err
    assert "no space left on the device writing" in err and "free there" in err and str(out) in err
    assert not (out / ".partial").exists() and not (out / "data").exists()

    if small_disk.mounted:
        filler.unlink()
    else:
        monkeypatch.undo()
    assert data_cmd.main(["build", "hopper-random-v5", "--size", "300", "--out", str(out)]) == 0
    assert (out / "data" / "metadata.json").is_file()


# ---- 2. damaged run files ------------------------------------------------------------------
def test_damaged_run_files_stop_resume_and_report_in_one_line(hopper_hdf5, baseline, tmp_path):
    cfg = tiny(hopper_hdf5)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):  # killed in the online phase, checkpoint at step 40
        train(cfg, run, progress=False, stop_after=60)
    good = {n: (run / n).read_bytes() for n in ("metrics.csv", "config.json", "offline_agent.json", CHECKPOINT)}
    lines = good["metrics.csv"].split(b"\n")
    damaged = {
        "metrics.csv": (b"\n".join(lines[:2] + [b"3#@!,,not a row"] + lines[3:]),
                        r"metrics\.csv is damaged \(line 3: .*\); start the run over with .*--force"),
        "config.json": (good["config.json"][:40], r"config\.json is damaged \(not readable JSON.*--force"),
        "offline_agent.json": (b"{}", r"offline_agent\.json is damaged \(no 'signature'.*delete it"),
    }
    for name, (garbage, message) in damaged.items():
        (run / name).write_bytes(garbage)
        with pytest.raises(DamagedFileError, match=message):
            train(cfg, run, resume=True, progress=False)
        # nothing rewritten around the damage
        assert (run / name).read_bytes() == garbage and (run / CHECKPOINT).read_bytes() == good[CHECKPOINT]
        (run / name).write_bytes(good[name])

    # the CLI says it in one line; --force starts the run over and ends like an undisturbed one
    (run / "metrics.csv").write_bytes(damaged["metrics.csv"][0])
    cmd = [sys.executable, "-m", "stratdiff.cli", "train", "--algo", "iql", "--dataset", str(hopper_hdf5),
           "--env", "Hopper-v5", "--preset", "smoke", "--out", str(run), "--no-progress", "--resume", "--set", *TINY]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1, done.stderr[-2000:]
    assert "metrics.csv is damaged (line 3" in done.stderr and "Traceback" not in done.stderr
    train(cfg, run, progress=False, force=True)
    assert metric_rows(run) == baseline[0]

    # report: a finished run's damaged metrics.csv, a damaged sweep.json
    root = tmp_path / "report_root"
    shutil.copytree(baseline["folder"], root / "iql" / "seed0")
    good_metrics = (root / "iql" / "seed0" / "metrics.csv").read_bytes()
    (root / "iql" / "seed0" / "metrics.csv").write_bytes(good_metrics.replace(b"offline", b"offlin", 1))
    with pytest.raises(report.ReportError, match=r"seed0/metrics\.csv is damaged \(line 2: phase 'offlin'\)"):
        report.write_report(root, reps=10)
    (root / "iql" / "seed0" / "metrics.csv").write_bytes(good_metrics)
    (root / "sweep.json").write_text('{"runs": [')
    with pytest.raises(report.ReportError, match=r"sweep\.json is damaged .*move it away"):
        report.write_report(root, reps=10)
    cfg_sweep = sweep.SweepConfig(algos=("iql",), datasets=(str(hopper_hdf5),), seeds=(0,), preset="smoke",
                                  out=str(root), command=("false",))
    with pytest.raises(sweep.SweepError, match=r"sweep\.json is damaged .*move it away"):
        sweep.run_sweep(cfg_sweep, echo=lambda _: None)
    assert (root / "sweep.json").read_text() == '{"runs": ['


# ---- 3. divergence inside a sweep ----------------------------------------------------------
def test_a_diverging_run_in_a_sweep_is_marked_not_retried_and_reported(hopper_hdf5, rollout, tmp_path):
    huge = rollout(tmp_path / "huge.hdf5", "Hopper-v5", 300, seed=1, reward_scale=1e37)
    cfg = sweep.SweepConfig(algos=("iql",), datasets=(str(huge), str(hopper_hdf5)), seeds=(0,), preset="smoke",
                            out=str(tmp_path / "sweep"), env="Hopper-v5",
                            overrides=TINY + ("reward_transform=identity",), max_retries=2, workers=2)
    div, ok = sweep.run_sweep(cfg, echo=lambda _: None)
    assert ok["status"] == "done", Path(ok["log"]).read_text()[-2000:]
    assert div["status"] == "diverged" and div["attempts"] == 1, Path(div["log"]).read_text()[-2000:]
    record = div["diverged"]
    assert 0 <= record["step"] < 40 and record["phase"] == "offline" and "loss" in record["loss"]
    assert record["value"] in ("nan", "inf", "-inf")
    assert f"at step {record['step']}" in sweep.status_line(div) and "not retried" in sweep.status_line(div)
    manifest = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert [e["status"] for e in manifest["runs"]] == ["diverged", "done"]

    again, _ = sweep.run_sweep(cfg, echo=lambda _: None)  # a later sweep does not retry it either
    assert again["status"] == "diverged" and again["attempts"] == 0
    assert Path(div["log"]).read_text().count("=== stratdiff sweep: attempt") == 2  # start + "failed" line

    md = report.write_report(tmp_path / "sweep", reps=10).read_text()
    assert "Runs read: 2 (1 finished, 0 unfinished, 1 diverged)" in md and "## Diverged runs" in md
    assert f"| iql | huge | 0 | {record['step']} | offline | `{record['loss']}` | {record['value']} |" in md
    diverged = json.loads((tmp_path / "sweep" / "report" / "report.json").read_text())["diverged"]
    assert [d["step"] for d in diverged] == [record["step"]]


# ---- 4. chaos ------------------------------------------------------------------------------
def test_chaos_sweep_killed_at_seeded_moments_ends_like_an_undisturbed_one(hopper_hdf5, baseline, tmp_path):
    """A two-run sweep in a subprocess, its process group SIGKILLed at seeded random moments, one
    of its training processes killed inside a checkpoint write (the test hook in
    `stratdiff.checkpoint`), restarted until it completes: the same metrics as undisturbed runs,
    no temporary file left behind."""
    rng = np.random.default_rng(31)
    out = tmp_path / "sweep"
    trigger = tmp_path / "kill-in-checkpoint"
    trigger.write_text(str(int(rng.integers(1, 5))))  # the k-th checkpoint write of the sweep dies
    src = str(Path(__file__).resolve().parents[1] / "src")  # this checkout, installed or not
    env = {**os.environ, checkpoint.KILL_HOOK: str(trigger),
           "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}
    cmd = [sys.executable, "-m", "stratdiff.cli", "sweep", "--algos", "iql", "--datasets", str(hopper_hdf5),
           "--seeds", "0", "1", "--preset", "smoke", "--env", "Hopper-v5", "--out", str(out),
           "--max-retries", "3", "--set", *TINY]
    kills = [float(t) for t in rng.uniform(3.0, 12.0, size=2)]
    for attempt in range(len(kills) + 3):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        if attempt < len(kills):
            try:
                proc.wait(timeout=kills[attempt])
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its training processes
                proc.wait()
            continue
        _, err = proc.communicate(timeout=600)
        if proc.returncode == 0:
            break
    assert proc.returncode == 0, err.decode()[-2000:]
    assert not trigger.exists()  # the kill inside a checkpoint write happened
    for seed in (0, 1):
        assert metric_rows(out / "iql" / "hopper-random.hdf5" / f"seed{seed}") == baseline[seed]
    assert temporaries(out) == []
