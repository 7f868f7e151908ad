"""How often g, pretrained with each objective, splits a StratDiff run's batches as the exact score does.

    python results/amortised-score/probe_target.py RUN [--batches 8] [--steps 2000] [--out FILE]

RUN is a `stratdiff train` folder of a stratdiff-* method (checkpointed). For each objective
(`likelihood`, `fit`) and each solver-step count of g's training samples, a fresh g is pretrained as
`stratifier.score=amortised` pretrains it (guided samples for 4096 of RUN's support states, Adam
steps on batches of 256) on RUN's behaviour model and current energy; then, on mixed batches of
RUN's offline data and online buffer, the share of samples that each g places in the same stratum
as the exact default (gaussian_fit, M = 8, 15 solver steps), beside the exact default against
itself with other sampling noise. g takes no online steps here: this isolates the objective.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import jax
import numpy as np

from stratdiff.data import mixed_batch
from stratdiff.experiments.diagnostics import _split, load_run
from stratdiff.stratify.amortised import AmortisedScore, pretrain
from stratdiff.stratify.split import score_gaussian, split_by_score


@jax.jit
def _g_split_scores(g, observations, actions, sigma0):
    mean, std = g.mean_std(observations)
    return score_gaussian(actions, mean, std, sigma0)


def _g_split(g, observations, actions, sigma0: float, rho: float):
    """The strata g as pretrained makes (no online step): Eq. 10 with (mu, sigma) = g(s), sorted split."""
    return split_by_score(_g_split_scores(g, observations, actions, sigma0), rho)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", type=Path)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2000, help="g's pretraining Adam steps")
    parser.add_argument("--pool", type=int, default=4096)
    parser.add_argument("--sampler-steps", type=int, nargs="+", default=[15, 5])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    runner = load_run(args.run)
    strat, cfg = runner.stratifier, runner.cfg
    key = jax.random.PRNGKey(args.seed)
    base = dataclasses.replace(strat.config, online_energy_updates=False, exchange_cap=None, stratify=True,
                               next_candidates=0, num_guided=8)
    exact = strat.replace(config=dataclasses.replace(base, score="gaussian_fit"),
                          sampler=dataclasses.replace(strat.sampler, steps=15))
    variants = {"exact default": (exact, "same"), "exact default, other noise": (exact, "other")}
    pool_rows = np.sort(np.asarray(jax.random.choice(jax.random.fold_in(key, 1), strat.support_obs.shape[0],
                                                     (min(args.pool, strat.support_obs.shape[0]),), replace=False)))
    pool = np.asarray(strat.support_obs)[pool_rows]
    timings = {}
    for target in ("likelihood", "fit"):
        for steps in args.sampler_steps:
            t0 = time.perf_counter()
            g = AmortisedScore.create(jax.random.fold_in(key, 2), strat.model.obs_dim, strat.model.action_dim,
                                      base.amortised_hidden_dims, base.amortised_lr, target)
            g, meta = pretrain(g, strat.model, pool, jax.random.fold_in(key, 3), strat.guidance_scale, args.steps,
                               8, dataclasses.replace(strat.sampler, steps=steps))
            name = f"g {target}, samples with {steps} steps"
            timings[name] = {"seconds": time.perf_counter() - t0, "loss_first": meta["loss"][0],
                             "loss_last": meta["loss"][-1]}
            variants[name] = (g, "g")
    splits = {name: [] for name in variants}
    for i in range(args.batches):
        k_batch, k_split = jax.random.split(jax.random.fold_in(key, 100 + i))
        batch = jax.tree_util.tree_map(lambda x: x[None], mixed_batch(k_batch, runner.offline, runner.online,
                                                                      cfg.batch_size, cfg.rho))
        for name, (variant, noise) in variants.items():
            if noise == "g":
                splits[name].append(np.asarray(_g_split(variant, batch.observations[0], batch.actions[0],
                                                        base.sigma0, cfg.rho)))
                continue
            k = k_split if noise == "same" else jax.random.fold_in(k_split, 1)
            splits[name].append(np.asarray(_split(variant, runner.agent, batch, k)[1][0]))
    ref = np.concatenate(splits["exact default"])
    result = {"run": str(args.run), "step": runner.step, "online_buffer": len(runner.online),
              "samples": int(ref.size), "pretrain_steps": args.steps, "pool_states": len(pool),
              "agreement": {n: float(np.mean(np.concatenate(s) == ref)) for n, s in splits.items()},
              "pretraining": timings}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
