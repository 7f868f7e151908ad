"""The random-split control (`stratifier.score=random`, `--random-split`): the split's size and
its randomness, a StratDiff run with it (no behaviour model; killed and resumed to the same
numbers; both backbones), the flags, the options it refuses, and its label in reports."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_report_tables import HOP, write_run
from test_runner import deterministic_columns, read_rows

from stratdiff.data.buffers import n_offline
from stratdiff.experiments import report
from stratdiff.experiments import runs as run_folders
from stratdiff.methods import resolve_config
from stratdiff.runner import RunError, train
from stratdiff.stratify import stratdiff as stratdiff_module
from stratdiff.stratify.split import random_split
from stratdiff.stratify.stratdiff import RandomSplitStratifier, StratDiffConfig
from stratdiff.types import OFFLINE, ONLINE, Batch

ACT = 3


def random_stratifier(rho: float, **options) -> RandomSplitStratifier:
    return RandomSplitStratifier(config=StratDiffConfig(score="random", **options), rho=rho)


def random_batch(key, utd: int, size: int, n_off: int | None = None) -> Batch:
    """A [utd, size] batch of uniform actions; sources drawn at random, or (n_off) the first n_off
    of each row from the offline buffer, as `mixed_batches` lays them out."""
    k_obs, k_act, k_src = jax.random.split(key, 3)
    obs = jax.random.normal(k_obs, (utd, size, 2))
    actions = jax.random.uniform(k_act, (utd, size, ACT), minval=-1.0, maxval=1.0)
    if n_off is None:
        source = jnp.where(jax.random.bernoulli(k_src, 0.5, (utd, size)), ONLINE, OFFLINE)
    else:
        source = jnp.broadcast_to(jnp.where(jnp.arange(size) < n_off, OFFLINE, ONLINE), (utd, size))
    zeros = jnp.zeros((utd, size))
    return Batch(obs, actions, zeros, obs, jnp.ones((utd, size)), zeros, source)


def split(strat, batch, key):
    return jax.jit(lambda s, b, k: s.split(None, b, k))(strat, batch, key)


# ---- the split ---------------------------------------------------------------------------------
COUNTS = [(1, 0.5, 1), (7, 0.5, 4), (7, 0.3, 2), (16, 0.25, 4), (33, 0.3, 10), (64, 0.5, 32), (65, 0.1, 7),
          (9, 0.0, 0), (9, 1.0, 9)]


def test_offline_like_count_is_rho_b_rounded_halves_up():
    assert [n_offline(size, rho) for size, rho, _ in COUNTS] == [expected for _, _, expected in COUNTS]


@pytest.mark.parametrize("size,rho,expected", [COUNTS[i] for i in (1, 4, 6, 7, 8)])
def test_each_minibatch_has_exactly_the_sorted_splits_offline_like_count(size, rho, expected):
    online_like = np.asarray(random_split(jax.random.PRNGKey(size), 6, size, rho))
    assert online_like.shape == (6, size) and online_like.dtype == bool
    assert (~online_like).sum(axis=1).tolist() == [expected] * 6
    # the stratifier makes this split, and logs its counts per minibatch
    n_off = n_offline(size, rho)
    batch = random_batch(jax.random.PRNGKey(1), 6, size, n_off)
    strat = random_stratifier(rho)
    _, strata, candidates, metrics = split(strat, batch, jax.random.PRNGKey(size))
    np.testing.assert_array_equal(np.asarray(strata), online_like)
    assert candidates is None and strat.offline_rows(size) == expected
    assert float(metrics["strat/n_off"]) == expected and float(metrics["strat/n_on"]) == size - expected
    crossed = np.mean([np.sum(row[:n_off]) + np.sum(~row[n_off:]) for row in online_like])
    assert float(metrics["strat/exchange"]) == pytest.approx(crossed)
    assert float(metrics["strat/exchange_off_to_on"]) == float(metrics["strat/exchange_on_to_off"])
    assert not any(k.startswith("strat/score") for k in metrics)  # no model, no scores


def test_the_key_alone_decides_the_split():
    a = np.asarray(random_split(jax.random.PRNGKey(0), 4, 64, 0.5))
    np.testing.assert_array_equal(a, np.asarray(random_split(jax.random.PRNGKey(0), 4, 64, 0.5)))
    b = np.asarray(random_split(jax.random.PRNGKey(1), 4, 64, 0.5))
    assert (a != b).any(axis=1).all()  # every row moves with another key
    assert len({row.tobytes() for row in a}) == 4  # and the rows of one batch are drawn independently
    # the stratifier reads neither the actions nor the sources: another batch, the same key, the same split
    strat, key = random_stratifier(0.5), jax.random.PRNGKey(5)
    _, first, _, _ = split(strat, random_batch(jax.random.PRNGKey(2), 4, 64), key)
    _, second, _, _ = split(strat, random_batch(jax.random.PRNGKey(3), 4, 64), key)
    np.testing.assert_array_equal(np.asarray(first), np.asarray(second))


def test_each_sample_is_online_like_with_chance_one_minus_rho_whatever_its_source_and_action():
    draws, size, rho = 2000, 20, 0.25  # n_offline(20, 0.25) = 5: P(online-like) = 0.75 exactly
    strat = random_stratifier(rho)

    def one(key):
        k_batch, k_split = jax.random.split(key)
        batch = random_batch(k_batch, 1, size)
        _, online_like, _, _ = strat.split(None, batch, k_split)
        return online_like[0], batch.source[0] == ONLINE, jnp.linalg.norm(batch.actions[0], axis=-1)

    online_like, from_online, norm = map(np.asarray, jax.jit(jax.vmap(one))(
        jax.random.split(jax.random.PRNGKey(0), draws)))
    assert (~online_like).sum(axis=1).tolist() == [5] * draws
    tol = 4.5 * np.sqrt(0.75 * 0.25 / draws)  # binomial sd of one position's frequency
    per_position = online_like.mean(axis=0)
    assert np.all(np.abs(per_position - 0.75) < tol), per_position
    # the online-like share among samples from the offline buffer and from the online buffer
    share_off, share_on = online_like[~from_online].mean(), online_like[from_online].mean()
    assert abs(share_off - 0.75) < 0.015 and abs(share_on - 0.75) < 0.015
    assert abs(share_off - share_on) < 0.02
    # ... and among the samples with the larger and the smaller actions of their batch
    large = norm > np.median(norm, axis=1, keepdims=True)
    assert abs(online_like[large].mean() - online_like[~large].mean()) < 0.02


def test_exchange_cap_applies_to_the_random_split():
    size, rho, cap = 32, 0.5, 2
    batch = random_batch(jax.random.PRNGKey(0), 8, size, n_offline(size, rho))
    _, online_like, _, metrics = split(random_stratifier(rho, exchange_cap=cap), batch, jax.random.PRNGKey(1))
    online_like, from_online = np.asarray(online_like), np.asarray(batch.source == ONLINE)
    assert (~online_like).sum(axis=1).tolist() == [16] * 8  # the batch's offline share is rho: sizes kept
    assert np.all((online_like & ~from_online).sum(axis=1) <= cap)
    assert np.all((~online_like & from_online).sum(axis=1) <= cap)
    assert 0 < float(metrics["strat/exchange"]) <= 2 * cap
    # uncapped, the same key exchanges about half of each buffer's samples
    _, free, _, _ = split(random_stratifier(rho), batch, jax.random.PRNGKey(1))
    assert (np.asarray(free) != from_online).sum(axis=1).min() > 2 * cap


def test_options_that_need_the_model_or_the_score_are_refused_in_one_line(hopper_hdf5, tmp_path):
    for options, named in ((dict(guidance=False), "--no-energy"), (dict(split_by_source=True), "--split-by-source"),
                           (dict(stratify=False), "--no-stratification"),
                           (dict(next_candidates=4), "stratifier.next_candidates=4")):
        with pytest.raises(ValueError, match="stratifier.score=random") as err:
            StratDiffConfig(score="random", **options)
        assert named in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValueError) as err:
        StratDiffConfig(score="random", split_by_source=True, stratify=False)
    assert "--split-by-source" in str(err.value) and "--no-stratification" in str(err.value)
    StratDiffConfig(score="random", exchange_cap=3)  # the cap applies to any split
    # a run refuses them before its offline phase
    cfg = resolve_config("stratdiff-iql", str(hopper_hdf5), "Hopper-v5", "smoke", 0,
                         {"stratifier.score": "random", "stratifier.guidance": False})
    with pytest.raises(RunError, match="--no-energy"):
        train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "config.json").exists() and not (tmp_path / "run" / "metrics.csv").exists()


# ---- runs ----------------------------------------------------------------------------------------
def test_random_split_run_trains_no_behaviour_model_and_resumes_to_the_same_numbers(hopper_hdf5, tmp_path,
                                                                                    monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the random split must not train a behaviour model or g")

    monkeypatch.setattr(stratdiff_module, "_pretrain", never)
    monkeypatch.setattr(stratdiff_module, "_build_amortised", never)
    cfg = resolve_config("stratdiff-iql", str(hopper_hdf5), "Hopper-v5", "smoke", 0, {
        "stratifier.score": "random", "offline_steps": 40, "online_steps": 80, "log_every": 10,
        "eval_every": 40, "checkpoint_every": 20, "online_warmup_steps": 10, "eval_episodes": 1,
        "batch_size": 32})
    full = train(cfg, tmp_path / "full", progress=False)
    assert not (tmp_path / "full" / "behaviour").exists()
    rows = read_rows(tmp_path / "full" / "metrics.csv")
    online = [r for r in rows if r["phase"] == "online" and r.get("strat/n_off")]
    assert online and {float(r["strat/n_off"]) for r in online} == {16.0}  # n_offline(32, 0.5)
    assert not any(k.startswith("strat/score") or k.startswith("strat/cep") for k in rows[0])
    # killed in the online phase between checkpoints (100 and 120), then resumed
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "killed", progress=False, stop_after=110)
    resumed = train(cfg, tmp_path / "killed", resume=True, progress=False)
    assert deterministic_columns(read_rows(tmp_path / "killed" / "metrics.csv")) == deterministic_columns(rows)
    assert resumed["final_score"] == full["final_score"]
    assert not (tmp_path / "killed" / "behaviour").exists()


def test_random_split_flag_of_train_and_sweep(hopper_hdf5, tmp_path, capsys):
    import tyro

    from stratdiff.commands import sweep as sweep_cmd
    from stratdiff.commands import train as train_cmd

    args = tyro.cli(train_cmd.TrainArgs, args=["--algo", "stratdiff-iql", "--dataset", "d", "--random-split"])
    assert train_cmd.overrides_from(args) == {"stratifier.score": "random"}
    args = tyro.cli(sweep_cmd.SweepArgs, args=["--algos", "stratdiff-iql", "--datasets", "d", "--out", "o",
                                               "--random-split", "--set", "rho=0.3"])
    assert sweep_cmd.overrides(args) == ("rho=0.3", 'stratifier.score="random"')
    # a Cal-QL run with the flag: the split is its only change, and the Cal-QL update takes it
    out = tmp_path / "calql"
    assert train_cmd.main(["--algo", "stratdiff-calql", "--dataset", str(hopper_hdf5), "--env", "Hopper-v5",
                           "--preset", "smoke", "--out", str(out), "--no-progress", "--random-split",
                           "--set", "offline_steps=20", "online_steps=30", "log_every=10", "eval_every=30",
                           "checkpoint_every=10", "online_warmup_steps=10", "eval_episodes=1",
                           "batch_size=16"]) == 0
    capsys.readouterr()
    assert json.loads((out / "config.json").read_text())["stratifier"] == {"score": "random"}
    assert not (out / "behaviour").exists()
    rows = read_rows(out / "metrics.csv")
    online = [r for r in rows if r["phase"] == "online" and r.get("strat/n_off")]
    assert online and {float(r["strat/n_off"]) for r in online} == {8.0}  # n_offline(16, 0.5)
    assert all(np.isfinite(float(r["frac_online_like"])) for r in online)


# ---- reports ---------------------------------------------------------------------------------------
def test_report_labels_random_split_runs(tmp_path):
    assert run_folders.value_label("stratifier.score", "random") == "random split"
    assert run_folders.value_label("stratifier.score", "fixed_sigma") == "score=fixed_sigma"
    for seed in (0, 1):
        write_run(tmp_path / "runs" / "default" / f"s{seed}", "stratdiff-iql", *HOP, seed, 40.0 + seed)
        write_run(tmp_path / "runs" / "control" / f"s{seed}", "stratdiff-iql", *HOP, seed, 30.0 + seed,
                  overrides={"stratifier.score": "random"})
    runs = run_folders.find_runs(tmp_path / "runs")
    assert {run_folders.variant_label(r.variant) for r in runs} == {"", "random split"}
    labels = [c.label for c in run_folders.group_columns(runs)]
    assert labels == ["stratdiff-iql", "stratdiff-iql [random split]"]
    md = report.write_report(tmp_path / "runs", tmp_path / "report", reps=100, seed=0).read_text()
    assert "stratdiff-iql [random split]" in md
    table = (tmp_path / "report" / "table_ablation_score.md").read_text()
    assert "| dataset | split by score | random split |" in table
    assert "| hopper-medium-v2 | **40.5 ± 0.7** | 30.5 ± 0.7 |" in table
