"""`stratdiff diffusion fidelity MODEL`: the behaviour diffusion model against the true behaviour
policy of its dataset, state by state (`stratdiff.behaviour.fidelity`, `stratdiff.behaviour.truth`).

Writes fidelity.json (summary, the reference used, the model's step and training time, and the
Figure 2 metrics of `stratdiff.diffusion.similarity` against the logged actions for the model and
for the true policy's own samples, the level a perfect model reaches on that metric),
fidelity_states.npz (the per-state numbers) and fidelity.png to --out (default: MODEL).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import numpy as np
import tyro


@dataclasses.dataclass
class FidelityArgs:
    """Score a `stratdiff diffusion train` model against the policy that generated its dataset: per dataset
    state, the error of its samples' mean and spread and the true policy's log-likelihood of its samples,
    each next to what the policy's own samples score (the sampling floor)."""

    model: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="MODEL")]
    """A `stratdiff diffusion train` output folder (config.json, behaviour.msgpack)."""
    dataset: str | None = None
    """Dataset source (default: the one the model was trained on); must be a `stratdiff data build` dataset."""
    states: int = 512
    """Dataset states scored (a random subset of the rows whose true policy is known well)."""
    samples: int = 64
    """Samples per state, from the model and from the true policy."""
    max_gap: int = 50
    """medium-replay: score only rows within this many SAC steps of an actor snapshot."""
    sac_runs: Path | None = None
    """Folder of SAC runs for medium-replay (default: the source tree's checkpoints/sac)."""
    seed: int = 0
    chunk: int = 256
    """States per sampling call."""
    out: Path | None = None
    """Folder for fidelity.json, fidelity_states.npz and fidelity.png (default: MODEL)."""


def model_samples(model, observations: np.ndarray, m: int, key, chunk: int = 256) -> np.ndarray:
    """m unguided samples per (normalised) state, [n, m, act] float32, in chunks of `chunk` states
    (state chunk i uses fold_in(key, i); the last chunk is padded so one shape is compiled)."""
    import jax
    import jax.numpy as jnp

    from stratdiff.diffusion.model import sample

    n = observations.shape[0]
    out = np.empty((n, m, model.action_dim), np.float32)
    for i, start in enumerate(range(0, n, chunk)):
        rows = observations[start:start + chunk]
        pad = chunk - rows.shape[0]
        if pad:
            rows = np.concatenate([rows, np.repeat(rows[-1:], pad, axis=0)])
        acts = sample(model, jnp.asarray(rows, jnp.float32), jax.random.fold_in(key, i), None, num_samples=m)
        out[start:start + chunk] = np.asarray(acts)[:chunk - pad]
    return out


