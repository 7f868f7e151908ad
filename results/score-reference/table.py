"""The agreement table of results/score-reference/ as Markdown, from its JSON files.

    python results/score-reference/table.py [JSON ...]     # default: every *-step*.json beside this file

Per snapshot: the online buffer's size, the reference redrawn against itself, each setting's
agreement with the reference (and, in brackets, with itself redrawn), the amortised score's
shortfall against the M = 8 default (the bar: at most 3 points), and the share of samples whose
reference stratum is their source buffer.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

COLUMNS = [("gaussian_fit M=8, 15 steps (default)", "M=8, 15 steps (default)"),
           ("gaussian_fit M=8, 5 steps (cpu preset)", "M=8, 5 steps"),
           ("fixed_sigma, 15 steps (the paper's single guided action)", "fixed_sigma, 15 steps"),
           ("fixed_sigma, 5 steps", "fixed_sigma, 5 steps"),
           ("amortised (g of the run)", "amortised g"),
           ("random split", "random split")]


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def rows(paths: list[Path]) -> list[str]:
    head = ["dataset", "step", "online buffer", "reference vs itself",
            *[f"{label}: ref (self)" for _, label in COLUMNS], "amortised − default", "source match"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
    for path in paths:
        data = json.loads(path.read_text())
        agreement = data["split_agreement"]
        settings = agreement["settings"]
        dataset = re.sub(r"-s\d+-step\d+\.json$", "", path.name)
        cells = [dataset, f"{data['step']:,}", f"{agreement['online_buffer']:,}",
                 pct(settings[agreement["reference"]]["self"])]
        for name, _ in COLUMNS:
            row = settings.get(name)
            cells.append("–" if row is None else f"{pct(row['reference'])} ({pct(row['self'])})")
        amortised, default = settings.get(COLUMNS[4][0]), settings[COLUMNS[0][0]]
        gap = "–" if amortised is None else f"{100 * (amortised['reference'] - default['reference']):+.1f}"
        cells += [gap, pct(agreement["source_match"])]
        out.append("| " + " | ".join(cells) + " |")
    return out


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    paths = [Path(p) for p in argv] or sorted(here.glob("*-step*.json"),
                                              key=lambda p: (re.sub(r"-step\d+", "", p.name),
                                                             int(re.search(r"step(\d+)", p.name).group(1))))
    print("\n".join(rows(paths)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
