"""`stratdiff train --wandb` in W&B's offline mode (no network): the offline run in the run folder
holds the run's config and the same metric rows as metrics.csv. W&B is the `wandb` extra, which
`make test` installs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

pytest.importorskip("wandb")

TINY = ("offline_steps=20", "online_steps=20", "online_warmup_steps=5", "log_every=10", "eval_every=20",
        "checkpoint_every=20", "eval_episodes=1", "batch_size=16")


def run_file(folder: Path) -> Path:
    """The one offline run file under `folder/wandb/`, complete: W&B's service writes the file on
    after `finish()` returns, and `wandb.teardown()` waits for it to end."""
    import wandb

    wandb.teardown()
    [path] = (folder / "wandb").glob("offline-run-*/run-*.wandb")
    return path


def wandb_records(path: Path) -> list:
    """The protobuf records of a W&B run file (`run-ID.wandb`: a 7-byte header, then LevelDB-style
    log blocks of 32 KiB whose records carry a 7-byte header: checksum, length, type)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, payload, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        if kind == 0:  # zero padding to the end of the block
            pos += left
            continue
        payload += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL, or LAST of a split record
            record = pb.Record()
            record.ParseFromString(payload)
            records.append(record)
            payload = b""
    return records


@pytest.mark.slow
def test_wandb_offline_run_holds_config_and_metric_rows(hopper_hdf5, tmp_path, monkeypatch):
    from stratdiff.commands import train

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_DIR", raising=False)  # unset: the run folder holds W&B's files
    out = tmp_path / "run"
    argv = ["--algo", "iql", "--dataset", str(hopper_hdf5), "--env", "Hopper-v5", "--preset", "smoke",
            "--out", str(out), "--no-progress", "--wandb", "--wandb-project", "proj", "--wandb-group", "grp",
            "--set", *TINY]
    assert train.main(argv) == 0

    records = wandb_records(run_file(out))
    [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (run.project, run.run_group, run.display_name) == ("proj", "grp", f"iql/{hopper_hdf5.name}/seed0")
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    stored = json.loads((out / "config.json").read_text())
    assert {k: v["value"] if isinstance(v, dict) and "value" in v else v
            for k, v in config.items() if k != "_wandb"} == stored

    history = {}
    for r in records:
        if r.WhichOneof("record_type") == "history":
            items = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item}
            row = {k: v for k, v in items.items() if not k.startswith("_")}
            history[r.history.step.num] = row
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(history) == [int(r["step"]) for r in rows] == [10, 20, 30, 40]
    for row in rows:
        logged = history[int(row["step"])]
        expected = {k: (v if k == "phase" else float(v)) for k, v in row.items() if k != "step" and v != ""}
        assert logged == expected
    summary = json.loads((out / "summary.json").read_text())
    assert history[40]["eval/score"] == summary["final_score"]


@pytest.mark.parametrize("wandb_dir_set", [False, True])
def test_wandb_files_go_to_wandb_dir_when_set_else_to_the_run_folder(wandb_dir_set, tmp_path, monkeypatch):
    from stratdiff.wandb_logging import WandbLogger, WandbOptions

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.chdir(tmp_path)  # W&B's own default (./wandb) is neither folder below
    elsewhere, out = tmp_path / "elsewhere", tmp_path / "run"
    if wandb_dir_set:
        monkeypatch.setenv("WANDB_DIR", str(elsewhere))
    else:
        monkeypatch.delenv("WANDB_DIR", raising=False)
    logger = WandbLogger(WandbOptions(project="proj", name="dir-check"), {"seed": 3}, out)
    logger.log({"step": 7, "eval/score": 12.5})
    logger.finish({"final_score": 12.5})

    expected, other = (elsewhere, out) if wandb_dir_set else (out, elsewhere)
    records = wandb_records(run_file(expected))
    assert not (other / "wandb").exists() and not (tmp_path / "wandb").exists()
    [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (run.project, run.display_name) == ("proj", "dir-check")
    [history] = [r.history for r in records if r.WhichOneof("record_type") == "history"]
    items = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in history.item}
    assert history.step.num == 7 and items["eval/score"] == 12.5


def test_sweep_runs_log_to_wandb_grouped_by_the_sweep(tmp_path):
    from stratdiff.experiments import sweep

    cfg = sweep.SweepConfig(algos=("iql",), datasets=("hopper-medium-v5",), seeds=(0, 1), preset="smoke",
                            out=str(tmp_path / "pilot"), wandb=True, overrides=("online_steps=10",))
    for run in sweep.plan(cfg):
        opts = list(run.options)
        assert opts[opts.index("--wandb-group") + 1] == "pilot" and "--wandb" in opts
        assert opts[opts.index("--wandb-project") + 1] == "stratdiff"
        assert opts.index("--wandb") < opts.index("--set")  # --set takes the rest of the line
    named = sweep.SweepConfig(algos=("iql",), datasets=("d",), seeds=(0,), preset="smoke", out=str(tmp_path / "x"),
                              wandb=True, wandb_project="p", wandb_group="g")
    opts = list(sweep.plan(named)[0].options)
    assert opts[opts.index("--wandb-project") + 1] == "p" and opts[opts.index("--wandb-group") + 1] == "g"
    plain = sweep.SweepConfig(algos=("iql",), datasets=("d",), seeds=(0,), preset="smoke", out=str(tmp_path / "y"))
    assert "--wandb" not in sweep.plan(plain)[0].options
