"""StratDiff's stratifier: energy-guided diffusion stratification (Algorithm 1, Eq. 7-10).

Offline (`build`, once the backbone's offline phase is done):
  1. train the behaviour diffusion model mu_theta(a|s) on the dataset (normalised states);
  2. draw K support actions per state from the unguided model for `support_states` dataset
     states (all of them at the paper scale);
  3. pretrain the energy net f(s, a_t, t) with CEP (Eq. 7) against beta*Q of the backbone's
     critic. The result is saved to RUN/behaviour/ so a resumed run does not retrain it.

Online (`split`, inside jit, once per update call; Algorithm 1 lines 7-10):
  1. update f with one CEP step (Eq. 7) labelled by the *current* critic, on dataset states
     with their support actions (our choice: the paper does not say which states; support
     actions exist for dataset states, and online states would need K fresh samples each);
  2. draw M energy-guided actions per batch state (Eq. 8-9; `--no-energy`: unguided);
  3. score every sample by Eq. 10 (`stratify.split`: `gaussian_fit` by default; `amortised`:
     the Gaussian of Eq. 10 from a learned network instead of M guided samples, this
     project's choice, see `stratify.amortised`; it takes one training step on guided samples
     for a few batch states per call, after the CEP step);
  4. sort: the lowest rho share is offline-like (b_off), the rest online-like (b_on); an
     optional exchange cap n_c (Table 7). `--no-stratification` keeps every sample in b_off
     (the scores and the exchange counts the split would have made are still logged);
     `--split-by-source` puts the offline buffer's samples in b_off and the online buffer's in
     b_on (the scores are logged, the exchange count is 0 by construction). Both are readings
     of Table 8's "w/o stratification" (docs/paper.md).
Optionally `next_candidates` behaviour-model actions at s' join IQL's online max-target (Eq. 13).

`score=random` (`--random-split`, a control of this project, not in the paper): each minibatch
is split uniformly at random, n_offline(B, rho) samples offline-like and the rest online-like
(`stratify.split.random_scores` in place of step 3's scores, then step 4 as it is: the sorted
split, the exchange cap, the exchange counts), so that a run with it asks whether the
energy-guided score chooses the online-loss samples better than chance. `build` then returns
a `RandomSplitStratifier`: no behaviour model, support actions, energy or amortised g is
trained (nothing is written to RUN/behaviour), and an online update costs the stratified
backbone update only. The options that need the model or the score (`--no-energy`,
`--split-by-source`, `--no-stratification`, `next_candidates`) are refused with it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import flax.serialization
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from stratdiff.checkpoint import atomic_write_bytes
from stratdiff.data.buffers import n_offline
from stratdiff.diffusion import PRESETS as DIFFUSION_PRESETS
from stratdiff.diffusion import (
    TASK_KIND_DEFAULTS,
    BehaviourModel,
    SamplerConfig,
    dataset_defaults,
    draw_support_actions,
    energy_update,
    energy_update_with_critic,
    load_model,
    resolve_config,
    sample,
    save_model,
    train_steps,
)
from stratdiff.progress import progress_bar
from stratdiff.stratify import amortised as amortised_score
from stratdiff.stratify.amortised import TARGETS as AMORTISED_TARGETS
from stratdiff.stratify.amortised import AmortisedScore
from stratdiff.stratify.base import StatelessStratifier
from stratdiff.stratify.split import (
    SCORES,
    alignment_score,
    cap_exchange,
    exchange_stats,
    random_scores,
    score_gaussian,
    split_by_score,
)
from stratdiff.types import ONLINE


SCORE_OPTIONS = (*SCORES, "amortised", "random")  # stratifier.score


@dataclasses.dataclass(frozen=True)
class StratDiffConfig:
    """The stratifier's options (`--set stratifier.FIELD=VALUE`); None fields come from the scale preset."""

    score: str = "gaussian_fit"  # Eq. 10 form: gaussian_fit (M guided samples), fixed_sigma (one), amortised;
    # or random: a uniformly random split, no behaviour model (this project's control, --random-split)
    num_guided: int = 8  # M guided actions per state for gaussian_fit (fixed_sigma uses 1)
    sigma0: float = 0.01  # width of the Gaussian read around a_i; small, so gaussian_fit ~ NLL of a_i under N(mu, sigma)
    guidance: bool = True  # False: unguided behaviour model, no energy (Figure 4, --no-energy)
    guidance_scale: float | None = None  # s of Eq. 9; None: Table 4's value for the dataset
    num_support: int | None = None  # K support actions per state for CEP; None: Appendix B.3's (16 / 32 AntMaze)
    stratify: bool = True  # False: every sample offline-like (Table 8, --no-stratification)
    split_by_source: bool = False  # True: strata = source buffers, no score split (Table 8, --split-by-source)
    exchange_cap: int | None = None  # n_c of Table 7: at most n_c samples cross each way
    online_energy_updates: bool = True  # CEP steps with the current critic during the online phase (line 8)
    energy_every: int = 1  # one CEP step every this many update calls (1: every call, as Algorithm 1)
    sampler_steps: int | None = None  # solver steps of the online guided sample (None: the model's, 15)
    next_candidates: int = 0  # behaviour-model actions at s' added to IQL's online max-target (Eq. 13)
    # score=amortised (this project's choice, stratify.amortised): g(s) -> (mu, log sigma)
    amortised_hidden_dims: tuple[int, ...] = (256, 256)  # g's hidden layers
    amortised_lr: float = 1e-3  # g's Adam learning rate (pretraining and online)
    amortised_pool_states: int = 4096  # dataset states with guided samples for g's offline pretraining
    amortised_pretrain_steps: int = 2000  # g's offline Adam steps (batches of 256 pool states)
    amortised_states: int = 16  # batch states given fresh guided samples for g's online step
    amortised_samples: int = 8  # guided samples per state in g's training targets
    amortised_every: int = 1  # one online step of g every this many update calls
    amortised_replay: int = 0  # g's online replay: guided samples of this many states, the oldest replaced (0: none)
    amortised_sampler_steps: int | None = None  # solver steps of g's training samples (None: the model's, 15)
    amortised_target: str = "likelihood"  # g's objective: likelihood of the samples, or fit (their M-sample fit)
    # offline pretraining (None: from the run's scale preset)
    diffusion_steps: int | None = None  # behaviour-model training steps
    support_states: int | None = None  # dataset states that get K support actions (None: all)
    energy_pretrain_steps: int | None = None  # CEP steps against the pretrained critic

    def __post_init__(self):
        if self.score not in SCORE_OPTIONS:
            raise ValueError(f"stratifier.score must be one of {SCORE_OPTIONS}, got {self.score!r}")
        if self.score == "random":
            clashes = [option for option, clash in (
                ("stratifier.guidance=false (--no-energy)", not self.guidance),
                ("stratifier.split_by_source=true (--split-by-source)", self.split_by_source),
                ("stratifier.stratify=false (--no-stratification)", not self.stratify),
                (f"stratifier.next_candidates={self.next_candidates}", self.next_candidates > 0)) if clash]
            if clashes:
                raise ValueError("stratifier.score=random (--random-split) splits at random, without a behaviour "
                                 f"model or score: it excludes {', '.join(clashes)}")
        if self.amortised_every < 1 or self.amortised_states < 1 or self.amortised_samples < 2:
            raise ValueError("stratifier.amortised_every >= 1, amortised_states >= 1 and amortised_samples >= 2 "
                             f"required, got {self.amortised_every}, {self.amortised_states}, "
                             f"{self.amortised_samples}")
        if self.amortised_replay < 0 or (self.amortised_replay and self.amortised_replay < self.amortised_states):
            raise ValueError(f"stratifier.amortised_replay must be 0 (none) or at least amortised_states "
                             f"({self.amortised_states}), got {self.amortised_replay}")
        if self.amortised_target not in AMORTISED_TARGETS:
            raise ValueError(f"stratifier.amortised_target must be one of {AMORTISED_TARGETS}, "
                             f"got {self.amortised_target!r}")
        if self.exchange_cap is not None and self.exchange_cap < 0:
            raise ValueError(f"stratifier.exchange_cap must be >= 0, got {self.exchange_cap}")
        if self.energy_every < 1:
            raise ValueError(f"stratifier.energy_every must be >= 1, got {self.energy_every}")
        if self.split_by_source and not self.stratify:
            raise ValueError("stratifier.split_by_source and stratifier.stratify=false exclude each other "
                             "(--split-by-source, --no-stratification: choose one)")
        if self.num_guided < 2 and self.score == "gaussian_fit":
            raise ValueError("stratifier.num_guided must be >= 2 for score=gaussian_fit")


