"""EDIS (Liu et al. 2024, arXiv 2407.12448): energy-guided diffusion sampling of transitions.

EDIS changes where the offline share of each online batch comes from, not the losses: a
diffusion model over whole transitions x = (s, a, r, s') is tilted by three energies towards
the online distribution, and its samples replace the real offline data online.

Target (EDIS Section 4): q(s, a, s') ∝ p_D(s, a, s') · e^{f_S(s)} · e^{f_P(s, a)} · e^{f_T(s, a, r, s')}
with, at the optimum, e^{f_S} ∝ d^pi(s) / p_D(s) (state), e^{f_P} ∝ pi(a|s) / p_D(a|s) (policy) and
e^{f_T} ∝ T(s'|s, a) / p_D(s'|s, a) (transition). Here f = -E (high where the sample looks like
the target), the sign convention of `stratdiff.diffusion.energy`.

Every `refresh_every` (R) online steps, `EDISSource.step` runs one refresh:
  1. retrain the generator from a fresh initialisation on offline + online transitions
     (noise prediction on the VP-SDE, `train_generator`);
  2. draw negatives from it: unconditional samples (state energy), samples with s fixed to
     online states (policy energy) and with (s, a) fixed to online pairs (transition energy),
     `num_negatives` per positive; positives are online transitions, with a ~ pi(.|s) for the
     policy energy;
  3. train the three energies (kept across refreshes) with InfoNCE at a random diffusion time
     shared by a positive and its negatives (`energy_loss`);
  4. regenerate the pool: `pool_size` guided samples; each energy's gradient is masked to its
     own slice (f_S -> s, f_P -> a, f_T -> s') and clipped, then added to the score
     (eps_guided = eps - sigma_t * sum_k w_k clip(mask_k ⊙ grad f_k): `guidance_gradient`,
     `sample_transitions`).
The pool is an `OfflineBuffer` (device pytree, `.sample(key, n) -> Batch`, source = OFFLINE), so
the runner's mixed batch draws the generated share from it exactly as it draws real offline data.
Before the first refresh (no online data yet) the offline share is the real offline data, as in
the official code, whose first R online steps replay offline + online data.

Checkpoints (`state_dict`): the energies and their Adam states, the refresh count and the pool
itself (paper scale: 100k transitions, ~10-30 MB), so a resumed run continues with the same pool
and the next refresh draws the same numbers; the generator is retrained from scratch at each
refresh, so it is not saved.

Generated samples: actions clipped to [-1, 1]; rewards are in the run's transformed units (the
generator learns transformed rewards); masks = 1 (EDIS does not model terminals by default;
`model_terminals=True` adds a terminal coordinate, thresholded at 0.5); mc_returns: Cal-QL's
calibration needs a return-to-go per sample and a generated transition has no trajectory. We
follow the official EDIS code (critic-free): mc_return = 0 (`generated_mc_return="zero"`), so
Cal-QL's bound becomes max(Q, 0) on generated samples. `"uncalibrated"` (-1e30) switches the
bound off for them instead (max(Q, -1e30) = Q).

Differences from the EDIS paper / official code (github.com/liuxhym/EDIS), all deliberate:
- Diffusion: our VP-SDE (linear beta 0.1 -> 20) with noise prediction and DPM-Solver++ (2S,
  `sampler_steps` network evaluations, 128 at `paper`) instead of EDM (Karras et al.) with its
  stochastic Heun sampler (128 steps). The denoiser keeps EDIS's residual MLP (width 1024, 6
  blocks, random Fourier time features -> 256-d embedding, ReLU, no layer norm at `paper`).
  `train_steps` = 30k per refresh at `paper` (the official IQL locomotion configs; its Cal-QL
  configs use 10k, some AntMaze ones 50k), batch 256, lr 3e-4,
  Adam with cosine decay and gradient-norm clipping 1.0 as the official trainer; EMA of the
  weights updated every step (decay `ema_decay`) instead of every 10 steps; AdamW's weight decay
  is 0 in the official configs, so plain Adam.
- Inputs are standardised per coordinate with statistics of the offline dataset, fitted once
  when the source is built (the official code refits on the replay buffer at each refresh), so
  the energies, which persist across refreshes, always see the same coordinates. The sampler
  clips each data prediction to the standardised data range widened by half its width on each
  side (the official 'standard' normaliser does not clip; its min-max one clamps to [-1, 1]).
- Energy inputs follow the paper's arguments: f_S(s_t, t), f_P(s_t, a_t, t), f_T(s_t, a_t, r_t,
  s'_t, t) (the official code feeds the whole transition to each). 3 x 256 ReLU MLPs, Adam 1e-3.
  No spectral norm (the official code has a flag for it).
- Negatives: the official code takes them from partially denoised sampler states; here they are
  clean generator samples perturbed by the forward process to the same t as their positive
  (CEP-style; the InfoNCE optimum is then the ratio above). Conditional negatives (fixed s, or
  fixed s, a) are drawn by inpainting: the known coordinates' data prediction is replaced by the
  known values at every solver step. One negative set is drawn per refresh and the energies
  take `energy_steps` steps over it (the official code redraws negatives at each of its 20 steps).
- Guidance weights `state_scale`, `policy_scale`, `transition_scale` default to 1 (the exact
  product of ratios); the official code weights its EDM-form gradients (state / transition /
  policy) 1 / 0.1-0.2 / 0.1-0.2 on locomotion and 0.01 each on AntMaze.
  Clipping: each energy's masked gradient per sample to norm <= guidance_clip * sqrt(slice size)
  (the official code clips the summed gradient to 10 * sqrt(dim)).
- UTD: the official code makes 15-20 extra updates right after each refresh; here the run's
  `utd` applies at every step, as in the StratDiff paper's comparison (UTD 1).
"""

