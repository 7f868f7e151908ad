"""The README's Python API example, extracted from between its markers and run as written (smoke
scale, in a temporary folder holding the `hopper-random.hdf5` it names)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    text = README.read_text()
    block = re.search(r"<!-- api-example:start -->\n```python\n(.*?)```\n<!-- api-example:end -->", text, re.S)
    assert block, "README.md has no Python API example between the api-example markers"
    return block.group(1)


def test_readme_example_is_short_and_imports_the_api():
    code = readme_example()
    assert len(code.strip().splitlines()) <= 10
    assert code.startswith("from stratdiff import load_dataset, resolve_config, train\n")


@pytest.mark.slow
def test_readme_example_runs_as_written(hopper_hdf5, tmp_path, monkeypatch, capsys):
    shutil.copy(hopper_hdf5, tmp_path / "hopper-random.hdf5")
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_example(), str(README), "exec"), {"__name__": "__readme__"})
    lines = capsys.readouterr().out.strip().splitlines()[-3:]
    summary = json.loads((tmp_path / "runs" / "api-demo" / "summary.json").read_text())
    assert lines[0] == "2000 11 3"  # transitions, observation and action sizes
    assert lines[1] == "200 200 64"  # the smoke preset's steps and batch size
    assert lines[2] == f"{summary['final_score']} normalised D4RL"
    assert summary["algo"] == "iql" and summary["online_steps"] == 200
    config = json.loads((tmp_path / "runs" / "api-demo" / "config.json").read_text())
    assert config["eval_episodes"] == 1 and config["env"] == "Hopper-v5"
