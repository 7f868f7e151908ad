"""Smoke runs of both StratDiff variants end to end: StratDiff-IQL with the amortised score
killed and resumed, its similarity diagnostics, a dataset name the paper's table does not list, and StratDiff-Cal-QL
through `stratdiff train`.

The runs are in-process (one pytest worker runs this whole file), so the StratDiff-IQL runs
that share shapes and settings share their compiled functions; the StratDiff-IQL settings
below are the same for every run but the guidance scale.
"""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from stratdiff.cli import main as cli
from stratdiff.methods import resolve_config
from stratdiff.runner import train

# StratDiff-IQL at smoke scale, cut further
STEPS = {"offline_steps": 40, "online_steps": 80, "log_every": 10, "eval_every": 40, "checkpoint_every": 20,
         "online_warmup_steps": 10, "eval_episodes": 1, "batch_size": 32}


def rows(folder):
    with open(folder / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in csv.DictReader(f)]


def test_stratdiff_iql_killed_and_resumed_matches_uninterrupted(hopper_hdf5, tmp_path):
    """With the study's score form (the amortised g with its online replay): a run killed in
    its online phase resumes to the numbers of the uninterrupted run, reusing the pretrained
    behaviour model, energy and g; then Figure 2 and the split agreement on the finished run."""
    cfg = resolve_config("stratdiff-iql", str(hopper_hdf5), "Hopper-v5", "smoke", 0, {
        "stratifier.guidance_scale": 3.0, "stratifier.score": "amortised", "stratifier.amortised_states": 4,
        "stratifier.amortised_every": 2, "stratifier.amortised_replay": 16, **STEPS})
    full = train(cfg, tmp_path / "full", progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "killed", progress=False, stop_after=100)
    behaviour = tmp_path / "killed" / "behaviour"
    written = {f: (behaviour / f).stat().st_mtime_ns for f in ("energy.msgpack", "amortised.msgpack")}
    resumed = train(cfg, tmp_path / "killed", resume=True, progress=False)
    # the pretrained parts are reused; the online energy and g states come from the checkpoint
    assert {f: (behaviour / f).stat().st_mtime_ns for f in written} == written
    assert rows(tmp_path / "killed") == rows(tmp_path / "full")
    assert "strat/amortised_loss" in rows(tmp_path / "full")[-1]
    assert resumed["final_score"] == full["final_score"]

    # Figure 2 and the split agreement on the finished run, the run's g among the settings
    from stratdiff.commands.diffusion_similarity import main as similarity
    from stratdiff.experiments.diagnostics import AMORTISED_VARIANT

    assert similarity([str(tmp_path / "full"), "--states", "32", "--batches", "1"]) == 0
    result = json.loads((tmp_path / "full" / "similarity.json").read_text())
    assert set(result["figure2"]) == {"offline policy", "diffusion", "guided diffusion"}
    agreement = result["split_agreement"]
    settings = agreement["settings"]
    assert agreement["reference"] == "gaussian_fit M=64, 15 steps (reference)" and agreement["samples"] == 32
    assert settings[agreement["reference"]]["reference"] == 1.0  # its first draw is the reference
    assert {"gaussian_fit M=8, 15 steps (default)", "fixed_sigma, 5 steps", "random split",
            AMORTISED_VARIANT} <= set(settings)
    assert set(agreement["energy_lag"]) == {"reference, energy 4 CEP steps on", "reference, energy 16 CEP steps on"}
    values = [v for row in settings.values() for v in row.values()] + list(agreement["energy_lag"].values())
    assert all(0.0 <= v <= 1.0 for v in values) and 0.0 <= agreement["source_match"] <= 1.0
    assert (tmp_path / "full" / "similarity.png").stat().st_size > 1000
    assert similarity([str(tmp_path / "nothing-here")]) == 1


def test_any_dataset_name_takes_the_task_kind_defaults(hopper_hdf5, tmp_path, capsys):
    """A user's own file (a name the paper's Table 4 does not list) runs: the locomotion defaults
    (guidance scale 5.0, the median of Table 4's locomotion scales; K = 16) are said once and
    recorded in config.json; a resume with the same command continues the same run."""
    from stratdiff.diffusion import TASK_KIND_DEFAULTS
    from stratdiff.stratify.stratdiff import dataset_values

    assert (TASK_KIND_DEFAULTS["locomotion"].guidance_scale, TASK_KIND_DEFAULTS["locomotion"].num_support) == (5.0, 16)
    assert (TASK_KIND_DEFAULTS["antmaze"].guidance_scale, TASK_KIND_DEFAULTS["antmaze"].num_support) == (3.0, 32)
    assert dataset_values({}, "hopper-medium-replay-v5", "locomotion") == ({}, None)
    assert dataset_values({}, "my-maze", "antmaze")[0] == {"guidance_scale": 3.0, "num_support": 32}
    assert dataset_values({"guidance_scale": 2.0}, "my-data", "locomotion")[0] == {"num_support": 16}

    data = tmp_path / "my_data.hdf5"
    shutil.copy(hopper_hdf5, data)
    out = tmp_path / "run"
    argv = ["train", "--algo", "stratdiff-iql", "--dataset", str(data), "--env", "Hopper-v5", "--preset", "smoke",
            "--out", str(out), "--no-progress", "--set", *(f"{k}={v}" for k, v in STEPS.items())]
    capsys.readouterr()
    assert cli(argv) == 0
    stdout = capsys.readouterr().out
    assert stdout.count("is not in the paper's Table 4") == 1, stdout[-2000:]
    assert "stratifier.guidance_scale=5.0" in stdout
    stored = json.loads((out / "config.json").read_text())["stratifier"]
    assert stored["guidance_scale"] == 5.0 and stored["num_support"] == 16
    assert json.loads((out / "behaviour" / "config.json").read_text())["config"]["num_support"] == 16
    assert cli([*argv, "--resume"]) == 0


@pytest.mark.parametrize("algo", ["stratdiff-calql"])
def test_smoke_run_end_to_end(algo, hopper_hdf5, tmp_path):
    out = tmp_path / algo
    argv = ["train", "--algo", algo, "--dataset", str(hopper_hdf5), "--env", "Hopper-v5", "--preset", "smoke",
            "--out", str(out), "--no-progress",
            "--set", "stratifier.guidance_scale=3.0", "offline_steps=50", "online_steps=60", "log_every=10",
            "eval_every=30", "checkpoint_every=30", "online_warmup_steps=20", "eval_episodes=1"]
    assert cli(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert np.isfinite(summary["final_score"])
    assert (out / "behaviour" / "config.json").is_file()
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    for key in ("strat/exchange", "strat/score_online_mean", "frac_online_like"):
        assert key in header, key
