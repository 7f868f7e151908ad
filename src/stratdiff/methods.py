"""Methods (backbone x stratifier x batch source), run configs and presets.

A method name such as `stratdiff-iql` is only a registered combination; the
runner never branches on it. Presets are data: a *scale* (`smoke`, `cpu`, `study`,
`paper`: how many steps, how often to evaluate) and a *task kind*
(`locomotion` or `antmaze`, read from the environment's EnvSpec) whose values
are the paper's Tables 2-4. User overrides (`--set key=value`) come last.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from stratdiff.envs import get_spec
from stratdiff.errors import UserError


class ConfigError(UserError, ValueError):
    """A bad --algo, --preset, override or run config field."""


@dataclasses.dataclass(frozen=True)
class Method:
    """One registered combination."""

    agent: str  # key of stratdiff.agents.AGENTS
    stratifier: str = "none"  # key of stratdiff.stratify.STRATIFIERS
    batch_source: str = "real"  # key of stratdiff.sources.SOURCES: "real" (offline dataset) or "edis"
    # run-config values of the method itself per scale and per task kind (merged after the scale
    # and task presets, before user overrides), e.g. EDIS's generated share rho, refresh interval
    # and pool size
    presets: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    task_presets: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)


# EDIS (Liu et al. 2024; official configs github.com/liuxhym/EDIS): generated samples take the
# offline share rho of each online batch (`offline_mixing_ratio`: 0.2 in the locomotion configs;
# AntMaze 0.5 for Cal-QL umaze, 0.9 for IQL umaze-diverse: we use 0.5 for AntMaze); every
# R = 10k online steps the generator and energies are retrained and 100k samples regenerated.
# Network sizes and step counts per scale: stratdiff.sources.edis.SCALE_DEFAULTS.
EDIS_PRESETS: dict[str, dict[str, Any]] = {
    "smoke": dict(rho=0.2, source=dict(refresh_every=100, pool_size=512)),
    "cpu": dict(rho=0.2, source=dict(refresh_every=5000, pool_size=20_000)),
    "paper": dict(rho=0.2, source=dict(refresh_every=10_000, pool_size=100_000)),
    "study": dict(rho=0.2, source=dict(refresh_every=10_000, pool_size=20_000)),
}
EDIS_TASK_PRESETS: dict[str, dict[str, Any]] = {"antmaze": dict(rho=0.5)}

METHODS: dict[str, Method] = {
    "iql": Method("iql"),
    "calql": Method("calql"),
    "stratdiff-iql": Method("iql", stratifier="stratdiff"),
    "stratdiff-calql": Method("calql", stratifier="stratdiff"),
    "edis-iql": Method("iql", batch_source="edis", presets=EDIS_PRESETS, task_presets=EDIS_TASK_PRESETS),
    "edis-calql": Method("calql", batch_source="edis", presets=EDIS_PRESETS, task_presets=EDIS_TASK_PRESETS),
}


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything a `stratdiff train` run needs; saved as the run's config.json."""

    algo: str  # a key of METHODS
    dataset: str  # a dataset source (file, folder, built name or Minari id)
    env: str | None = None  # environment id when the dataset does not name one
    seed: int = 0
    preset: str = "cpu"
    # phases
    offline_steps: int = 100_000  # gradient steps on the dataset
    online_steps: int = 50_000  # environment steps of online fine-tuning
    online_warmup_steps: int = 0  # env steps before the first online update
    utd: int = 1  # gradient updates per environment step online (Table 5)
    batch_size: int = 256
    rho: float = 0.5  # offline share of each online batch (the discount is the agent's)
    # data transforms (named, chosen by config)
    normalize_states: bool = True
    reward_transform: str = "locomotion"  # identity | locomotion | antmaze_calql | antmaze_iql
    sparse_failure_reward: float | None = None  # Cal-QL's sparse rule (AntMaze: -5 after r*10-5)
    # bookkeeping
    log_every: int = 1000  # gradient steps (offline) / env steps (online) between metric rows
    eval_every: int = 10_000  # steps between evaluations (both phases)
    offline_eval_every: int | None = None  # steps between offline-phase evaluations (None: eval_every)
    eval_episodes: int = 10
    checkpoint_every: int = 10_000  # steps between checkpoints (both phases)
    # a run folder of the same backbone whose finished offline phase this run takes over instead of
    # repeating it (the same agent, metrics and scores it would compute itself; checked, see runner)
    reuse_offline_from: str | None = None
    # component configs: field overrides of the agent's / stratifier's / batch source's config class
    agent: dict[str, Any] = dataclasses.field(default_factory=dict)
    stratifier: dict[str, Any] = dataclasses.field(default_factory=dict)
    source: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown run config field(s): {', '.join(unknown)}")
        return cls(**d)


