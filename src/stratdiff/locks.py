"""Run-folder locks: one live process writes a run folder at a time.

A lock is a file holding "HOST PID", created exclusively. A lock left by a process that died
on this host (killed, crashed) is stale and taken over; one held by a live process, or by
another host (which cannot be checked), is refused. Standard library only, so the sweep's
parent process stays light.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stratdiff.errors import UserError

RUN_LOCK = "run.lock"  # the lock of a training run's folder (stratdiff train, stratdiff sac train)


class FolderBusyError(UserError, RuntimeError):
    """Another live process holds the folder's lock."""


def _alive(pid: int) -> bool:
    """Whether process `pid` runs: a process that has exited but that its parent has not reaped
    yet (a zombie, e.g. a killed Ray worker) holds no lock any more."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """True when /proc says `pid` has exited unreaped (Linux; False where /proc cannot tell)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:].startswith("Z")


def _me() -> str:
    return f"{socket.gethostname()} {os.getpid()}"


def acquire_lock(path: str | Path) -> str | None:
    """Take the lock file `path`; None on success, else who holds it ("HOST PID")."""
    path = Path(path)
    holder = ""
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = path.read_text().strip()
            except FileNotFoundError:
                continue  # released meanwhile
            host, _, pid = holder.partition(" ")
            if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
                path.unlink(missing_ok=True)  # stale: its process died without releasing it
                continue
            return holder or "unknown"
        with os.fdopen(fd, "w") as f:
            f.write(_me())
        return None
    return holder or "unknown"


def release_lock(path: str | Path) -> None:
    """Remove the lock file `path` if this process holds it."""
    path = Path(path)
    try:
        if path.read_text().strip() == _me():
            path.unlink()
    except FileNotFoundError:
        pass


@contextmanager
def holding(folder: str | Path, name: str = RUN_LOCK) -> Iterator[None]:
    """Hold `folder`'s lock file `name` for the block (creating the folder); a FolderBusyError,
    naming the holder and the lock file, if another live process holds it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    holder = acquire_lock(folder / name)
    if holder is not None:
        raise FolderBusyError(f"{folder} is being written by another live process ({holder}, {folder / name}); "
                              f"wait for it to end or choose another --out")
    try:
        yield
    finally:
        release_lock(folder / name)