from __future__ import annotations

import dataclasses
import time
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from stratdiff.data import OfflineBuffer
from stratdiff.diffusion import schedule
from stratdiff.diffusion.sampler import SamplerConfig, dpm_solver_pp
from stratdiff.nn.time import FourierFeatures
from stratdiff.progress import progress_bar

MC_RETURN_CHOICES = {"zero": 0.0, "uncalibrated": -1e30}
ENERGIES = ("state", "policy", "transition")


@dataclasses.dataclass(frozen=True)
class EDISConfig:
    """EDIS options (`--set source.FIELD=VALUE`); the scale preset fills what the method preset leaves."""

    refresh_every: int = 10_000  # R: online steps between refreshes (retrain generator + energies, new pool)
    pool_size: int = 100_000  # generated transitions per refresh
    # generator: residual MLP denoiser over standardised (s, a, r, s'[, terminal])
    width: int = 1024
    num_layers: int = 6
    time_dim: int = 256  # time embedding width (random Fourier features -> MLP)
    fourier_dim: int = 16
    train_steps: int = 30_000  # per refresh, from a fresh initialisation
    batch_size: int = 256
    lr: float = 3e-4  # Adam, cosine-decayed to 0 over train_steps
    grad_clip_norm: float = 1.0
    ema_decay: float = 0.995
    sampler_steps: int = 128  # DPM-Solver++ network evaluations per sample
    sample_chunk: int = 10_000  # samples per jitted sampling call
    model_terminals: bool = False
    # energies
    energy_hidden_dims: tuple[int, ...] = (256, 256, 256)
    energy_lr: float = 1e-3
    energy_steps: int = 1000  # per refresh
    energy_batch_size: int = 256  # positives per energy step (each with num_negatives negatives)
    energy_positives: int = 4096  # online transitions drawn per refresh as positives
    num_negatives: int = 10
    guidance: bool = True  # False: unguided pool (energies still trained and logged)
    state_scale: float = 1.0
    policy_scale: float = 1.0
    transition_scale: float = 1.0
    guidance_clip: float = 10.0  # per energy: ||grad|| <= guidance_clip * sqrt(slice size)
    generated_mc_return: str = "zero"  # zero (official EDIS code) | uncalibrated

    def __post_init__(self):
        if self.generated_mc_return not in MC_RETURN_CHOICES:
            raise ValueError(f"source.generated_mc_return must be one of {sorted(MC_RETURN_CHOICES)}, "
                             f"got {self.generated_mc_return!r}")
        for name in ("refresh_every", "pool_size", "train_steps", "sampler_steps", "num_negatives",
                     "energy_positives", "energy_batch_size", "sample_chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"source.{name} must be >= 1, got {getattr(self, name)}")


# Per run scale. `paper` keeps the defaults (EDIS's sizes); `cpu` is sized for a 2-core CPU
# (one refresh ~ a minute), `smoke` for tests (seconds).
SCALE_DEFAULTS: dict[str, dict[str, Any]] = {
    "smoke": dict(width=32, num_layers=2, time_dim=16, fourier_dim=8, train_steps=30, batch_size=64,
                  sampler_steps=4, sample_chunk=512, energy_hidden_dims=(32, 32, 32), energy_steps=10,
                  energy_batch_size=16, energy_positives=64, num_negatives=4),
    "cpu": dict(width=256, num_layers=3, time_dim=64, train_steps=5000, sampler_steps=16, sample_chunk=5000,
                energy_steps=300, energy_positives=1024, num_negatives=8),
    "paper": dict(),
}
SCALE_DEFAULTS["study"] = SCALE_DEFAULTS["cpu"]  # the study preset: EDIS's networks at the cpu sizes


# ============================================================================ layout
@dataclasses.dataclass(frozen=True)
class Layout:
    """Coordinates of a transition vector: [s (obs), a (act), r (1), s' (obs), terminal (0 or 1)]."""

    obs_dim: int
    act_dim: int
    terminals: bool = False

    @property
    def dim(self) -> int:
        return 2 * self.obs_dim + self.act_dim + 1 + int(self.terminals)

    @property
    def s(self) -> slice:
        return slice(0, self.obs_dim)

    @property
    def a(self) -> slice:
        return slice(self.obs_dim, self.obs_dim + self.act_dim)

    @property
    def r(self) -> int:
        return self.obs_dim + self.act_dim

    @property
    def s2(self) -> slice:
        return slice(self.r + 1, self.r + 1 + self.obs_dim)

    def energy_inputs(self, name: str) -> int:
        """Energies read a prefix of x: f_S s, f_P (s, a), f_T (s, a, r, s')."""
        return {"state": self.obs_dim, "policy": self.obs_dim + self.act_dim,
                "transition": 2 * self.obs_dim + self.act_dim + 1}[name]

    def guided(self, name: str) -> slice:
        """The slice each energy's gradient is applied to."""
        return {"state": self.s, "policy": self.a, "transition": self.s2}[name]

    def pack(self, obs, act, rew, next_obs, masks, xp=np):
        parts = [obs, act, rew[:, None], next_obs]
        if self.terminals:
            parts.append((1.0 - masks)[:, None])
        return xp.concatenate([xp.asarray(p, xp.float32) for p in parts], axis=-1)


# ============================================================================ networks
class ResidualMLPDenoiser(nn.Module):
    """EDIS/SynthER's denoiser: [x, time embedding] -> Linear(width) -> num_layers x (h + Linear(ReLU(h)))
    -> ReLU -> Linear(dim). Predicts the noise eps(x_t, t)."""

    dim: int
    width: int
    num_layers: int
    time_dim: int
    fourier_dim: int

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
        t = jnp.broadcast_to(t, x.shape[:-1])
        te = FourierFeatures(self.fourier_dim, 16.0)(t)
        te = nn.Dense(self.time_dim)(nn.gelu(nn.Dense(self.time_dim)(te)))
        h = nn.Dense(self.width)(jnp.concatenate([x, te], axis=-1))
        for _ in range(self.num_layers):
            h = h + nn.Dense(self.width)(nn.relu(h))
        return nn.Dense(self.dim)(nn.relu(h))


class SliceEnergy(nn.Module):
    """f(inputs_t, t): ReLU MLP over [inputs, Fourier time features] -> scalar (high = target-like)."""

    hidden_dims: tuple[int, ...]

    @nn.compact
    def __call__(self, inputs: jax.Array, t: jax.Array) -> jax.Array:
        t = jnp.broadcast_to(t, inputs.shape[:-1])
        h = jnp.concatenate([inputs, FourierFeatures(16, 16.0)(t)], axis=-1)
        for w in self.hidden_dims:
            h = nn.relu(nn.Dense(w)(h))
        return nn.Dense(1)(h)[..., 0]


def _denoiser(cfg: EDISConfig, layout: Layout) -> ResidualMLPDenoiser:
    return ResidualMLPDenoiser(layout.dim, cfg.width, cfg.num_layers, cfg.time_dim, cfg.fourier_dim)


def _energy_net(cfg: EDISConfig) -> SliceEnergy:
    return SliceEnergy(tuple(cfg.energy_hidden_dims))


def energy_values(cfg: EDISConfig, layout: Layout, params: dict, x: jax.Array, t: jax.Array) -> dict:
    """{name: f_name(x_t, t)} for the three energies; x [..., dim] (standardised), t broadcast."""
    net = _energy_net(cfg)
    return {k: net.apply(params[k], x[..., :layout.energy_inputs(k)], t) for k in ENERGIES}


def init_energies(key: jax.Array, cfg: EDISConfig, layout: Layout) -> dict:
    net = _energy_net(cfg)
    keys = jax.random.split(key, len(ENERGIES))
    return {k: net.init(kk, jnp.zeros((1, layout.energy_inputs(k))), jnp.zeros((1,)))
            for k, kk in zip(ENERGIES, keys)}


def energy_tx(cfg: EDISConfig) -> optax.GradientTransformation:
    return optax.adam(cfg.energy_lr)


# ============================================================================ generator
def _generator_tx(cfg: EDISConfig):
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm),
                       optax.adam(optax.cosine_decay_schedule(cfg.lr, cfg.train_steps)))