# Per run scale (the behaviour model's own sizes come from stratdiff.diffusion.PRESETS).
# `paper` keeps the defaults above: gaussian_fit with M = 8 guided actions, 15 solver steps, a
# CEP step every update call. `cpu` keeps the score's form and M but takes 5 solver steps and a
# CEP step every 4th call: on the quickstart run these place 87.5% and >= 97.8% of samples in
# the default's stratum, where the default itself, drawn again with other noise, reaches 86.5%
# (docs/paper.md, "The score (Eq. 10)"). `smoke` is for plumbing checks only.
SCALE_DEFAULTS: dict[str, dict[str, Any]] = {
    "smoke": dict(diffusion_steps=20, support_states=256, energy_pretrain_steps=10,
                  score="fixed_sigma", sampler_steps=5, amortised_pool_states=256, amortised_pretrain_steps=200,
                  amortised_sampler_steps=5),
    "cpu": dict(diffusion_steps=20_000, support_states=20_000, energy_pretrain_steps=2_000,
                sampler_steps=5, energy_every=4),
    "paper": dict(diffusion_steps=600_000, support_states=None, energy_pretrain_steps=100_000),
}
# `study`: the cpu sizes, the behaviour model trained for 40k steps (where its fidelity was best,
# results/behaviour-fidelity/), and the amortised score. g is pretrained on 16384 dataset states for 4000
# steps; online, every 16th call puts guided samples (5 solver steps, as the cpu preset's exact score
# draws them) for 64 batch states into a replay of 512 states and takes one step on 256 of its
# rows; a CEP step every 32nd call. These keep StratDiff-IQL's update within 1.5x of the stratified
# IQL update (docs/speed.md); with the exact score (188 ms per update) 100k online steps would take
# ~5.2 h. How well this g follows the exact score: docs/amortised-score.md.
SCALE_DEFAULTS["study"] = dict(SCALE_DEFAULTS["cpu"], diffusion_steps=40_000, score="amortised", amortised_every=16,
                               amortised_sampler_steps=5, energy_every=32, amortised_pool_states=16_384,
                               amortised_pretrain_steps=4_000, amortised_states=64, amortised_replay=512)


