"""`stratdiff report` on synthetic run folders with real files: hand-checkable means, stds,
IQMs and totals, missing seeds, an unfinished run, an ablation labelled from its config,
figures; and the statistics (IQM, stratified bootstrap)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from stratdiff.experiments import figures, report, stats
from stratdiff.experiments import runs as run_folders
from stratdiff.methods import resolve_config


def write_run(folder: Path, algo: str, dataset: str, env: str, seed: int, final: float,
              overrides: dict | None = None, finished: bool = True, preset: str = "smoke",
              exchange_scale: float = 10.0) -> Path:
    """A run folder as `stratdiff train` leaves it: config.json from resolve_config, metrics.csv
    with offline and online rows (evaluations ramp linearly to `final`; a StratDiff run's
    strat/exchange is `exchange_scale` x i + seed on the i-th of 4 online rows), checkpoint, summary."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = resolve_config(algo, dataset, env, preset, seed, overrides or {})
    (folder / "config.json").write_text(cfg.to_json())
    off, on = cfg.offline_steps, cfg.online_steps
    rows = [{"step": off // 2, "phase": "offline", "iql/q_loss": 1.0},
            {"step": off, "phase": "offline", "iql/q_loss": 0.5, "eval/score": final / 2}]
    for i in range(1, 5):
        row = {"step": off + i * on // 4, "phase": "online", "online/return": 1.0, "eval/score": final / 2 * (1 + i / 4)}
        if algo.startswith("stratdiff"):
            row["strat/exchange"] = exchange_scale * i + seed
            row["strat/score_offline_mean"], row["strat/score_online_mean"] = 1.0 / i, 2.0 + i
        rows.append(row)
    if not finished:
        rows = rows[:4]
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(folder / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    (folder / "checkpoint.msgpack").write_bytes(b"state")
    if finished:
        (folder / "summary.json").write_text(json.dumps({
            "algo": algo, "dataset": dataset, "env": env, "seed": seed, "preset": preset, "final_score": final,
            "best_score": final, "offline_updates_per_s": 200.0, "online_steps_per_s": 20.0 + seed,
            "wall_seconds_this_call": 5.0}))
    return folder


HOP, W2D, AM = ("hopper-medium-v2", "Hopper-v5"), ("walker2d-medium-replay-v2", "Walker2d-v5"), \
    ("antmaze-umaze-v0", "antmaze-umaze-v0")


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    scores = {
        ("iql", HOP): [10, 20, 60],  # mean 30, std sqrt(700) = 26.46
        ("iql", W2D): [40, 50, 60],  # 50 +- 10
        ("iql", AM): [10, 20, 30, 100],  # mean 40, std 40.82, IQM 25
        ("stratdiff-iql", HOP): [40, 50],  # seed 2 unfinished below
        ("stratdiff-iql", W2D): [70, 80, 90],  # 80 +- 10
        ("stratdiff-iql", AM): [90, 90, 90],
    }
    for (algo, (ds, env)), values in scores.items():
        for seed, value in enumerate(values):
            # StratDiff on walker2d took over IQL's offline phase: the same method, not a variant
            reuse = ({"reuse_offline_from": str(root / "main" / "iql" / ds / f"seed{seed}")}
                     if (algo, ds) == ("stratdiff-iql", W2D[0]) else None)
            write_run(root / "main" / algo / ds / f"seed{seed}", algo, ds, env, seed, value, overrides=reuse)
    # unfinished: its last evaluation (1000) must not reach any table
    write_run(root / "main" / "stratdiff-iql" / HOP[0] / "seed2", "stratdiff-iql", *HOP, 2, 2000.0, finished=False)
    # an ablation in a folder whose name says nothing about it: UTD=10 on walker2d only
    for seed, value in enumerate([95, 100, 105]):
        write_run(root / "more" / "default-looking" / f"s{seed}", "stratdiff-iql", *W2D, seed, value,
                  overrides={"utd": 10})
    # another tool's run folder (not a `stratdiff train` config): ignored
    (root / "sac" / "hopper").mkdir(parents=True)
    (root / "sac" / "hopper" / "config.json").write_text(json.dumps({"env": "Hopper-v5", "total_steps": 10}))
    return root


@pytest.fixture(scope="module")
def built(runs_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    md = report.write_report(runs_root, out, reps=500, seed=3)
    return out, md.read_text()


def test_main_table_means_stds_totals_and_missing_seeds(built):
    out, _ = built
    text = (out / "table_main.md").read_text()
    lines = {line.split(" | ")[0].strip("| "): line for line in text.splitlines()
             if line.startswith("|") and not line.startswith("|:")}
    assert lines["dataset"] == "| dataset | iql | stratdiff-iql |"
    # cells with fewer seeds than the fullest (4) say how many they average
    assert lines["hopper-medium-v2"] == "| hopper-medium-v2 | 30.0 ± 26.5 (n=3) | **45.0 ± 7.1 (n=2)** |"
    assert lines["walker2d-medium-replay-v2"] == "| walker2d-medium-replay-v2 | 50.0 ± 10.0 (n=3) | **80.0 ± 10.0 (n=3)** |"
    assert lines["antmaze-umaze-v0"] == "| antmaze-umaze-v0 | 40.0 ± 40.8 | **90.0 ± 0.0 (n=3)** |"
    assert lines["total (locomotion)"] == "| total (locomotion) | 80.0 | 125.0 |"
    assert lines["total (AntMaze)"] == "| total (AntMaze) | 40.0 | 90.0 |"
    assert lines["total"] == "| total | 120.0 | 215.0 |"
    assert list(lines)[1:] == ["hopper-medium-v2", "walker2d-medium-replay-v2", "total (locomotion)",
                               "antmaze-umaze-v0", "total (AntMaze)", "total"]
    tex = (out / "table_main.tex").read_text()
    assert r"30.0 $\pm$ 26.5 (n=3)" in tex and r"\textbf{45.0 $\pm$ 7.1 (n=2)}" in tex and r"\toprule" in tex
    assert r"total (locomotion) & 80.0 & 125.0 \\" in tex


def test_iqm_table_and_numbers(built):
    out, _ = built
    text = (out / "table_iqm.md").read_text()
    am = next(line for line in text.splitlines() if line.startswith("| antmaze-umaze-v0"))
    assert am.startswith("| antmaze-umaze-v0 | 25.0 [") and "**90.0 [90.0, 90.0]**" in am
    numbers = json.loads((out / "report.json").read_text())
    cell = numbers["tables"]["main"]["antmaze-umaze-v0 | iql"]
    assert cell["scores"] == [10, 20, 30, 100] and cell["iqm"] == 25.0
    assert cell["ci"][0] <= 25.0 <= cell["ci"][1] and cell["ci"][0] >= 10 and cell["ci"][1] <= 100
    # the pooled locomotion IQM of iql: 6 runs [10, 20, 60, 40, 50, 60] -> cut 1 each end -> 42.5
    loco = next(line for line in text.splitlines() if line.startswith("| IQM, all locomotion runs"))
    assert loco.split(" | ")[1].startswith("42.5 [")
    assert numbers["unfinished"] == [str(Path(numbers["root"]) / "main/stratdiff-iql/hopper-medium-v2/seed2")]


def test_ablation_labelled_from_config_not_folder(built):
    out, md = built
    text = (out / "table_ablation_utd.md").read_text()
    assert "| dataset | UTD=1 | UTD=10 |" in text
    assert "| walker2d-medium-replay-v2 | 80.0 ± 10.0 | **100.0 ± 5.0** |" in text
    assert "hopper" not in text  # no UTD=10 runs there
    assert "stratdiff-iql [UTD=10]" in md  # in the scale table, not in Table 1
    assert "UTD=10" not in (out / "table_main.md").read_text()


def test_report_md_lists_unfinished_scale_and_figures(built, runs_root):
    out, md = built
    assert "Runs read: 22 (21 finished, 1 unfinished); preset(s): smoke." in md
    assert f"`{runs_root / 'main/stratdiff-iql/hopper-medium-v2/seed2'}`" in md and "| 300 / 400 | yes |" in md
    assert "| iql | smoke | 200 | 200 | 1 | 0.5 | 100, 2 | 0, 1, 2, 3 | 3 | 10 |" in md
    assert "1000" not in (out / "table_main.md").read_text()
    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert figures == ["ablation_utd_curves.png", "ablation_utd_exchange.png", "curves_antmaze_iql.png",
                       "curves_locomotion_iql.png", "exchange_iql.png", "rliable_improvement_antmaze.png",
                       "rliable_improvement_locomotion.png", "rliable_profile_antmaze.png",
                       "rliable_profile_locomotion.png", "scores_iql.png"]
    for name in figures:
        assert f"](figures/{name})" in md
        data = (out / "figures" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert "| stratdiff-iql | 200.0 | 20.9 | 5.0 |" in md  # cost: mean online steps/s (20 + seed) over 8 runs


def test_rliable_aggregates_profiles_and_improvement(built):
    out, md = built
    numbers = json.loads((out / "report.json").read_text())["tables"]["rliable"]
    # locomotion: both methods ran hopper and walker2d; stratdiff-iql has 2 hopper seeds, so 2 seeds each:
    # iql [[10, 40], [20, 50]], stratdiff-iql [[40, 70], [50, 80]]
    loco = numbers["locomotion"]
    assert loco["datasets"] == ["hopper-medium-v2", "walker2d-medium-replay-v2"] and loco["seeds_per_dataset"] == 2
    iql, sd = loco["aggregates"]["iql"], loco["aggregates"]["stratdiff-iql"]
    assert (iql["IQM"][0], iql["mean"][0], iql["optimality gap"][0]) == (30.0, 30.0, 70.0)
    assert (sd["IQM"][0], sd["mean"][0], sd["optimality gap"][0]) == (60.0, 60.0, 40.0)
    for point, low, high in (*iql.values(), *sd.values()):
        assert low <= point <= high
    assert 10.0 <= iql["mean"][1] < iql["mean"][2] <= 50.0  # resampled seeds within each dataset
    # no iql run beats a stratdiff-iql run on the same dataset
    assert loco["probability_of_improvement"]["iql > stratdiff-iql"] == [0.0, 0.0, 0.0]
    # AntMaze: 3 seeds each (iql's 4th dropped), iql [10, 20, 30] against [90, 90, 90]
    am = numbers["antmaze"]["aggregates"]
    assert am["iql"]["mean"][0] == 20.0 and am["stratdiff-iql"]["optimality gap"] == [10.0, 10.0, 10.0]
    table = (out / "table_rliable_locomotion.md").read_text()
    assert "| iql | 30.0 [" in table and "| stratdiff-iql | 60.0 [" in table
    assert "rliable, 500 resamples, seed 3" in table
    assert r"\toprule" in (out / "table_rliable_antmaze.tex").read_text()
    assert "## Aggregate metrics with rliable" in md and "| method | IQM | mean | optimality gap |" in md
    assert (out / "table_main.md").is_file() and (out / "table_iqm.tex").is_file()  # the tables stay


def test_curve_aggregation_and_online_steps(runs_root):
    x, mean, std, n = figures.aggregate_curve([(np.array([0, 10]), np.array([1.0, 3.0])),
                                               (np.array([0, 10, 20]), np.array([3.0, 5.0, 7.0]))])
    assert x.tolist() == [0, 10, 20] and mean.tolist() == [2.0, 4.0, 7.0] and n.tolist() == [2, 2, 1]
    assert std[:2] == pytest.approx([math.sqrt(2)] * 2) and std[2] == 0.0
    runs = {(r.algo, r.dataset, r.seed, r.finished): r for r in run_folders.find_runs(runs_root)}
    xs, ys = runs[("iql", "hopper-medium-v2", 2, True)].online_series("eval/score")
    assert xs.tolist() == [0, 50, 100, 150, 200] and ys.tolist() == [30.0, 37.5, 45.0, 52.5, 60.0]


def test_variant_labels_and_scale(tmp_path):
    write_run(tmp_path / "a", "stratdiff-iql", *HOP, 0, 1.0, overrides={
        "agent.online_value_loss": "linear", "stratifier.exchange_cap": 8, "online_steps": 400})
    write_run(tmp_path / "b", "stratdiff-iql", *HOP, 0, 1.0, overrides={"stratifier.stratify": False})
    runs = {r.path.name: r for r in run_folders.find_runs(tmp_path)}
    assert run_folders.variant_label(runs["a"].variant) == "w/o expectile (Eq. 14 literal), n_c=8"
    assert runs["a"].scale == "smoke, 200+400 steps" and runs["b"].scale == "smoke"
    assert run_folders.variant_label(runs["b"].variant) == "w/o stratification"
    cols = [c.label for c in run_folders.group_columns(list(runs.values()))]
    assert "stratdiff-iql [w/o stratification] (smoke)" in cols


def test_stats_hand_values_and_bootstrap():
    assert stats.iqm([10, 20, 30, 100]) == 25.0
    assert stats.iqm([3, 1, 2]) == 2.0  # fewer than 4: nothing cut
    assert stats.iqm(np.arange(1, 9)) == 4.5  # cut 2 each side: mean(3, 4, 5, 6)
    assert stats.iqm(np.array([[1, 2, 3, 10], [0, 0, 4, 4]])).tolist() == [2.5, 2.0]
    mean, std = stats.mean_std([10, 20, 60])
    assert mean == 30.0 and std == pytest.approx(math.sqrt(700))
    assert math.isnan(stats.mean_std([5.0])[1])
    scores = [[12.0, 40.0, 55.0, 61.0, 90.0], [3.0, 7.0, 8.0]]
    a = stats.stratified_bootstrap_ci(scores, reps=1000, seed=7)
    assert a == stats.stratified_bootstrap_ci(scores, reps=1000, seed=7)
    assert a != stats.stratified_bootstrap_ci(scores, reps=1000, seed=8)
    point, lo, hi = a
    assert point == stats.iqm(np.concatenate(scores)) and lo <= point <= hi and lo < hi
    # stratified: each task keeps its size, so constant tasks give a zero-width interval
    # (a pooled bootstrap would draw 0 to 4 copies of each value and spread)
    assert stats.stratified_bootstrap_ci([[1.0, 1.0], [3.0, 3.0]], reps=200, seed=0) == (2.0, 2.0, 2.0)


def test_cli(runs_root, tmp_path, capsys):
    from stratdiff.commands import report as command

    assert command.main([str(runs_root), "--out", str(tmp_path / "r"), "--reps", "100"]) == 0
    out = capsys.readouterr().out
    assert "| total (locomotion) | 80.0 | 125.0 |" in out and str(tmp_path / "r" / "report.md") in out
    (tmp_path / "empty").mkdir()
    assert command.main([str(tmp_path / "empty")]) == 1
    assert "no run folders" in capsys.readouterr().err


def test_curves_panel_title_names_seed_counts_per_column():
    iql = run_folders.Column("iql", (), "cpu", "IQL")
    strat = run_folders.Column("stratdiff-iql", (), "cpu", "StratDiff-IQL")
    series = (np.array([1.0]), np.array([2.0]))
    assert figures.panel_title("hopper", {(iql, 0): [series] * 3, (strat, 0): [series] * 3}) == "hopper  (3 seeds)"
    assert figures.panel_title("hopper", {(iql, 0): [series]}) == "hopper  (1 seed)"
    # different counts: each column's own, not the largest for all
    assert figures.panel_title("walker", {(iql, 0): [series] * 3, (strat, 0): [series]}) == \
        "walker  (seeds: IQL 3, StratDiff-IQL 1)"
    long = "walker2d-medium-replay-v5"
    assert figures.panel_title(long, {(iql, 0): [series] * 3, (strat, 0): [series]}) == \
        long + "\n(seeds: IQL 3, StratDiff-IQL 1)"


def test_unknown_env_unresolvable_config_and_nonfinite_score_are_said_by_run(tmp_path, capsys):
    """Nothing is dropped or relabelled silently: an environment without an EnvSpec, a config
    that does not resolve and a non-finite final score each give a warning naming the run."""
    good = write_run(tmp_path / "runs" / "ok", "iql", *HOP, 0, 30.0)
    nan = write_run(tmp_path / "runs" / "nan", "iql", *HOP, 1, 40.0)
    summary = json.loads((nan / "summary.json").read_text())
    (nan / "summary.json").write_text(json.dumps({**summary, "final_score": float("nan")}))
    rows = list(csv.DictReader(open(nan / "metrics.csv")))
    rows[-1]["eval/score"] = "nan"
    with open(nan / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    odd = write_run(tmp_path / "runs" / "odd", "iql", *HOP, 2, 50.0)
    config = json.loads((odd / "config.json").read_text())
    (odd / "config.json").write_text(json.dumps({**config, "env": "NoSuchEnv-v0", "algo": "my-method"}))
    run_folders._WARNED.clear()
    run_folders._DEFAULTS_CACHE.clear()
    md = report.write_report(tmp_path / "runs", tmp_path / "out", reps=50).read_text()
    err = capsys.readouterr().err
    assert f"run {odd}: environment 'NoSuchEnv-v0' has no EnvSpec" in err and "reported under 'other'" in err
    assert f"run {odd}: its default config does not resolve" in err
    assert f"run {nan}: final score nan is not finite; left out of the cell" in err
    assert str(good) not in err
    assert f"`{nan}`: finished without a final evaluation score" in md


# The committed studies: their report tables are regenerated from the light run files alone
# (config.json, metrics.csv, summary.json); no training, no agent weights.
COMMITTED_REPORTS = ("results/study-cpu", "results/antmaze-cpu", "results/study-cpu/halfcheetah-medium-32.6")


@pytest.mark.parametrize("study", COMMITTED_REPORTS)
def test_regenerated_report_reproduces_the_committed_tables(study, tmp_path, monkeypatch):
    import shutil

    repo = Path(__file__).resolve().parents[1]
    runs = repo / study / "runs"
    if not runs.is_dir():
        pytest.skip(f"{study}/runs is not in this checkout")
    for path in runs.rglob("*"):
        if path.name in ("config.json", "metrics.csv", "summary.json") and path.is_file():
            target = tmp_path / study / "runs" / path.relative_to(runs)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
    monkeypatch.chdir(tmp_path)  # the committed report names its root relative to the repository
    report.write_report(f"{study}/runs", tmp_path / "out")
    for name in ("table_main.md", "table_iqm.md", "table_main.tex", "table_iqm.tex", "report.md"):
        assert (tmp_path / "out" / name).read_text() == (repo / study / "report" / name).read_text(), name


def test_rliable_improvement_with_commas_in_method_labels(tmp_path):
    """Column labels carry config variants ("m [a=1, b=2]"); probabilities and their figure must
    not split a label at its commas."""
    from stratdiff.experiments import rliable_stats

    x, y = "iql", "stratdiff-iql [diffusion_steps=3000, support_states=4096]"
    matrices = {x: np.array([[10.0], [20.0], [30.0]]), y: np.array([[40.0], [50.0], [60.0]])}
    probs = rliable_stats.probability_of_improvement(matrices, reps=50, seed=0)
    assert list(probs) == [(x, y)] and probs[(x, y)][0] == 0.0  # every iql run below every other
    rliable_stats.plot_probability_of_improvement(probs, tmp_path / "poi.png", "title")
    assert (tmp_path / "poi.png").stat().st_size > 0