def denoising_loss(cfg: EDISConfig, layout: Layout, params, x0: jax.Array, key: jax.Array) -> jax.Array:
    """E_{t, z} ||eps_theta(alpha_t x0 + sigma_t z, t) - z||^2, t ~ U[1e-3, 1] (summed over coordinates)."""
    k_t, k_z = jax.random.split(key)
    t = jax.random.uniform(k_t, (x0.shape[0],), minval=schedule.T_MIN, maxval=1.0)
    z = jax.random.normal(k_z, x0.shape)
    eps = _denoiser(cfg, layout).apply(params, schedule.perturb(x0, z, t), t)
    return jnp.mean(jnp.sum((eps - z) ** 2, axis=-1))


@partial(jax.jit, static_argnums=(1, 2))
def _generator_init(key, cfg: EDISConfig, layout: Layout):
    params = _denoiser(cfg, layout).init(key, jnp.zeros((1, layout.dim)), jnp.zeros((1,)))
    return {"params": params, "ema": params, "opt": _generator_tx(cfg).init(params)}


@partial(jax.jit, static_argnums=(1, 2, 5))
def _generator_chunk(state, cfg: EDISConfig, layout: Layout, data: jax.Array, key: jax.Array, n: int):
    """`n` Adam steps on batches drawn from `data` [N, dim] (standardised); EMA updated every step."""
    tx = _generator_tx(cfg)

    def body(st, k):
        k_idx, k_loss = jax.random.split(k)
        x0 = data[jax.random.randint(k_idx, (cfg.batch_size,), 0, data.shape[0])]
        loss, grads = jax.value_and_grad(lambda p: denoising_loss(cfg, layout, p, x0, k_loss))(st["params"])
        updates, opt = tx.update(grads, st["opt"], st["params"])
        params = optax.apply_updates(st["params"], updates)
        ema = jax.tree.map(lambda e, p: cfg.ema_decay * e + (1.0 - cfg.ema_decay) * p, st["ema"], params)
        return {"params": params, "ema": ema, "opt": opt}, loss

    return jax.lax.scan(body, state, jax.random.split(key, n))


