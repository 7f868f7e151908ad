"""StratDiff's stratifier on a toy problem with a known answer and its ablation switches
(smoke runs of both StratDiff variants end to end: test_stratify_stratdiff_runs.py)."""

from __future__ import annotations

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


def test_study_preset_is_the_100k_protocol_with_the_cpu_behaviour_model():
    from stratdiff.diffusion import PRESETS
    from stratdiff.methods import resolve_config
    from stratdiff.stratify.stratdiff import SCALE_DEFAULTS

    loco = resolve_config("stratdiff-iql", "halfcheetah-medium-v5", "HalfCheetah-v5", "study", 1)
    ant = resolve_config("iql", "antmaze-umaze-diverse-v0", "antmaze-umaze-diverse-v0", "study", 1)
    for cfg in (loco, ant):
        assert (cfg.offline_steps, cfg.online_steps, cfg.rho, cfg.utd) == (300_000, 100_000, 0.5, 1)
        assert (cfg.eval_every, cfg.checkpoint_every, cfg.online_warmup_steps) == (5_000, 10_000, 5000)
    assert (loco.eval_episodes, ant.eval_episodes) == (10, 50)
    # AntMaze keeps its task-kind transforms and the cpu scale its 100-episode evaluations
    assert (ant.reward_transform, ant.normalize_states) == ("antmaze_iql", False)
    assert resolve_config("iql", "antmaze-umaze-diverse-v0", "antmaze-umaze-diverse-v0", "cpu", 1).eval_episodes == 100
    assert PRESETS["study"] == PRESETS["cpu"]
    cpu = dict(SCALE_DEFAULTS["cpu"])
    study = dict(SCALE_DEFAULTS["study"])
    for key in ("support_states", "energy_pretrain_steps", "sampler_steps"):
        assert study[key] == cpu[key]
    assert (study["diffusion_steps"], cpu["diffusion_steps"]) == (40_000, 20_000)
    assert (study["score"], study["amortised_every"], study["amortised_states"], study["amortised_replay"],
            study["amortised_sampler_steps"], study["energy_every"]) == ("amortised", 16, 64, 512, 5, 32)
    assert (study["amortised_pool_states"], study["amortised_pretrain_steps"]) == (16_384, 4_000)
