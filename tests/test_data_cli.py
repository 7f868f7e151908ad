"""`stratdiff data inspect` through the installed console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

STRATDIFF = str(Path(sys.executable).parent / "stratdiff")


def run(*args, env=None):
    return subprocess.run([STRATDIFF, "data", *args], capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture(scope="module")
def hopper_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "hopper-tiny.hdf5"
    rng = np.random.default_rng(0)
    n = 30
    obs = rng.normal(size=(n + 1, 11)).astype(np.float32)
    rewards = np.ones(n, np.float32)
    timeouts = np.zeros(n, bool)
    timeouts[[9, 29]] = True
    terminals = np.zeros(n, bool)
    terminals[14] = True
    with h5py.File(path, "w") as f:
        f["observations"] = obs[:-1]
        f["next_observations"] = obs[1:]
        f["actions"] = rng.uniform(-1, 1, (n, 3)).astype(np.float32)
        f["rewards"] = rewards
        f["terminals"] = terminals
        f["timeouts"] = timeouts
        f.create_group("metadata").attrs["env_id"] = "Hopper-v5"
    return path


def test_inspect_text_and_json(hopper_file):
    text = run("inspect", str(hopper_file))
    assert text.returncode == 0, text.stderr
    assert "transitions       30" in text.stdout and "episodes          3" in text.stdout
    out = run("inspect", str(hopper_file), "--json")
    assert out.returncode == 0, out.stderr
    s = json.loads(out.stdout)
    # trajectories: rows 0-9 (time-out), 10-14 (terminal), 15-29 (time-out), all rewards 1
    assert (s["transitions"], s["episodes"], s["obs_dim"], s["act_dim"]) == (30, 3, 11, 3)
    assert s["return_mean"] == pytest.approx(10.0)
    assert (s["return_min"], s["return_max"]) == (5.0, 15.0)
    assert s["return_std"] == pytest.approx(np.std([10, 5, 15]))
    assert s["env_id"] == "Hopper-v5"
    # Hopper's D4RL references from stratdiff.envs
    assert s["normalized_score"] == pytest.approx(100 * (10 + 20.272305) / (3234.3 + 20.272305))


def test_inspect_errors_are_one_line(hopper_file, tmp_path):
    env = {**os.environ, "STRATDIFF_DATA_DIR": str(tmp_path), "MINARI_DATASETS_PATH": str(tmp_path)}
    bad = tmp_path / "bad.hdf5"
    bad.write_bytes(b"not an hdf5 file at all" * 10)
    for args, expected in [
        ((str(bad),), "bad.hdf5: not a readable HDF5 file"),
        ((str(hopper_file), "--env", "HalfCheetah-v5"), "environment HalfCheetah-v5"),
        ((str(tmp_path / "nothing_here"),), "nothing_here: no such file or directory"),
        (("no_such_dataset",), "unknown dataset source 'no_such_dataset'"),
    ]:
        r = run("inspect", *args, env=env)
        assert r.returncode != 0
        lines = [ln for ln in r.stderr.splitlines() if ln.startswith("stratdiff")]
        assert len(lines) == 1 and expected in lines[0], r.stderr
        assert "Traceback" not in r.stderr
        assert r.stdout == ""


def test_inspect_does_not_import_jax(hopper_file):
    code = (
        "import sys; from stratdiff.commands import data; "
        f"data.main(['inspect', {str(hopper_file)!r}, '--json']); "
        "assert 'jax' not in sys.modules, 'jax imported'"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_closed_stdout_ends_quietly(tmp_path):
    """`stratdiff data list | head`: a reader that has gone away stops the command with the
    shell's SIGPIPE code (141) and no error line or traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to stdout now fails with EPIPE
    try:
        proc = subprocess.run([STRATDIFF, "data", "list"], stdout=write_end, stderr=subprocess.PIPE, text=True,
                              timeout=120, env={**os.environ, "STRATDIFF_DATA_DIR": str(tmp_path)})
    finally:
        os.close(write_end)
    assert proc.returncode == 141, proc.stderr
    assert proc.stderr == ""