def train_generator(key: jax.Array, cfg: EDISConfig, layout: Layout, data: jax.Array,
                    chunk: int = 1000, progress: bool = False) -> tuple[Any, np.ndarray]:
    """A fresh generator trained `cfg.train_steps` steps on `data`; returns (EMA params, loss per chunk).

    Steps run in equal jitted chunks (the largest divisor of train_steps <= `chunk`: one compilation).
    """
    state = _generator_init(jax.random.fold_in(key, 0), cfg, layout)
    n = max(d for d in range(1, min(chunk, cfg.train_steps) + 1) if cfg.train_steps % d == 0)
    losses, done = [], 0
    bar = progress_bar(total=cfg.train_steps, desc="EDIS generator", disable=not progress, dynamic_ncols=True,
                       leave=False)
    while done < cfg.train_steps:
        state, loss = _generator_chunk(state, cfg, layout, data, jax.random.fold_in(key, done + 1), n)
        losses.append(float(jnp.mean(loss)))
        done += n
        bar.update(n)
        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    bar.close()
    return state["ema"], np.asarray(losses)


# ============================================================================ sampling
def _clip_rows(g: jax.Array, max_norm: float) -> jax.Array:
    norm = jnp.linalg.norm(g, axis=-1, keepdims=True)
    return g * jnp.minimum(1.0, max_norm / jnp.maximum(norm, 1e-12))


