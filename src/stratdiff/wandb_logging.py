"""Weights & Biases logging (`stratdiff train --wandb`; the optional extra `stratdiff[wandb]`).

A run logs its config once and every row it writes to `metrics.csv` (same keys, `step` as
W&B's step), and its `summary.json` as the W&B run summary at the end. The W&B run's files
go to `RUN_FOLDER/wandb/`, or to `$WANDB_DIR/wandb/` where the environment variable `WANDB_DIR`
is set (W&B's convention: the variable wins). W&B's own settings apply: `WANDB_MODE=offline`
writes the run there without any network (upload later with `wandb sync`), `WANDB_API_KEY` logs in.

A resumed run continues the same W&B run: its id is derived from the run folder and config.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from stratdiff.errors import UserError

DEFAULT_PROJECT = "stratdiff"


class WandbError(UserError, RuntimeError):
    """W&B was asked for but is not installed or cannot start (one clear line)."""


@dataclasses.dataclass(frozen=True)
class WandbOptions:
    """Where a run logs: the W&B project, the group (a sweep's runs share one) and the run name."""

    project: str = DEFAULT_PROJECT
    group: str | None = None
    name: str | None = None


def run_id(out_dir: str | Path, config_json: str) -> str:
    """A stable W&B run id for (run folder, config): a resumed run logs into the same W&B run."""
    text = f"{Path(out_dir).resolve()}\n{config_json}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class WandbLogger:
    """One W&B run mirroring a stratdiff run's config, metric rows and summary."""

    def __init__(self, options: WandbOptions, config: dict[str, Any], out_dir: str | Path):
        try:
            import wandb
        except ImportError:
            raise WandbError("--wandb needs Weights & Biases: pip install 'stratdiff[wandb]'") from None
        out = Path(out_dir)
        config_json = json.dumps(config, sort_keys=True)
        root = os.environ.get("WANDB_DIR") or str(out)  # read now: W&B reads it once per process
        try:
            self.run = wandb.init(project=options.project, group=options.group, name=options.name,
                                  config=config, dir=root, id=run_id(out, config_json), resume="allow")
        except Exception as e:  # noqa: BLE001  (not logged in, no network in online mode, ...)
            msg = " ".join(str(e).split())[:300]
            raise WandbError(f"--wandb: W&B could not start a run ({type(e).__name__}: {msg}); "
                             "log in with `wandb login` or set WANDB_MODE=offline") from None

    def log(self, row: dict[str, Any]) -> None:
        """One metrics.csv row; its `step` is W&B's step."""
        self.run.log({k: v for k, v in row.items() if k != "step"}, step=int(row["step"]))

    def finish(self, summary: dict[str, Any] | None = None) -> None:
        if summary is not None:
            self.run.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float, str))})
        self.run.finish()
