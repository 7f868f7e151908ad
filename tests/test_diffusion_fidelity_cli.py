"""`stratdiff diffusion train --resume`, `diffusion fidelity` and `diffusion fidelity-curve` end to end
(smoke scale, small hopper-medium-replay-v5 and hopper-medium-v5 builds in a temporary folder)."""

import json

import numpy as np
import pytest

from stratdiff.cli import main


@pytest.fixture(scope="module")
def replay_dir(tmp_path_factory):
    from stratdiff.data.builders import build

    out, _, _ = build("hopper-medium-replay-v5", size=20_000, out=tmp_path_factory.mktemp("data") / "hmr")
    return out


@pytest.fixture(scope="module")
def medium_dir(tmp_path_factory):
    """A dataset whose true behaviour policy ships with the package (the medium SAC policy)."""
    from stratdiff.data.builders import build

    out, _, _ = build("hopper-medium-v5", size=3_000, out=tmp_path_factory.mktemp("data") / "hm")
    return out


def _train(dataset, out, steps, *extra):
    return main(["diffusion", "train", "--dataset", str(dataset), "--out", str(out), "--preset", "smoke",
                 "--steps", str(steps), "--chunk", "10", "--support-states", "1", "--num-support", "1", "--no-progress",
                 *extra])


def test_resume_equals_one_run(replay_dir, tmp_path, capsys):
    assert _train(replay_dir, tmp_path / "a", 20) == 0
    assert _train(replay_dir, tmp_path / "a", 40, "--resume") == 0
    assert _train(replay_dir, tmp_path / "b", 40) == 0
    a, b = (tmp_path / "a" / "behaviour.msgpack").read_bytes(), (tmp_path / "b" / "behaviour.msgpack").read_bytes()
    assert a == b
    curve = json.loads((tmp_path / "a" / "config.json").read_text())["meta"]["loss_curve"]
    assert [row["step"] for row in curve] == [10, 20, 30, 40]
    capsys.readouterr()
    # a different seed (or network) is refused, naming what differs
    assert _train(replay_dir, tmp_path / "a", 60, "--resume", "--seed", "1") == 1
    assert "seed" in capsys.readouterr().err


def test_fidelity_and_curve(medium_dir, tmp_path, capsys):
    model = tmp_path / "m"
    assert _train(medium_dir, model, 20) == 0
    capsys.readouterr()
    rc = main(["diffusion", "fidelity", str(model), "--states", "24", "--samples", "4", "--chunk", "8",
               "--out", str(tmp_path / "f")])
    assert rc == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "f" / "fidelity.json").read_text())
    assert result["dataset"] == "hopper-medium-v5" and result["model_step"] == 20
    s = result["summary"]
    assert s["states"] == 24 and s["samples_per_state"] == 4
    # an untrained model is far from the policy; the policy's own samples are not
    assert s["model_mean_error"]["median"] > s["policy_mean_error"]["median"]
    assert s["loglik_gap"]["median"] > 0
    assert set(result["figure2_metrics"]) == {"diffusion", "true_policy"}
    per_state = np.load(tmp_path / "f" / "fidelity_states.npz")
    assert per_state["rows"].shape == (24,) and (tmp_path / "f" / "fidelity.png").is_file()
    assert main(["diffusion", "fidelity-curve", str(tmp_path / "f"), "--out", str(tmp_path / "c.png")]) == 0
    table = json.loads((tmp_path / "c.json").read_text())
    assert table["hopper-medium-v5"][0]["step"] == 20


def test_fidelity_needs_a_built_dataset(hopper_hdf5, tmp_path, capsys):
    model = tmp_path / "m"
    assert main(["diffusion", "train", "--dataset", str(hopper_hdf5), "--env", "Hopper-v5", "--preset", "smoke",
                 "--out", str(model), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["diffusion", "fidelity", str(model), "--states", "4", "--samples", "2"]) == 1
    assert "not a dataset built by `stratdiff data build`" in capsys.readouterr().err
