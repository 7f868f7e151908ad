"""The README's Python API example, extracted from between its markers and run as written: in a
fresh Python process, in an empty temporary working directory, with nothing prepared (the
example makes its own data, at smoke scale)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
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
    assert len(code.strip().splitlines()) <= 13
    assert code.startswith("from stratdiff import load_dataset, resolve_config, train\n")
    assert "make_dataset(" in code  # it makes its own data: nothing to download or prepare


@pytest.mark.slow
def test_readme_example_runs_as_written_in_an_empty_folder(tmp_path):
    from stratdiff.data import load_dataset
    from stratdiff.envs import reference_scores

    assert not any(tmp_path.iterdir())
    done = subprocess.run([sys.executable, "-c", readme_example()], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()[-3:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hopper-medium.hdf5", "runs"]
    run = tmp_path / "runs" / "api-demo"
    summary = json.loads((run / "summary.json").read_text())
    config = json.loads((run / "config.json").read_text())

    assert lines[0] == "2000 11 3"  # transitions, observation and action sizes of Hopper-v5
    assert lines[1] == "200 200 64"  # the smoke preset's offline and online steps and batch size
    assert lines[2] == f"{summary['final_score']} normalised dataset metadata"
    # the file holds the 2000 transitions the run trained on, with Hopper's reference scores
    data = load_dataset(tmp_path / "hopper-medium.hdf5")
    assert data.size == 2000 and data.info.env_id == "Hopper-v5"
    assert summary["dataset_fingerprint"] == data.fingerprint()
    refs = summary["reference_scores"]
    assert (refs["min"], refs["max"]) == pytest.approx(reference_scores("Hopper-v5"))
    assert summary["algo"] == "iql" and summary["preset"] == "smoke" and summary["seed"] == 0
    assert summary["offline_steps"] == 200 and summary["online_steps"] == 200
    assert config["eval_episodes"] == 1 and config["env"] == "Hopper-v5"