class StratDiffStratifier(flax.struct.PyTreeNode):
    """Behaviour model + energy net + the dataset states that carry support actions."""

    model: BehaviourModel
    support_obs: jax.Array  # [Ns, obs] normalised dataset states
    support: jax.Array  # [Ns, K, act] unguided support actions
    calls: jax.Array  # online update calls so far (the `energy_every` and `amortised_every` schedules)
    energy_info: dict[str, jax.Array]  # metrics of the latest online CEP step (logged between steps)
    config: StratDiffConfig = flax.struct.field(pytree_node=False)
    rho: float = flax.struct.field(pytree_node=False)
    guidance_scale: float | None = flax.struct.field(pytree_node=False)  # None: unguided
    sampler: SamplerConfig = flax.struct.field(pytree_node=False)
    amortised: AmortisedScore | None = None  # g of score=amortised (None for the other scores)
    amortised_loss: jax.Array | None = None  # g's latest online training loss (logged between steps)
    amortised_sampler: SamplerConfig | None = flax.struct.field(pytree_node=False, default=None)
    # the work of the next update call, decided on the host by `scheduled()` (static, so a call
    # without a CEP step or g step carries no branch for it): a subset of ("energy", "amortised");
    # `make_stratifier` schedules the first call, call `scheduled()` again before every later one
    due: tuple[str, ...] = flax.struct.field(pytree_node=False, default=())

    # ---- checkpoint state: only what changes online (the support table is rebuilt from RUN/behaviour)
    def state_dict(self) -> dict[str, Any]:
        m = self.model
        state = {"energy_params": m.energy_params, "energy_opt_state": m.energy_opt_state,
                 "energy_step": m.energy_step, "calls": self.calls, "energy_info": self.energy_info}
        if self.amortised is not None:
            state["amortised"] = self.amortised.state_dict()
            state["amortised_loss"] = self.amortised_loss
        return state

    def load_state_dict(self, state: dict[str, Any]) -> StratDiffStratifier:
        """`state` has `state_dict()`'s structure (the runner restores it against that target)."""
        m = self.model
        strat = self.replace(model=m.replace(energy_params=state["energy_params"],
                                             energy_opt_state=state["energy_opt_state"],
                                             energy_step=jnp.asarray(state["energy_step"])),
                             calls=jnp.asarray(state["calls"]),
                             energy_info={k: jnp.asarray(v) for k, v in state["energy_info"].items()})
        if self.amortised is not None:
            strat = strat.replace(amortised=self.amortised.load_state_dict(state["amortised"]),
                                  amortised_loss=jnp.asarray(state["amortised_loss"]))
        return strat

    def offline_rows(self, batch_size: int) -> int | None:
        return offline_like_rows(self.config, self.rho, batch_size)

    # ---- Algorithm 1, lines 7-10
    def guided_actions(self, observations: jax.Array, key: jax.Array) -> jax.Array:
        """[n, M, act] guided (or, without energy, unguided) actions per state (Eq. 8-9)."""
        m = self.config.num_guided if self.config.score == "gaussian_fit" else 1
        return sample(self.model, observations, key, self.guidance_scale, num_samples=m, sampler=self.sampler)

    def energy_step(self, agent, key: jax.Array):
        """One CEP step (Eq. 7) on dataset states, labelled by the current critic."""
        k_idx, k_loss = jax.random.split(key)
        idx = jax.random.randint(k_idx, (self.model.config.energy_batch_size,), 0, self.support_obs.shape[0])
        model, info = energy_update_with_critic(self.model, agent, self.support_obs[idx], self.support[idx], k_loss)
        return self.replace(model=model), info

    def scheduled(self) -> StratDiffStratifier:
        """This stratifier with its next update call's work decided (`due`), from the call count on
        the host: a CEP step (Algorithm 1 line 8) on every `energy_every`-th call, while the energy
        is updated online, and one online step of g on every `amortised_every`-th call with
        score=amortised. The runner calls it before every update call."""
        call, cfg = int(self.calls), self.config
        due = []
        if cfg.online_energy_updates and self.guidance_scale is not None and call % cfg.energy_every == 0:
            due.append("energy")
        if cfg.score == "amortised" and call % cfg.amortised_every == 0:
            due.append("amortised")
        return self.replace(due=tuple(due))

    def amortised_step(self, observations: jax.Array, key: jax.Array):
        """g's online step: guided samples for `amortised_states` of `observations`, one Adam step on g's objective."""
        cfg = self.config
        g, loss = amortised_score.online_update(self.amortised, self.model, observations, key, self.guidance_scale,
                                                cfg.amortised_states, cfg.amortised_samples, self.amortised_sampler)
        return self.replace(amortised=g, amortised_loss=loss)

    def split(self, agent, batch, key):
        k_energy, k_guided, k_next = jax.random.split(key, 3)
        strat, metrics = self, {}
        if "energy" in self.due:
            strat, info = self.energy_step(agent, k_energy)
            strat = strat.replace(energy_info=info)
        if self.config.online_energy_updates and self.guidance_scale is not None:
            # between CEP steps the latest step's metrics are reported again
            metrics.update({f"strat/{k}": v for k, v in strat.energy_info.items()})
        strat = strat.replace(calls=self.calls + 1)
        u, b = batch.actions.shape[:2]
        obs = batch.observations.reshape(u * b, -1)
        if self.config.score == "amortised":
            if "amortised" in self.due:
                strat = strat.amortised_step(obs, k_guided)
            mean, std = strat.amortised.mean_std(obs)
            scores = score_gaussian(batch.actions.reshape(u * b, -1), mean, std, self.config.sigma0).reshape(u, b)
            metrics["strat/amortised_loss"] = strat.amortised_loss
        else:
            guided = strat.guided_actions(obs, k_guided)
            scores = alignment_score(self.config.score, batch.actions.reshape(u * b, -1), guided,
                                     self.config.sigma0).reshape(u, b)
        from_online = batch.source == ONLINE
        online_like, exchange = strata(self.config, self.rho, scores, from_online)
        metrics.update(exchange)
        n_online = jnp.maximum(jnp.sum(from_online), 1)
        n_offline = jnp.maximum(jnp.sum(~from_online), 1)
        metrics["strat/score_offline_mean"] = jnp.sum(jnp.where(from_online, 0.0, scores)) / n_offline
        metrics["strat/score_online_mean"] = jnp.sum(jnp.where(from_online, scores, 0.0)) / n_online
        metrics["strat/score_offline_median"] = jnp.nanmedian(jnp.where(from_online, jnp.nan, scores))
        metrics["strat/score_online_median"] = jnp.nanmedian(jnp.where(from_online, scores, jnp.nan))
        next_candidates = None
        if self.config.next_candidates:
            nobs = batch.next_observations.reshape(u * b, -1)
            cands = sample(self.model, nobs, k_next, self.guidance_scale,
                           num_samples=self.config.next_candidates, sampler=self.sampler)
            next_candidates = cands.reshape(u, b, self.config.next_candidates, -1)
        return strat, online_like, next_candidates, metrics


