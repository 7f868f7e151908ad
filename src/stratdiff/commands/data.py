"""`stratdiff data SUBCOMMAND`: dataset tools.

Each subcommand is a frozen dataclass (its fields are the options, parsed by tyro) with a
`run() -> int` method; add one by adding it to `SUBCOMMANDS`. A `DatasetError` (or other
`ValueError` from bad input, or a DiskFullError) becomes a one-line message on stderr and exit code 1.
This module must not import JAX (inspect stays fast).
"""

from __future__ import annotations

import dataclasses
import json as _json
import sys
from typing import Annotated, Any

import tyro

from stratdiff.commands import data_build
from stratdiff.locks import FolderBusyError  # standard library only
from stratdiff.runfiles import DiskFullError  # standard library only


@dataclasses.dataclass(frozen=True)
class Inspect:
    """Print transitions, episodes, observation/action sizes, return statistics and the
    normalised score of a dataset (D4RL .hdf5 file, Minari directory, built name or Minari id)."""

    source: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="SOURCE")]
    """dataset: a D4RL-layout .hdf5 file, a Minari dataset directory, a built dataset name or a Minari id"""
    env: Annotated[str | None, tyro.conf.arg(metavar="ENV_ID")] = None
    """environment id to check sizes against and take reference scores from (default: the dataset's)"""
    json: bool = False
    """print one JSON object instead of text"""

    def run(self) -> int:
        from stratdiff.data.loaders import load_dataset

        ds = load_dataset(self.source, env_id=self.env)
        summary = ds.summary(ds.info.ref_scores or _env_ref_scores(ds.info.env_id))
        if self.json:
            print(_json.dumps(summary))
        else:
            print(format_summary(summary))
        return 0


def _env_ref_scores(env_id: str | None) -> tuple[float, float] | None:
    if env_id is None:
        return None
    from stratdiff.envs import UnknownEnvError, reference_scores

    try:
        return reference_scores(env_id)
    except UnknownEnvError:
        return None


def format_summary(s: dict[str, Any]) -> str:
    def num(x: Any) -> str:
        return "-" if x is None else (f"{x:.4g}" if isinstance(x, float) else str(x))

    rows = [
        ("dataset", s["name"]),
        ("source", s["source"]),
        ("env", s["env_id"] or "-"),
        ("transitions", s["transitions"]),
        ("episodes", s["episodes"]),
        ("obs size", s["obs_dim"]),
        ("action size", s["act_dim"]),
        ("terminals", s["terminals"]),
        ("timeouts", s["timeouts"]),
        ("episode length", f"{s['episode_length_mean']:.1f} (mean)"),
        ("return", f"mean {num(s['return_mean'])}  std {num(s['return_std'])}  "
                   f"min {num(s['return_min'])}  max {num(s['return_max'])}"),
        ("reference", "-" if s["ref_min_score"] is None
         else f"min {num(s['ref_min_score'])}  max {num(s['ref_max_score'])}"),
        ("normalised score", num(s["normalized_score"])) if s["goal_episode_share"] is None
        else ("goal reached", f"in {100 * s['goal_episode_share']:.1f}% of the episodes"),
        ("fingerprint", s["fingerprint"]),
    ]
    return "\n".join(f"{k:<17} {v}" for k, v in rows)


# name -> subcommand dataclass with a run() -> int method
SUBCOMMANDS: dict[str, type] = {
    "inspect": Inspect,
    "build": data_build.Build,
    "list": data_build.List,
    "export": data_build.Export,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = tyro.extras.subcommand_cli_from_dict(
        dict(SUBCOMMANDS),
        prog="stratdiff data",
        args=argv,
    )
    name = next((n for n, c in SUBCOMMANDS.items() if isinstance(cmd, c)), "data")
    try:
        return int(cmd.run() or 0)
    except BrokenPipeError:
        raise  # the reader of stdout went away: the dispatcher ends quietly
    except (ValueError, OSError, FolderBusyError, DiskFullError) as e:  # DatasetError is a ValueError
        msg = " ".join(str(e).split())
        print(f"stratdiff data {name}: error: {msg}", file=sys.stderr)
        return 1
