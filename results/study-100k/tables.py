"""The study's own tables as Markdown, from its committed files.

    python results/study-100k/tables.py            # prints all three tables

- Time per unit: the wall seconds of each stage of each unit (`unit-times.jsonl`, written by
  run_unit.sh; a stage that ran in several calls, one of them interrupted, is summed over them)
  and the unit's total.
- Online step rate: each arm's online environment steps per second (updates, acting and
  evaluations; summary.json's `online_steps_per_s`), mean over the seeds in `runs/`.
- The split at three points of one StratDiff-IQL run per dataset (`agreement/`): the share of
  online-buffer samples that the reference split (a Gaussian fitted to M = 64 guided samples,
  15 solver steps) places offline-like and of offline-buffer samples it places online-like,
  the reference against itself redrawn, and the agreement with the reference of the study's
  score (the run's amortised g), of the exact default (M = 8, 15 steps), of the exact score
  with g's 5 solver steps and of a random split.
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).parent
ARMS = [("iql", "IQL"), ("stratdiff-iql", "StratDiff-IQL"), ("stratdiff-iql-random-split", "random split")]
STAGES = ["data", "iql", "stratdiff-iql", "random-split"]
AMORTISED = "amortised (g of the run)"
DEFAULT = "gaussian_fit M=8, 15 steps (default)"
FIVE_STEPS = "gaussian_fit M=8, 5 steps (cpu preset)"
RANDOM = "random split"


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h"


def unit_times(path: Path) -> list[str]:
    """A row per (dataset, seed): each stage's wall time, the similarity measurements, the total."""
    spent: dict[tuple[str, int], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    notes: dict[tuple[str, int], set[str]] = defaultdict(set)
    for line in path.read_text().splitlines() if path.exists() else []:
        entry = json.loads(line)
        key = (entry["dataset"], int(entry["seed"]))
        stage = entry["stage"] if entry["stage"] in STAGES else "similarity"
        spent[key][stage] += entry["seconds"]
        if str(entry["exit"]) == "interrupted":
            notes[key].add("interrupted and resumed (includes redoing the steps since the last checkpoint)")
        elif str(entry["exit"]) != "0":
            notes[key].add("a stage exited with an error")
    head = ["dataset", "seed", *STAGES, "similarity", "unit", "note"]
    out = ["| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * (len(head) - 3) + "---|"]
    for (dataset, seed), stages in spent.items():
        cells = [f"{stages[s] / 60:.0f} min" if s in stages else "–" for s in [*STAGES, "similarity"]]
        note = "; ".join(sorted(notes[(dataset, seed)]))
        out.append(f"| {dataset} | {seed} | " + " | ".join(cells) + f" | {hours(sum(stages.values()))} | {note} |")
    return out


def step_rates(runs: Path) -> list[str]:
    """A row per dataset: each arm's online steps per second, mean over its finished seeds (n)."""
    rates: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for summary in sorted(runs.glob("*/*/seed*/summary.json")):
        arm, dataset = summary.parts[-4], summary.parts[-3]
        rates[dataset][arm].append(json.loads(summary.read_text())["online_steps_per_s"])
    out = ["| dataset | " + " | ".join(label for _, label in ARMS) + " |", "|---|" + "---:|" * len(ARMS)]
    for dataset, by_arm in rates.items():
        cells = [f"{sum(v) / len(v):.1f} (n={len(v)})" if (v := by_arm.get(arm)) else "–" for arm, _ in ARMS]
        out.append(f"| {dataset} | " + " | ".join(cells) + " |")
    return out


def agreement(folder: Path) -> list[str]:
    """A row per snapshot: the reference split's placement by source and the agreements."""
    head = ["dataset", "seed", "step", "online buffer", "online samples placed offline-like",
            "offline samples placed online-like", "reference vs itself", "study score (g)",
            "exact default (M = 8)", "exact, M = 8, 5 steps", "random split"]
    out = ["| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * (len(head) - 2)]
    paths = sorted(folder.glob("*-seed*-step*.json"),
                   key=lambda p: (p.name.split("-seed")[0], int(re.search(r"step(\d+)", p.name).group(1))))
    for path in paths:
        data = json.loads(path.read_text())
        a, s = data["split_agreement"], data["split_agreement"]["settings"]
        dataset, seed = re.match(r"(.+)-seed(\d+)-step\d+\.json$", path.name).groups()
        out.append("| " + " | ".join([
            dataset, seed, f"{data['step']:,}", f"{a['online_buffer']:,}", pct(a.get("online_offline_like")),
            pct(a.get("offline_online_like")), pct(s[a["reference"]]["self"]),
            pct(s[AMORTISED]["reference"]) if AMORTISED in s else "–", pct(s[DEFAULT]["reference"]),
            pct(s[FIVE_STEPS]["reference"]), pct(s[RANDOM]["reference"])]) + " |")
    return out


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else HERE
    sections = [("Time per unit (wall clock, both cores)", unit_times(root / "unit-times.jsonl")),
                ("Online steps per second (updates, acting and evaluations)", step_rates(root / "runs")),
                ("The split at three points of the online phase (% of samples)", agreement(root / "agreement"))]
    for title, rows in sections:
        print(f"### {title}\n\n" + "\n".join(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
