"""What produced a result: stratdiff's version, its git commit, the libraries and the CPU that set the numbers.

Runs (`summary.json`), built datasets (their Minari metadata and `build_time.json`) and exported
behaviour policies (`policy.json`) record it. The simulator matters most: the same AntMaze
controller and seed give different episodes under different MuJoCo releases, and on another
machine under every release tried (most likely its CPU; docs/datasets.md, "Same seed, other
machine"), while the locomotion policies' episodes did not change.
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

# the distributions whose version can change a computed number (physics, float kernels, RNGs)
LIBRARIES = ("jax", "jaxlib", "flax", "optax", "numpy", "mujoco", "gymnasium", "gymnasium-robotics", "minari")


def library_versions() -> dict[str, str]:
    """Installed versions of `LIBRARIES` ("not installed" where one is missing)."""
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def machine() -> dict[str, Any]:
    """The CPU model (XLA and MuJoCo compile for the host's vector units, so float rounding may
    differ between CPU models) and the cores this process may use."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": model, "arch": platform.machine(), "usable_cores": cores}


def code_version() -> dict[str, Any]:
    """stratdiff's version, the library versions, the machine and, in a git checkout, the commit
    and whether `src/` was modified."""
    from stratdiff.version import __version__

    out: dict[str, Any] = {"stratdiff": __version__, "libraries": library_versions(), "machine": machine()}
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "src"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return out
    if commit.returncode == 0:
        out["git_commit"] = commit.stdout.strip()
        out["git_dirty_src"] = bool(dirty.stdout.strip())
    return out
