"""Dataset builders: tiny builds written as Minari datasets and read back, determinism,
episode limits, medium-replay / medium-expert assembly, D4RL export."""

import importlib.metadata
import json
import platform
import socket
import subprocess
import sys

import flax.serialization
import jax
import numpy as np
import pytest

from stratdiff import rollouts
from stratdiff.agents.sac import SACAgent, SACConfig
from stratdiff.behaviour import policies
from stratdiff.cli import main as cli_main
from stratdiff.data import builders
from stratdiff.data.loaders import load_dataset, read_d4rl_hdf5
from stratdiff.locks import FolderBusyError

HOP_OBS, HOP_ACT = 11, 3


def _tiny_policy(folder, seed, step):
    """A (random-init) SAC actor written the way `export_policy` writes one."""
    folder.mkdir(parents=True)
    agent = SACAgent.create(jax.random.PRNGKey(seed), HOP_OBS, HOP_ACT, SACConfig(hidden_dims=(16, 16)))
    params = jax.tree_util.tree_map(np.asarray, agent.actor_params)
    (folder / "actor.msgpack").write_bytes(flax.serialization.msgpack_serialize(params))
    (folder / "policy.json").write_text(json.dumps({
        "env_id": "Hopper-v5", "step": step, "seed": seed, "provisional": False,
        "sac_config": {"hidden_dims": [16, 16]},
        "evaluation": {"stochastic": {"score": 1.5, "return": 30.0}}}))
    return folder


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pol")
    medium = _tiny_policy(root / "medium", 1, 1000)
    expert = _tiny_policy(root / "expert", 2, 2000)
    # a small "replay buffer": 300 random-policy transitions in the shipped compact form
    data = builders.rollout(policies.load_policy("Hopper-v5", "random"), 300, seed=9)
    np.savez_compressed(medium / "replay.npz", **policies.compact_transitions(data))
    return {"medium": medium, "expert": expert, "replay": data}


