"""SAC training driver: checkpoints, resume, buffer files, determinism, snapshot export."""

import csv
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from stratdiff.agents.sac import SACConfig
from stratdiff.behaviour import export, policies
from stratdiff.behaviour.train import TrainConfig, read_buffer, train
from stratdiff.locks import FolderBusyError

SAC = SACConfig(hidden_dims=(16, 16))


def _cfg(steps):
    return TrainConfig(env_id="Pendulum-v1", steps=steps, seed=3, start_steps=100, batch_size=32,
                       eval_every=100, eval_episodes=2)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sac") / "run"
    train(_cfg(300), out, SAC, progress=False, log=lambda *_: None)
    return out


def test_run_layout_and_evaluations(run):
    with open(run / "evals.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [100, 200, 300]
    assert all(np.isfinite(float(r["return"])) for r in rows)
    assert float(rows[-1]["alpha"]) < 1.0  # the temperature has been learning
    assert json.loads((run / "checkpoint.json").read_text())["step"] == 300
    assert sorted(p.name for p in (run / "buffer").iterdir()) == [
        "00000100.npz", "00000200.npz", "00000300.npz"]
    buf = read_buffer(run)
    assert len(buf["rewards"]) == 300
    # Pendulum never terminates; its 200-step limit is the one time-out.
    assert not buf["terminals"].any() and np.flatnonzero(buf["timeouts"]).tolist() == [199]
    np.testing.assert_array_equal(buf["next_observations"][:-1][~buf["timeouts"][:-1]],
                                  buf["observations"][1:][~buf["timeouts"][:-1]])
    assert np.abs(buf["actions"]).max() <= 1.0  # stored in the agent's [-1, 1] units


def test_same_seed_same_run(run, tmp_path):
    other = tmp_path / "again"
    train(_cfg(300), other, SAC, progress=False, log=lambda *_: None)
    a, b = read_buffer(run), read_buffer(other)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert (run / "checkpoint.msgpack").read_bytes() == (other / "checkpoint.msgpack").read_bytes()


def test_resume_continues_from_checkpoint(run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    logs = []
    train(_cfg(400), copy, SAC, progress=False, log=logs.append)
    assert any("resumed" in str(m) and "300" in str(m) for m in logs)
    buf = read_buffer(copy)
    assert len(buf["rewards"]) == 400
    before = read_buffer(run)
    for k in before:
        if k != "timeouts":
            np.testing.assert_array_equal(buf[k][:300], before[k])
    # the episode interrupted at step 300 is cut there (a time-out), a fresh one starts
    assert not before["timeouts"][299] and buf["timeouts"][299]
    np.testing.assert_array_equal(np.flatnonzero(buf["timeouts"][:300]), [199, 299])
    with pytest.raises(ValueError, match="other settings"):
        train(TrainConfig(env_id="Pendulum-v1", steps=500, seed=4, start_steps=100, batch_size=32,
                          eval_every=100, eval_episodes=2), copy, SAC, progress=False)
    # one live process trains in a folder at a time; a dead one's lock is taken over
    (copy / "run.lock").write_text(f"{socket.gethostname()} {os.getpid()}")
    with pytest.raises(FolderBusyError, match="run.lock"):
        train(_cfg(500), copy, SAC, progress=False)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (copy / "run.lock").write_text(f"{socket.gethostname()} {int(dead.stdout)}")
    logs = []
    train(_cfg(400), copy, SAC, progress=False, log=logs.append)
    assert any("already at step 400" in str(m) for m in logs) and not (copy / "run.lock").exists()


def test_compact_transitions_round_trip(run):
    buf = read_buffer(run)
    small = policies.compact_transitions(buf)
    assert "next_observations" not in small and len(small["break_index"]) == 2  # time-out + last row
    back = policies.expand_transitions(small)
    for k in buf:
        np.testing.assert_array_equal(back[k], buf[k])


def test_export_writes_policy_with_replay_and_evaluation(run, tmp_path):
    dest = tmp_path / "medium"
    export.export_policy(run, 200, "medium", episodes=2, dest=dest)
    meta = json.loads((dest / "policy.json").read_text())
    assert meta["step"] == 200 and meta["seed"] == 3 and meta["level"] == "medium"
    assert meta["evaluation"]["episodes"] == 2 and "return" in meta["evaluation"]["stochastic"]
    replay = policies.load_replay("Pendulum-v1", dest / "replay.npz")
    np.testing.assert_array_equal(replay["observations"], read_buffer(run, 200)["observations"])
    pol = policies.load_policy("Pendulum-v1", "medium", dest)
    import jax

    acts = np.asarray(pol.sample(np.zeros((5, 3), np.float32), jax.random.PRNGKey(0)))
    assert acts.shape == (5, 1) and np.abs(acts).max() <= 2.0  # Pendulum's bounds are +-2


def test_pack_unpack_resumes_the_same_run(run, tmp_path):
    from stratdiff.behaviour.train import pack_run, unpack_run

    packed = pack_run(run, tmp_path / "packed")
    assert sorted(p.name for p in packed.iterdir()) == [
        "checkpoint.json", "checkpoint.msgpack", "config.json", "evals.csv", "replay.npz", "snapshots"]
    back = unpack_run(packed, tmp_path / "back")
    assert sorted(p.name for p in (back / "snapshots").iterdir()) == sorted(
        p.name for p in (run / "snapshots").iterdir())
    a, b = read_buffer(run), read_buffer(back)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    logs = []
    train(_cfg(400), back, SAC, progress=False, log=logs.append)
    assert any("resumed" in str(m) for m in logs) and len(read_buffer(back)["rewards"]) == 400
