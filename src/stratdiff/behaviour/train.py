"""The SAC training driver behind `stratdiff sac train`: one environment, UTD 1,
evaluations every `eval_every` steps, resumable from its own atomic checkpoints.

A run directory holds:

- `config.json`: the resolved `TrainConfig` and `SACConfig`;
- `checkpoint.msgpack`: the agent (params, optimiser states, key), the step and the
  numpy generator state, replaced atomically at every evaluation;
- `buffer/NNNNNNNN.npz`: the replay buffer, one file per `eval_every` steps holding the
  transitions collected since the previous file (written once, never rewritten), so a
  checkpoint costs one small file and the buffer up to any evaluation step (the
  medium-replay data) can be read back;
- `snapshots/actor_NNNNNNNN.msgpack`: the actor parameters at every evaluation;
- `evals.csv`: one row per evaluation (deterministic and stochastic policy, 10 episodes each).

Resuming loads the checkpoint and the buffer files up to its step and starts a fresh
episode (the interrupted one is cut there as a time-out).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import time
from pathlib import Path

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

import stratdiff
from stratdiff.agents.sac import (
    SACAgent,
    SACConfig,
    deterministic_actions,
    sample_actions,
)
from stratdiff.checkpoint import atomic_write_bytes
from stratdiff.locks import holding
from stratdiff.envs import env_dims, evaluate, make_env
from stratdiff.types import Batch

BUFFER_FIELDS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")
EVAL_COLUMNS = ("step", "wall_s", "episodes", "return", "return_std", "score", "length",
                "stoch_return", "stoch_return_std", "stoch_score", "stoch_length",
                "critic_loss", "actor_loss", "q", "entropy", "alpha", "steps_per_s")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """What a SAC run does (the learner's own settings are `SACConfig`)."""

    env_id: str = "Hopper-v5"  # gymnasium id
    steps: int = 1_000_000  # environment steps (= gradient steps after the random start)
    seed: int = 0  # seeds the networks, the exploration, the env resets and the buffer sampling
    start_steps: int = 10_000  # uniform random actions before the first update
    batch_size: int = 256  # transitions per gradient step
    eval_every: int = 10_000  # evaluate, checkpoint and write a buffer file every this many steps
    eval_episodes: int = 10  # episodes per evaluation (deterministic and stochastic each)
    buffer_size: int = 1_000_000  # replay capacity (>= steps keeps every transition)

    def __post_init__(self):
        if self.steps % self.eval_every:
            raise ValueError(f"--steps ({self.steps}) must be a multiple of --eval-every "
                             f"({self.eval_every})")
        if self.buffer_size < self.steps:
            raise ValueError("--buffer-size must be at least --steps (the run keeps every "
                             "transition for the medium-replay dataset)")


class ReplayBuffer:
    """Host-side (numpy) replay buffer that keeps every transition in order."""

    def __init__(self, capacity: int, obs_dim: int, action_dim: int):
        self.data = {
            "observations": np.zeros((capacity, obs_dim), np.float32),
            "actions": np.zeros((capacity, action_dim), np.float32),
            "rewards": np.zeros(capacity, np.float32),
            "next_observations": np.zeros((capacity, obs_dim), np.float32),
            "terminals": np.zeros(capacity, bool),
            "timeouts": np.zeros(capacity, bool),
        }
        self.size = 0

    def add(self, obs, action, reward, next_obs, terminal, timeout):
        i = self.size
        d = self.data
        d["observations"][i] = obs
        d["actions"][i] = action
        d["rewards"][i] = reward
        d["next_observations"][i] = next_obs
        d["terminals"][i] = terminal
        d["timeouts"][i] = timeout
        self.size += 1

    def sample(self, rng: np.random.Generator, batch_size: int) -> Batch:
        idx = rng.integers(0, self.size, size=batch_size)
        d = self.data
        zeros = np.zeros(batch_size, np.float32)
        return Batch(observations=d["observations"][idx], actions=d["actions"][idx],
                     rewards=d["rewards"][idx], next_observations=d["next_observations"][idx],
                     masks=1.0 - d["terminals"][idx].astype(np.float32), mc_returns=zeros,
                     source=zeros.astype(np.int32))

    def slice(self, start: int, stop: int) -> dict[str, np.ndarray]:
        return {k: v[start:stop] for k, v in self.data.items()}

    def load(self, chunks: dict[str, np.ndarray]):
        n = len(chunks["rewards"])
        for k in BUFFER_FIELDS:
            self.data[k][:n] = chunks[k]
        self.size = n


def _save_npz_atomic(path: Path, arrays: dict[str, np.ndarray]):
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def read_buffer(run_dir: str | Path, upto_step: int | None = None) -> dict[str, np.ndarray]:
    """The replay buffer of a run up to `upto_step` (default: the checkpoint's step), in order.

    Episode boundaries that a resume cut (next_observations[t] != observations[t+1]
    without a terminal) are marked as time-outs.
    """
    run_dir = Path(run_dir)
    if upto_step is None:
        upto_step = read_checkpoint_step(run_dir)
    files = sorted((run_dir / "buffer").glob("*.npz"))
    parts: dict[str, list] = {k: [] for k in BUFFER_FIELDS}
    n = 0
    for f in files:
        if f.name.endswith(".tmp.npz"):
            continue
        end = int(f.stem)
        if end > upto_step:
            break
        with np.load(f) as z:
            for k in BUFFER_FIELDS:
                parts[k].append(z[k])
            n = end
    if n != upto_step:
        raise FileNotFoundError(f"{run_dir / 'buffer'}: buffer files reach step {n}, not {upto_step}")
    out = {k: (np.concatenate(v) if v else np.zeros((0,))) for k, v in parts.items()}
    if n:
        cut = np.zeros(n, bool)
        cut[:-1] = np.any(out["next_observations"][:-1] != out["observations"][1:], axis=1)
        out["timeouts"] = out["timeouts"] | (cut & ~out["terminals"])
    return out


def read_checkpoint_step(run_dir: str | Path) -> int:
    meta = Path(run_dir) / "checkpoint.json"
    if not meta.exists():
        raise FileNotFoundError(f"{meta}: no checkpoint in this run directory")
    return int(json.loads(meta.read_text())["step"])


def _config_dict(train: TrainConfig, sac: SACConfig) -> dict:
    return {"train": dataclasses.asdict(train), "sac": dataclasses.asdict(sac),
            "stratdiff_version": stratdiff.__version__}


def train(cfg: TrainConfig, out_dir: str | Path, sac_cfg: SACConfig = SACConfig(),
          progress: bool = True, log=print) -> Path:
    """Train (or resume) a SAC run in `out_dir`; returns the run directory. One live process
    at a time trains in a run folder (`run.lock`); a second one is refused."""
    out = Path(out_dir)
    with holding(out):
        return _train(cfg, out, sac_cfg, progress, log)


def _train(cfg: TrainConfig, out: Path, sac_cfg: SACConfig, progress: bool, log) -> Path:
    (out / "buffer").mkdir(parents=True, exist_ok=True)
    (out / "snapshots").mkdir(exist_ok=True)
    config = _config_dict(cfg, sac_cfg)
    config_path = out / "config.json"
    if config_path.exists():
        saved = json.loads(config_path.read_text())
        for part in ("train", "sac"):
            old = {k: v for k, v in saved[part].items() if k != "steps"}
            new = {k: v for k, v in json.loads(json.dumps(config[part])).items() if k != "steps"}
            if old != new:
                raise ValueError(f"{config_path}: the run was started with other settings "
                                 f"({part}: {old} vs {new}); use another --out")
    atomic_write_bytes(config_path, json.dumps(config, indent=2).encode())

    obs_dim, action_dim = env_dims(cfg.env_id)
    agent = SACAgent.create(jax.random.PRNGKey(cfg.seed), obs_dim, action_dim, sac_cfg)
    act_key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 1)
    eval_key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 2)
    rng = np.random.default_rng(cfg.seed)
    buffer = ReplayBuffer(cfg.buffer_size, obs_dim, action_dim)
    step = 0
    wall_offset = 0.0
    ckpt_path = out / "checkpoint.msgpack"
    if ckpt_path.exists():
        meta = json.loads((out / "checkpoint.json").read_text())
        state = flax.serialization.msgpack_restore(ckpt_path.read_bytes())
        agent = agent.load_state_dict(state)
        step = int(meta["step"])
        wall_offset = float(meta.get("wall_s", 0.0))
        rng.bit_generator.state = meta["numpy_rng"]
        buffer.load(read_buffer(out, step))
        log(f"resumed {out} at step {step}")
    if step >= cfg.steps:
        log(f"{out}: already at step {step} >= {cfg.steps}")
        return out

    env = make_env(cfg.env_id, seed=cfg.seed + step, train_step=step)  # a curriculum resumes at `step`
    low, high = _bounds(env)
    env.action_space.seed(cfg.seed + step)
    obs, _ = env.reset(seed=cfg.seed * 1_000_003 + step)
    csv_path = out / "evals.csv"
    if not csv_path.exists():
        with open(csv_path, "w", newline="") as f:
            csv.writer(f).writerow(EVAL_COLUMNS)

    hidden = sac_cfg.hidden_dims
    bar = None
    if progress:
        from stratdiff.progress import progress_bar

        bar = progress_bar(total=cfg.steps, initial=step, desc=cfg.env_id, mininterval=30, unit="step")
    t0 = time.time()
    t_block = time.time()
    info = {}
    last_chunk = step
    action = None  # the action for `obs`, drawn with the previous update (one jitted call)
    while step < cfg.steps:
        if step < cfg.start_steps:
            action = rng.uniform(-1.0, 1.0, size=action_dim).astype(np.float32)
        elif action is None:
            action = np.asarray(sample_actions(agent.actor_params, obs[None],
                                               jax.random.fold_in(act_key, step), hidden,
                                               action_dim))[0]
        next_obs, reward, terminated, truncated, _ = env.step(low + (action + 1.0) * 0.5 * (high - low))
        buffer.add(obs, action, reward, next_obs, terminated, truncated and not terminated)
        obs = next_obs
        if terminated or truncated:
            obs, _ = env.reset()
        step += 1
        action = None
        if step >= cfg.start_steps:
            # update, then the action at `step` (key fold_in(act_key, step)) from the new actor
            agent, info, action = agent.update_and_act(buffer.sample(rng, cfg.batch_size),
                                                       obs, jax.random.fold_in(act_key, step))
            action = np.asarray(action)
        if bar is not None:
            bar.update(1)
        if step % cfg.eval_every == 0:
            sps = cfg.eval_every / (time.time() - t_block)
            row = _evaluate(agent, cfg, jax.random.fold_in(eval_key, step))
            row.update({k: float(v) for k, v in info.items()})
            row.update(step=step, wall_s=round(wall_offset + time.time() - t0, 1),
                       episodes=cfg.eval_episodes, steps_per_s=round(sps, 1))
            with open(csv_path, "a", newline="") as f:
                csv.writer(f).writerow([row.get(c, "") for c in EVAL_COLUMNS])
            _save_npz_atomic(out / "buffer" / f"{step:08d}.npz", buffer.slice(last_chunk, step))
            last_chunk = step
            atomic_write_bytes(out / "snapshots" / f"actor_{step:08d}.msgpack",
                          flax.serialization.msgpack_serialize(
                              jax.tree_util.tree_map(np.asarray, agent.actor_params)))
            atomic_write_bytes(ckpt_path, flax.serialization.msgpack_serialize(
                jax.tree_util.tree_map(np.asarray, agent.state_dict())))
            atomic_write_bytes(out / "checkpoint.json", json.dumps({
                "step": step, "wall_s": row["wall_s"], "numpy_rng": rng.bit_generator.state,
                "score": row.get("score"), "stoch_score": row.get("stoch_score")}).encode())
            msg = (f"step {step} return {row['return']:.1f} score {row.get('score', float('nan')):.1f} "
                   f"stoch {row.get('stoch_score', float('nan')):.1f} sps {sps:.0f}")
            if bar is not None:
                bar.write(msg)
            else:
                log(msg)
            t_block = time.time()
    if bar is not None:
        bar.close()
    env.close()
    return out