# ---- presets ---------------------------------------------------------------------------
# Scale presets: steps and bookkeeping; a scale's "default", then per backbone, then per
# "<task kind>/<backbone>" (merged in that order). `cpu` was sized for a 45-minute StratDiff-IQL
# run on 2 cores (its online step costs ~20 IQL steps, mostly the M = 8 guided samples); measured,
# such a run takes 39.4 minutes on 2 quiet cores with its own offline phase (45.7 before the
# sampler shared each state's condition across its M samples) and 89-101 on one (before it).
# Its backbone runs at the same scale
# so the two compare. Cal-QL's update costs ~30 IQL updates, so its `cpu` scale is smaller still
# (see the README for measured run times).
SCALES: dict[str, dict[str, dict[str, Any]]] = {
    "smoke": {
        "default": dict(offline_steps=200, online_steps=200, online_warmup_steps=50, log_every=50,
                        eval_every=100, eval_episodes=2, checkpoint_every=100, batch_size=64),
    },
    "cpu": {
        "default": dict(offline_steps=50_000, online_steps=15_000, online_warmup_steps=1000,
                        log_every=500, eval_every=2500, eval_episodes=10, checkpoint_every=2500),
        "calql": dict(offline_steps=10_000, online_steps=5_000, online_warmup_steps=1000,
                      log_every=250, eval_every=1000, eval_episodes=10, checkpoint_every=1000),
        # IQL on AntMaze: 50k offline steps leave the sparse reward unpropagated (0% success). A
        # 300k-step pilot of offline IQL on antmaze-umaze-v0 built here scored 0% up to 150k,
        # then 13, 12, 7, 18, 17, 17% (175k-300k); 250k is the first evaluation from which all
        # are >= 10% (docs/datasets.md). Its 100-episode evaluations run every 25k steps offline.
        "antmaze/iql": dict(offline_steps=250_000, offline_eval_every=25_000),
    },
    "paper": {
        "default": dict(offline_steps=1_000_000, online_steps=200_000, online_warmup_steps=5000,
                        log_every=1000, eval_every=10_000, eval_episodes=10, checkpoint_every=50_000),
    },
    # Half the paper's online budget on a CPU (results/study-100k/): 100k online steps, rho = 0.5,
    # UTD 1, the paper's 5k warm-up steps. Differences from `paper`: 300k offline steps instead of
    # 1M (offline evaluations every 50k), 100k online steps instead of 200k, evaluations every 5k
    # online steps instead of 10k (10 episodes; AntMaze 50 instead of 100), checkpoints every 10k
    # steps instead of 50k, StratDiff's behaviour model at the `cpu` width trained for 40k steps
    # and its energy pretraining at the `cpu` size, and its online split by the amortised score,
    # g and CEP on cheaper schedules (stratdiff.stratify.stratdiff.SCALE_DEFAULTS["study"],
    # stratdiff.diffusion.PRESETS["study"]; results/study-100k/README.md lists every difference).
    "study": {
        "default": dict(offline_steps=300_000, online_steps=100_000, online_warmup_steps=5000,
                        log_every=1000, eval_every=5_000, offline_eval_every=50_000, eval_episodes=10,
                        checkpoint_every=10_000),
        "antmaze/iql": dict(eval_episodes=50),
        "antmaze/calql": dict(eval_episodes=50),
    },
}

# Task-kind presets for the run's data transforms (Tables 2-3); the agents' own
# hyper-parameters per task kind live in each agent's `presets` (stratdiff.agents).
TASK_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "locomotion": {
        "iql": dict(reward_transform="locomotion", normalize_states=True),
        "calql": dict(reward_transform="identity", normalize_states=True),
    },
    "antmaze": {
        "iql": dict(reward_transform="antmaze_iql", normalize_states=False, eval_episodes=100),
        "calql": dict(reward_transform="antmaze_calql", normalize_states=False,
                      sparse_failure_reward=-5.0, eval_episodes=100),
    },
}


def task_kind(env_id: str) -> str:
    """`antmaze` for goal-reaching tasks, `locomotion` otherwise (from the EnvSpec)."""
    return "antmaze" if get_spec(env_id).goal_reaching else "locomotion"


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        out[k] = {**out.get(k, {}), **v} if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_value(text: str) -> Any:
    """`--set` values: JSON when it parses (numbers, booleans, null, lists), else a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def resolve_config(algo: str, dataset: str, env_id: str, preset: str, seed: int,
                   overrides: dict[str, Any] | None = None) -> RunConfig:
    """Preset scale -> task-kind values -> the method's own preset -> user overrides, as one RunConfig.

    `overrides` keys are run-config fields or `agent.FIELD` / `stratifier.FIELD` / `source.FIELD`.
    """
    if algo not in METHODS:
        raise ConfigError(f"unknown --algo {algo!r} (choose from: {', '.join(METHODS)})")
    if preset not in SCALES:
        raise ConfigError(f"unknown --preset {preset!r} (choose from: {', '.join(SCALES)})")
    method = METHODS[algo]
    backbone = method.agent
    scale = SCALES[preset]
    values: dict[str, Any] = dict(algo=algo, dataset=dataset, env=env_id, seed=seed, preset=preset)
    kind = task_kind(env_id)
    for key in ("default", backbone):
        values = _merge(values, scale.get(key, {}))
    values = _merge(values, TASK_PRESETS[kind].get(backbone, {}))
    values = _merge(values, scale.get(f"{kind}/{backbone}", {}))  # a scale's own task-kind values win
    values = _merge(values, method.presets.get(preset, {}))
    values = _merge(values, method.task_presets.get(kind, {}))
    nested: dict[str, dict[str, Any]] = {"agent": {}, "stratifier": {}, "source": {}}
    for key, value in (overrides or {}).items():
        head, _, rest = key.partition(".")
        if rest:
            if head not in nested:
                raise ConfigError(f"unknown override {key!r}: nested keys start with agent., stratifier. or source.")
            nested[head][rest] = value
        else:
            values[key] = value
    values = _merge(values, {k: v for k, v in nested.items() if v})
    return RunConfig.from_dict(values)
