"""The offline -> online runner: one `train(config, out_dir)` for every method.

Offline phase: `offline_steps` gradient steps on batches drawn inside jit from
the device-resident dataset, `log_every` steps per jitted `lax.scan` call.
Online phase: act with the policy, store in the online buffer, draw each batch
with offline share rho, let the stratifier split it, update (UTD updates per
call), evaluate every `eval_every` steps.

The runner only knows: sample a batch, ask the stratifier for strata, update the
backbone, log. It never branches on a method's name. A method's batch source
(`stratdiff.sources`, e.g. EDIS) decides what the offline share of online batches is
drawn from and refreshes itself on its own schedule (`source.step` once per online step).

Files in the run folder: config.json, metrics.csv, tensorboard/, checkpoint.msgpack
(atomic), summary.json; diverged.json when a loss became NaN or inf. A killed run
continues with `resume=True`: offline checkpoints fall on chunk boundaries, online ones
on episode boundaries, and all randomness is derived from (seed, step), so a resumed CPU
run ends with the same metrics as an uninterrupted one. A resume first checks the files it
appends to or reports from (`stratdiff.runfiles`). A write that fails for lack of space
stops the run with a DiskFullError (the last good checkpoint is kept); `force=True`
deletes a run's files and starts it over.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from stratdiff import checkpoint, envs, locks, runfiles, sources, stratify
from stratdiff.agents import AGENTS
from stratdiff.agents.base import make_config
from stratdiff.data import (
    Dataset,
    OfflineBuffer,
    OnlineBuffer,
    StateNormalizer,
    load_dataset,
    make_reward_transform,
    mixed_batches,
)
from stratdiff.errors import UserError
from stratdiff.logging import NO_SPACE_FIX, MetricsLogger
from stratdiff.methods import METHODS, ConfigError, RunConfig, task_kind
from stratdiff.progress import progress_bar
from stratdiff.provenance import code_version
from stratdiff.wandb_logging import WandbLogger, WandbOptions

CHECKPOINT = "checkpoint.msgpack"
OFFLINE_AGENT = "offline_agent.msgpack"  # the agent at the end of the offline phase (kept for reuse)
OFFLINE_META = "offline_agent.json"  # its offline signature and scores; written last
DIVERGED = "diverged.json"  # written when a loss became NaN/inf: step, loss, value (sweeps do not retry it)
# everything `train` writes in a run folder (what `force=True` deletes; a sweep's train.log is kept)
RUN_FILES = ("config.json", "metrics.csv", "tensorboard", CHECKPOINT, OFFLINE_AGENT, OFFLINE_META, "summary.json",
             DIVERGED, "behaviour")

# RunConfig fields that do not touch the offline phase: runs that agree on every other field and
# share a backbone compute the same offline phase, step for step (the PRNG keys come from the seed).
ONLINE_ONLY_FIELDS = ("algo", "online_steps", "online_warmup_steps", "utd", "rho", "checkpoint_every",
                      "stratifier", "source", "reuse_offline_from")


OFFLINE_META_KEYS = ("signature", "best_score", "last_score")
OFFLINE_META_FIX = (f"delete it and {OFFLINE_AGENT} beside it (runs that would reuse this offline phase then "
                    f"compute their own), or start that run over with --force")


def offline_signature(cfg: RunConfig, agent_config: Any) -> dict[str, Any]:
    """What determines a run's offline phase: its config less `ONLINE_ONLY_FIELDS`, the backbone,
    and the backbone's resolved config (every agent setting the run used, task-kind presets and
    schedules included), so that an offline agent trained with other agent settings or by code
    whose agent defaults have since changed is never taken over."""
    d = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ONLINE_ONLY_FIELDS}
    d["backbone"] = METHODS[cfg.algo].agent
    d["agent_resolved"] = dataclasses.asdict(agent_config)
    return json.loads(json.dumps(d))  # tuples -> lists, as read back from JSON


class DivergenceError(UserError, RuntimeError):
    """A loss became NaN or inf; the run stopped and kept its last good checkpoint."""

    def __init__(self, message: str, record: dict[str, Any] | None = None):
        super().__init__(message)
        self.record = record or {}  # step, phase, loss, value (written to diverged.json)


class RunError(UserError, RuntimeError):
    """A run cannot start or resume as asked (clear message, no traceback needed)."""


def _check_config(cfg: RunConfig) -> None:
    for name in ("eval_every", "offline_eval_every", "checkpoint_every"):
        value = getattr(cfg, name)
        if value is not None and (value < 1 or value % cfg.log_every):
            raise RunError(f"{name}={value} must be a positive multiple of log_every={cfg.log_every}")
    if not 0.0 <= cfg.rho <= 1.0:
        raise RunError(f"rho={cfg.rho} must lie in [0, 1]")
    if cfg.utd < 1:
        raise RunError(f"utd={cfg.utd} must be >= 1")


@partial(jax.jit, static_argnames=("n", "batch_size"))
def _offline_chunk(agent, buffer, key, n: int, batch_size: int):
    """`n` offline gradient steps in one call; metrics stacked over the steps."""

    def body(agent, k):
        batch = jax.tree_util.tree_map(lambda x: x[None], buffer.sample(k, batch_size))
        agent, m = agent.update(batch)
        return agent, m

    return jax.lax.scan(body, agent, jax.random.split(key, n))


@partial(jax.jit, donate_argnums=(1,))
def _online_update(agent, stratifier, batch, key):
    """Algorithm 1 lines 7-12: split the batch (stratifier), then the backbone's update.

    The stratifier's buffers are donated, so its tables that do not change online (support
    actions, the behaviour model) are handed to the returned stratifier instead of copied at
    every call; the stratifier passed in cannot be used afterwards."""
    stratifier, online_like, next_candidates, s_metrics = stratifier.split(agent, batch, key)
    rows = stratifier.offline_rows(batch.actions.shape[1])
    agent, metrics = agent.update(batch, online_like, next_candidates,
                                  **({} if rows is None else {"offline_rows": rows}))
    return agent, stratifier, {**metrics, **s_metrics}


def _first_nonfinite(metrics: dict[str, np.ndarray]) -> tuple[int, str, float] | None:
    """(index along the leading axis, key, value) of the first NaN/inf in a loss, or None.

    Only losses count (keys containing "loss"): a diagnostic may legitimately be NaN, e.g.
    the median score of a buffer with no sample in the batch.
    """
    first = None
    for k, v in metrics.items():
        if "loss" not in k:
            continue
        v = np.atleast_1d(np.asarray(v, dtype=np.float64))
        bad = np.flatnonzero(~np.isfinite(v))
        if bad.size and (first is None or bad[0] < first[0]):
            first = (int(bad[0]), k, float(v[bad[0]]))
    return first


class Runner:
    """Holds one run's state; `run()` drives both phases. Use `train()` below."""

    def __init__(self, cfg: RunConfig, out_dir: str | Path, progress: bool = True,
                 dataset: Dataset | None = None, wandb: WandbOptions | None = None):
        _check_config(cfg)
        self.wandb_options = wandb
        self.wandb: WandbLogger | None = None
        self.cfg = cfg
        self.out = Path(out_dir)
        self.progress = progress
        self.method = METHODS[cfg.algo]
        try:
            sources.check(self.method.batch_source, cfg)  # bad source options fail before the offline phase
            stratify.check(self.method.stratifier, cfg)  # and bad stratifier options
        except ValueError as e:
            raise RunError(str(e)) from None
        self.dataset = dataset if dataset is not None else load_dataset(cfg.dataset, cfg.env)
        self.env_id = cfg.env or self.dataset.info.env_id
        # the data this run trains on; a rebuilt dataset of the same name can differ (Dataset.fingerprint)
        self.data_fingerprint = self.dataset.fingerprint()
        if self.env_id is None:
            raise RunError(f"dataset {cfg.dataset!r} does not name its environment: pass --env ENV_ID")
        # normalised scores use the dataset's own reference scores (e.g. Minari's metadata) when it
        # has them, else D4RL's for the environment; without either, scores are raw returns
        ref = (self.dataset.info.ref_min_score, self.dataset.info.ref_max_score)
        self.ref_scores = ref if None not in ref else envs.reference_scores(self.env_id)
        self.ref_source = "dataset metadata" if None not in ref else "D4RL" if self.ref_scores else None
        self.action_bounds = envs.action_bounds(self.env_id)  # None: the env acts in [-1, 1] as the agents
        agent_cls = AGENTS[self.method.agent]
        try:
            self.agent_config = make_config(agent_cls, task_kind(self.env_id), cfg.agent, cfg.offline_steps)
        except (TypeError, ValueError) as e:
            raise RunError(f"agent options: {e}") from None
        gamma = self.agent_config.discount  # one discount for TD targets and MC returns
        self.normalizer = (StateNormalizer.fit(self.dataset.observations) if cfg.normalize_states
                           else StateNormalizer.identity(self.dataset.obs_dim))
        try:
            self.reward_transform = make_reward_transform(cfg.reward_transform, self.dataset)
        except ValueError as e:
            raise RunError(f"reward_transform: {e}") from None
        self.offline = OfflineBuffer.from_dataset(
            self.dataset, self.normalizer, self.reward_transform, gamma, cfg.sparse_failure_reward)
        self.online = OnlineBuffer(
            capacity=max(cfg.online_steps, 1), obs_dim=self.dataset.obs_dim, act_dim=self.dataset.act_dim,
            normalizer=self.normalizer, reward_transform=self.reward_transform, gamma=gamma,
            sparse_failure_reward=cfg.sparse_failure_reward)
        root = jax.random.PRNGKey(cfg.seed)
        k_init, self.k_off, self.k_on, self.k_strat = jax.random.split(root, 4)
        self.agent = agent_cls.create(k_init, self.dataset.obs_dim, self.dataset.act_dim, self.agent_config)
        self.stratifier = stratify.NoStratifier()
        self.source = sources.RealSource()
        self.stratifier_built = False  # stratifier and batch source: built once, when the offline phase ends
        self.step = 0  # global step: offline gradient steps, then online env steps
        self.episode = 0  # online episodes started
        self.window: dict[str, list[float]] = {}  # online metrics since the last log row
        self.train_returns: list[float] = []
        self.best_score = -math.inf
        self.last_score = math.nan
        self.logger: MetricsLogger | None = None
        self.timing = {"offline_seconds": 0.0, "online_seconds": 0.0}
        self.offline_from: str | None = None  # the run whose offline phase this one took over

    # ---- paths and persistence -----------------------------------------------------------
    @property
    def total_steps(self) -> int:
        return self.cfg.offline_steps + self.cfg.online_steps

    def _state(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "stratifier": self.stratifier.state_dict(),
            "source": self.source.state_dict(),
            "online": self.online.state_dict(),
            "normalizer": self.normalizer.to_dict(),
            "reward_transform": self.reward_transform.to_dict(),
            "counters": {"step": self.step, "episode": self.episode,
                         "stratifier_built": int(self.stratifier_built)},
            "window": {k: np.asarray(v, dtype=np.float64) for k, v in self.window.items()},
            "train_returns": np.asarray(self.train_returns, dtype=np.float64),
            "scores": {"best": self.best_score, "last": self.last_score},
            "timing": dict(self.timing),
            "offline_from": self.offline_from or "",
            "dataset_fingerprint": self.data_fingerprint,
        }

    def save(self) -> None:
        checkpoint.save(self.out / CHECKPOINT, self._state())

    def load(self) -> None:
        path = self.out / CHECKPOINT
        state = checkpoint.load_raw(path)
        for key in ("agent", "stratifier", "online", "counters"):
            if key not in state:
                raise checkpoint.CheckpointError(f"checkpoint {path} has no {key!r} entry")
        self._check_same_data(str(state.get("dataset_fingerprint") or ""), f"cannot resume {self.out}: its checkpoint")
        self.agent = checkpoint.restore(self.agent, state["agent"], path, "the agent")
        if int(state["counters"].get("stratifier_built", 0)):
            self._build_stratifier()
            target = self.stratifier.state_dict()
            self.stratifier = self.stratifier.load_state_dict(
                checkpoint.restore(target, state["stratifier"], path, "the stratifier"))
            self.source = self.source.load_state_dict(
                checkpoint.restore(self.source.state_dict(), state.get("source", {}), path, "the batch source"))
        self.online.load_state_dict(state["online"])
        self.step = int(state["counters"]["step"])
        self.episode = int(state["counters"]["episode"])
        self.window = {k: list(np.atleast_1d(v)) for k, v in (state.get("window") or {}).items()}
        self.train_returns = list(np.atleast_1d(state.get("train_returns", [])))
        self.best_score = float(state["scores"]["best"])
        self.last_score = float(state["scores"]["last"])
        self.timing = {k: float(v) for k, v in state.get("timing", self.timing).items()}
        self.offline_from = str(state.get("offline_from") or "") or None

    def step_phase(self, step: int) -> str:
        return "offline" if step < self.cfg.offline_steps else "online"

    # ---- pieces ------------------------------------------------------------------------
    def _build_stratifier(self) -> None:
        """Algorithm 1's offline part beyond the backbone (e.g. the behaviour model and the energy),
        and the method's batch source, from one context."""
        context = {"config": self.cfg, "dataset": self.dataset, "task_kind": task_kind(self.env_id),
                   "offline": self.offline,
                   "normalizer": self.normalizer, "agent": self.agent, "key": self.k_strat,
                   "out_dir": self.out, "progress": self.progress}
        self.stratifier = stratify.build(self.method.stratifier, context)
        self.source = sources.build(self.method.batch_source, context)
        self.stratifier_built = True

    def evaluate(self) -> dict[str, float]:
        key = jax.random.fold_in(jax.random.PRNGKey(self.cfg.seed + 1), self.step)

        def policy(obs):
            return self.env_action(np.asarray(self.agent.act(jnp.asarray(self.normalizer.normalize(obs)), key, True)))

        result = envs.evaluate(policy, self.env_id, self.cfg.eval_episodes,
                               seed=10_000 * (self.cfg.seed + 1) + self.step, ref_scores=self.ref_scores)
        score = result.get("score", result["return"])
        self.last_score = float(score)
        self.best_score = max(self.best_score, self.last_score)
        return {f"eval/{k}": v for k, v in result.items()}

    def env_action(self, action: np.ndarray) -> np.ndarray:
        """An agent's action in [-1, 1] in the environment's own units (`envs.action_bounds`)."""
        if self.action_bounds is None:
            return action
        low, high = self.action_bounds
        return envs.rescale_action(action, np.asarray(low), np.asarray(high)).astype(np.float32)

    def _log(self, row: dict[str, Any], bar) -> None:
        row = {"step": self.step, "phase": self.step_phase(self.step - 1), **row}
        self.logger.log(row)
        if self.wandb is not None:
            self.wandb.log(row)
        if bar is not None:
            post = {"phase": row["phase"]}
            if "eval/score" in row:
                post["score"] = f"{row['eval/score']:.1f}"
            if self.train_returns:
                post["return"] = f"{self.train_returns[-1]:.0f}"
            if "perf/steps_per_s" in row:
                post["it/s"] = f"{row['perf/steps_per_s']:.0f}"
            bar.set_postfix(post, refresh=False)

    def _guard(self, metrics: dict[str, Any], first_step: int) -> None:
        bad = _first_nonfinite(metrics)
        if bad is not None:
            index, key, value = bad
            step, phase = first_step + index, self.step_phase(first_step + index)
            record = {"step": step, "phase": phase, "loss": key, "value": repr(value)}
            checkpoint.atomic_write_bytes(self.out / DIVERGED, json.dumps(record, indent=2).encode())
            raise DivergenceError(
                f"loss {key!r} became {value} at step {step} ({phase} phase); stopped, the last good "
                f"checkpoint is kept at {self.out / CHECKPOINT}", record)

    # ---- phases ------------------------------------------------------------------------
    def run_offline(self, bar, stop_after: int | None) -> None:
        cfg = self.cfg
        while self.step < cfg.offline_steps:
            n = min(cfg.log_every, cfg.offline_steps - self.step)
            t0 = time.perf_counter()
            key = jax.random.fold_in(self.k_off, self.step)
            self.agent, metrics = _offline_chunk(self.agent, self.offline, key, n, cfg.batch_size)
            metrics = jax.device_get(metrics)
            dt = time.perf_counter() - t0
            self._guard(metrics, self.step)
            self.step += n
            self.timing["offline_seconds"] += dt
            row = {k: float(np.mean(v)) for k, v in metrics.items()}
            row["perf/steps_per_s"] = n / dt
            if self.step % (cfg.offline_eval_every or cfg.eval_every) == 0 or self.step == cfg.offline_steps:
                row.update(self.evaluate())
            self._log(row, bar)
            if bar is not None:
                bar.update(n)
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.offline_steps:
                self.save()
            if self.step == cfg.offline_steps:
                self.save_offline_agent()
            if stop_after is not None and self.step >= stop_after:
                raise KeyboardInterrupt(f"stop_after={stop_after}")

    def save_offline_agent(self) -> None:
        """Keep the offline phase's result for runs that reuse it (`reuse_offline_from`)."""
        checkpoint.save(self.out / OFFLINE_AGENT, {"agent": self.agent})
        meta = {"signature": offline_signature(self.cfg, self.agent_config), "dataset_fingerprint": self.data_fingerprint,
                "best_score": self.best_score, "last_score": self.last_score}
        checkpoint.atomic_write_bytes(self.out / OFFLINE_META, json.dumps(meta, indent=2).encode())

    def reuse_offline(self) -> bool:
        """Take over the finished offline phase of `cfg.reuse_offline_from`: its agent, its offline
        metric rows and scores, after checking that it ran this run's offline phase (a mismatch
        is an error). Where that phase has not finished (yet), this run computes it itself, with
        the same result, and says so; returns whether it was reused."""
        donor = Path(self.cfg.reuse_offline_from)
        meta_path, agent_path = donor / OFFLINE_META, donor / OFFLINE_AGENT
        if not meta_path.is_file() or not agent_path.is_file():
            print(f"[stratdiff] reuse_offline_from {donor}: no finished offline phase there yet "
                  f"({OFFLINE_META}); running it here", flush=True)
            return False
        meta = runfiles.read_json(meta_path, OFFLINE_META_KEYS, OFFLINE_META_FIX)
        mine = offline_signature(self.cfg, self.agent_config)
        differ = sorted(k for k in set(mine) | set(meta["signature"]) if mine.get(k) != meta["signature"].get(k))
        if differ:
            raise RunError(f"reuse_offline_from {donor}: its offline phase differs from this run's in "
                           f"{', '.join(differ)}")
        self._check_same_data(meta.get("dataset_fingerprint") or "", f"reuse_offline_from {donor}: its offline phase")
        self.agent = checkpoint.restore(self.agent, checkpoint.load_raw(agent_path)["agent"], agent_path,
                                        "the agent")
        for row in MetricsLogger(donor, tensorboard=False).rows:
            if row.get("phase") == "offline" and float(row["step"]) <= self.cfg.offline_steps:
                self.logger.log({k: (v if k == "phase" else int(float(v)) if k == "step" else float(v))
                                 for k, v in row.items()})
        self.step = self.cfg.offline_steps
        self.best_score, self.last_score = float(meta["best_score"]), float(meta["last_score"])
        self.offline_from = str(donor)
        return True

    def _check_offline_meta(self) -> None:
        """On resume past the offline phase: the offline_agent.json that runs reusing this
        phase read must be intact."""
        path = self.out / OFFLINE_META
        if self.step >= self.cfg.offline_steps and path.exists():
            runfiles.read_json(path, OFFLINE_META_KEYS, OFFLINE_META_FIX)

    def _check_same_data(self, recorded: str, what: str) -> None:
        """Refuse to continue from state computed on other data than this run's dataset (the same
        name rebuilt on another machine, say). Records written before fingerprints existed ('')
        are taken as they are."""
        if recorded and recorded != self.data_fingerprint:
            raise RunError(f"{what} was computed on other data: dataset {self.cfg.dataset!r} has fingerprint "
                           f"{self.data_fingerprint} here, {recorded} there (a rebuild on another machine or "
                           f"with other library versions can differ; use the same dataset files)")

    def run_online(self, bar, stop_after: int | None) -> None:
        cfg = self.cfg
        env = envs.make_env(self.env_id)
        obs, _ = env.reset(seed=self._episode_seed())
        episode_return = 0.0  # checkpoints fall on episode boundaries, so a resumed run starts at 0
        checkpoint_due = False
        t_window = time.perf_counter()
        steps_window = 0
        while self.step < self.total_steps:
            online_step = self.step - cfg.offline_steps
            key = jax.random.fold_in(self.k_on, online_step)
            k_act, k_batch, k_update = jax.random.split(key, 3)
            action = np.asarray(self.agent.act(jnp.asarray(self.normalizer.normalize(obs[None])), k_act, False))[0]
            next_obs, reward, terminated, truncated, info = env.step(self.env_action(action))
            self.online.add(obs, action, reward, next_obs, terminated, truncated)
            episode_return += reward
            self.source, src_metrics = self.source.step(online_step, self.agent, self.online)
            for k, v in src_metrics.items():
                self.window.setdefault(k, []).append(float(v))
            if online_step >= cfg.online_warmup_steps:
                batch = mixed_batches(k_batch, self.source.offline_part(self.offline), self.online,
                                      cfg.utd, cfg.batch_size, cfg.rho)
                self.agent, self.stratifier, metrics = _online_update(self.agent, self.stratifier.scheduled(), batch,
                                                                       k_update)
                metrics = jax.device_get(metrics)
                self._guard(metrics, self.step)
                for k, v in metrics.items():
                    self.window.setdefault(k, []).append(float(np.mean(v)))
            self.step += 1
            steps_window += 1
            obs = next_obs
            if terminated or truncated:
                self.train_returns.append(episode_return)
                self.episode += 1
                obs, _ = env.reset(seed=self._episode_seed())
                episode_return = 0.0
                if checkpoint_due:
                    self.save()
                    checkpoint_due = False
            if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                dt = time.perf_counter() - t_window
                self.timing["online_seconds"] += dt
                row = {k: float(np.mean(v)) for k, v in self.window.items()}
                row["perf/steps_per_s"] = steps_window / dt
                row["online/episodes"] = self.episode
                if self.train_returns:
                    row["online/return"] = float(np.mean(self.train_returns[-10:]))
                if (self.step - cfg.offline_steps) % cfg.eval_every == 0 or self.step == self.total_steps:
                    row.update(self.evaluate())
                self._log(row, bar)
                self.window = {}
                t_window, steps_window = time.perf_counter(), 0
            if bar is not None:
                bar.update(1)
            if (self.step - cfg.offline_steps) % cfg.checkpoint_every == 0:
                checkpoint_due = True
            if stop_after is not None and self.step >= stop_after:
                raise KeyboardInterrupt(f"stop_after={stop_after}")
        env.close()

    def _episode_seed(self) -> int:
        return 1_000_003 * (self.cfg.seed + 1) + self.episode

    def run(self, resume: bool = False, stop_after: int | None = None) -> dict[str, Any]:
        """Both phases (from the checkpoint with `resume`)."""
        self.out.mkdir(parents=True, exist_ok=True)
        runfiles.remove_temporaries(self.out, self.out / "behaviour")  # of a writer killed mid-write (we hold run.lock)
        if resume:
            self.load()
            self._check_offline_meta()
        self.logger = MetricsLogger(self.out)
        self.logger.truncate_after(self.step)
        checkpoint.atomic_write_bytes(self.out / "config.json", self.cfg.to_json().encode())
        if self.wandb_options is not None:
            self.wandb = WandbLogger(self.wandb_options, json.loads(self.cfg.to_json()), self.out)
        bar = progress_bar(total=self.total_steps, initial=self.step, desc=self.cfg.algo, disable=not self.progress,
                   dynamic_ncols=True)
        t0 = time.perf_counter()
        try:
            if self.cfg.reuse_offline_from and self.step == 0 and self.reuse_offline():
                bar.update(self.step)
                self.save()
            self.run_offline(bar, stop_after)
            if not self.stratifier_built:
                self._build_stratifier()
                self.save()
            self.run_online(bar, stop_after)
        except BaseException:
            bar.close()
            self.logger.close(quiet=True)  # the first error is the one to report
            raise
        bar.close()
        self.logger.close()
        self.save()
        summary = self.summary(time.perf_counter() - t0)
        checkpoint.atomic_write_bytes(self.out / "summary.json", json.dumps(summary, indent=2).encode())
        (self.out / DIVERGED).unlink(missing_ok=True)  # finished after all (e.g. resumed elsewhere)
        if self.wandb is not None:
            self.wandb.finish(summary)
        return summary

    def summary(self, wall: float) -> dict[str, Any]:
        cfg = self.cfg
        t_off, t_on = self.timing["offline_seconds"], self.timing["online_seconds"]
        return {
            "algo": cfg.algo, "dataset": cfg.dataset, "env": self.env_id, "seed": cfg.seed,
            "preset": cfg.preset, "final_score": self.last_score, "best_score": self.best_score,
            "offline_steps": cfg.offline_steps, "online_steps": cfg.online_steps,
            "wall_seconds_this_call": wall,
            "offline_updates_per_s": cfg.offline_steps / t_off if t_off else None,
            "online_steps_per_s": cfg.online_steps / t_on if t_on else None,
            "offline_phase_from": self.offline_from,
            "dataset_fingerprint": self.data_fingerprint,
            "score": self.score_kind(),
            "reference_scores": None if self.ref_scores is None else {
                "min": self.ref_scores[0], "max": self.ref_scores[1], "source": self.ref_source},
            "code": code_version(),
        }

    def score_kind(self) -> str:
        """What `final_score` and `eval/score` measure (`envs.evaluate`)."""
        if envs.get_spec(self.env_id).goal_reaching:
            return "success rate x 100"
        return "raw return" if self.ref_scores is None else "normalised"


