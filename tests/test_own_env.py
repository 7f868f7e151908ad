"""A dataset recorded on a gymnasium environment stratdiff does not ship (InvertedPendulum-v5, Box
actions in [-3, 3]) with minari's DataCollector: actions mapped to the agents' [-1, 1] on load and
back to [-3, 3] when acting; both backbones, StratDiff and EDIS train on it; scores are raw returns
without reference scores (and the report says so), and Minari metadata reference scores normalise
them when present."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import gymnasium as gym
import minari
import numpy as np
import pytest

from stratdiff.data import load_dataset, write_minari
from stratdiff.experiments import report
from stratdiff.methods import METHODS, resolve_config
from stratdiff.runner import Runner, train

ENV = "InvertedPendulum-v5"
TINY = dict(offline_steps=20, online_steps=20, online_warmup_steps=5, log_every=10, eval_every=20,
            checkpoint_every=20, eval_episodes=1, batch_size=16)


def record(dataset_id: str, seed: int, **refs) -> None:
    """Random actions over InvertedPendulum's whole [-3, 3] range, recorded by minari's DataCollector
    into MINARI_DATASETS_PATH; `refs`: ref_min_score / ref_max_score for the metadata."""
    env = minari.DataCollector(gym.make(ENV, max_episode_steps=40))
    rng = np.random.default_rng(seed)
    for i in range(30):
        env.reset(seed=seed + i)
        done = False
        while not done:
            _, _, term, trunc, _ = env.step(rng.uniform(-3, 3, size=1).astype(np.float32))
            done = term or trunc
    env.create_dataset(dataset_id, algorithm_name="random", description="test data",
                       eval_env=ENV if refs else None, **refs)
    env.close()


@pytest.fixture(scope="module")
def minari_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("minari")
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mp.setenv("MINARI_DATASETS_PATH", str(root))
        record("test/pendulum/random-v0", seed=0)
        record("test/pendulum/scored-v0", seed=100, ref_min_score=0.0, ref_max_score=1000.0)
    return root


def test_actions_mapped_to_unit_range_once(minari_root, tmp_path):
    ds = load_dataset(minari_root / "test/pendulum/random-v0")
    raw = np.concatenate([e.actions for e in minari.MinariDataset(
        minari_root / "test/pendulum/random-v0" / "data").iterate_episodes()])
    np.testing.assert_allclose(ds.actions, raw / 3.0, atol=1e-6)
    assert ds.actions.min() < -0.9 and ds.actions.max() > 0.9  # the whole range, not a third of it
    assert ds.info.extra["actions_rescaled_from"] == {"low": [-3.0], "high": [3.0]}
    assert ds.info.ref_min_score is None
    back = load_dataset(write_minari(ds, tmp_path / "copy"))  # written back out: not mapped twice
    np.testing.assert_array_equal(back.actions, ds.actions)


# Both backbones, the StratDiff stratifier and the EDIS batch source: every part a method is made
# of (`stratdiff.methods.METHODS`; the runner never branches on a method's name). All six would
# double this file's time, mostly spent compiling.
ALGOS = ("iql", "stratdiff-calql", "edis-iql")


@pytest.fixture(scope="module")
def own_env_runs(minari_root, tmp_path_factory) -> Path:
    """One smoke-scale run of each of ALGOS on the dataset without reference scores. StratDiff's
    guidance scale comes from the paper's table for its datasets; here it is set."""
    root = tmp_path_factory.mktemp("own_env")
    ds = load_dataset(minari_root / "test/pendulum/random-v0")
    for algo in ALGOS:
        guidance = {"stratifier.guidance_scale": 3.0} if METHODS[algo].stratifier == "stratdiff" else {}
        cfg = resolve_config(algo, "test/pendulum/random-v0", ENV, "smoke", 0, {**TINY, **guidance})
        train(cfg, root / algo, progress=False, dataset=ds)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("algo", ALGOS)
def test_methods_train_with_raw_returns(own_env_runs, algo):
    summary = json.loads((own_env_runs / algo / "summary.json").read_text())
    assert (summary["env"], summary["online_steps"]) == (ENV, 20)
    assert summary["score"] == "raw return" and summary["reference_scores"] is None
    last = (own_env_runs / algo / "metrics.csv").read_text().splitlines()
    header, row = last[0].split(","), last[-1].split(",")
    values = dict(zip(header, row))
    assert "eval/score" not in header and float(values["eval/return"]) == summary["final_score"]
    assert summary["final_score"] >= 1.0  # a return: at least one step of reward 1 before falling


@pytest.mark.slow
def test_report_says_scores_are_raw_returns(own_env_runs, tmp_path):
    md = report.write_report(own_env_runs, tmp_path / "report", reps=100).read_text()
    assert f"Runs on {ENV} have no reference scores: their scores are raw returns" in md
    table = (tmp_path / "report" / "table_main.md").read_text()
    iql = json.loads((own_env_runs / "iql" / "summary.json").read_text())["final_score"]
    row = next(line for line in table.splitlines() if line.startswith("| random-v0 |"))
    assert f" {iql:.1f} " in row


@pytest.mark.slow
def test_minari_metadata_reference_scores_normalise(minari_root, tmp_path):
    scored = load_dataset(minari_root / "test/pendulum/scored-v0")
    assert (scored.info.ref_min_score, scored.info.ref_max_score) == (0.0, 1000.0)
    cfg = resolve_config("iql", "test/pendulum/scored-v0", ENV, "smoke", 0, TINY)
    summary = train(cfg, tmp_path / "run", progress=False, dataset=scored)
    assert summary["score"] == "normalised"
    assert summary["reference_scores"] == {"min": 0.0, "max": 1000.0, "source": "dataset metadata"}
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    values = dict(zip(rows[0].split(","), rows[-1].split(",")))
    assert summary["final_score"] == pytest.approx(float(values["eval/return"]) / 10.0)  # 100 x R / 1000
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["reference_scores"]["source"] == \
        "dataset metadata"


def test_reference_scores_fall_back_to_d4rl(hopper_hdf5, minari_root, tmp_path):
    """A dataset without reference scores in its metadata on a D4RL environment uses D4RL's."""
    ds = load_dataset(hopper_hdf5, "Hopper-v5")
    assert ds.info.ref_min_score is None
    runner = Runner(resolve_config("iql", str(hopper_hdf5), "Hopper-v5", "smoke", 0, TINY), tmp_path / "a",
                    progress=False, dataset=ds)
    assert (runner.ref_source, runner.ref_scores) == ("D4RL", (-20.272305, 3234.3)) and runner.score_kind() == \
        "normalised"
    own = Runner(resolve_config("iql", "x", ENV, "smoke", 0, TINY), tmp_path / "b", progress=False,
                 dataset=load_dataset(minari_root / "test/pendulum/random-v0"))
    assert (own.ref_source, own.ref_scores, own.score_kind()) == (None, None, "raw return")
    assert own.action_bounds == ((-3.0,), (3.0,))
    np.testing.assert_allclose(own.env_action(np.array([-1.0, 0.5, 1.0], np.float32)), [-3.0, 1.5, 3.0])