class RandomSplitStratifier(StatelessStratifier):
    """`score=random`: each minibatch split uniformly at random (`random_scores`), then `strata`
    as for StratDiff's scores. No model and no state that changes online: each call's
    randomness comes from its key, so a checkpoint holds nothing of it."""

    config: StratDiffConfig = flax.struct.field(pytree_node=False)
    rho: float = flax.struct.field(pytree_node=False)

    def offline_rows(self, batch_size: int) -> int | None:
        return offline_like_rows(self.config, self.rho, batch_size)

    def split(self, agent, batch, key):
        del agent
        scores = random_scores(key, batch.actions.shape[:2])
        online_like, metrics = strata(self.config, self.rho, scores, batch.source == ONLINE)
        return self, online_like, None, metrics


def strata(config: StratDiffConfig, rho: float, scores: jax.Array,
           from_online: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Algorithm 1 line 10 on scores [utd, B]: in each minibatch the lowest n_offline(B, rho)
    scores offline-like, the rest online-like, then the exchange cap; with `split_by_source`
    the source buffers instead. Returns `online_like` (all False without stratification) and
    the exchange counts per minibatch of the split (made, and logged, either way)."""
    if config.split_by_source:
        online_like = from_online
    else:
        online_like = jax.vmap(lambda s: split_by_score(s, rho))(scores)
        online_like = jax.vmap(lambda o, s, f: cap_exchange(o, s, f, config.exchange_cap))(
            online_like, scores, from_online)
    metrics = {k: v / scores.shape[0] for k, v in exchange_stats(online_like, from_online).items()}
    if not config.stratify:
        online_like = jnp.zeros_like(online_like)
    return online_like, metrics


def offline_like_rows(config: StratDiffConfig, rho: float, batch_size: int) -> int | None:
    """The offline-like samples per step, static: the sorted split, the exchange cap and
    `split_by_source` all keep the batch's offline share `n_offline(B, rho)` there (one
    rounding rule); None without stratification (every sample is offline-like)."""
    if not config.stratify:
        return None
    return n_offline(batch_size, rho)


def _pretrain(context: dict[str, Any], cfg: StratDiffConfig, model: BehaviourModel, obs: np.ndarray,
              actions: np.ndarray, key: jax.Array, progress: bool):
    """Behaviour model, support actions, energy pretraining (Algorithm 1's offline part)."""
    k_train, k_support, k_pick, k_energy = jax.random.split(key, 4)
    chunk = 1000
    bar = progress_bar(total=cfg.diffusion_steps, desc="behaviour model", disable=not progress, dynamic_ncols=True)
    obs_j, act_j = jnp.asarray(obs), jnp.asarray(actions)
    done, losses = 0, []
    while done < cfg.diffusion_steps:
        n = min(chunk, cfg.diffusion_steps - done)
        model, info = train_steps(model, obs_j, act_j, jax.random.fold_in(k_train, done), n,
                                  model.config.batch_size)
        losses.append(float(info["score_loss"]))
        done += n
        bar.update(n)
        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    bar.close()
    n_support = obs.shape[0] if cfg.support_states is None else min(cfg.support_states, obs.shape[0])
    rows = np.sort(np.asarray(jax.random.choice(k_pick, obs.shape[0], (n_support,), replace=False)))
    bar = progress_bar(total=n_support, desc="support actions", disable=not progress, dynamic_ncols=True)
    support = draw_support_actions(model, obs[rows], k_support, chunk=min(1024, n_support),
                                   progress=lambda d, n: bar.update(d - bar.n))
    bar.close()
    support_obs = jnp.asarray(obs[rows])
    support_j = jnp.asarray(support)
    agent = context["agent"]
    bar = progress_bar(total=cfg.energy_pretrain_steps, desc="energy (CEP)", disable=not progress, dynamic_ncols=True)
    energy_losses = []
    for i in range(cfg.energy_pretrain_steps):
        k_idx, k_loss = jax.random.split(jax.random.fold_in(k_energy, i))
        idx = jax.random.randint(k_idx, (model.config.energy_batch_size,), 0, n_support)
        model, info = energy_update_with_critic(model, agent, support_obs[idx], support_j[idx], k_loss)
        if i % 200 == 0 or i == cfg.energy_pretrain_steps - 1:
            energy_losses.append(float(info["cep_loss"]))
            bar.set_postfix(cep=f"{energy_losses[-1]:.3f}", refresh=False)
        bar.update(1)
    bar.close()
    meta = {"score_loss": losses, "cep_loss": energy_losses, "support_rows": int(n_support)}
    return model, np.asarray(obs[rows]), support, meta


def dataset_values(options: dict[str, Any], dataset_name: str, kind: str) -> tuple[dict[str, Any], str | None]:
    """The per-dataset values (Table 4's guidance scale s, Appendix B.3's K) for a dataset the
    paper's table does not list, e.g. a user's own file: the task kind's defaults
    (`TASK_KIND_DEFAULTS`) for the options left unset, and one line saying which values were
    taken and why. ({}, None) for a listed dataset, when both are set, or for score=random
    (which uses neither)."""
    if options.get("score") == "random" or dataset_defaults(dataset_name) is not None:
        return {}, None
    if kind not in TASK_KIND_DEFAULTS:
        raise ValueError(f"no per-dataset defaults for task kind {kind!r} (known: {', '.join(TASK_KIND_DEFAULTS)})")
    default = TASK_KIND_DEFAULTS[kind]
    values = {k: getattr(default, k) for k in ("guidance_scale", "num_support") if options.get(k) is None}
    if not values:
        return {}, None
    taken = ", ".join(f"{k}={v}" for k, v in values.items())
    return values, (f"dataset {dataset_name!r} is not in the paper's Table 4: using the {kind} defaults "
                    f"stratifier.{taken.replace(', ', ', stratifier.')} (the median of Table 4's {kind} "
                    f"scales, Appendix B.3's K); set them with --set stratifier.guidance_scale=S")


def stratifier_config(run) -> StratDiffConfig:
    """A run's stratifier options: its scale's `SCALE_DEFAULTS`, then its `stratifier` overrides
    (`RunConfig.stratifier`); ValueError naming a bad or unknown option. The runner checks them
    with this before the offline phase."""
    options = {**SCALE_DEFAULTS.get(run.preset, SCALE_DEFAULTS["cpu"]), **run.stratifier}
    try:
        return StratDiffConfig(**options)
    except TypeError as e:
        names = ", ".join(f.name for f in dataclasses.fields(StratDiffConfig))
        raise ValueError(f"stratifier options: {e} (valid: {names})") from None


def build(context: dict[str, Any]) -> StratDiffStratifier | RandomSplitStratifier:
    """Build (or, when RUN/behaviour exists, load) the stratifier for a run; with score=random
    the random split, and nothing is trained or written."""
    run = context["config"]
    cfg = stratifier_config(run)
    if cfg.score == "random":
        return RandomSplitStratifier(config=cfg, rho=run.rho)
    dataset, normalizer = context["dataset"], context["normalizer"]
    name = dataset.info.name or run.dataset
    values, note = dataset_values(dataclasses.asdict(cfg), name, context["task_kind"])  # the runner records them first
    if note:
        print(f"[stratdiff] {note}", flush=True)
    cfg = dataclasses.replace(cfg, **values)
    diff_cfg = DIFFUSION_PRESETS[run.preset] if run.preset in DIFFUSION_PRESETS else DIFFUSION_PRESETS["cpu"]
    diff_cfg = dataclasses.replace(diff_cfg, train_steps=cfg.diffusion_steps, guidance_scale=cfg.guidance_scale,
                                   num_support=cfg.num_support)
    diff_cfg = resolve_config(diff_cfg, name)
    sampler = diff_cfg.sampler if cfg.sampler_steps is None else dataclasses.replace(
        diff_cfg.sampler, steps=cfg.sampler_steps)
    folder = Path(context["out_dir"]) / "behaviour"
    if (folder / "config.json").is_file():
        model, arrays, _ = load_model(folder)
        support_obs, support = arrays["observations"], arrays["actions"]
    else:
        obs = np.asarray(normalizer.normalize(dataset.observations), np.float32)
        model = BehaviourModel.create(jax.random.fold_in(context["key"], 0), dataset.obs_dim, dataset.act_dim,
                                      diff_cfg)
        model, support_obs, support, meta = _pretrain(context, cfg, model, obs, dataset.actions,
                                                      jax.random.fold_in(context["key"], 1), context["progress"])
        save_model(folder, model, {"observations": support_obs, "actions": support}, meta)
    guidance_scale = diff_cfg.guidance_scale if cfg.guidance else None
    amortised = None
    if cfg.score == "amortised":
        amortised = _build_amortised(folder, cfg, model, np.asarray(support_obs), guidance_scale,
                                     jax.random.fold_in(context["key"], 2), context["progress"])
    return make_stratifier(model, support_obs, support, cfg, run.rho, guidance_scale, sampler, amortised)


def amortised_sampler(cfg: StratDiffConfig, model: BehaviourModel) -> SamplerConfig:
    """The solver of g's training samples: the model's own unless `amortised_sampler_steps` is set."""
    if cfg.amortised_sampler_steps is None:
        return model.config.sampler
    return dataclasses.replace(model.config.sampler, steps=cfg.amortised_sampler_steps)


def new_amortised(cfg: StratDiffConfig, key: jax.Array, obs_dim: int, act_dim: int) -> AmortisedScore:
    """An untrained g with `cfg`'s `amortised_*` options (its replay empty until `pretrain`)."""
    return AmortisedScore.create(key, obs_dim, act_dim, cfg.amortised_hidden_dims, cfg.amortised_lr,
                                 cfg.amortised_target, cfg.amortised_replay, cfg.amortised_samples)


def _build_amortised(folder: Path, cfg: StratDiffConfig, model: BehaviourModel, support_obs: np.ndarray,
                     guidance_scale: float | None, key: jax.Array, progress: bool) -> AmortisedScore:
    """g pretrained on guided samples for `amortised_pool_states` dataset states, after CEP;
    saved to RUN/behaviour/amortised.msgpack (loaded from there when present)."""
    k_init, k_pool, k_train = jax.random.split(key, 3)
    g = new_amortised(cfg, k_init, model.obs_dim, model.action_dim)
    n = min(cfg.amortised_pool_states, support_obs.shape[0])
    options = {"target": cfg.amortised_target, "pool_states": n, "pretrain_steps": cfg.amortised_pretrain_steps,
               "samples": cfg.amortised_samples, "sampler_steps": amortised_sampler(cfg, model).steps,
               "hidden_dims": list(cfg.amortised_hidden_dims), "lr": cfg.amortised_lr,
               "replay": cfg.amortised_replay}
    path = folder / "amortised.msgpack"
    if path.is_file():
        meta_path = folder / "amortised.json"
        saved = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        differ = [k for k in options if k in saved and saved[k] != options[k]]
        if differ:
            raise ValueError(f"{path} was pretrained with other stratifier.amortised_* options ("
                             + ", ".join(f"{k}: {saved[k]} there, {options[k]} here" for k in differ)
                             + "); remove it to pretrain again")
        try:
            state = flax.serialization.from_bytes(g.state_dict(), path.read_bytes())
        except Exception as e:
            raise ValueError(f"{path} does not match stratifier.amortised_* options "
                             f"({type(e).__name__}); remove it to pretrain again") from None
        return g.load_state_dict(state)
    rows = np.sort(np.asarray(jax.random.choice(k_pool, support_obs.shape[0], (n,), replace=False)))
    bars: dict[str, Any] = {}

    def report(stage: str, done: int, total: int):
        if stage not in bars:
            bars[stage] = progress_bar(total=total, desc=f"amortised score ({stage})", disable=not progress,
                               dynamic_ncols=True)
        bars[stage].update(done - bars[stage].n)

    g, meta = amortised_score.pretrain(g, model, support_obs[rows], k_train, guidance_scale,
                                       cfg.amortised_pretrain_steps, cfg.amortised_samples,
                                       amortised_sampler(cfg, model), report)
    for bar in bars.values():
        bar.close()
    atomic_write_bytes(path, flax.serialization.to_bytes(g.state_dict()))
    atomic_write_bytes(folder / "amortised.json", json.dumps(options | meta, indent=2).encode())
    return g


def make_stratifier(model: BehaviourModel, support_obs, support, config: StratDiffConfig, rho: float,
                    guidance_scale: float | None, sampler: SamplerConfig,
                    amortised: AmortisedScore | None = None) -> StratDiffStratifier:
    """A stratifier at the start of the online phase (no update calls yet). `amortised`: the
    pretrained g, required with score=amortised."""
    if (config.score == "amortised") != (amortised is not None):
        raise ValueError("make_stratifier: pass the pretrained g (amortised) exactly when score='amortised'")
    extra = {}
    if amortised is not None:
        extra = dict(amortised=amortised, amortised_loss=jnp.zeros((), jnp.float32),
                     amortised_sampler=amortised_sampler(config, model))
    # the behaviour model does not train online: its optimiser state is not carried through every update call
    model = model.replace(score_opt_state=None)
    strat = StratDiffStratifier(
        model=model, support_obs=jnp.asarray(support_obs), support=jnp.asarray(support),
        calls=jnp.zeros((), jnp.int32), energy_info={}, config=config, rho=rho,
        guidance_scale=guidance_scale, sampler=sampler, **extra)
    # The CEP metrics' structure (any critic gives the same), zero-filled until the first online CEP step.
    n = model.config.energy_batch_size
    shapes = jax.eval_shape(energy_update, model, strat.support_obs[:n], strat.support[:n],
                            jnp.zeros(strat.support.shape[:2], jnp.float32)[:n], jax.random.PRNGKey(0))[1]
    strat = strat.replace(energy_info=jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, x.dtype), shapes))
    return strat.scheduled()

