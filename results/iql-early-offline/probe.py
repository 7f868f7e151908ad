"""IQL's early offline learning on halfcheetah-medium-replay-v5 (docs/paper.md).

    python results/iql-early-offline/probe.py VARIANT SEED OUT

Trains IQL offline for 8k steps (the `cpu` preset otherwise) with a constant actor learning
rate, 10-episode evaluations every 2k steps, and prints the normalised scores. VARIANT changes
one thing:
  default    nothing
  raw        raw rewards (reward_transform=identity), as CORL's fine-tuning script by default
  torchinit  PyTorch's default Linear initialisation: weights and biases U(+-1/sqrt(fan_in))
  cosine     the actor's cosine learning-rate decay over the 8k offline steps (the default of a run)
"""

from __future__ import annotations

import csv
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp


class TorchDense(nn.Module):
    """nn.Dense with PyTorch's default initialisation (weights and biases U(+-1/sqrt(fan_in)))."""

    features: int
    kernel_init: object = None  # accepted and ignored: the initialisation is PyTorch's

    @nn.compact
    def __call__(self, x):
        bound = 1.0 / x.shape[-1] ** 0.5
        init = lambda key, shape: jax.random.uniform(key, shape, jnp.float32, -bound, bound)  # noqa: E731
        return x @ self.param("kernel", init, (x.shape[-1], self.features)) + self.param("bias", init, (self.features,))


def main(variant: str, seed: int, out: str) -> None:
    overrides = dict(offline_steps=8000, online_steps=0, log_every=500, eval_every=2000, checkpoint_every=2000,
                     eval_episodes=10)
    if variant != "cosine":
        overrides["agent.actor_lr_decay_steps"] = 0
    if variant == "raw":
        overrides["reward_transform"] = "identity"
    elif variant == "torchinit":
        from stratdiff.nn import layers

        layers.nn = type("nn", (), {**{k: getattr(nn, k) for k in dir(nn) if not k.startswith("__")},
                                    "Dense": TorchDense})
    elif variant not in ("default", "cosine"):
        raise SystemExit(f"unknown variant {variant!r}")
    from stratdiff.methods import resolve_config
    from stratdiff.runner import train

    cfg = resolve_config("iql", "halfcheetah-medium-replay-v5", "HalfCheetah-v5", "cpu", seed, overrides)
    train(cfg, out, progress=False)
    with open(f"{out}/metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("eval/score")]
    print(variant, seed, [(int(float(r["step"])), round(float(r["eval/score"]), 1)) for r in rows], flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
