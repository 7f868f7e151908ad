"""Minari datasets written offline with minari's own DataCollector and with `write_minari`:
reading, round trips, source resolution, and corrupted variants."""

from __future__ import annotations

import json
import shutil
import warnings

import gymnasium as gym
import h5py
import minari
import numpy as np
import pytest

from stratdiff.data import Dataset, DatasetError, DatasetInfo, load_dataset, read_minari, write_minari

DATASET_ID = "test/pendulum/random-v0"


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    """A Minari dataset of 5 short random InvertedPendulum-v5 episodes (actions in [-1, 1])."""
    root = tmp_path_factory.mktemp("minari")
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mp.setenv("MINARI_DATASETS_PATH", str(root))
        env = minari.DataCollector(gym.make("InvertedPendulum-v5", max_episode_steps=12))
        rng = np.random.default_rng(0)
        for i in range(5):
            env.reset(seed=i)
            done = False
            while not done:
                _, _, term, trunc, _ = env.step(rng.uniform(-1, 1, size=1).astype(np.float32))
                done = term or trunc
        env.create_dataset(DATASET_ID, algorithm_name="random", description="test data")
        env.close()
    return root


def _episodes(root):
    return list(minari.MinariDataset(root / DATASET_ID / "data").iterate_episodes())


def test_reads_data_collector_dataset(collected):
    ds = load_dataset(collected / DATASET_ID)
    eps = _episodes(collected)
    assert ds.num_episodes == len(eps) == 5
    assert ds.size == sum(len(e.rewards) for e in eps)
    assert (ds.obs_dim, ds.act_dim) == (4, 1)
    np.testing.assert_array_equal(ds.observations[: len(eps[0].rewards)], eps[0].observations[:-1].astype(np.float32))
    np.testing.assert_array_equal(ds.next_observations[: len(eps[0].rewards)], eps[0].observations[1:].astype(np.float32))
    np.testing.assert_allclose(ds.episode_returns(), [e.rewards.sum() for e in eps])
    np.testing.assert_array_equal(ds.terminals, np.concatenate([e.terminations for e in eps]))
    np.testing.assert_array_equal(ds.timeouts, np.concatenate([e.truncations for e in eps]))
    assert ds.info.env_id == "InvertedPendulum-v5"
    assert ds.info.name == DATASET_ID
    # also the data/ folder itself, and the id through MINARI_DATASETS_PATH
    assert load_dataset(collected / DATASET_ID / "data").size == ds.size


def test_minari_fallback_reader_agrees(collected, monkeypatch):
    """Formats h5py cannot read directly (arrow, JPEG-encoded images) go through minari's episodes;
    both readers give the same dataset."""
    from stratdiff.data import loaders

    fast = load_dataset(collected / DATASET_ID)
    monkeypatch.setattr(loaders, "_hdf5_obs_keys", lambda mds: None)
    slow = load_dataset(collected / DATASET_ID)
    for k in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts", "episode_ends"):
        np.testing.assert_array_equal(getattr(slow, k), getattr(fast, k), err_msg=k)
    assert slow.info == fast.info


def test_minari_id_from_local_path(collected, monkeypatch, tmp_path):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(collected))
    monkeypatch.setenv("STRATDIFF_DATA_DIR", str(tmp_path / "none"))
    ds = load_dataset(DATASET_ID, env_id="InvertedPendulum-v5")
    assert ds.num_episodes == 5


