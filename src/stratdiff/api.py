"""The Python API: a run from a notebook or a script, as `stratdiff train` does it.

    from stratdiff import load_dataset, resolve_config, train

`train(algo, dataset, ...)` takes a dataset source (a D4RL HDF5 file, a Minari folder or id,
a built name) or an in-memory `Dataset` (e.g. from `load_dataset`) and returns the run's
summary (summary.json). `load_dataset` and `resolve_config` are `stratdiff.data.load_dataset`
and `stratdiff.methods.resolve_config`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from stratdiff.data import Dataset, load_dataset, validate_dataset
from stratdiff.methods import ConfigError, resolve_config
from stratdiff.runner import train as run_config
from stratdiff.wandb_logging import WandbOptions

__all__ = ["load_dataset", "resolve_config", "train"]


def train(algo: str, dataset: str | Path | Dataset, *, env: str | None = None, preset: str = "cpu", seed: int = 0,
          out: str | Path | None = None, overrides: dict[str, Any] | None = None, resume: bool = False,
          progress: bool = True, download: bool | None = None,
          wandb: bool | WandbOptions = False, force: bool = False) -> dict[str, Any]:
    """One offline -> online run of `algo` (`stratdiff.methods.METHODS`) into `out` (default
    runs/ALGO/DATASET/seedN); returns its summary. `overrides`: config fields as for `--set`
    ({"online_steps": 20000, "agent.expectile": 0.8}); `download`: fetch a Minari id from the
    hub (None: $STRATDIFF_DOWNLOAD); `wandb`: True or `WandbOptions` also logs to W&B; `force`:
    start the run over in a folder that holds one."""
    if isinstance(dataset, Dataset):
        data = validate_dataset(dataset, env)
        source = data.info.source or data.info.name
    else:
        data = load_dataset(dataset, env, download=download)
        source = str(dataset)
    env_id = env or data.info.env_id
    if env_id is None:
        raise ConfigError(f"dataset {source!r} does not name its environment: pass --env ENV_ID (Python: env=ENV_ID)")
    cfg = resolve_config(algo, source, env_id, preset, seed, overrides)
    out = Path(out) if out is not None else Path("runs") / algo / Path(source).name / f"seed{seed}"
    options = WandbOptions() if wandb is True else wandb or None
    if options is not None and options.name is None:
        options = dataclasses.replace(options, name=f"{algo}/{Path(source).name}/seed{seed}")
    return run_config(cfg, out, resume=resume, progress=progress, dataset=data, wandb=options,
                      force=force)
