"""Quiet output: no MuJoCo `settotalmass` warning per environment made, and progress bars that
write at most one update every few seconds where they do not write to a terminal."""

from __future__ import annotations

import io

import mujoco

from stratdiff import envs
from stratdiff.progress import LOG_INTERVAL_S, progress_bar


def test_making_half_cheetah_prints_no_settotalmass_warning(capfd, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MuJoCo's own handler would also write ./MUJOCO_LOG.TXT
    env = envs.make_env("HalfCheetah-v5")
    env.close()
    envs.action_bounds.cache_clear()
    assert envs.action_bounds("HalfCheetah-v5") is None  # reading the action space (dataset loading) makes one too
    out, err = capfd.readouterr()
    assert "settotalmass" not in out + err
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()
    assert mujoco.get_mju_user_warning() is None  # MuJoCo's own handler is back afterwards


def test_other_mujoco_warnings_still_show(capfd):
    seen = []
    mujoco.set_mju_user_warning(seen.append)
    try:
        with envs._without_settotalmass_warning():
            handler = mujoco.get_mju_user_warning()
            handler("compiler attribute 'settotalmass' is deprecated and will be removed")
            handler("Nan, Inf or huge value in QACC at DOF 0")
        assert mujoco.get_mju_user_warning() == seen.append  # the handler before is back
    finally:
        mujoco.set_mju_user_warning(None)
    assert seen == ["Nan, Inf or huge value in QACC at DOF 0"]
    with envs._without_settotalmass_warning():  # MuJoCo's default handler in place: to stderr
        mujoco.get_mju_user_warning()("Nan, Inf or huge value in QACC at DOF 1")
    assert "WARNING: Nan, Inf or huge value in QACC at DOF 1" in capfd.readouterr().err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _updates_written(stream: io.StringIO, steps: int, seconds_per_step: float) -> int:
    """Redraws of a bar over `steps` updates when each takes `seconds_per_step` (a fake clock)."""
    clock = [0.0]
    bar = progress_bar(total=steps, file=stream, dynamic_ncols=True)
    bar._time = lambda: clock[0]  # tqdm reads its clock through this attribute
    bar.start_t = bar.last_print_t = 0.0
    for _ in range(steps):
        clock[0] += seconds_per_step
        bar.update(1)
    bar.close()
    return stream.getvalue().count("\r")


def test_progress_bar_in_a_log_file_writes_every_few_seconds():
    # 600 updates half a second apart: 300 s, so at most one redraw every LOG_INTERVAL_S seconds
    log = _updates_written(io.StringIO(), steps=600, seconds_per_step=0.5)
    assert 2 <= log <= 300 / LOG_INTERVAL_S + 3
    terminal = _updates_written(_Terminal(), steps=600, seconds_per_step=0.5)
    assert terminal >= 500  # on a terminal every update still redraws


def test_progress_bar_keeps_a_longer_interval_it_was_given():
    bar = progress_bar(total=3, file=io.StringIO(), mininterval=30)
    assert bar.mininterval == 30
    bar.close()
    bar = progress_bar(total=3, file=io.StringIO())
    assert bar.mininterval == LOG_INTERVAL_S
    bar.close()
