"""Minari dataset ids from the hub: downloaded only when asked (`--download`, STRATDIFF_DOWNLOAD=1),
with minari's own download; without a connection one line saying how to get the dataset. No test
here reaches the network: the hub client runs in its offline mode, with proxies on a closed
loopback port as a second guard."""

from __future__ import annotations

import shutil
import warnings

import gymnasium as gym
import minari
import numpy as np
import pytest

from stratdiff.commands import train
from stratdiff.data import DatasetError, load_dataset

HUB_ID = "mujoco/hopper/medium-v0"


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """An empty MINARI_DATASETS_PATH and a machine without a connection to the hub."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    monkeypatch.setenv("STRATDIFF_DATA_DIR", str(tmp_path / "built"))
    monkeypatch.delenv("STRATDIFF_DOWNLOAD", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for var in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "")
    return tmp_path


def test_missing_hub_dataset_says_how_to_download(offline, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("downloaded without being asked")

    monkeypatch.setattr(minari, "download_dataset", never)
    with pytest.raises(DatasetError) as e:
        load_dataset(HUB_ID)
    assert str(e.value) == (f"Minari dataset {HUB_ID!r} is not in {offline / 'minari'} (MINARI_DATASETS_PATH); "
                            f"download it with --download (or STRATDIFF_DOWNLOAD=1), or run `minari download "
                            f"{HUB_ID}` and copy it there")


@pytest.mark.parametrize("how", ["flag", "env"])
def test_download_without_connection_is_one_line(offline, monkeypatch, capsys, how):
    """minari's real download path, offline: `stratdiff train` prints one error line, exit code 1."""
    argv = ["--algo", "iql", "--dataset", HUB_ID, "--preset", "smoke", "--out", str(offline / "run")]
    if how == "flag":
        argv.append("--download")
    else:
        monkeypatch.setenv("STRATDIFF_DOWNLOAD", "1")
    assert train.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"stratdiff train: error: Minari dataset {HUB_ID!r} is not in {offline / 'minari'} "
                          "(MINARI_DATASETS_PATH) and downloading it failed (")
    assert err.endswith(f"on a machine with a connection run `minari download {HUB_ID}` and copy "
                        f"{offline / 'minari' / HUB_ID} there, or pass a local file/directory")
    assert not (offline / "run").exists()


def test_downloaded_dataset_is_read_from_minari_path(offline, monkeypatch):
    """What the hub would deliver (a dataset folder under MINARI_DATASETS_PATH) is read right after
    minari's download returns."""
    source = offline / "hub"
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mp.setenv("MINARI_DATASETS_PATH", str(source))
        env = minari.DataCollector(gym.make("InvertedPendulum-v5", max_episode_steps=10))
        env.reset(seed=0)
        for _ in range(10):
            env.step(np.zeros(1, np.float32))
        env.create_dataset("mujoco/pendulum/tiny-v0", algorithm_name="zero", description="test data")
        env.close()
    calls = []

    def fake_download(dataset_id, force_download=False):
        calls.append(dataset_id)
        shutil.copytree(source / dataset_id, offline / "minari" / dataset_id)

    monkeypatch.setattr(minari, "download_dataset", fake_download)
    ds = load_dataset("mujoco/pendulum/tiny-v0", download=True)
    assert calls == ["mujoco/pendulum/tiny-v0"] and ds.size == 10 and ds.info.env_id == "InvertedPendulum-v5"
    assert load_dataset("mujoco/pendulum/tiny-v0").size == 10 and calls == ["mujoco/pendulum/tiny-v0"]  # local now