def guidance_gradient(cfg: EDISConfig, layout: Layout, energy_params: dict, x: jax.Array, t) -> jax.Array:
    """sum_k w_k clip(mask_k ⊙ grad_x f_k(x, t)): each energy moves only its own slice (s, a or s')."""
    net = _energy_net(cfg)
    weights = {"state": cfg.state_scale, "policy": cfg.policy_scale, "transition": cfg.transition_scale}
    total = jnp.zeros_like(x)
    for k in ENERGIES:
        if weights[k] == 0.0:
            continue
        n_in = layout.energy_inputs(k)
        g = jax.grad(lambda inp, p=energy_params[k]: jnp.sum(net.apply(p, inp, t)))(x[:, :n_in])
        sl = layout.guided(k)
        g_slice = _clip_rows(g[:, sl], cfg.guidance_clip * float(np.sqrt(sl.stop - sl.start)))
        total = total.at[:, sl].add(weights[k] * g_slice)
    return total


@partial(jax.jit, static_argnums=(1, 2, 9))
def sample_transitions(gen_params, cfg: EDISConfig, layout: Layout, energy_params, key: jax.Array,
                       known: jax.Array, known_mask: jax.Array, lo: jax.Array, hi: jax.Array,
                       guided: bool) -> jax.Array:
    """Standardised transitions [n, dim] (n = known.shape[0]) from DPM-Solver++.

    `known` [n, dim] / `known_mask` [dim] (1 where fixed): inpainting, the data prediction of the
    masked coordinates is the known value at every solver step (all-zero mask: unconditional).
    `guided`: add the energies' masked, clipped gradients (eps - sigma_t * guidance).
    Every data prediction is clipped to the box [lo, hi] (the training data's range, with a
    margin): at t near 1, x0 = (x - sigma_t eps) / alpha_t amplifies a noise error ~150-fold.
    """
    net = _denoiser(cfg, layout)
    m = known_mask.astype(jnp.float32)

    def noise_fn(x, t, sigma_t):
        eps = net.apply(gen_params, x, t)
        if guided:
            eps = eps - sigma_t * guidance_gradient(cfg, layout, energy_params, x, t)
        al = schedule.alpha(t)
        x0 = jnp.clip((x - sigma_t * eps) / al, lo, hi)
        x0 = m * known + (1.0 - m) * x0
        return (x - al * x0) / sigma_t

    x_T = jax.random.normal(key, known.shape)
    x = dpm_solver_pp(noise_fn, x_T, SamplerConfig(steps=cfg.sampler_steps, order=2, clip=None))
    return m * known + (1.0 - m) * x


def sample_many(gen_params, cfg: EDISConfig, layout: Layout, energy_params, key: jax.Array, n: int,
                guided: bool, box: tuple[np.ndarray, np.ndarray], known: np.ndarray | None = None,
                known_mask: np.ndarray | None = None) -> np.ndarray:
    """`n` standardised samples in chunks of `cfg.sample_chunk` (the last chunk padded: one compilation);
    `box` = (lo, hi) bounds of the data predictions (`sample_transitions`)."""
    c = min(cfg.sample_chunk, n)
    known = np.zeros((n, layout.dim), np.float32) if known is None else np.asarray(known, np.float32)
    mask = np.zeros(layout.dim, np.float32) if known_mask is None else np.asarray(known_mask, np.float32)
    out = []
    for i, start in enumerate(range(0, n, c)):
        block = known[start:start + c]
        pad = c - block.shape[0]
        if pad:
            block = np.concatenate([block, np.zeros((pad, layout.dim), np.float32)])
        x = sample_transitions(gen_params, cfg, layout, energy_params, jax.random.fold_in(key, i),
                               jnp.asarray(block), jnp.asarray(mask), jnp.asarray(box[0]), jnp.asarray(box[1]),
                               guided)
        out.append(np.asarray(x)[:c - pad])
    return np.concatenate(out)