def test_write_minari_round_trip_and_minari_can_load(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    eps = []
    for t, term in [(7, True), (5, False), (9, False)]:
        obs = rng.normal(size=(t + 1, 29)).astype(np.float32)
        eps.append(dict(observations=obs, actions=rng.uniform(-1, 1, (t, 8)), rewards=(rng.random(t) > 0.7),
                        terminals=np.eye(t, dtype=bool)[-1] & term, timeouts=np.eye(t, dtype=bool)[-1] & (not term)))
    info = DatasetInfo(name="antmaze-umaze-test", env_id="antmaze-umaze-v0", ref_min_score=0.0, ref_max_score=1.0,
                       extra={"builder": "waypoint", "noise": 0.2})
    ds = Dataset.from_episodes(eps, info)
    assert ds.num_episodes == 3 and ds.size == 21
    root = tmp_path / "minari"
    out = write_minari(ds, root / "stratdiff" / "antmaze-umaze-test-v0", {"dataset_id": "stratdiff/antmaze-umaze-test-v0",
                                                                          "seed": 7})
    back = read_minari(out, validate=False)  # validate=False: no AntMaze build in this test
    for k in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts", "episode_ends"):
        np.testing.assert_array_equal(getattr(back, k), getattr(ds, k), err_msg=k)
    assert back.info.env_id == "antmaze-umaze-v0"
    assert back.info.ref_scores == (0.0, 1.0)
    assert back.info.extra == {"builder": "waypoint", "noise": 0.2, "seed": 7}
    # minari's own loader reads it (by id, from MINARI_DATASETS_PATH) and scores with its references
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    mds = minari.load_dataset("stratdiff/antmaze-umaze-test-v0")
    assert mds.total_episodes == 3 and mds.total_steps == 21
    assert float(minari.get_normalized_score(mds, np.array([0.5]))[0]) == pytest.approx(0.5)
    # and writing onto an existing dataset is refused
    with pytest.raises(DatasetError, match="already exists"):
        write_minari(ds, out)


def _episodes_dataset(lengths, seed, env_id, obs_dim, act_dim):
    rng = np.random.default_rng(seed)
    eps = []
    for t in lengths:
        term = bool(rng.random() < 0.8)
        eps.append(dict(observations=rng.normal(size=(t + 1, obs_dim)), actions=rng.uniform(-1, 1, (t, act_dim)),
                        rewards=rng.normal(size=t) * 10, terminals=np.eye(t, dtype=bool)[-1] & term,
                        timeouts=np.eye(t, dtype=bool)[-1] & (not term)))
    return Dataset.from_episodes(eps, DatasetInfo(name="many-short", env_id=env_id, ref_min_score=-40.0,
                                                  ref_max_score=-4.0))


def test_write_minari_many_short_episodes_as_minari_reads_them(tmp_path, monkeypatch):
    """Thousands of 1-5 step episodes (hopper-random's shape, scaled down): minari's own loader sees
    every episode, its arrays and the metadata minari's EpisodeMetadataCallback computes, and
    read_minari gives back the exact arrays."""
    lengths = np.random.default_rng(4).integers(1, 6, size=1000)
    ds = _episodes_dataset(lengths, seed=4, env_id="Reacher-v5", obs_dim=10, act_dim=2)
    root = tmp_path / "minari"
    out = write_minari(ds, root / "stratdiff" / "many-short-v0", {"dataset_id": "stratdiff/many-short-v0"})
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    mds = minari.load_dataset("stratdiff/many-short-v0")
    assert mds.total_episodes == ds.num_episodes == 1000
    assert mds.total_steps == ds.size
    meta = json.loads((out / "data" / "metadata.json").read_text())
    assert (meta["total_episodes"], meta["total_steps"]) == (1000, ds.size) and meta["dataset_size"] > 0
    callback = minari.EpisodeMetadataCallback()
    episode_meta = list(mds.storage.get_episode_metadata(range(mds.total_episodes)))
    for i, (ep, mine, stored) in enumerate(zip(mds.iterate_episodes(), ds.episodes(), episode_meta, strict=True)):
        assert ep.id == i and len(ep) == len(mine["rewards"])
        np.testing.assert_array_equal(ep.observations[:-1], mine["observations"])
        np.testing.assert_array_equal(ep.observations[1:], mine["next_observations"])
        np.testing.assert_array_equal(ep.actions, mine["actions"])
        np.testing.assert_array_equal(ep.rewards, mine["rewards"])
        np.testing.assert_array_equal(ep.terminations, mine["terminals"])
        np.testing.assert_array_equal(ep.truncations, mine["timeouts"])
        # bit for bit what minari's callback makes of the stored rewards
        assert stored == {"id": i, "total_steps": len(ep), **callback({"rewards": ep.rewards})}
    assert float(minari.get_normalized_score(mds, np.array([-22.0]))[0]) == pytest.approx(0.5)
    back = read_minari(out)
    for k in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts", "episode_ends"):
        np.testing.assert_array_equal(getattr(back, k), getattr(ds, k), err_msg=k)
        assert getattr(back, k).dtype == getattr(ds, k).dtype, k


def _hdf5_tree(path):
    """Every group and array of an HDF5 file: attributes (value, dtype), dtype, shape, maxshape,
    chunks and data; and the root's names in the order h5py lists them."""
    tree = {}

    def visit(name, obj):
        entry = {"attrs": {k: (obj.attrs[k], obj.attrs[k].dtype) for k in obj.attrs}}
        if isinstance(obj, h5py.Dataset):
            entry.update(dtype=obj.dtype, shape=obj.shape, maxshape=obj.maxshape, chunks=obj.chunks,
                         data=obj[()].tobytes())
        tree[name] = entry

    with h5py.File(path, "r") as f:
        f.visititems(visit)
        tree["/"] = list(f)
    return tree


def test_write_minari_matches_minaris_own_storage(tmp_path):
    """The same episodes written by minari's storage API (update_episodes, then the metadata of
    EpisodeMetadataCallback) and by write_minari: the same groups, attributes, arrays, chunks
    and metadata.json (dataset_size aside: write_minari's HDF5 1.10 format is smaller)."""
    from minari.data_collector.episode_buffer import EpisodeBuffer
    from minari.dataset.minari_storage import MinariStorage

    # short episodes (one chunk an array) and long ones (h5py chunks them in several pieces)
    lengths = [*np.random.default_rng(6).integers(1, 30, size=30), 1200, 700, 1]
    ds = _episodes_dataset(lengths, seed=6, env_id="Hopper-v5", obs_dim=11, act_dim=3)
    ours = write_minari(ds, tmp_path / "ours") / "data"
    theirs = tmp_path / "theirs" / "data"
    theirs.mkdir(parents=True)
    storage = MinariStorage.new(theirs, observation_space=gym.spaces.Box(-np.inf, np.inf, (11,), np.float32),
                                action_space=gym.spaces.Box(-1.0, 1.0, (3,), np.float32),
                                env_spec=gym.spec("Hopper-v5"))
    meta = json.loads((ours / "metadata.json").read_text())
    storage.update_metadata({k: meta[k] for k in ("dataset_id", "minari_version", "ref_min_score", "ref_max_score",
                                                  "stratdiff")})
    storage.update_episodes([
        EpisodeBuffer(id=i, observations=np.concatenate([ep["observations"], ep["next_observations"][-1:]]),
                      actions=ep["actions"], rewards=ep["rewards"], terminations=ep["terminals"],
                      truncations=ep["timeouts"])
        for i, ep in enumerate(ds.episodes())
    ])
    storage.update_episode_metadata(storage.apply(minari.EpisodeMetadataCallback()))
    theirs_meta = json.loads((theirs / "metadata.json").read_text())
    assert meta.pop("dataset_size") < theirs_meta.pop("dataset_size")
    assert list(meta.items()) == list(theirs_meta.items())
    a, b = _hdf5_tree(ours / "main_data.hdf5"), _hdf5_tree(theirs / "main_data.hdf5")
    assert a["/"] == b["/"] and set(a) == set(b)
    assert any(e.get("chunks") not in (None, e.get("shape")) for e in a.values() if isinstance(e, dict))
    for name in a:
        assert a[name] == b[name], name


def test_built_name_under_data_root(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    ds = Dataset.from_episodes(
        [dict(observations=rng.normal(size=(6, 4)), actions=rng.uniform(-1, 1, (5, 1)), rewards=np.ones(5),
              timeouts=np.eye(5, dtype=bool)[-1])],
        DatasetInfo(name="pendulum-tiny", env_id="InvertedPendulum-v5"),
    )
    monkeypatch.setenv("STRATDIFF_DATA_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    write_minari(ds, "pendulum-tiny")  # a relative folder (minari's own size bookkeeping needs absolute paths)
    back = load_dataset("pendulum-tiny")
    assert back.size == 5 and back.info.env_id == "InvertedPendulum-v5" and back.info.name == "pendulum-tiny"


def test_unbuilt_buildable_name_says_how_to_build(tmp_path, monkeypatch):
    from stratdiff.data import catalog

    monkeypatch.setitem(catalog.DATASETS, "hopper-medium-sac", object())
    monkeypatch.setenv("STRATDIFF_DATA_DIR", str(tmp_path))
    with pytest.raises(DatasetError, match="run: stratdiff data build hopper-medium-sac"):
        load_dataset("hopper-medium-sac")


def test_download_failure_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    monkeypatch.setenv("STRATDIFF_DATA_DIR", str(tmp_path))

    def refuse(dataset_id, force_download=False):
        raise ConnectionError("network unreachable")

    monkeypatch.setattr(minari, "download_dataset", refuse)
    with pytest.raises(DatasetError, match=r"'mujoco/hopper/medium-v0' is not in .* downloading it failed "
                                           r"\(ConnectionError: network unreachable\)"):
        load_dataset("mujoco/hopper/medium-v0", download=True)


def _corrupt_copy(collected, tmp_path, edit):
    src = collected / DATASET_ID
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    edit(dst / "data")
    return dst


def _h5(fn):
    def edit(data):
        with h5py.File(data / "main_data.hdf5", "a") as f:
            fn(f)
    return edit


def _set(f, key, fn):
    arr = f[key][()]
    arr = fn(arr)
    del f[key]
    f[key] = arr


CORRUPTIONS = {
    "missing key": (_h5(lambda f: f.__delitem__("episode_1/actions")), "episode 1: missing key 'actions'"),
    "length mismatch": (_h5(lambda f: _set(f, "episode_2/actions", lambda a: a[:-1])),
                        "episode 2: length mismatch: key 'actions'"),
    "nan": (_h5(lambda f: _set(f, "episode_3/observations", lambda a: np.where(np.arange(len(a))[:, None] == 1,
                                                                              np.nan, a))),
            "key 'observations' contains NaN"),
    "action range": (_h5(lambda f: _set(f, "episode_0/actions", lambda a: a + 2.5)),
                     "key 'actions' has values outside [-1, 1]"),
    "garbage data file": (lambda d: (d / "main_data.hdf5").write_bytes(b"\x89HDF\r\n garbage" * 100),
                          "cannot be read"),
    "empty data file": (lambda d: (d / "main_data.hdf5").write_bytes(b""), "the data file cannot be read"),
    "garbage metadata": (lambda d: (d / "metadata.json").write_text("{not json"),
                         "not a readable Minari dataset"),
    "no metadata": (lambda d: (d / "metadata.json").unlink(), "not a Minari dataset directory"),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corrupted_minari(collected, tmp_path, name):
    edit, expected = CORRUPTIONS[name]
    path = _corrupt_copy(collected, tmp_path, edit)
    with pytest.raises(DatasetError) as err:
        load_dataset(path)
    assert expected in str(err.value)
    assert str(path) in str(err.value)


def test_minari_wrong_obs_size_for_env(collected):
    with pytest.raises(DatasetError, match="key 'observations' has 4 features but environment Hopper-v5 "
                                           "observations have 11"):
        load_dataset(collected / DATASET_ID, env_id="Hopper-v5")


def test_empty_minari_dataset(tmp_path):
    from minari.dataset.minari_storage import MinariStorage

    data = tmp_path / "empty" / "data"
    data.mkdir(parents=True)
    storage = MinariStorage.new(data, observation_space=gym.spaces.Box(-1, 1, (3,)),
                                action_space=gym.spaces.Box(-1, 1, (1,)))
    storage.update_metadata({"dataset_id": "empty-v0", "minari_version": minari.__version__})
    with pytest.raises(DatasetError, match=r"empty: the dataset is empty \(0 episodes\)"):
        load_dataset(tmp_path / "empty")


def test_reading_minari_does_not_modify_it(collected):
    data = collected / DATASET_ID / "data"
    before = {p.name: p.read_bytes() for p in data.iterdir()}
    load_dataset(collected / DATASET_ID)
    assert {p.name: p.read_bytes() for p in data.iterdir()} == before
    assert json.loads((data / "metadata.json").read_text())["dataset_id"] == DATASET_ID


def test_goal_dict_observations_are_flattened_like_antmaze(tmp_path):
    """Minari's AntMaze datasets store Dict observations; they become [achieved_goal, observation]."""
    from minari.data_collector.episode_buffer import EpisodeBuffer
    from minari.dataset.minari_storage import MinariStorage

    space = gym.spaces.Dict({
        "achieved_goal": gym.spaces.Box(-np.inf, np.inf, (2,), np.float64),
        "desired_goal": gym.spaces.Box(-np.inf, np.inf, (2,), np.float64),
        "observation": gym.spaces.Box(-np.inf, np.inf, (3,), np.float64),
    })
    data = tmp_path / "maze" / "data"
    data.mkdir(parents=True)
    storage = MinariStorage.new(data, observation_space=space, action_space=gym.spaces.Box(-1, 1, (2,)))
    storage.update_metadata({"dataset_id": "maze-v0", "minari_version": minari.__version__})
    t = 4
    obs = {"achieved_goal": np.arange(2 * (t + 1)).reshape(t + 1, 2) * 1.0,
           "desired_goal": np.zeros((t + 1, 2)),
           "observation": np.arange(3 * (t + 1)).reshape(t + 1, 3) * -1.0}
    storage.update_episodes([EpisodeBuffer(id=0, observations=obs, actions=np.zeros((t, 2)), rewards=np.zeros(t),
                                           terminations=np.zeros(t, bool), truncations=np.eye(t, dtype=bool)[-1])])
    ds = load_dataset(tmp_path / "maze")
    assert ds.obs_dim == 5 and ds.size == 4
    np.testing.assert_array_equal(ds.observations[1], [2, 3, -3, -4, -5])
    np.testing.assert_array_equal(ds.next_observations[3], [8, 9, -12, -13, -14])


def test_validate_dataset_for_builders():
    from stratdiff.data import validate_dataset

    rng = np.random.default_rng(3)
    acts = rng.uniform(-1, 1, (5, 1))
    acts[2] = 1.0008
    ds = Dataset(rng.normal(size=(5, 4)), acts, np.ones(5), rng.normal(size=(5, 4)), np.zeros(5), np.zeros(5),
                 info=DatasetInfo(name="built", env_id="InvertedPendulum-v5"))
    assert validate_dataset(ds).actions.max() == 1.0
    with pytest.raises(DatasetError, match="built: key 'actions' has 1 features but environment Hopper-v5"):
        validate_dataset(Dataset(rng.normal(size=(5, 11)), acts.clip(-1, 1), np.ones(5), rng.normal(size=(5, 11)),
                                 np.zeros(5), np.zeros(5), info=DatasetInfo(name="built", env_id="Hopper-v5")))
    bad = ds.replace(rewards=np.array([1, 2, np.nan, 4, 5]))
    with pytest.raises(DatasetError, match="built: key 'rewards' contains NaN"):
        validate_dataset(bad)