def test_random_build_round_trips_through_minari_and_inspect(tmp_path, capsys):
    out, ds, seconds = builders.build("hopper-random-v5", size=2000, out=tmp_path / "hr",
                                      command="stratdiff data build hopper-random-v5 --size 2000")
    assert ds.size == 2000 and seconds > 0
    back = load_dataset(tmp_path / "hr")
    assert back.size == 2000 and back.num_episodes == ds.num_episodes > 50
    for k in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts"):
        np.testing.assert_array_equal(getattr(back, k), getattr(ds, k))
    # uniform random hopper falls within ~20-40 steps: true terminations, one final cut
    assert back.terminals.sum() == back.num_episodes - 1 and back.timeouts[-1]
    assert np.abs(back.actions).max() <= 1.0 and back.actions.std() > 0.5
    extra = back.info.extra
    assert back.info.env_id == "Hopper-v5" and back.info.ref_max_score == pytest.approx(3234.3)
    assert extra["seed"] == 0 and extra["behaviour_policy"]["level"] == "random"
    assert extra["command"].endswith("--size 2000") and "stratdiff_version" in extra
    # the simulator that made the data is recorded with it (MuJoCo releases change the ant's episodes)
    assert extra["libraries"]["mujoco"] == importlib.metadata.version("mujoco")
    timing = json.loads((tmp_path / "hr" / "build_time.json").read_text())
    assert timing["libraries"] == extra["libraries"] and timing["machine"] == extra["machine"]
    assert extra["machine"]["arch"] == platform.machine()
    assert cli_main(["data", "inspect", str(tmp_path / "hr"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["transitions"] == 2000 and summary["episodes"] == ds.num_episodes
    assert summary["normalized_score"] == pytest.approx(ds.summary()["normalized_score"])
    # one fingerprint for the built arrays, the file read back, the metadata and the build record
    assert summary["fingerprint"] == back.fingerprint() == ds.fingerprint() == extra["fingerprint"]
    assert timing["fingerprint"] == ds.fingerprint() and len(ds.fingerprint()) == 16
    assert ds.replace(rewards=ds.rewards + np.float32(1e-3)).fingerprint() != ds.fingerprint()
    assert -2 < summary["normalized_score"] < 3  # D4RL's hopper-random is ~1.2
    # D4RL-layout export
    assert cli_main(["data", "export", str(tmp_path / "hr"), "--d4rl", str(tmp_path / "hr.hdf5")]) == 0
    d4 = read_d4rl_hdf5(tmp_path / "hr.hdf5")
    np.testing.assert_array_equal(d4.rewards, ds.rewards)


def test_failed_or_busy_build_leaves_the_built_dataset_alone(tmp_path, monkeypatch):
    out = tmp_path / "hr"
    builders.build("hopper-random-v5", size=300, out=out, seed=1)
    old = load_dataset(out)
    # a rebuild that fails while writing: no half-written dataset, the old one intact
    def broken(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(builders, "write_step_infos", broken)
    with pytest.raises(OSError, match="disk full"):
        builders.build("hopper-random-v5", size=500, out=out, seed=2, force=True)
    assert sorted(p.name for p in out.iterdir()) == ["build_time.json", "data"]
    assert load_dataset(out).fingerprint() == old.fingerprint() and load_dataset(out).size == 300
    monkeypatch.undo()
    # the first build into a fresh folder fails the same way: nothing there looks built
    monkeypatch.setattr(builders, "write_step_infos", broken)
    with pytest.raises(OSError):
        builders.build("hopper-random-v5", size=300, out=tmp_path / "fresh")
    assert not (tmp_path / "fresh" / "data").exists() and not (tmp_path / "fresh" / ".partial").exists()
    monkeypatch.undo()
    # a killed build's staging folder is cleared by the next build; a live build's lock refuses
    (out / ".partial" / "data").mkdir(parents=True)
    (out / ".partial" / "data" / "metadata.json").write_text("{}")
    new, ds, _ = builders.build("hopper-random-v5", size=500, out=out, seed=2, force=True)
    assert load_dataset(out).size == 500 != old.size and not (out / ".partial").exists()
    assert not (out / "build.lock").exists()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / "build.lock").write_text(f"{socket.gethostname()} {sleeper.pid}")
        with pytest.raises(FolderBusyError, match="build.lock"):
            builders.build("hopper-random-v5", size=300, out=out, force=True)
        assert cli_main(["data", "build", "hopper-random-v5", "--out", str(out), "--force"]) == 1
        assert load_dataset(out).size == 500
    finally:
        sleeper.kill()
        sleeper.wait()


def test_build_is_deterministic_for_a_seed(dirs):
    a = builders.make_dataset("hopper-medium-v5", 1200, seed=4, policy_dirs=dirs)
    b = builders.make_dataset("hopper-medium-v5", 1200, seed=4, policy_dirs=dirs)
    c = builders.make_dataset("hopper-medium-v5", 1200, seed=5, policy_dirs=dirs)
    for k in ("observations", "actions", "rewards", "terminals", "timeouts"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    assert not np.array_equal(a.actions, c.actions)
    assert a.info.extra["behaviour_policy"]["sac_step"] == 1000


def test_policy_noise_and_medium_expert_concatenation(dirs):
    med = builders.make_dataset("hopper-medium-v5", 800, seed=0, policy_dirs=dirs)
    exp = builders.make_dataset("hopper-expert-v5", 800, seed=0, policy_dirs=dirs)
    me = builders.make_dataset("hopper-medium-expert-v5", 800, seed=0, policy_dirs=dirs)
    assert me.size == 1600
    np.testing.assert_array_equal(me.actions, np.concatenate([med.actions, exp.actions]))
    assert me.info.extra["behaviour_policy"]["expert"]["sac_step"] == 2000
    # actions are sampled (with the policy's own noise), not the deterministic tanh(mean)
    pol = policies.load_policy("Hopper-v5", "medium", dirs["medium"])
    det = np.asarray(pol.deterministic(med.observations[:100]))
    assert np.abs(det - med.actions[:100]).mean() > 0.1


def test_medium_replay_reads_the_shipped_buffer(dirs):
    mr = builders.make_dataset("hopper-medium-replay-v5", policy_dirs=dirs)
    for k, v in dirs["replay"].items():
        np.testing.assert_array_equal(getattr(mr, k), v)
    cut = builders.make_dataset("hopper-medium-replay-v5", 100, policy_dirs=dirs)
    assert cut.size == 100 and (cut.terminals[-1] or cut.timeouts[-1])


def test_episode_limit_gives_timeouts():
    # Pendulum never terminates: every episode is cut by the limit, as a time-out
    data = builders.rollout(policies.load_policy("Pendulum-v1", "random"), 230, seed=0,
                            max_episode_steps=50)
    assert len(data["rewards"]) == 230 and not data["terminals"].any()
    assert np.flatnonzero(data["timeouts"]).tolist() == [49, 99, 149, 199, 229]
    assert np.abs(data["actions"]).max() > 1.0  # rescaled to Pendulum's +-2 bounds


def test_rollout_building_blocks_join_episodes_and_split_work_over_threads():
    def episode(n, terminal):
        return {"rewards": np.arange(n, dtype=np.float32), "terminals": np.arange(n) == n - 1 if terminal
                else np.zeros(n, bool), "timeouts": np.zeros(n, bool) if terminal else np.arange(n) == n - 1}

    out = rollouts.join_episodes([episode(3, True), episode(4, False)], 5)  # the second one cut
    assert out["rewards"].tolist() == [0, 1, 2, 0, 1]
    assert out["terminals"].tolist() == [False, False, True, False, False]
    assert out["timeouts"].tolist() == [False, False, False, False, True]
    assert rollouts.join_episodes([episode(3, True)], 10)["timeouts"].tolist() == [False] * 3
    with pytest.raises(ValueError, match="no finished episodes"):
        rollouts.join_episodes([], 5)
    for threads in (1, 2, 3, 8):
        seen = np.zeros(5, int)

        def work(lo, hi):
            seen[lo:hi] += 1

        with rollouts.ChunkThreads(threads) as pool:
            pool.run(work, 5)
        assert seen.tolist() == [1] * 5  # every item once, whatever the thread count

    def fail(lo, hi):
        raise RuntimeError(f"chunk {lo}-{hi}")

    with rollouts.ChunkThreads(2) as pool, pytest.raises(RuntimeError, match="chunk"):
        pool.run(fail, 4)
    with pytest.raises(ValueError, match="threads"):
        rollouts.ChunkThreads(0)


def test_unknown_names_and_missing_policies(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'hopper-bad-v5'"):
        builders.recipe("hopper-bad-v5")
    assert builders.is_buildable("walker2d-medium-expert-v5")
    assert builders.missing_policies("hopper-random-v5") == []


def test_data_list_notes_provisional_policies(tmp_path, monkeypatch, capsys):
    # a policies folder with a finished medium and a provisional expert for Hopper
    for level, provisional, step in (("medium", False, 150_000), ("expert", True, 210_000)):
        (tmp_path / "Hopper-v5" / level).mkdir(parents=True)
        (tmp_path / "Hopper-v5" / level / "policy.json").write_text(
            json.dumps({"env_id": "Hopper-v5", "step": step, "provisional": provisional}))
    monkeypatch.setattr(policies, "policies_root", lambda: tmp_path)
    assert builders.provisional_policies("hopper-medium-v5") == []
    assert builders.provisional_policies("hopper-medium-expert-v5") == ["expert policy (SAC step 210000)"]
    assert builders.missing_policies("walker2d-expert-v5") == ["expert policy"]
    monkeypatch.setenv("STRATDIFF_DATA_DIR", str(tmp_path / "data"))
    assert cli_main(["data", "list", "--json"]) == 0
    rows = {r["name"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows["hopper-expert-v5"]["provisional"] == ["expert policy (SAC step 210000)"]
    assert rows["walker2d-medium-expert-v5"]["missing"] == ["medium policy", "expert policy"]
    assert cli_main(["data", "list"]) == 0
    table = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    assert table["hopper-expert-v5"].endswith("provisional expert policy (SAC step 210000)")
    assert table["hopper-medium-v5"].rstrip().endswith("-")