# ============================================================================ energies
def energy_loss(cfg: EDISConfig, layout: Layout, params: dict, positives: dict, negatives: dict,
                key: jax.Array) -> tuple[jax.Array, dict]:
    """InfoNCE per energy at a random diffusion time (EDIS's contrastive energy training).

    positives[k] [b, dim], negatives[k] [b, K, dim] (standardised, clean). One t ~ U[1e-3, 1] per
    positive, shared with its K negatives; every sample gets its own forward noise. The loss is
    -log softmax(f(x_t^+), f(x_t^-_1), ..., f(x_t^-_K))[positive], averaged; summed over energies.
    """
    net = _energy_net(cfg)
    total, info = 0.0, {}
    for i, k in enumerate(ENERGIES):
        kk = jax.random.fold_in(key, i)
        k_t, k_p, k_n = jax.random.split(kk, 3)
        pos, neg = positives[k], negatives[k]
        b = pos.shape[0]
        t = jax.random.uniform(k_t, (b,), minval=schedule.T_MIN, maxval=1.0)
        pos_t = schedule.perturb(pos, jax.random.normal(k_p, pos.shape), t)
        neg_t = schedule.perturb(neg, jax.random.normal(k_n, neg.shape), t[:, None])
        n_in = layout.energy_inputs(k)
        f_pos = net.apply(params[k], pos_t[:, :n_in], t)  # [b]
        f_neg = net.apply(params[k], neg_t[..., :n_in], t[:, None])  # [b, K]
        logits = jnp.concatenate([f_pos[:, None], f_neg], axis=1)
        loss = -jnp.mean(jax.nn.log_softmax(logits, axis=1)[:, 0])
        total = total + loss
        info[f"energy_loss_{k}"] = loss
        info[f"energy_acc_{k}"] = jnp.mean(jnp.argmax(logits, axis=1) == 0)
    return total, info


@partial(jax.jit, static_argnums=(1, 2, 7))
def _energy_steps(params, cfg: EDISConfig, layout: Layout, opt_state, positives: dict, negatives: dict,
                  key: jax.Array, n: int):
    """`n` Adam steps on minibatches of `energy_batch_size` (positive, K negatives) groups."""
    tx = energy_tx(cfg)
    total = positives["state"].shape[0]

    def body(carry, k):
        p, o = carry
        k_idx, k_loss = jax.random.split(k)
        idx = jax.random.randint(k_idx, (cfg.energy_batch_size,), 0, total)
        pos = {e: v[idx] for e, v in positives.items()}
        neg = {e: v[idx] for e, v in negatives.items()}
        (_, info), grads = jax.value_and_grad(
            lambda q: energy_loss(cfg, layout, q, pos, neg, k_loss), has_aux=True)(p)
        updates, o = tx.update(grads, o, p)
        return (optax.apply_updates(p, updates), o), info

    (params, opt_state), info = jax.lax.scan(body, (params, opt_state), jax.random.split(key, n))
    return params, opt_state, jax.tree.map(jnp.mean, info)


def draw_negatives(gen_params, cfg: EDISConfig, layout: Layout, positives: np.ndarray,
                   key: jax.Array, box: tuple[np.ndarray, np.ndarray]) -> dict:
    """K generator samples per positive: unconditional (state), s fixed (policy), (s, a) fixed (transition)."""
    n, k = positives.shape[0], cfg.num_negatives
    rep = np.repeat(positives, k, axis=0)
    mask_s = np.zeros(layout.dim, np.float32)
    mask_s[layout.s] = 1.0
    mask_sa = mask_s.copy()
    mask_sa[layout.a] = 1.0
    keys = jax.random.split(key, 3)
    out = {
        "state": sample_many(gen_params, cfg, layout, None, keys[0], n * k, False, box),
        "policy": sample_many(gen_params, cfg, layout, None, keys[1], n * k, False, box, rep, mask_s),
        "transition": sample_many(gen_params, cfg, layout, None, keys[2], n * k, False, box, rep, mask_sa),
    }
    return {name: v.reshape(n, k, layout.dim) for name, v in out.items()}


