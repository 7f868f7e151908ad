"""What produced a result: stratdiff's version, its git commit, and the libraries that set the numbers.

Runs (`summary.json`), built datasets (their Minari metadata and `build_time.json`) and exported
behaviour policies (`policy.json`) record it. The simulator matters most: the same AntMaze
controller and seed give different episodes under different MuJoCo releases (docs/datasets.md,
"Which MuJoCo"), while Hopper's did not change.
"""

from __future__ import annotations

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


def code_version() -> dict[str, Any]:
    """stratdiff's version, the library versions and, in a git checkout, the commit and whether
    `src/` was modified."""
    from stratdiff import __version__

    out: dict[str, Any] = {"stratdiff": __version__, "libraries": library_versions()}
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
