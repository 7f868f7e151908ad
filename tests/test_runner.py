"""The runner end to end at the smoke scale: files, resume equality, divergence guard, CLI."""

from __future__ import annotations

import csv
import importlib.metadata
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from stratdiff import checkpoint
from stratdiff.methods import resolve_config
from stratdiff.runner import CHECKPOINT, DivergenceError, RunError, train


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def deterministic_columns(rows):
    """Every logged value except wall-clock measurements."""
    return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in rows]


def _flat(tree, prefix=""):
    """(path, leaf) pairs of a nested dict as checkpoints store it."""
    if isinstance(tree, dict):
        return [p for k, v in tree.items() for p in _flat(v, f"{prefix}/{k}")]
    return [(prefix, tree)]


def smoke_config(dataset, **overrides):
    base = dict(offline_steps=100, online_steps=120, online_warmup_steps=20, log_every=20,
                eval_every=40, checkpoint_every=40, eval_episodes=2, batch_size=32)
    base.update(overrides)
    return resolve_config("iql", str(dataset), "Hopper-v5", "smoke", 0, base)


def test_run_writes_files_and_resume_matches_uninterrupted(hopper_hdf5, tmp_path):
    cfg = smoke_config(hopper_hdf5)
    full = train(cfg, tmp_path / "full", progress=False)
    for name in ("config.json", "metrics.csv", "summary.json", CHECKPOINT):
        assert (tmp_path / "full" / name).is_file(), name
    assert json.loads((tmp_path / "full" / "config.json").read_text())["offline_steps"] == 100
    code = json.loads((tmp_path / "full" / "summary.json").read_text())["code"]
    assert code["libraries"]["mujoco"] == importlib.metadata.version("mujoco")
    assert code["libraries"]["jaxlib"] == importlib.metadata.version("jaxlib")
    assert code["machine"]["usable_cores"] == len(os.sched_getaffinity(0)) and code["machine"]["cpu"]
    rows = read_rows(tmp_path / "full" / "metrics.csv")
    assert [r["phase"] for r in rows].count("offline") == 5 and [r["phase"] for r in rows].count("online") == 6
    assert np.isfinite(full["final_score"])
    assert any(r.get("eval/score") for r in rows)

    # killed in the online phase (after an online checkpoint), then resumed
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "killed", progress=False, stop_after=190)
    with pytest.raises(RunError, match="--resume"):
        train(cfg, tmp_path / "killed", progress=False)
    resumed = train(cfg, tmp_path / "killed", resume=True, progress=False)
    assert deterministic_columns(read_rows(tmp_path / "killed" / "metrics.csv")) == deterministic_columns(rows)
    assert resumed["final_score"] == full["final_score"]

    # killed in the offline phase, then resumed: the checkpoint keeps the actor's lr-schedule count
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "killed2", progress=False, stop_after=60)
    saved = checkpoint.load_raw(tmp_path / "killed2" / CHECKPOINT)["agent"]
    counts = [int(np.asarray(v)) for k, v in _flat(saved["actor_opt_state"]) if k.endswith("count")]
    assert counts and set(counts) == {40} and int(np.asarray(saved["step"])) == 40  # the checkpoint at step 40
    train(cfg, tmp_path / "killed2", resume=True, progress=False)
    assert deterministic_columns(read_rows(tmp_path / "killed2" / "metrics.csv")) == deterministic_columns(rows)


def test_corrupt_and_mismatched_checkpoints_are_clear_errors(hopper_hdf5, tmp_path):
    cfg = smoke_config(hopper_hdf5, online_steps=0)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "run", progress=False, stop_after=40)
    ckpt = tmp_path / "run" / CHECKPOINT
    good = ckpt.read_bytes()
    ckpt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(checkpoint.CheckpointError, match="corrupt"):
        train(cfg, tmp_path / "run", resume=True, progress=False)
    ckpt.write_bytes(good)
    # a run folder whose config differs (other network size) cannot be resumed with this config
    other = smoke_config(hopper_hdf5, online_steps=0, **{"agent.hidden_dims": [32, 32]})
    with pytest.raises(RunError, match="differs in agent"):
        train(other, tmp_path / "run", resume=True, progress=False)