def _bounds(env) -> tuple[np.ndarray, np.ndarray]:
    """The action space's bounds: the agent acts in [-1, 1], rescaled to them."""
    return (np.asarray(env.action_space.low, np.float32).ravel(),
            np.asarray(env.action_space.high, np.float32).ravel())


def _evaluate(agent: SACAgent, cfg: TrainConfig, key: jax.Array) -> dict:
    hidden, adim = agent.config.hidden_dims, agent.action_dim
    params = agent.actor_params
    env = make_env(cfg.env_id)
    low, high = _bounds(env)
    env.close()

    def scale(a):
        return low + (np.asarray(a) + 1.0) * 0.5 * (high - low)

    def det(obs):
        return scale(deterministic_actions(params, jnp.asarray(obs, jnp.float32), hidden, adim))

    calls = [0]

    def stoch(obs):
        calls[0] += 1
        k = jax.random.fold_in(key, calls[0])
        return scale(sample_actions(params, jnp.asarray(obs, jnp.float32), k, hidden, adim))

    seed = 1_000_000 + cfg.seed * 1000
    d = evaluate(det, cfg.env_id, cfg.eval_episodes, seed)
    s = evaluate(stoch, cfg.env_id, cfg.eval_episodes, seed)
    row = {"return": d["return"], "return_std": d["return_std"], "length": d["length"],
           "stoch_return": s["return"], "stoch_return_std": s["return_std"],
           "stoch_length": s["length"]}
    if "score" in d:
        row["score"], row["stoch_score"] = d["score"], s["score"]
    return row


