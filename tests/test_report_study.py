"""`stratdiff report` on a study of three arms per dataset and seed: IQL, StratDiff-IQL and its
random-split control (`stratifier.score=random`). The control is a method of its own in every
table and figure comparing methods; the per-dataset tables (last three evaluations, per-seed
CSV, probability of improvement within a backbone, exchange counts) hold hand-checkable numbers.

Scores are chosen so every number is exact: `write_run` ramps the online evaluations to the
final score f as 5/8 f, 6/8 f, 7/8 f, f, so the mean of the last three is 7/8 f."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from test_report_tables import HOP, W2D, write_run

from stratdiff.experiments import report, rliable_stats
from stratdiff.experiments import runs as run_folders

RANDOM = True  # the arm with overrides {"stratifier.score": "random"} (--random-split)
CONTROL = "stratdiff-iql [random split]"
# (algo, random split, dataset) -> final score of seeds 0, 1, 2; strat/exchange per online row i (1-4): scale * i + seed
STUDY = {
    ("iql", False, HOP): [16, 24, 32],  # 24 +- 8; last three: [14, 21, 28] -> 21 +- 7
    ("stratdiff-iql", False, HOP): [48, 56, 64],  # 56 +- 8; above every other run
    ("stratdiff-iql", RANDOM, HOP): [24, 32, 40],  # 32 +- 8; last three 28 +- 7; P(> iql) = 7/9
    ("iql", False, W2D): [40, 48, 56],
    ("stratdiff-iql", False, W2D): [72, 80, 88],
    ("stratdiff-iql", RANDOM, W2D): [40, 48, 56],  # the same scores as iql: P = 0.5
}
EXCHANGE_SCALE = {("stratdiff-iql", False, HOP): 10.0, ("stratdiff-iql", RANDOM, HOP): 30.0,
                  ("stratdiff-iql", False, W2D): 20.0, ("stratdiff-iql", RANDOM, W2D): 30.0}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    for (algo, random_split, (ds, env)), finals in STUDY.items():
        arm = algo + ("-random" if random_split else "")
        for seed, final in enumerate(finals):
            write_run(root / arm / ds / f"seed{seed}", algo, ds, env, seed, final,
                      overrides={"stratifier.score": "random"} if random_split else None,
                      exchange_scale=EXCHANGE_SCALE.get((algo, random_split, (ds, env)), 10.0))
    # an ablation, not a control: in the ablation table, the per-seed CSV and the exchange table only
    for seed, final in enumerate([8, 16]):
        write_run(root / "utd10" / f"s{seed}", "stratdiff-iql", *HOP, seed, final, overrides={"utd": 10},
                  exchange_scale=5.0)
    out = tmp_path_factory.mktemp("report")
    plotted: dict[str, list[str]] = {}
    original = report.plot_curves

    def recording(groups, column, path, *args, **kwargs):
        plotted[path.name] = [c.label for c in groups]
        return original(groups, column, path, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(report, "plot_curves", recording)
        md = report.write_report(root, out, reps=200, seed=0).read_text()
    return out, md, json.loads((out / "report.json").read_text()), plotted


def table_lines(text: str) -> dict[str, str]:
    return {line.split(" | ")[0].strip("| "): line for line in text.splitlines()
            if line.startswith("|") and not line.startswith("|:")}


def test_random_split_is_a_column_of_the_main_and_iqm_tables(study):
    out, md, numbers, _ = study
    lines = table_lines((out / "table_main.md").read_text())
    assert lines["dataset"] == f"| dataset | iql | stratdiff-iql | {CONTROL} |"
    assert lines["hopper-medium-v2"] == "| hopper-medium-v2 | 24.0 ± 8.0 | **56.0 ± 8.0** | 32.0 ± 8.0 |"
    assert lines["walker2d-medium-replay-v2"] == \
        "| walker2d-medium-replay-v2 | 48.0 ± 8.0 | **80.0 ± 8.0** | 48.0 ± 8.0 |"
    assert lines["total (locomotion)"] == "| total (locomotion) | 72.0 | 136.0 | 80.0 |"
    assert "UTD=10" not in (out / "table_main.md").read_text()  # an ablation stays in its own table
    assert numbers["tables"]["main"][f"hopper-medium-v2 | {CONTROL}"]["scores"] == [24, 32, 40]
    iqm = table_lines((out / "table_iqm.md").read_text())
    assert iqm["dataset"] == lines["dataset"] and iqm["hopper-medium-v2"].endswith(" | 32.0 [24.0, 40.0] |")
    # the ablation table of the score keeps the control beside the default, and says it is the same runs
    ablation = (out / "table_ablation_score.md").read_text()
    assert "| dataset | split by score | random split |" in ablation
    assert "| hopper-medium-v2 | **56.0 ± 8.0** | 32.0 ± 8.0 |" in ablation
    assert f"Control(s) `{CONTROL}`: the same runs as their own column" in md


def test_random_split_in_rliable_and_figures(study):
    _, md, numbers, plotted = study
    loco = numbers["tables"]["rliable"]["locomotion"]
    assert list(loco["aggregates"]) == ["iql", "stratdiff-iql", CONTROL]
    assert loco["aggregates"][CONTROL]["mean"][0] == 40.0  # (24 + 32 + 40 + 40 + 48 + 56) / 6
    # the mean over datasets of P(iql > control): (2/9 on hopper + 1/2 on walker2d) / 2
    assert loco["probability_of_improvement"][f"iql > {CONTROL}"][0] == pytest.approx((2 / 9 + 0.5) / 2)
    assert loco["probability_of_improvement"][f"stratdiff-iql > {CONTROL}"][0] == 1.0
    for name in ("curves_locomotion_iql.png", "exchange_iql.png"):
        assert plotted[name] == ["iql", "stratdiff-iql", CONTROL], name
        assert f"](figures/{name})" in md


def test_last_three_evaluations_table(study):
    out, md, numbers, _ = study
    lines = table_lines((out / "table_last3.md").read_text())
    assert lines["dataset"] == f"| dataset | iql | stratdiff-iql | {CONTROL} |"
    assert lines["hopper-medium-v2"] == "| hopper-medium-v2 | 21.0 ± 7.0 | **49.0 ± 7.0** | 28.0 ± 7.0 |"
    assert lines["walker2d-medium-replay-v2"] == \
        "| walker2d-medium-replay-v2 | 42.0 ± 7.0 | **70.0 ± 7.0** | 42.0 ± 7.0 |"
    assert numbers["tables"]["last3"]["hopper-medium-v2 | iql"] == {"scores": [14.0, 21.0, 28.0], "seeds": [0, 1, 2]}
    assert r"21.0 $\pm$ 7.0" in (out / "table_last3.tex").read_text()
    # beside the final-score table in report.md
    assert md.index("## Table 1 layout") < md.index("## Mean of the last three evaluations") < md.index("## IQM")


def test_per_seed_csv(study):
    out, md, _, _ = study
    with open(out / "table_per_seed.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["dataset", "method", "seed", "final_score", "last3_mean"]
    assert rows[1:4] == [["hopper-medium-v2", "iql", "0", "16.0", "14.0"],
                         ["hopper-medium-v2", "iql", "1", "24.0", "21.0"],
                         ["hopper-medium-v2", "iql", "2", "32.0", "28.0"]]
    hopper = [(r[1], r[2]) for r in rows[1:] if r[0] == "hopper-medium-v2"]
    assert hopper == [(m, str(s)) for m in ("iql", "stratdiff-iql", CONTROL) for s in (0, 1, 2)] + \
        [("stratdiff-iql [UTD=10]", "0"), ("stratdiff-iql [UTD=10]", "1")]
    assert ["walker2d-medium-replay-v2", CONTROL, "2", "56.0", "49.0"] in rows
    assert ["hopper-medium-v2", "stratdiff-iql [UTD=10]", "1", "16.0", "14.0"] in rows
    assert len(rows) == 1 + 6 * 3 + 2
    assert "(table_per_seed.csv)" in md


def test_probability_of_improvement_per_dataset(study):
    out, md, numbers, _ = study
    per = numbers["tables"]["improvement_per_dataset"]
    hop, w2d = per["hopper-medium-v2"], per["walker2d-medium-replay-v2"]
    # the method over its control and the backbone, the control over the backbone
    assert list(hop) == [f"stratdiff-iql > {CONTROL}", "stratdiff-iql > iql", f"{CONTROL} > iql"]
    # every StratDiff-IQL run above every other run: 1, and so is every resample
    assert hop["stratdiff-iql > iql"] == {"probability": 1.0, "ci": [1.0, 1.0], "seeds_per_method": 3}
    assert w2d[f"stratdiff-iql > {CONTROL}"]["probability"] == 1.0
    # [24, 32, 40] against [16, 24, 32]: 7 of 9 pairs, ties counting half
    assert hop[f"{CONTROL} > iql"]["probability"] == pytest.approx(7 / 9)
    # the same scores: one half, and a wide interval around it
    p, (low, high) = w2d[f"{CONTROL} > iql"]["probability"], w2d[f"{CONTROL} > iql"]["ci"]
    assert p == 0.5 and low < 0.5 < high
    text = (out / "table_improvement_per_dataset.md").read_text()
    assert "| dataset | X | Y | P(X > Y) | seeds per method |" in text
    assert "| hopper-medium-v2 | stratdiff-iql | iql | 1.00 [1.00, 1.00] | 3 |" in text
    assert f"| hopper-medium-v2 | {CONTROL} | iql | 0.78 [" in text
    assert "## Probability of improvement per dataset" in md and text in md


def test_exchange_table(study):
    out, md, numbers, _ = study
    lines = [line for line in (out / "table_exchange.md").read_text().splitlines() if line.startswith("| ")]
    assert lines == [
        "| dataset | method | online phase | last 20% of online steps | seeds |",
        # 10 i + seed over i = 1..4: 25 + seed; the last 20% (online step > 160 of 200): the row i = 4
        "| hopper-medium-v2 | stratdiff-iql | 26.0 ± 1.0 | 41.0 ± 1.0 | 3 |",
        f"| hopper-medium-v2 | {CONTROL} | 76.0 ± 1.0 | 121.0 ± 1.0 | 3 |",
        "| hopper-medium-v2 | stratdiff-iql [UTD=10] | 13.0 ± 0.7 | 20.5 ± 0.7 | 2 |",
        "| walker2d-medium-replay-v2 | stratdiff-iql | 51.0 ± 1.0 | 81.0 ± 1.0 | 3 |",
        f"| walker2d-medium-replay-v2 | {CONTROL} | 76.0 ± 1.0 | 121.0 ± 1.0 | 3 |",
    ]
    cell = numbers["tables"]["exchange"]["walker2d-medium-replay-v2 | stratdiff-iql"]
    assert cell == {"seeds": [0, 1, 2], "online": [50.0, 51.0, 52.0], "last 20%": [80.0, 81.0, 82.0]}
    assert "## Exchange counts per dataset" in md and r"\midrule" in (out / "table_exchange.tex").read_text()


def test_run_means_and_comparison_groups():
    steps = np.array([100.0, 150.0, 200.0, 250.0, 300.0])
    run = run_folders.Run(Path("r"), {"algo": "iql", "dataset": "d", "offline_steps": 100, "online_steps": 200},
                          None, {"step": steps, "eval/score": np.array([1.0, np.nan, 3.0, np.nan, 5.0]),
                                 "strat/exchange": np.array([np.nan, 2.0, 4.0, 6.0, 8.0])}, "other")
    assert run.last_scores_mean(3) == 3.0 and run.last_scores_mean(2) == 4.0 and run.last_scores_mean(9) == 3.0
    assert run.online_mean("strat/exchange") == 5.0
    assert run.online_mean("strat/exchange", 0.5) == 7.0  # rows after online step 100; the one at 100 ends before
    assert math.isnan(run.online_mean("no/such")) and math.isnan(run.online_mean("strat/exchange", 0.0))
    col = run_folders.Column
    cols = [col("iql", (), "", "iql"), col("stratdiff-iql", (), "", "sd"),
            col("stratdiff-iql", (("stratifier.score", "random"),), "", "sd-rand"),
            col("calql", (), "", "calql"), col("stratdiff-calql", (), "", "sd-calql"), col("edis-iql", (), "", "edis")]
    assert run_folders.comparisons(cols) == [["sd-calql", "calql"], ["edis", "sd", "sd-rand", "iql"]]
    assert run_folders.is_control((("stratifier.score", "random"),)) and not run_folders.is_control(())
    assert not run_folders.is_control((("stratifier.score", "random"), ("utd", 10)))


def test_improvement_per_task_leaves_out_methods_without_scores():
    scores = {"a": {"d1": [3.0, 4.0], "d2": [1.0]}, "b": {"d1": [1.0, 2.0, 9.0]}, "c": {"d2": [1.0]}}
    per = rliable_stats.improvement_per_task(scores, [["a", "b"], ["a", "c"]], reps=50, seed=0)
    assert list(per) == ["d1", "d2"]
    assert per["d1"]["pairs"] == {("a", "b"): (1.0, 1.0, 1.0)}  # the first 2 seeds of b
    assert per["d1"]["seeds"] == {("a", "b"): 2}
    assert per["d2"]["pairs"] == {("a", "c"): (0.5, 0.5, 0.5)}