def train(cfg: RunConfig, out_dir: str | Path, resume: bool = False, progress: bool = True,
          stop_after: int | None = None, dataset: Dataset | None = None, force: bool = False,
          wandb: WandbOptions | None = None) -> dict[str, Any]:
    """Run (or with `resume`, continue) one offline -> online run into `out_dir`.

    `dataset` may pass the already loaded `cfg.dataset`; `wandb` also logs the run to Weights &
    Biases (`stratdiff.wandb_logging`); `stop_after` (tests) stops the run
    like a kill once the global step reaches it. One live process at a time writes a run
    folder (`run.lock`); a second one is refused with a FolderBusyError. `force` deletes the
    run's files in `out_dir` (`RUN_FILES`) and starts over. A write that fails for lack of
    space is a DiskFullError naming the file (temporary files removed, last checkpoint kept).
    """
    out = Path(out_dir)
    if force and resume:
        raise RunError("--force starts the run over and --resume continues it: pass one of them")
    with locks.holding(out):
        if dataset is None:
            dataset = load_dataset(cfg.dataset, cfg.env)
        cfg = with_dataset_values(cfg, dataset)
        if force:
            clear_run(out)
        try:
            return _train(cfg, out, resume, progress, stop_after, dataset, wandb)
        except OSError as e:  # a write outside the checked writers (e.g. the behaviour model's files)
            full = runfiles.disk_full(e, e.filename or out, NO_SPACE_FIX)
            if full is None:
                raise
            runfiles.remove_temporaries(out, out / "behaviour")
            raise full from None