PACKED_FILES = ("config.json", "checkpoint.json", "checkpoint.msgpack", "evals.csv",
                "medium_selection.json")


def pack_run(run_dir: str | Path, dest: str | Path, snapshots: bool = True) -> Path:
    """Copy what resuming a run needs into `dest` in a small form: the config, the
    checkpoint, the evaluations and the whole replay buffer as one compressed, compact
    `replay.npz` (next observations kept only where an episode ends), and the actor
    snapshots (0.3 MB each for 256x256) unless `snapshots=False`."""
    import shutil

    from stratdiff.behaviour.policies import compact_transitions

    run_dir, dest = Path(run_dir), Path(dest)
    step = read_checkpoint_step(run_dir)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / "replay.tmp.npz"
    np.savez_compressed(tmp, **compact_transitions(read_buffer(run_dir, step)))
    os.replace(tmp, dest / "replay.npz")
    for name in PACKED_FILES:
        if (run_dir / name).exists():
            shutil.copyfile(run_dir / name, dest / name)
    if snapshots:
        (dest / "snapshots").mkdir(exist_ok=True)
        for snap in sorted((run_dir / "snapshots").glob("actor_*.msgpack")):
            if int(snap.stem.split("_")[1]) <= step:
                shutil.copyfile(snap, dest / "snapshots" / snap.name)
    return dest


