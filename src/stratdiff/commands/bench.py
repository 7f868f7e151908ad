"""`stratdiff bench`: throughput of the expensive pieces, printed and written as JSON.

A benchmark, never a timed test: numbers depend on the machine (recorded in the
JSON) and on what else runs on it.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import os
import platform
import sys
from pathlib import Path
from typing import Literal

import tyro

# section -> "module:function"; each function returns a flat dict of measurements.
SECTIONS: dict[str, str] = {
    "agents": "stratdiff.agents.bench:bench_agents",
    "diffusion": "stratdiff.diffusion.bench:bench_diffusion",
    "stratdiff": "stratdiff.experiments.stratify_bench:bench_with_amortised",
    "data": "stratdiff.data.bench:bench_data",
}


@dataclasses.dataclass
class BenchArgs:
    """Measure updates/s of each agent, diffusion training and sampling, StratDiff's online step and
    the dataset's MC returns."""

    only: tuple[Literal["agents", "diffusion", "stratdiff", "data"], ...] = ()
    """Sections to run (default: all)."""
    out: Path = Path("bench.json")
    """Where to write the JSON."""
    seconds: float | None = None
    """Seconds each timing runs, for the sections that take it (default: theirs, 10); small
    values check that the bench runs, not what it measures."""


def machine() -> dict[str, object]:
    import jax

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    from stratdiff.benchtools import matmul_peak_gflop_per_s, usable_cores

    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": usable_cores(), "jax": jax.__version__,
            "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
            "python": sys.version.split()[0], "load_avg_1m": os.getloadavg()[0],
            # f32 2048 x 2048 matrix product, measured now: the arithmetic peak the sections' rates compare with
            "matmul_f32_2048_gflop_per_s": matmul_peak_gflop_per_s()}


def main(argv: list[str]) -> int:
    args = tyro.cli(BenchArgs, args=argv, prog="stratdiff bench")
    results: dict[str, object] = {"machine": machine()}
    for name in args.only or tuple(SECTIONS):
        module, func = SECTIONS[name].split(":")
        print(f"[bench] {name} ...", flush=True)
        function = getattr(importlib.import_module(module), func)
        timing = {} if args.seconds is None or "seconds" not in inspect.signature(function).parameters else {
            "seconds": args.seconds}
        results[name] = function(**timing)
        print(json.dumps({name: results[name]}, indent=2), flush=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"[bench] wrote {args.out}")
    return 0
