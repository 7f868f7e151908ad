"""`stratdiff quickstart`: the main job on the built-in default, small enough for a laptop CPU.

1. builds a small D4RL-style dataset from a behaviour policy shipped with stratdiff;
2. runs a backbone (IQL by default) and its StratDiff version: an offline phase, then a
   short online phase, with the `cpu` preset shrunk further (the `QUICK` overrides below);
3. writes the report (`stratdiff report`) and prints the comparison table and plot paths.

Re-running skips finished runs and resumes unfinished ones. The scale is far below the
paper's (1M offline + 200k online steps, 5 seeds): the numbers show the pipeline working,
not the paper's claims.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import tyro

# The quickstart scale: overrides of the `cpu` preset (see the README for the measured time).
QUICK: dict[str, object] = {
    "offline_steps": 5000, "online_steps": 2000, "online_warmup_steps": 500, "log_every": 250,
    "eval_every": 1000, "eval_episodes": 5, "checkpoint_every": 1000,
    "stratifier.diffusion_steps": 3000, "stratifier.support_states": 4096,
    "stratifier.energy_pretrain_steps": 500,
}


@dataclasses.dataclass
class QuickstartArgs:
    """Build a small dataset, run a backbone and its StratDiff version, print the comparison."""

    dataset: str = "halfcheetah-medium-v5"
    """A dataset `stratdiff data build` can make from a shipped policy."""
    size: int = 20_000
    """Transitions in the dataset."""
    algos: tuple[str, ...] = ("iql", "stratdiff-iql")
    """Methods to compare."""
    seed: int = 0
    out: Path = Path("runs/quickstart")
    """Folder for the dataset, the runs and the report."""
    no_progress: bool = False


def run(args: QuickstartArgs) -> Path:
    from stratdiff.data import load_dataset
    from stratdiff.data.builders import build, missing_policies
    from stratdiff.experiments.report import write_report
    from stratdiff.methods import METHODS, resolve_config
    from stratdiff.runner import CHECKPOINT, train

    data_dir = args.out / "data" / args.dataset
    if not (data_dir / "data").exists():
        missing = missing_policies(args.dataset)
        if missing:
            raise ValueError(f"cannot build {args.dataset}: this checkout lacks the {', '.join(missing)}; "
                             "choose another --dataset (see `stratdiff data list`)")
        t0 = time.time()
        print(f"[quickstart] building {args.dataset} ({args.size} transitions) in {data_dir}", flush=True)
        build(args.dataset, size=args.size, out=data_dir, seed=args.seed,
              command=f"stratdiff quickstart --dataset {args.dataset} --size {args.size}")
        print(f"[quickstart] built in {time.time() - t0:.0f} s", flush=True)
    dataset = load_dataset(str(data_dir))
    for algo in args.algos:
        run_dir = args.out / "runs" / algo / args.dataset / f"seed{args.seed}"
        if (run_dir / "summary.json").exists():
            print(f"[quickstart] {algo}: finished earlier ({run_dir})", flush=True)
            continue
        # stratifier options only for methods that have a stratifier (else reports label them as variants)
        has_stratifier = METHODS[algo].stratifier != "none"
        overrides = {k: v for k, v in QUICK.items() if has_stratifier or not k.startswith("stratifier.")}
        cfg = resolve_config(algo, str(data_dir), dataset.info.env_id, "cpu", args.seed, overrides)
        print(f"[quickstart] {algo}: {cfg.offline_steps} offline steps + {cfg.online_steps} online steps "
              f"-> {run_dir}", flush=True)
        t0 = time.time()
        summary = train(cfg, run_dir, resume=(run_dir / CHECKPOINT).exists(), progress=not args.no_progress,
                        dataset=dataset)
        print(f"[quickstart] {algo}: final score {summary['final_score']:.1f} "
              f"(best {summary['best_score']:.1f}) in {time.time() - t0:.0f} s", flush=True)
    return write_report(args.out / "runs", args.out / "report")


def main(argv: list[str]) -> int:
    args = tyro.cli(QuickstartArgs, args=argv, prog="stratdiff quickstart")
    import matplotlib

    matplotlib.use("Agg")
    from stratdiff.errors import user_errors

    try:
        report = run(args)
    except (*user_errors(), ValueError, FileExistsError) as e:
        print(f"stratdiff quickstart: error: {e}", file=sys.stderr)
        return 1
    table = report.parent / "table_main.md"
    if table.is_file():
        print(table.read_text())
    figures = sorted((report.parent / "figures").glob("*.png"))
    print(f"[quickstart] report: {report}")
    for fig in figures:
        print(f"[quickstart] plot: {fig}")
    return 0