def clear_run(out: Path) -> None:
    """Delete the files `train` writes in the run folder `out` (`RUN_FILES`, temporaries)."""
    import shutil

    for name in RUN_FILES:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)
    runfiles.remove_temporaries(out, out / "behaviour")


def with_dataset_values(cfg: RunConfig, dataset: Dataset) -> RunConfig:
    """`cfg` with the values the paper gives per dataset (e.g. StratDiff's guidance scale) filled
    with the task kind's defaults where `dataset` is not one the paper lists (a user's own file),
    so that config.json records what the run used; says once which values were taken and why."""
    env_id = cfg.env or dataset.info.env_id
    if env_id is None:
        return cfg  # the Runner refuses it by name
    values, note = stratify.dataset_values(METHODS[cfg.algo].stratifier, cfg.stratifier,
                                           dataset.info.name or cfg.dataset, task_kind(env_id))
    if not values:
        return cfg
    print(f"[stratdiff] {note}", flush=True)
    return dataclasses.replace(cfg, stratifier={**cfg.stratifier, **values})


def _train(cfg: RunConfig, out: Path, resume: bool, progress: bool, stop_after: int | None,
           dataset: Dataset | None, wandb: WandbOptions | None = None) -> dict[str, Any]:
    ckpt = out / CHECKPOINT
    if resume:
        stored = out / "config.json"
        if not stored.is_file() or not ckpt.is_file():
            raise RunError(f"cannot resume: {out} has no config.json and {CHECKPOINT}")
        fix = "start the run over with --force (it deletes the run's files in its folder)"
        try:
            saved = RunConfig.from_dict(runfiles.read_json(stored, ("algo", "dataset"), fix))
        except (ConfigError, TypeError, ValueError) as e:
            raise runfiles.DamagedFileError(f"{stored} is damaged (not a run config: {e}); {fix}") from None
        if saved != cfg:
            diff = [f.name for f in dataclasses.fields(cfg) if getattr(saved, f.name) != getattr(cfg, f.name)]
            raise RunError(f"cannot resume {out}: its config.json differs in {', '.join(diff)}")
    elif ckpt.exists() or (out / "summary.json").exists():
        raise RunError(f"{out} already holds a run: pass --resume to continue it or choose another --out")
    return Runner(cfg, out, progress=progress, dataset=dataset, wandb=wandb).run(resume=resume,
                                                                                  stop_after=stop_after)
