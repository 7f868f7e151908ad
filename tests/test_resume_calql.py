"""Resume and offline-phase reuse beyond IQL: Cal-QL's learned temperature and Lagrange alpha'
come back from the checkpoint (Cal-QL and StratDiff-Cal-QL), and a StratDiff run that takes over
its backbone's offline phase ends as the run computing it itself."""

from __future__ import annotations

import csv

import pytest

from stratdiff.methods import resolve_config
from stratdiff.runner import train

SMALL_CALQL = {"agent.actor_hidden_dims": [32, 32], "agent.critic_hidden_dims": [32, 32], "agent.cql_n_actions": 2,
               "agent.cql_lagrange": True, "agent.cql_target_action_gap": 0.5}


def config(algo, data, **overrides):
    base = {"offline_steps": 40, "online_steps": 60, "online_warmup_steps": 10, "log_every": 10, "eval_every": 30,
            "checkpoint_every": 20, "eval_episodes": 1, "batch_size": 16}
    if "calql" in algo:
        base.update(SMALL_CALQL)
    base.update(overrides)
    return resolve_config(algo, str(data), "Hopper-v5", "smoke", 0, base)


def rows(folder):
    with open(folder / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in csv.DictReader(f)]


@pytest.mark.parametrize("algo", ["calql", "stratdiff-calql"])
def test_calql_killed_online_resumes_with_its_temperature_and_lagrange_state(algo, hopper_hdf5, tmp_path):
    cfg = config(algo, hopper_hdf5)
    full = train(cfg, tmp_path / "full", progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "killed", progress=False, stop_after=75)
    resumed = train(cfg, tmp_path / "killed", resume=True, progress=False)
    full_rows = rows(tmp_path / "full")
    assert rows(tmp_path / "killed") == full_rows
    assert resumed["final_score"] == full["final_score"]
    # the state that must survive the checkpoint did move during the run
    alphas = [float(r["alpha"]) for r in full_rows if r.get("alpha")]
    primes = [float(r["alpha_prime"]) for r in full_rows if r.get("alpha_prime")]
    assert len(set(alphas)) > 1 and len(set(primes)) > 1


def test_stratdiff_reusing_its_backbones_offline_phase_matches_its_own(hopper_hdf5, tmp_path):
    train(config("iql", hopper_hdf5), tmp_path / "iql", progress=False)
    own = train(config("stratdiff-iql", hopper_hdf5), tmp_path / "own", progress=False)
    reused = train(config("stratdiff-iql", hopper_hdf5, reuse_offline_from=str(tmp_path / "iql")),
                   tmp_path / "reused", progress=False)
    assert reused["offline_phase_from"] == str(tmp_path / "iql") and own["offline_phase_from"] is None
    assert rows(tmp_path / "reused") == rows(tmp_path / "own")
    assert reused["final_score"] == own["final_score"]