def test_divergence_guard_names_step_and_loss_and_keeps_checkpoint(rollout, tmp_path):
    data = rollout(tmp_path / "huge.hdf5", "Hopper-v5", 500, seed=1, reward_scale=1e37)
    cfg = resolve_config("iql", str(data), "Hopper-v5", "smoke", 0, dict(
        offline_steps=200, online_steps=0, log_every=20, eval_every=20, checkpoint_every=20,
        eval_episodes=1, batch_size=32, reward_transform="identity"))
    with pytest.raises(DivergenceError, match=r"loss '.*' became (nan|inf|-inf) at step \d+"):
        train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "summary.json").exists()


def test_train_cli_smoke_and_one_line_errors(hopper_hdf5, tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "stratdiff.cli", "train", "--algo", "iql", "--dataset", str(hopper_hdf5),
           "--env", "Hopper-v5", "--preset", "smoke", "--out", str(out), "--no-progress",
           "--set", "offline_steps=40", "online_steps=40", "log_every=20", "eval_every=20",
           "checkpoint_every=20", "online_warmup_steps=10"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((out / "summary.json").read_text())["online_steps"] == 40
    assert not (out / "run.lock").exists()  # released at the end
    busy = tmp_path / "busy"  # a folder another live process (this one) is writing
    busy.mkdir()
    (busy / "run.lock").write_text(f"{socket.gethostname()} {os.getpid()}")
    busy_cmd = [str(busy) if before == "--out" else a for before, a in zip([None, *cmd], cmd)]
    refused = subprocess.run(busy_cmd, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and "run.lock" in refused.stderr and str(os.getpid()) in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and sorted(os.listdir(busy)) == ["run.lock"]
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 1 and "already holds a run" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    bad = subprocess.run([*cmd[:6], "--dataset", str(tmp_path / "missing.hdf5"), "--env", "Hopper-v5",
                          "--out", str(tmp_path / "x")], capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "missing.hdf5" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_reused_offline_phase_gives_the_run_it_would_have_computed(hopper_hdf5, tmp_path):
    """A run taking over another run's offline phase (`reuse_offline_from`) ends with the same
    metrics as one computing it itself; a donor whose offline phase differs is refused by name."""
    train(smoke_config(hopper_hdf5), tmp_path / "donor", progress=False)
    assert (tmp_path / "donor" / "offline_agent.json").is_file()
    own = train(smoke_config(hopper_hdf5, rho=0.25), tmp_path / "own", progress=False)
    reused = train(smoke_config(hopper_hdf5, rho=0.25, reuse_offline_from=str(tmp_path / "donor")),
                   tmp_path / "reused", progress=False)
    assert reused["offline_phase_from"] == str(tmp_path / "donor") and own["offline_phase_from"] is None
    assert reused["offline_updates_per_s"] is None  # no offline step ran here
    own_rows = deterministic_columns(read_rows(tmp_path / "own" / "metrics.csv"))
    assert deterministic_columns(read_rows(tmp_path / "reused" / "metrics.csv")) == own_rows
    assert reused["final_score"] == own["final_score"]
    # rho only acts online: the donor's online rows differ from these
    assert deterministic_columns(read_rows(tmp_path / "donor" / "metrics.csv")) != own_rows
    with pytest.raises(RunError, match="differs from this run's in agent_resolved, offline_steps"):
        train(smoke_config(hopper_hdf5, offline_steps=80, reuse_offline_from=str(tmp_path / "donor")),
              tmp_path / "mismatch", progress=False)
    # no finished offline phase there (yet): the run computes it itself
    fallback = train(smoke_config(hopper_hdf5, rho=0.25, reuse_offline_from=str(tmp_path / "nothing")),
                     tmp_path / "fallback", progress=False)
    assert fallback["offline_phase_from"] is None and fallback["final_score"] == own["final_score"]
    # an offline agent trained with other resolved agent settings (e.g. by code whose agent
    # defaults have changed since) is refused by name, even though the run configs agree
    meta_path = tmp_path / "donor" / "offline_agent.json"
    meta = json.loads(meta_path.read_text())
    assert meta["signature"]["agent_resolved"]["expectile"] == 0.7  # IQL's locomotion preset
    meta["signature"]["agent_resolved"]["actor_lr_decay_steps"] = 0  # a constant actor rate
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(RunError, match="differs from this run's in agent_resolved"):
        train(smoke_config(hopper_hdf5, rho=0.25, reuse_offline_from=str(tmp_path / "donor")),
              tmp_path / "stale", progress=False)


def test_task_kind_scales_and_offline_eval_schedule(hopper_hdf5, tmp_path):
    """The `cpu` scale gives IQL on AntMaze its longer offline phase (the pilot in
    docs/datasets.md) with sparser offline evaluations; locomotion and Cal-QL keep theirs. A run's
    offline phase evaluates every `offline_eval_every` steps, its online phase every `eval_every`."""
    am = resolve_config("iql", "d", "antmaze-umaze-v0", "cpu", 0)
    assert (am.offline_steps, am.offline_eval_every, am.eval_every, am.eval_episodes) == (250_000, 25_000, 2500, 100)
    assert am.reward_transform == "antmaze_iql"
    loco = resolve_config("iql", "d", "Hopper-v5", "cpu", 0)
    assert (loco.offline_steps, loco.offline_eval_every) == (50_000, None)
    assert resolve_config("calql", "d", "antmaze-umaze-v0", "cpu", 0).offline_steps == 10_000
    assert resolve_config("iql", "d", "antmaze-umaze-v0", "cpu", 0, {"offline_steps": 7}).offline_steps == 7

    cfg = smoke_config(hopper_hdf5, offline_steps=120, online_steps=60, offline_eval_every=60, eval_every=20)
    train(cfg, tmp_path / "run", progress=False)
    evaluated = [(r["phase"], int(r["step"])) for r in read_rows(tmp_path / "run" / "metrics.csv") if r.get("eval/score")]
    assert evaluated == [("offline", 60), ("offline", 120), ("online", 140), ("online", 160), ("online", 180)]
    with pytest.raises(RunError, match="offline_eval_every=30 must be a positive multiple of log_every=20"):
        train(smoke_config(hopper_hdf5, offline_eval_every=30), tmp_path / "bad", progress=False)


def test_state_from_other_data_is_refused_by_fingerprint(hopper_hdf5, tmp_path):
    """The same dataset name with other contents (a rebuild elsewhere): neither a reused offline
    phase nor a resume continues from state computed on the other data."""
    import shutil

    import h5py

    from stratdiff.data import load_dataset

    data = tmp_path / "data.hdf5"
    shutil.copy(hopper_hdf5, data)
    donor = train(smoke_config(data), tmp_path / "donor", progress=False)
    assert donor["dataset_fingerprint"] == load_dataset(str(data), "Hopper-v5").fingerprint()
    offline_meta = json.loads((tmp_path / "donor" / "offline_agent.json").read_text())
    assert offline_meta["dataset_fingerprint"] == donor["dataset_fingerprint"]
    with pytest.raises(KeyboardInterrupt):
        train(smoke_config(data), tmp_path / "killed", progress=False, stop_after=60)
    with h5py.File(data, "r+") as f:  # one reward changed
        f["rewards"][0] = f["rewards"][0] + 1.0
    changed = load_dataset(str(data), "Hopper-v5").fingerprint()
    assert changed != donor["dataset_fingerprint"]
    with pytest.raises(RunError, match=f"other data.*{changed}.*{donor['dataset_fingerprint']}"):
        train(smoke_config(data, rho=0.25, reuse_offline_from=str(tmp_path / "donor")), tmp_path / "reuse",
              progress=False)
    with pytest.raises(RunError, match="cannot resume .* other data"):
        train(smoke_config(data), tmp_path / "killed", resume=True, progress=False)
