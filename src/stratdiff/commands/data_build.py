"""`stratdiff data build | list | export`: the subcommands that build D4RL-style datasets
(registered in `stratdiff.commands.data.SUBCOMMANDS`; the logic is in
`stratdiff.data.builders`). No JAX at import time.
"""

from __future__ import annotations

import dataclasses
import json as _json
import shlex
import sys
from pathlib import Path
from typing import Annotated

import tyro


@dataclasses.dataclass(frozen=True)
class Build:
    """Build a D4RL-style dataset (`stratdiff data list` shows the names) as a Minari dataset."""

    name: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="NAME")]
    """dataset name, e.g. hopper-medium-v5"""
    size: int | None = None
    """transitions (random/medium/expert: default 1000000; medium-expert: per part;
    medium-replay: keeps the first SIZE rows of the replay buffer)"""
    out: str | None = None
    """output folder (default: the data folder, $STRATDIFF_DATA_DIR/NAME)"""
    seed: int = 0
    """seed of the env resets and the policy noise (same seed, same data)"""
    force: bool = False
    """replace a dataset already built there"""

    def run(self) -> int:
        from stratdiff.data.builders import build

        command = shlex.join(["stratdiff", "data", "build", *sys.argv[3:]]) if len(sys.argv) > 2 \
            else f"stratdiff data build {self.name}"
        out, ds, seconds = build(self.name, self.size, self.out, self.seed, self.force, command)
        s = ds.summary()  # AntMaze: the share of episodes that reach their goal, not a score
        quality = (f"normalised return {s['normalized_score']:.1f}" if s["goal_episode_share"] is None
                   else f"{100 * s['goal_episode_share']:.1f}% of episodes reach their goal")
        cpu = _json.loads((Path(out) / "build_time.json").read_text())["cpu_seconds"]
        print(f"{self.name}: {s['transitions']} transitions, {s['episodes']} episodes, {quality}, "
              f"fingerprint {s['fingerprint']}, built in {seconds:.0f} s wall ({cpu:.0f} s CPU, all threads) "
              f"-> {out}")
        return 0


@dataclasses.dataclass(frozen=True)
class List:
    """Show the datasets `stratdiff data build` can build, which are built, and their sizes."""

    json: bool = False
    """print one JSON object per line instead of a table"""

    def run(self) -> int:
        from stratdiff.data.builders import DATASETS, missing_policies, provisional_policies
        from stratdiff.data.loaders import data_root

        root = data_root()
        if not self.json:
            print(f"data folder: {root}")
            print(f"{'name':<32} {'built':<6} {'transitions':>11} {'episodes':>9} {'MB':>8}  notes")
        for name, recipe in DATASETS.items():
            folder = root / name
            meta_path = folder / "data" / "metadata.json"
            built = meta_path.exists()
            row = {"name": name, "env_id": recipe.env_id, "kind": recipe.kind, "built": built,
                   "transitions": None, "episodes": None, "megabytes": None,
                   "missing": missing_policies(name), "provisional": provisional_policies(name)}
            if built:
                meta = _json.loads(meta_path.read_text())
                row["transitions"] = meta.get("total_steps")
                row["episodes"] = meta.get("total_episodes")
                row["megabytes"] = round(sum(p.stat().st_size for p in folder.rglob("*")
                                             if p.is_file()) / 2**20, 1)
            if self.json:
                print(_json.dumps(row))
            else:
                f = lambda x: "-" if x is None else str(x)  # noqa: E731
                notes = []
                if row["missing"]:
                    notes.append("needs " + ", ".join(row["missing"]))
                if row["provisional"]:
                    notes.append("provisional " + ", ".join(row["provisional"]))
                print(f"{name:<32} {'yes' if built else 'no':<6} {f(row['transitions']):>11} "
                      f"{f(row['episodes']):>9} {f(row['megabytes']):>8}  {'; '.join(notes)}")
        return 0


@dataclasses.dataclass(frozen=True)
class Export:
    """Write a dataset (built name, Minari folder or D4RL file) in the D4RL HDF5 layout."""

    source: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="NAME")]
    """dataset: a built name, a Minari dataset folder or a .hdf5 file"""
    d4rl: str = ""
    """output .hdf5 file (D4RL layout: observations, actions, rewards, terminals, timeouts,
    next_observations, metadata/*)"""

    def run(self) -> int:
        from stratdiff.data.loaders import load_dataset, write_d4rl_hdf5

        if not self.d4rl:
            raise ValueError("--d4rl FILE.hdf5 is required")
        ds = load_dataset(self.source)
        path = write_d4rl_hdf5(ds, Path(self.d4rl), {"exported_from": self.source})
        print(f"{self.source}: {ds.size} transitions -> {path}")
        return 0