def unpack_run(packed: str | Path, run_dir: str | Path) -> Path:
    """Inverse of `pack_run`: a run directory that `train` resumes from."""
    import shutil

    from stratdiff.behaviour.policies import expand_transitions

    packed, run_dir = Path(packed), Path(run_dir)
    if (run_dir / "checkpoint.json").exists():
        raise FileExistsError(f"{run_dir}: already holds a run; unpack into an empty folder")
    step = read_checkpoint_step(packed)
    every = json.loads((packed / "config.json").read_text())["train"]["eval_every"]
    with np.load(packed / "replay.npz") as z:
        data = expand_transitions({k: z[k] for k in z.files})
    if len(data["rewards"]) != step:
        raise ValueError(f"{packed / 'replay.npz'}: {len(data['rewards'])} transitions, "
                         f"checkpoint at step {step}")
    (run_dir / "buffer").mkdir(parents=True, exist_ok=True)
    (run_dir / "snapshots").mkdir(exist_ok=True)
    for end in range(every, step + 1, every):
        _save_npz_atomic(run_dir / "buffer" / f"{end:08d}.npz",
                         {k: v[end - every:end] for k, v in data.items()})
    for name in PACKED_FILES:
        if (packed / name).exists():
            shutil.copyfile(packed / name, run_dir / name)
    for snap in sorted((packed / "snapshots").glob("actor_*.msgpack")):
        shutil.copyfile(snap, run_dir / "snapshots" / snap.name)
    return run_dir