# ============================================================================ the source
def _online_arrays(online) -> dict[str, np.ndarray]:
    """Every stored online transition (the running episode included: the generator and the
    energies need no return-to-go)."""
    filled = min(online.count, online.capacity)
    return {k: getattr(online, k)[:filled] for k in ("observations", "actions", "rewards", "next_observations",
                                                      "masks")}


class EDISSource:
    """The EDIS batch source: fills the offline share of online batches from the generated pool."""

    def __init__(self, cfg: EDISConfig, layout: Layout, offline: OfflineBuffer, mean: np.ndarray,
                 std: np.ndarray, box: tuple[np.ndarray, np.ndarray], key: jax.Array, progress: bool = False):
        self.cfg, self.layout, self.offline = cfg, layout, offline
        self.mean, self.std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        self.box = (np.asarray(box[0], np.float32), np.asarray(box[1], np.float32))  # standardised units
        self.key = key
        self.progress = progress
        self.energy_params = init_energies(jax.random.fold_in(key, 0), cfg, layout)
        self.energy_opt = energy_tx(cfg).init(self.energy_params)
        self.refreshes = 0
        self.pool: OfflineBuffer | None = None
        self.generator = None  # EMA parameters of the last refresh's generator (diagnostics; not checkpointed)

    # ---- the runner's interface
    def offline_part(self, offline: OfflineBuffer) -> OfflineBuffer:
        """What the offline share of a batch is drawn from: the pool once it exists."""
        return offline if self.pool is None else self.pool

    def step(self, online_step: int, agent, online) -> tuple[EDISSource, dict[str, float]]:
        """Refresh when `online_step` is a positive multiple of R and online data exists."""
        if online_step <= 0 or online_step % self.cfg.refresh_every or online.count == 0:
            return self, {}
        return self, self.refresh(agent, online)

    def state_dict(self) -> dict[str, Any]:
        pool = self.pool if self.pool is not None else self._empty_pool()
        return {"energy_params": self.energy_params, "energy_opt": self.energy_opt,
                "refreshes": self.refreshes, "active": int(self.pool is not None),
                "pool": {k: getattr(pool, k) for k in ("observations", "actions", "rewards", "next_observations",
                                                        "masks", "mc_returns")}}

    def load_state_dict(self, state: dict[str, Any]) -> EDISSource:
        self.energy_params = state["energy_params"]
        self.energy_opt = state["energy_opt"]
        self.refreshes = int(state["refreshes"])
        self.pool = None
        if int(state["active"]):
            self.pool = OfflineBuffer(**{k: jnp.asarray(v) for k, v in state["pool"].items()},
                                      size=self.cfg.pool_size)
        return self

    # ---- pieces
    def _empty_pool(self) -> OfflineBuffer:
        n, o, a = self.cfg.pool_size, self.layout.obs_dim, self.layout.act_dim
        z = jnp.zeros
        return OfflineBuffer(z((n, o)), z((n, a)), z(n), z((n, o)), z(n), z(n), size=n)

    def standardise(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std

    def unstandardise(self, x: np.ndarray) -> np.ndarray:
        return x * self.std + self.mean

    def to_pool(self, x: np.ndarray) -> OfflineBuffer:
        """Standardised samples -> an OfflineBuffer of transitions (actions clipped to [-1, 1])."""
        raw = self.unstandardise(x)
        L = self.layout
        masks = (1.0 - (raw[:, -1] > 0.5)).astype(np.float32) if L.terminals else np.ones(len(raw), np.float32)
        mc = np.full(len(raw), MC_RETURN_CHOICES[self.cfg.generated_mc_return], np.float32)
        return OfflineBuffer(
            observations=jnp.asarray(raw[:, L.s]), actions=jnp.asarray(np.clip(raw[:, L.a], -1.0, 1.0)),
            rewards=jnp.asarray(raw[:, L.r]), next_observations=jnp.asarray(raw[:, L.s2]),
            masks=jnp.asarray(masks), mc_returns=jnp.asarray(mc), size=len(raw))

    def refresh(self, agent, online) -> dict[str, float]:
        """Retrain the generator on offline + online data, retrain the energies, regenerate the pool."""
        t0 = time.perf_counter()
        cfg, L = self.cfg, self.layout
        self.refreshes += 1
        key = jax.random.fold_in(self.key, self.refreshes)
        k_gen, k_pos, k_pi, k_neg, k_energy, k_pool = jax.random.split(key, 6)
        on = _online_arrays(online)
        off = self.offline
        data = np.concatenate([
            L.pack(np.asarray(off.observations), np.asarray(off.actions), np.asarray(off.rewards),
                   np.asarray(off.next_observations), np.asarray(off.masks)),
            L.pack(on["observations"], on["actions"], on["rewards"], on["next_observations"], on["masks"]),
        ])
        gen_params, gen_losses = train_generator(k_gen, cfg, L, jnp.asarray(self.standardise(data)),
                                                 progress=self.progress)
        self.generator = gen_params
        # positives: online transitions; for the policy energy with a ~ pi(.|s) of the current policy
        rows = np.asarray(jax.random.randint(k_pos, (cfg.energy_positives,), 0, len(on["rewards"])))
        pos_raw = L.pack(*(on[k][rows] for k in ("observations", "actions", "rewards", "next_observations",
                                                   "masks")))
        pi_raw = pos_raw.copy()
        pi_raw[:, L.a] = np.asarray(agent.act(jnp.asarray(on["observations"][rows]), k_pi, False))
        pos = self.standardise(pos_raw)
        positives = {"state": pos, "policy": self.standardise(pi_raw), "transition": pos}
        negatives = draw_negatives(gen_params, cfg, L, pos, k_neg, self.box)
        self.energy_params, self.energy_opt, info = _energy_steps(
            self.energy_params, cfg, L, self.energy_opt, {k: jnp.asarray(v) for k, v in positives.items()},
            {k: jnp.asarray(v) for k, v in negatives.items()}, k_energy, cfg.energy_steps)
        samples = sample_many(gen_params, cfg, L, self.energy_params, k_pool, cfg.pool_size, cfg.guidance,
                              self.box)
        self.pool = self.to_pool(samples)
        metrics = {f"edis/{k}": float(v) for k, v in info.items()}
        metrics.update({
            "edis/generator_loss": float(gen_losses[-1]),
            "edis/refreshes": float(self.refreshes),
            "edis/refresh_seconds": time.perf_counter() - t0,
            # distance of the pool's state mean to the online states' (standardised units)
            "edis/pool_state_gap": float(np.linalg.norm(
                samples[:, L.s].mean(0) - self.standardise(L.pack(
                    on["observations"], on["actions"], on["rewards"], on["next_observations"],
                    on["masks"]))[:, L.s].mean(0))),
        })
        return metrics


def resolve_options(run) -> EDISConfig:
    """The run's EDISConfig: defaults < SCALE_DEFAULTS[run.preset] < run.source (the method preset and
    `--set source.FIELD=...`); a bad field or value is a ValueError naming it."""
    options = {**SCALE_DEFAULTS.get(run.preset, SCALE_DEFAULTS["cpu"]), **run.source}
    if "energy_hidden_dims" in options:
        options["energy_hidden_dims"] = tuple(options["energy_hidden_dims"])
    try:
        return EDISConfig(**options)
    except TypeError as e:
        names = ", ".join(f.name for f in dataclasses.fields(EDISConfig))
        raise ValueError(f"source options: {e} (valid: {names})") from None


def build(context: dict[str, Any]) -> EDISSource:
    """The EDIS source for a run (context: config, dataset, offline buffer, key, progress)."""
    cfg = resolve_options(context["config"])
    offline: OfflineBuffer = context["offline"]
    layout = Layout(int(offline.observations.shape[1]), int(offline.actions.shape[1]), cfg.model_terminals)
    data = layout.pack(np.asarray(offline.observations), np.asarray(offline.actions), np.asarray(offline.rewards),
                       np.asarray(offline.next_observations), np.asarray(offline.masks))
    return EDISSource(cfg, layout, offline, *fit_standardiser(data), jax.random.fold_in(context["key"], 7),
                      context.get("progress", False))


def fit_standardiser(data: np.ndarray, margin: float = 0.5):
    """Per-coordinate mean and std of `data` [N, dim], and the standardised data range widened by
    `margin` of its width on each side (the box the sampler's data predictions are clipped to)."""
    mean, std = data.mean(0), np.maximum(data.std(0), 1e-3)
    z = (data - mean) / std
    lo, hi = z.min(0), z.max(0)
    width = np.maximum(hi - lo, 1e-3)
    return mean, std, (lo - margin * width, hi + margin * width)
