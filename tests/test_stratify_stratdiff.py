"""StratDiff's stratifier on a toy problem with a known answer, its ablation switches, and
smoke runs of both StratDiff variants end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stratdiff.agents import AGENTS
from stratdiff.agents.base import make_config
from stratdiff.diffusion import BehaviourModel, DiffusionConfig, SamplerConfig, train_steps
from stratdiff.stratify.stratdiff import StratDiffConfig
from stratdiff.stratify.stratdiff import make_stratifier as build_stratifier
from stratdiff.types import OFFLINE, ONLINE, Batch

OBS, ACT, N = 2, 2, 64


def behaviour_action(obs, key):
    """The toy behaviour policy: a narrow Gaussian around 0.6 * tanh(s)."""
    return 0.6 * jnp.tanh(obs) + 0.08 * jax.random.normal(key, obs.shape)


@pytest.fixture(scope="module")
def toy():
    key = jax.random.PRNGKey(0)
    obs = jax.random.uniform(key, (4096, OBS), minval=-1.5, maxval=1.5)
    actions = behaviour_action(obs, jax.random.PRNGKey(1))
    cfg = DiffusionConfig(hidden_dims=(64, 32, 16), embed_dim=16, cond_dim=32, lr=3e-3, batch_size=256,
                          train_steps=1500, energy_hidden_dims=(32, 32), energy_batch_size=32, num_support=8,
                          sampler=SamplerConfig(steps=10))
    model = BehaviourModel.create(jax.random.PRNGKey(2), OBS, ACT, cfg)
    model, _ = train_steps(model, obs, actions, jax.random.PRNGKey(3), 1500, 256)
    agent = AGENTS["iql"].create(jax.random.PRNGKey(4), OBS, ACT, make_config(AGENTS["iql"], "locomotion",
                                                                            {"hidden_dims": (16, 16)}))
    return model, agent, obs


def make_stratifier(model, obs, guidance_scale=None, **options):
    support = jnp.repeat(behaviour_action(obs[:256], jax.random.PRNGKey(5))[:, None], 8, axis=1)
    return build_stratifier(model, obs[:256], support, StratDiffConfig(**options), 0.5, guidance_scale,
                            model.config.sampler)


def toy_batch(key):
    """N behaviour actions (from the offline buffer) then N uniform actions (online), shape [1, 2N]."""
    k_obs, k_beh, k_rand = jax.random.split(key, 3)
    obs = jax.random.uniform(k_obs, (2 * N, OBS), minval=-1.5, maxval=1.5)
    actions = jnp.concatenate([behaviour_action(obs[:N], k_beh),
                               jax.random.uniform(k_rand, (N, ACT), minval=-1.0, maxval=1.0)])
    source = jnp.array([OFFLINE] * N + [ONLINE] * N)
    zeros = jnp.zeros(2 * N)
    batch = Batch(obs, actions, zeros, obs, jnp.ones(2 * N), zeros, source)
    return jax.tree_util.tree_map(lambda x: x[None], batch)


@pytest.mark.parametrize("score", ["gaussian_fit", "fixed_sigma"])
def test_behaviour_actions_land_offline_like_and_random_ones_online_like(toy, score):
    model, agent, obs = toy
    strat = make_stratifier(model, obs, None, score=score)
    _, online_like, _, metrics = jax.jit(lambda s, a, b, k: s.split(a, b, k))(
        strat, agent, toy_batch(jax.random.PRNGKey(7)), jax.random.PRNGKey(8))
    online_like = np.asarray(online_like[0])
    # behaviour actions in b_off, uniformly random actions in b_on
    accuracy = 0.5 * (np.mean(~online_like[:N]) + np.mean(online_like[N:]))
    assert accuracy >= 0.85, accuracy  # a random split gives 0.5; the model and M=8 fit are small
    assert float(metrics["strat/score_offline_mean"]) < float(metrics["strat/score_online_mean"])
    assert int(metrics["strat/n_off"]) == N  # rho = 0.5 of the batch


def test_ablation_switches_change_what_they_name(toy):
    model, agent, obs = toy
    batch, key = toy_batch(jax.random.PRNGKey(9)), jax.random.PRNGKey(10)
    split = jax.jit(lambda s, a, b, k: s.split(a, b, k))
    base, on_base, _, m_base = split(make_stratifier(model, obs, 1.0), agent, batch, key)
    # the online CEP step moves the energy net; without energy (--no-energy) it is left alone
    delta = jax.tree_util.tree_map(lambda a, b: jnp.max(jnp.abs(a - b)), base.model.energy_params,
                                   model.energy_params)
    assert max(jax.tree_util.tree_leaves(delta)) > 0
    unguided, on_unguided, _, m_unguided = split(make_stratifier(model, obs, None, guidance=False), agent, batch, key)
    assert all(bool(jnp.all(a == b)) for a, b in zip(jax.tree_util.tree_leaves(unguided.model.energy_params),
                                                     jax.tree_util.tree_leaves(model.energy_params)))
    assert "strat/cep_loss" not in m_unguided and "strat/cep_loss" in m_base
    # --no-stratification: every sample offline-like, the same scores and exchange count logged
    _, on_flat, _, m_flat = split(make_stratifier(model, obs, 1.0, stratify=False), agent, batch, key)
    assert not bool(jnp.any(on_flat))
    assert float(m_flat["strat/exchange"]) == float(m_base["strat/exchange"])
    # --split-by-source: the strata are the source buffers, so nothing is exchanged; the scores are still logged
    _, on_src, _, m_src = split(make_stratifier(model, obs, 1.0, split_by_source=True), agent, batch, key)
    np.testing.assert_array_equal(np.asarray(on_src), np.asarray(batch.source == ONLINE))
    assert bool(jnp.any(on_src)) and not bool(jnp.all(on_src))
    assert float(m_src["strat/exchange"]) == 0.0 and float(m_base["strat/exchange"]) > 0
    assert float(m_src["strat/n_on"]) == float(jnp.sum(batch.source == ONLINE))
    assert float(m_src["strat/score_online_mean"]) == float(m_base["strat/score_online_mean"])
    with pytest.raises(ValueError, match="split_by_source"):
        make_stratifier(model, obs, 1.0, split_by_source=True, stratify=False)
    # --exchange-cap: at most n_c samples cross each way
    _, on_cap, _, m_cap = split(make_stratifier(model, obs, 1.0, exchange_cap=2), agent, batch, key)
    assert float(m_cap["strat/exchange_off_to_on"]) <= 2 and float(m_cap["strat/exchange_on_to_off"]) <= 2
    assert float(m_base["strat/exchange"]) > 4  # so the cap did bind
    # behaviour-model candidates for IQL's online max-target
    _, _, cands, _ = split(make_stratifier(model, obs, 1.0, next_candidates=3), agent, batch, key)
    assert cands.shape == (1, 2 * N, 3, ACT) and float(jnp.max(jnp.abs(cands))) <= 1.0


def test_energy_every_updates_the_energy_on_schedule_only(toy):
    """energy_every=3: CEP steps on calls 0 and 3; the calls between keep the energy and repeat its metrics."""
    model, agent, obs = toy
    batch = toy_batch(jax.random.PRNGKey(9))
    split = jax.jit(lambda s, a, b, k: s.split(a, b, k))
    strat = make_stratifier(model, obs, 1.0, energy_every=3)
    every_call = make_stratifier(model, obs, 1.0)
    steps, losses, ref_steps = [], [], []
    for i in range(5):
        key = jax.random.PRNGKey(20 + i)
        strat, _, _, metrics = split(strat.scheduled(), agent, batch, key)
        every_call, _, _, _ = split(every_call.scheduled(), agent, batch, key)
        steps.append(int(strat.model.energy_step))
        ref_steps.append(int(every_call.model.energy_step))
        losses.append(float(metrics["strat/cep_loss"]))
    start = int(model.energy_step)
    assert steps == [start + 1, start + 1, start + 1, start + 2, start + 2]
    assert ref_steps == [start + i for i in range(1, 6)]
    assert int(strat.calls) == 5
    assert losses[0] == losses[1] == losses[2] and losses[3] == losses[4] and losses[3] != losses[0]
    # the checkpointed state carries the schedule and the metrics repeated between CEP steps
    state = strat.state_dict()
    restored = make_stratifier(model, obs, 1.0, energy_every=3).load_state_dict(state)
    assert int(restored.calls) == 5 and float(restored.energy_info["cep_loss"]) == losses[4]


def test_stratdiff_iql_killed_and_resumed_matches_uninterrupted(hopper_hdf5, tmp_path):
    import csv

    from stratdiff.methods import resolve_config
    from stratdiff.runner import train

    cfg = resolve_config("stratdiff-iql", str(hopper_hdf5), "Hopper-v5", "smoke", 0, {
        "stratifier.guidance_scale": 3.0, "offline_steps": 40, "online_steps": 80, "log_every": 10,
        "eval_every": 40, "checkpoint_every": 20, "online_warmup_steps": 10, "eval_episodes": 1,
        "batch_size": 32})
    full = train(cfg, tmp_path / "full", progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "killed", progress=False, stop_after=100)
    behaviour = (tmp_path / "killed" / "behaviour" / "energy.msgpack").stat().st_mtime_ns
    resumed = train(cfg, tmp_path / "killed", resume=True, progress=False)
    # the pretrained behaviour model is reused, the online energy state comes from the checkpoint
    assert (tmp_path / "killed" / "behaviour" / "energy.msgpack").stat().st_mtime_ns == behaviour

    def rows(run):
        with open(tmp_path / run / "metrics.csv", newline="") as f:
            return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in csv.DictReader(f)]

    assert rows("killed") == rows("full")
    assert resumed["final_score"] == full["final_score"]

    # Figure 2 and the split agreement on the finished run
    from stratdiff.commands.diffusion_similarity import main as similarity

    assert similarity([str(tmp_path / "full"), "--states", "64", "--batches", "1"]) == 0
    result = json.loads((tmp_path / "full" / "similarity.json").read_text())
    assert set(result["figure2"]) == {"offline policy", "diffusion", "guided diffusion"}
    agreement = result["split_agreement"]
    settings = agreement["settings"]
    assert agreement["reference"] == "gaussian_fit M=64, 15 steps (reference)" and agreement["samples"] == 32
    assert settings[agreement["reference"]]["reference"] == 1.0  # its first draw is the reference
    assert {"gaussian_fit M=8, 15 steps (default)", "fixed_sigma, 5 steps", "random split"} <= set(settings)
    assert set(agreement["energy_lag"]) == {"reference, energy 4 CEP steps on", "reference, energy 16 CEP steps on"}
    values = [v for row in settings.values() for v in row.values()] + list(agreement["energy_lag"].values())
    assert all(0.0 <= v <= 1.0 for v in values) and 0.0 <= agreement["source_match"] <= 1.0
    assert (tmp_path / "full" / "similarity.png").stat().st_size > 1000
    assert similarity([str(tmp_path / "nothing-here")]) == 1


@pytest.mark.parametrize("algo", ["stratdiff-calql"])
def test_smoke_run_end_to_end(algo, hopper_hdf5, tmp_path):
    out = tmp_path / algo
    cmd = [sys.executable, "-m", "stratdiff.cli", "train", "--algo", algo, "--dataset", str(hopper_hdf5),
           "--env", "Hopper-v5", "--preset", "smoke", "--out", str(out), "--no-progress",
           "--set", "stratifier.guidance_scale=3.0", "offline_steps=50", "online_steps=60", "log_every=10",
           "eval_every=30", "checkpoint_every=30", "online_warmup_steps=20", "eval_episodes=1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert np.isfinite(summary["final_score"])
    assert (out / "behaviour" / "config.json").is_file()
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    for key in ("strat/exchange", "strat/score_online_mean", "frac_online_like"):
        assert key in header, key


def test_any_dataset_name_takes_the_task_kind_defaults(hopper_hdf5, tmp_path):
    """A user's own file (a name the paper's Table 4 does not list) runs: the locomotion defaults
    (guidance scale 5.0, the median of Table 4's locomotion scales; K = 16) are said once and
    recorded in config.json; a resume with the same command continues the same run."""
    import shutil

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
    cmd = [sys.executable, "-m", "stratdiff.cli", "train", "--algo", "stratdiff-iql", "--dataset", str(data),
           "--env", "Hopper-v5", "--preset", "smoke", "--out", str(out), "--no-progress",
           "--set", "offline_steps=20", "online_steps=30", "log_every=10", "eval_every=30",
           "checkpoint_every=10", "online_warmup_steps=10", "eval_episodes=1", "batch_size=16"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("is not in the paper's Table 4") == 1, done.stdout[-2000:]
    assert "stratifier.guidance_scale=5.0" in done.stdout
    stored = json.loads((out / "config.json").read_text())["stratifier"]
    assert stored["guidance_scale"] == 5.0 and stored["num_support"] == 16
    assert json.loads((out / "behaviour" / "config.json").read_text())["config"]["num_support"] == 16
    again = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]


def test_offline_rows_bounds_the_offline_like_count(toy):
    """The static bound the runner hands Cal-QL: the number of offline-like rows, round(rho * B)
    halves up, the batch's offline share (the exchange cap keeps the count there)."""
    model, agent, obs = toy
    strat = make_stratifier(model, obs, 1.0)
    assert strat.offline_rows(2 * N) == N
    assert strat.replace(rho=0.5).offline_rows(5) == 3  # 2.5 rounds up, in the split as in the batch
    assert make_stratifier(model, obs, 1.0, stratify=False).offline_rows(2 * N) is None
    _, online_like, _, _ = jax.jit(lambda s, a, b, k: s.split(a, b, k))(
        make_stratifier(model, obs, 1.0, exchange_cap=3), agent, toy_batch(jax.random.PRNGKey(9)),
        jax.random.PRNGKey(10))
    assert int(jnp.sum(~online_like)) <= strat.offline_rows(2 * N)


def test_study_preset_is_the_200k_protocol_with_the_cpu_behaviour_model():
    from stratdiff.diffusion import PRESETS
    from stratdiff.methods import resolve_config
    from stratdiff.stratify.stratdiff import SCALE_DEFAULTS

    loco = resolve_config("stratdiff-iql", "halfcheetah-medium-v5", "HalfCheetah-v5", "study", 1)
    ant = resolve_config("iql", "antmaze-umaze-diverse-v0", "antmaze-umaze-diverse-v0", "study", 1)
    for cfg in (loco, ant):
        assert (cfg.offline_steps, cfg.online_steps, cfg.rho, cfg.utd) == (300_000, 200_000, 0.5, 1)
        assert (cfg.eval_every, cfg.checkpoint_every, cfg.online_warmup_steps) == (10_000, 10_000, 5000)
    assert (loco.eval_episodes, ant.eval_episodes) == (10, 100)
    assert PRESETS["study"] == PRESETS["cpu"]
    cpu = dict(SCALE_DEFAULTS["cpu"])
    study = dict(SCALE_DEFAULTS["study"])
    for key in ("diffusion_steps", "support_states", "energy_pretrain_steps", "sampler_steps"):
        assert study[key] == cpu[key]
    assert (study["score"], study["amortised_every"], study["amortised_sampler_steps"], study["energy_every"]) == (
        "amortised", 8, 5, 32)
