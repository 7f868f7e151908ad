"""`BehaviourModel`: the behaviour diffusion model, its energy net and their optimisers, as one pytree.

Everything here is a pure function of the model (a `flax.struct.PyTreeNode`) and explicit PRNG keys;
the jitted entry points are module-level functions:

- `train_step` / `train_steps`: noise-prediction loss E ||eps_theta(alpha_t a + sigma_t z | s, t) - z||^2,
  t ~ U[1e-3, 1], Adam (1e-4 by default); `train_steps` draws its batches on device inside a scan.
- `sample`: DPM-Solver++ (15 steps, order 2 by default), unguided or energy-guided (Eq. 8-9),
  M samples per state, actions clipped to [-1, 1].
- `support_actions`: K unguided samples per state, batched (for new online states, drawn once
  when a transition is stored); `draw_support_actions` does the same over a whole dataset in chunks.
- `energy_update`: one CEP step (Eq. 7) against labels beta Q(s, a_i) given as an array, and
  `energy_update_with_critic` / `support_q_values`: the same from any critic exposing
  `q_value(observations [m, obs], actions [m, act]) -> [m]`.

Save/load (`save_model`, `load_model`): config.json + behaviour.msgpack + energy.msgpack +
support.npz in one directory, each file written atomically.

Online use (StratDiff, Algorithm 1), all jit-compatible so a stratifier can fuse them in one step:
- when a transition is stored: `support_actions(model, new_obs [n, obs], key)` -> [n, K, act], drawn
  once from the unguided model (also for next observations if wanted) and stored with it;
- each update: `sample(model, batch_obs, key, guidance_scale, num_samples=M)` (the guided a_hat),
  then `energy_update_with_critic(model, agent, batch_obs, batch_support, key)` (one CEP step
  against the current critic; `agent.q_value` is read through `support_q_values`).
Offline dataset states get their support actions from support.npz (rows `indices`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import flax.serialization
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from stratdiff.checkpoint import atomic_write_bytes
from stratdiff.diffusion import schedule
from stratdiff.diffusion.energy import EnergyNet, cep_loss, guided_noise_fn
from stratdiff.diffusion.sampler import SamplerConfig, dpm_solver_pp
from stratdiff.diffusion.scorenet import ScoreNet

FORMAT = "stratdiff.diffusion/1"


@dataclass(frozen=True)
class DiffusionConfig:
    """Behaviour diffusion model + energy guidance (paper Appendix B.3; QGPO/SfBC sizes)."""

    # Behaviour model (ScoreNet) and its training.
    hidden_dims: tuple[int, int, int] = (512, 256, 128)  # U-Net down-block widths
    embed_dim: int = 32  # Fourier time features and state embedding width
    cond_dim: int = 128  # condition embedding width
    fourier_scale: float = 30.0
    lr: float = 1e-4  # Adam
    lr_decay: bool = False  # cosine decay of lr to 0 over `train_steps` (the paper: constant lr)
    batch_size: int = 4096
    train_steps: int = 600_000
    # Energy net f(s, a_t, t) and CEP.
    energy_hidden_dims: tuple[int, ...] = (256, 256, 256, 256)
    energy_lr: float = 3e-4  # Adam
    energy_batch_size: int = 256
    beta: float = 3.0  # inverse temperature of the target exp(beta Q)
    num_support: int | None = None  # K support actions per state; None: the dataset table (16 / 32)
    support_states: int | None = None  # dataset states (random subset) given support actions; None: all
    guidance_scale: float | None = None  # s of Eq. 9; None: the dataset table (Table 4). Set: always wins.
    # Sampler.
    sampler: SamplerConfig = field(default_factory=SamplerConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DiffusionConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"DiffusionConfig: unknown keys {sorted(unknown)}")
        d = dict(d)
        for k in ("hidden_dims", "energy_hidden_dims"):
            if k in d:
                d[k] = tuple(d[k])
        if "sampler" in d and isinstance(d["sampler"], dict):
            d["sampler"] = SamplerConfig(**d["sampler"])
        return cls(**d)


@dataclass(frozen=True)
class DatasetDefaults:
    guidance_scale: float  # Table 4
    num_support: int  # K: 16 locomotion, 32 AntMaze (Appendix B.3)


# Paper Table 4 (guidance scale) and Appendix B.3 (K), keyed by a dataset-name pattern.
# A name matches the longest key whose words appear in it consecutively, after lower-casing and
# mapping "/" and "_" to "-": "hopper-medium-v2", "mujoco/hopper/medium-v0" -> "hopper-medium".
DATASET_DEFAULTS: dict[str, DatasetDefaults] = {
    "walker2d-medium-expert": DatasetDefaults(5.0, 16),
    "walker2d-medium-replay": DatasetDefaults(5.0, 16),
    "walker2d-medium": DatasetDefaults(10.0, 16),
    "halfcheetah-medium-expert": DatasetDefaults(3.0, 16),
    "halfcheetah-medium-replay": DatasetDefaults(8.0, 16),
    "halfcheetah-medium": DatasetDefaults(10.0, 16),
    "hopper-medium-expert": DatasetDefaults(2.0, 16),
    "hopper-medium-replay": DatasetDefaults(3.0, 16),
    "hopper-medium": DatasetDefaults(8.0, 16),
    "antmaze-umaze": DatasetDefaults(3.0, 32),
    "antmaze-medium-play": DatasetDefaults(4.0, 32),
    "antmaze-umaze-diverse": DatasetDefaults(1.0, 32),
    "antmaze-medium-diverse": DatasetDefaults(3.0, 32),
}


def _table_kind(key: str) -> str:
    return "antmaze" if key.startswith("antmaze") else "locomotion"


# Per task kind, for datasets the table does not list (a user's own file): the median of Table 4's
# scales over that kind's datasets and Appendix B.3's K. Locomotion has no single most common scale
# (3, 5, 8 and 10 each appear twice): its median is 5.0; AntMaze's median 3.0 is also its most
# common value (umaze, medium-diverse).
TASK_KIND_DEFAULTS: dict[str, DatasetDefaults] = {
    kind: DatasetDefaults(
        float(statistics.median(d.guidance_scale for k, d in DATASET_DEFAULTS.items() if _table_kind(k) == kind)),
        int(statistics.median(d.num_support for k, d in DATASET_DEFAULTS.items() if _table_kind(k) == kind)))
    for kind in ("locomotion", "antmaze")
}


def dataset_defaults(name: str) -> DatasetDefaults | None:
    """The `DATASET_DEFAULTS` entry for a dataset name (longest matching key), or None."""
    norm = re.sub(r"[/_\s]+", "-", name.lower())
    for key in sorted(DATASET_DEFAULTS, key=len, reverse=True):
        if re.search(rf"(^|-){re.escape(key)}(-|$)", norm):
            return DATASET_DEFAULTS[key]
    return None


def resolve_config(config: DiffusionConfig, dataset_name: str | None) -> DiffusionConfig:
    """Fill `guidance_scale` / `num_support` left as None from the dataset table; set values win."""
    table = dataset_defaults(dataset_name) if dataset_name else None
    updates = {}
    if config.guidance_scale is None and table is not None:
        updates["guidance_scale"] = table.guidance_scale
    if config.num_support is None:
        updates["num_support"] = table.num_support if table is not None else 16
    return dataclasses.replace(config, **updates)


PRESETS: dict[str, DiffusionConfig] = {
    # Appendix B.3: 600k steps, batch 4096, Adam 1e-4; energy Adam 3e-4, batch 256.
    "paper": DiffusionConfig(),
    # This 2-core CPU: the ScoreNet at half width (256, 128, 64: 0.76 instead of 2.5 GFLOP per
    # batch-256 step, ~3x faster to train and to sample), the paper's energy net, batch 256,
    # 20k steps, support actions for 20k dataset states. Measured here (shared machine, 3-4 other
    # jobs): 30-41 steps/s (paper width: 10-14); on Hopper states with a synthetic state-dependent
    # policy (tanh(W s) + N(0, 0.1^2)) samples reach correlation 0.95 with the dataset actions after
    # 2k steps, 0.98 after 8k (loss 0.246 -> 0.136). Toy mixtures: tests/test_diffusion_toy.py.
    "cpu": DiffusionConfig(hidden_dims=(256, 128, 64), batch_size=256, train_steps=20_000, support_states=20_000),
    # Seconds: tiny networks, a few steps (CLI and plumbing checks only).
    "smoke": DiffusionConfig(hidden_dims=(32, 16, 8), embed_dim=8, cond_dim=16, energy_hidden_dims=(32, 32),
                             batch_size=64, train_steps=20, energy_batch_size=16, support_states=64,
                             sampler=SamplerConfig(steps=3)),
}
PRESETS["study"] = PRESETS["cpu"]  # the study keeps the cpu behaviour model (its training steps: SCALE_DEFAULTS)


def _static():
    return flax.struct.field(pytree_node=False)


class BehaviourModel(flax.struct.PyTreeNode):
    """The behaviour model mu_theta(a|s), the energy net f_phi(s, a_t, t) and their Adam states."""

    score_params: Any
    score_opt_state: Any
    energy_params: Any
    energy_opt_state: Any
    step: jax.Array  # behaviour-model updates done
    energy_step: jax.Array  # CEP updates done
    obs_dim: int = _static()
    action_dim: int = _static()
    config: DiffusionConfig = _static()

    @property
    def score_net(self) -> ScoreNet:
        c = self.config
        return ScoreNet(self.action_dim, tuple(c.hidden_dims), c.embed_dim, c.cond_dim, c.fourier_scale)

    @property
    def energy_net(self) -> EnergyNet:
        c = self.config
        return EnergyNet(self.obs_dim, self.action_dim, tuple(c.energy_hidden_dims), c.embed_dim, c.fourier_scale)

    @property
    def score_tx(self) -> optax.GradientTransformation:
        c = self.config
        return optax.adam(optax.cosine_decay_schedule(c.lr, c.train_steps) if c.lr_decay else c.lr)

    @property
    def energy_tx(self) -> optax.GradientTransformation:
        return optax.adam(self.config.energy_lr)

    @classmethod
    def create(cls, key: jax.Array, obs_dim: int, action_dim: int,
               config: DiffusionConfig = DiffusionConfig()) -> BehaviourModel:
        """Fresh networks and Adam states (one jitted init: same key -> same parameters)."""
        return _create(key, obs_dim, action_dim, config)


@partial(jax.jit, static_argnums=(1, 2, 3))
def _create(key, obs_dim: int, action_dim: int, config: DiffusionConfig) -> BehaviourModel:
    shell = BehaviourModel(None, None, None, None, None, None, obs_dim, action_dim, config)
    k_score, k_energy = jax.random.split(key)
    obs, act, t = jnp.zeros((1, obs_dim)), jnp.zeros((1, action_dim)), jnp.full((1,), 0.5)
    score_params = shell.score_net.init(k_score, act, t, obs)
    energy_params = shell.energy_net.init(k_energy, obs, act, t)
    return shell.replace(
        score_params=score_params, score_opt_state=shell.score_tx.init(score_params),
        energy_params=energy_params, energy_opt_state=shell.energy_tx.init(energy_params),
        step=jnp.zeros((), jnp.int32), energy_step=jnp.zeros((), jnp.int32))


# ----------------------------------------------------------------------------------------------
# Behaviour model training
# ----------------------------------------------------------------------------------------------
def score_loss(model: BehaviourModel, params, observations: jax.Array, actions: jax.Array,
               key: jax.Array) -> jax.Array:
    """Noise-prediction loss: mean_batch sum_dims (eps_theta(a_t | s, t) - z)^2, t ~ U[1e-3, 1]."""
    key_t, key_z = jax.random.split(key)
    t = jax.random.uniform(key_t, (actions.shape[0],), minval=schedule.T_MIN, maxval=1.0)
    z = jax.random.normal(key_z, actions.shape)
    eps = model.score_net.apply(params, schedule.perturb(actions, z, t), t, observations)
    return jnp.mean(jnp.sum((eps - z) ** 2, axis=-1))


def _train_step(model: BehaviourModel, observations, actions, key):
    loss, grads = jax.value_and_grad(lambda p: score_loss(model, p, observations, actions, key))(model.score_params)
    updates, opt_state = model.score_tx.update(grads, model.score_opt_state, model.score_params)
    params = optax.apply_updates(model.score_params, updates)
    model = model.replace(score_params=params, score_opt_state=opt_state, step=model.step + 1)
    return model, {"score_loss": loss}


train_step = jax.jit(_train_step)
train_step.__doc__ = "One Adam step of the noise-prediction loss on a given batch -> (model, info)."


def _train_steps(model: BehaviourModel, observations, actions, key, num_steps: int, batch_size: int):
    """`num_steps` updates, each on a batch drawn uniformly (with replacement) from the arrays."""

    def body(m, k):
        k_idx, k_loss = jax.random.split(k)
        idx = jax.random.randint(k_idx, (batch_size,), 0, observations.shape[0])
        m, info = _train_step(m, observations[idx], actions[idx], k_loss)
        return m, info["score_loss"]

    model, losses = jax.lax.scan(body, model, jax.random.split(key, num_steps))
    return model, {"score_loss": jnp.mean(losses), "score_loss_last": losses[-1]}


train_steps = jax.jit(_train_steps, static_argnames=("num_steps", "batch_size"))
train_steps.__doc__ = ("`num_steps` updates on batches drawn on device from (observations, actions) "
                       "-> (model, {score_loss: mean over the steps, score_loss_last}).")


# ----------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------
def _noise_fn(model: BehaviourModel, observations: jax.Array, guidance_scale, m: int = 1):
    """(x, t, sigma_t) -> eps for the solver: condition terms that do not depend on a_t are hoisted.

    `observations` [n, obs] are the distinct states; the solver's `x` holds `m` samples per state,
    [n * m, act], state-major. The terms that depend on the state and time only (the score net's
    condition, the energy net's state slice) are computed once per state and broadcast over its m
    samples: the numbers of repeating the states m times (bit for bit at the `cpu` preset's sizes
    on our CPU; up to float rounding in general) for 1/m of that work.
    """
    net, params = model.score_net, model.score_params
    n, act = observations.shape[0], model.action_dim
    state_emb = net.apply(params, observations, method=ScoreNet.state_embedding)
    grouped = lambda x: jnp.reshape(x, (n, m, act))  # noqa: E731
    flat = lambda x: jnp.reshape(x, (n * m, act))  # noqa: E731

    def eps_fn(x, t):
        time_emb = net.apply(params, jnp.reshape(t, (1,)), method=ScoreNet.time_embedding)
        cond = net.apply(params, state_emb, time_emb, method=ScoreNet.condition)  # [n, C]
        return flat(net.apply(params, grouped(x), cond[:, None, :], method=ScoreNet.denoise))

    if guidance_scale is None:
        return lambda x, t, sigma_t: eps_fn(x, t)

    enet, eparams = model.energy_net, model.energy_params
    state_part = enet.apply(eparams, observations, method=EnergyNet.state_part)[:, None, :]  # [n, 1, W]

    def energy_grad_fn(x, t):
        time_part = enet.apply(eparams, jnp.reshape(t, (1,)), method=EnergyNet.time_part)
        f = lambda a: jnp.sum(enet.apply(eparams, a, state_part, time_part, method=EnergyNet.from_parts))  # noqa: E731
        return flat(jax.grad(f)(grouped(x)))

    return guided_noise_fn(eps_fn, energy_grad_fn, guidance_scale)


def _sample(model: BehaviourModel, observations: jax.Array, key: jax.Array, guidance_scale=None,
            num_samples: int | None = None, sampler: SamplerConfig | None = None) -> jax.Array:
    sampler = model.config.sampler if sampler is None else sampler
    n = observations.shape[0]
    m = 1 if num_samples is None else num_samples
    x_T = jax.random.normal(key, (n * m, model.action_dim))
    actions = dpm_solver_pp(_noise_fn(model, observations, guidance_scale, m), x_T, sampler)
    return actions if num_samples is None else actions.reshape(n, m, model.action_dim)


sample = jax.jit(_sample, static_argnames=("num_samples", "sampler"))
sample.__doc__ = """Actions from the behaviour model, unguided or energy-guided (Eq. 8-9).

sample(model, observations [n, obs], key, guidance_scale=None, num_samples=None, sampler=None)
-> [n, act] (num_samples None) or [n, num_samples, act], clipped to [-1, 1].
guidance_scale None: unguided (the energy net is not evaluated); a float (may vary between calls
without recompiling): eps_guided = eps_theta - scale * sigma_t * grad f. Scale 0.0 gives the
unguided samples bit for bit. sampler None: `model.config.sampler`.
"""


def support_actions(model: BehaviourModel, observations: jax.Array, key: jax.Array, k: int | None = None):
    """K unguided support actions per state, [n, K, act] (jitted; K defaults to config.num_support)."""
    k = model.config.num_support if k is None else k
    if k is None:
        raise ValueError("support_actions: K is not set (config.num_support is None; pass k or resolve_config)")
    return sample(model, observations, key, None, num_samples=k)


def draw_support_actions(model: BehaviourModel, observations: np.ndarray, key: jax.Array, k: int | None = None,
                         chunk: int = 1024, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Support actions for every row of a (host) observation array, in chunks of `chunk` states.

    Returns float32 [N, K, act]. The last chunk is padded so only one shape is compiled.
    Each chunk uses `fold_in(key, chunk_index)`, so results do not depend on what else is drawn.
    """
    n = observations.shape[0]
    k = model.config.num_support if k is None else k
    out = np.empty((n, k, model.action_dim), np.float32)
    for ci, start in enumerate(range(0, n, chunk)):
        rows = observations[start:start + chunk]
        pad = chunk - rows.shape[0]
        if pad:
            rows = np.concatenate([rows, np.repeat(rows[-1:], pad, axis=0)], axis=0)
        acts = support_actions(model, jnp.asarray(rows, jnp.float32), jax.random.fold_in(key, ci), k)
        out[start:start + chunk] = np.asarray(acts)[:chunk - pad]
        if progress is not None:
            progress(min(start + chunk, n), n)
    return out


# ----------------------------------------------------------------------------------------------
# Energy (CEP) training
# ----------------------------------------------------------------------------------------------
def support_q_values(q_fn: Callable[[jax.Array, jax.Array], jax.Array], observations: jax.Array,
                     support: jax.Array, batched: bool = False) -> jax.Array:
    """Q(s, a_i) [n, K] for support actions [n, K, act]: the adapter to any critic.

    Pointwise (default): q_fn(obs [m, obs], act [m, act]) -> [m], e.g. `agent.q_value` (min over the
    ensemble); it is called once on the n*K flattened pairs. batched=True: q_fn(obs [n, obs],
    actions [n, K, act]) -> [n, K] is called as is.
    """
    n, k, d = support.shape
    if batched:
        q = q_fn(observations, support)
        if q.shape != (n, k):
            raise ValueError(f"support_q_values: batched q_fn must map [n, obs], [n, K, act] -> [n, K] = {(n, k)}; "
                             f"got output shape {q.shape}")
        return q
    q = q_fn(jnp.repeat(observations, k, axis=0), support.reshape(n * k, d))
    if q.shape != (n * k,):
        raise ValueError(f"support_q_values: q_fn must map [m, obs], [m, act] -> [m]; got output shape {q.shape} "
                         f"for m = {n * k}")
    return q.reshape(n, k)


def _energy_update(model: BehaviourModel, observations, support, q_values, key):
    def loss_fn(p):
        return cep_loss(model.energy_net, p, observations, support, q_values, key, model.config.beta)

    (_, info), grads = jax.value_and_grad(loss_fn, has_aux=True)(model.energy_params)
    updates, opt_state = model.energy_tx.update(grads, model.energy_opt_state, model.energy_params)
    params = optax.apply_updates(model.energy_params, updates)
    return model.replace(energy_params=params, energy_opt_state=opt_state, energy_step=model.energy_step + 1), info


energy_update = jax.jit(_energy_update)
energy_update.__doc__ = """One CEP step (Eq. 7) of the energy net.

energy_update(model, observations [n, obs], support [n, K, act], q_values [n, K], key) -> (model, info);
labels are softmax(beta * q_values) over the K support actions of each state.
"""


def _energy_update_with_critic(model: BehaviourModel, critic, observations, support, key):
    q = support_q_values(critic.q_value, observations, support)
    return _energy_update(model, observations, support, q, key)


energy_update_with_critic = jax.jit(_energy_update_with_critic)
energy_update_with_critic.__doc__ = """One CEP step with labels beta * critic.q_value(s, a_i).

`critic` is any pytree (e.g. an agent) with `q_value(obs [m, obs], act [m, act]) -> [m]`; it is a traced
argument, so a new critic (new parameters) does not recompile.
"""


# ----------------------------------------------------------------------------------------------
# Save / load
# ----------------------------------------------------------------------------------------------
def save_model(directory: str | os.PathLike, model: BehaviourModel, support: dict[str, np.ndarray] | None = None,
               meta: dict | None = None) -> Path:
    """Write config.json, behaviour.msgpack, energy.msgpack and (if given) support.npz to `directory`.

    `support` maps a name (e.g. "observations", "next_observations") to a [N, K, act] array;
    `meta` is any JSON-able dict (dataset, normaliser, training log). Each file is written atomically.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    behaviour = {"params": model.score_params, "opt_state": model.score_opt_state, "step": model.step}
    energy = {"params": model.energy_params, "opt_state": model.energy_opt_state, "step": model.energy_step}
    atomic_write_bytes(d / "behaviour.msgpack", flax.serialization.to_bytes(behaviour))
    atomic_write_bytes(d / "energy.msgpack", flax.serialization.to_bytes(energy))
    if support is not None:
        import io

        buf = io.BytesIO()
        arrays = {k: np.asarray(v) for k, v in support.items()}
        np.savez(buf, **{k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in arrays.items()})
        atomic_write_bytes(d / "support.npz", buf.getvalue())
    cfg = {"format": FORMAT, "obs_dim": model.obs_dim, "action_dim": model.action_dim,
           "config": model.config.to_dict(), "meta": meta or {}}
    atomic_write_bytes(d / "config.json", json.dumps(cfg, indent=2, sort_keys=True).encode())
    return d


def load_model(directory: str | os.PathLike) -> tuple[BehaviourModel, dict[str, np.ndarray], dict]:
    """Read what `save_model` wrote -> (model, support arrays (may be empty), meta)."""
    d = Path(directory)
    cfg_path = d / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"load_model: {cfg_path} not found (not a saved diffusion model directory)")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("format") != FORMAT:
        raise ValueError(f"load_model: {cfg_path} has format {cfg.get('format')!r}, expected {FORMAT!r}")
    config = DiffusionConfig.from_dict(cfg["config"])
    model = BehaviourModel.create(jax.random.PRNGKey(0), cfg["obs_dim"], cfg["action_dim"], config)
    behaviour = {"params": model.score_params, "opt_state": model.score_opt_state, "step": model.step}
    energy = {"params": model.energy_params, "opt_state": model.energy_opt_state, "step": model.energy_step}
    behaviour = flax.serialization.from_bytes(behaviour, (d / "behaviour.msgpack").read_bytes())
    energy = flax.serialization.from_bytes(energy, (d / "energy.msgpack").read_bytes())
    model = model.replace(score_params=behaviour["params"], score_opt_state=behaviour["opt_state"],
                          step=jnp.asarray(behaviour["step"]), energy_params=energy["params"],
                          energy_opt_state=energy["opt_state"], energy_step=jnp.asarray(energy["step"]))
    support = {}
    if (d / "support.npz").is_file():
        with np.load(d / "support.npz") as z:
            support = {k: z[k] for k in z.files}
    return model, support, cfg.get("meta", {})