def run(args: FidelityArgs) -> dict:
    import time

    import jax

    from stratdiff.behaviour.fidelity import fidelity
    from stratdiff.behaviour.truth import eligible_rows, true_behaviour
    from stratdiff.data import load_dataset
    from stratdiff.data.transforms import StateNormalizer
    from stratdiff.diffusion.model import load_model
    from stratdiff.diffusion.similarity import similarity_table

    if args.states < 1 or args.samples < 2:
        raise ValueError(f"--states must be >= 1 and --samples >= 2 (got {args.states}, {args.samples})")
    model, _, meta = load_model(args.model)
    source = args.dataset or meta.get("dataset")
    if not source:
        raise ValueError(f"{args.model}/config.json: no dataset recorded; pass --dataset")
    dataset = load_dataset(source, meta.get("env_id"))
    if "state_normalizer" not in meta:
        raise ValueError(f"{args.model}/config.json: no meta.state_normalizer")
    normalizer = StateNormalizer.from_dict(meta["state_normalizer"])
    rng = np.random.default_rng(args.seed)
    pool = eligible_rows(dataset, args.max_gap)
    rows = np.sort(rng.choice(pool, min(args.states, len(pool)), replace=False))
    truth, notes = true_behaviour(dataset, rows, source, args.sac_runs)
    t0 = time.time()
    obs = normalizer.normalize(np.asarray(dataset.observations[rows], np.float32))
    samples = model_samples(model, obs, args.samples, jax.random.PRNGKey(args.seed), args.chunk)
    sample_s = time.time() - t0
    scores = fidelity(truth, samples, rng)
    # Figure 2's metric (distance to the one logged action) for the model and for the true policy itself
    logged = np.clip(np.asarray(dataset.actions[rows], np.float32), -1.0, 1.0)
    figure2 = similarity_table(logged, {"diffusion": samples, "true_policy": truth.sample(rng, args.samples)})
    result = {"model": str(args.model), "dataset": dataset.info.name, "model_step": int(model.step),
              "train_time_s": meta.get("train_time_s"),
              "final_loss": (meta.get("loss_curve") or [{}])[-1].get("score_loss"),
              "preset": meta.get("preset"), "hidden_dims": list(model.config.hidden_dims),
              "batch_size": model.config.batch_size, "sampler_steps": model.config.sampler.steps,
              "seed": args.seed, "max_gap": args.max_gap, "eligible_rows": int(len(pool)),
              "reference": notes, "sample_time_s": round(sample_s, 1), "summary": scores["summary"],
              "figure2_metrics": figure2}
    out = args.out or args.model
    out.mkdir(parents=True, exist_ok=True)
    (out / "fidelity.json").write_text(json.dumps(result, indent=2))
    np.savez_compressed(out / "fidelity_states.npz", rows=rows, **scores["per_state"])
    result["figure"] = str(plot_fidelity(scores["per_state"], out / "fidelity.png",
                                         f"{dataset.info.name}, {int(model.step)} diffusion steps"))
    return result


def plot_fidelity(per_state: dict[str, np.ndarray], path: Path, title: str) -> Path:
    """Three panels over the scored states: mean error, std error (model against the policy's own
    samples) and the true log-likelihood of model samples against that of the policy's own."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, key, label in ((axes[0], "mean_error", "per-state RMS error of the sample mean"),
                           (axes[1], "std_error", "per-state RMS error of the sample std")):
        both = np.concatenate([per_state[f"model_{key}"], per_state[f"policy_{key}"]])
        bins = np.linspace(0.0, float(np.quantile(both, 0.99)) or 1.0, 40)
        ax.hist(per_state[f"model_{key}"], bins, alpha=0.6, label="diffusion model")
        ax.hist(per_state[f"policy_{key}"], bins, alpha=0.6, label="true policy (floor)")
        ax.set_xlabel(label)
        ax.set_ylabel("states")
        ax.legend(fontsize=8)
    own, mod = per_state["policy_log_likelihood"], per_state["model_log_likelihood"]
    lo = float(np.quantile(np.concatenate([own, mod]), 0.02))
    hi = float(max(own.max(), mod.max()))
    axes[2].scatter(own, np.maximum(mod, lo), s=4, alpha=0.5)
    axes[2].plot([lo, hi], [lo, hi], "k--", lw=0.8)
    axes[2].set_xlabel("mean log beta(a|s), policy's own samples")
    axes[2].set_ylabel("mean log beta(a|s), model samples")
    axes[2].set_title(f"median gap {np.median(own - mod):.2f} nats", fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str]) -> int:
    prog = "stratdiff diffusion fidelity"
    args = tyro.cli(FidelityArgs, args=argv, prog=prog)
    from stratdiff.commands import run_and_print
    from stratdiff.errors import user_errors

    def shown(result):
        return {k: v for k, v in result.items() if k not in ("summary", "reference")} | {
            "median": {k: v["median"] for k, v in result["summary"].items() if isinstance(v, dict)}}

    return run_and_print(prog, lambda: run(args), (*user_errors(), ValueError, FileNotFoundError), shown)
