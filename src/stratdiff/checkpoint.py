"""Atomic checkpoints of whole run states (pytrees of arrays, numbers and strings).

A checkpoint is one msgpack file written to a temporary name and renamed into
place, so a run killed mid-write keeps its previous checkpoint intact.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import numpy as np

from stratdiff import runfiles
from stratdiff.errors import UserError

FORMAT = "stratdiff-checkpoint-v1"


class CheckpointError(UserError, RuntimeError):
    pass


def _to_host(tree: Any) -> Any:
    return jax.tree_util.tree_map(lambda x: np.asarray(x) if isinstance(x, jax.Array) else x, tree)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, fsync it, and rename it into place:
    readers see the old file or the new one, never half of one. A failed write removes its
    temporary file; a lack of space is a DiskFullError naming `path` (the old file is kept)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            if os.environ.get(KILL_HOOK):
                _kill_hook(f, path, data)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        full = runfiles.disk_full(e, path, "free some space, then run the same command with --resume: "
                                           "the last good checkpoint is kept")
        if full is not None:
            raise full from None
        raise


# Test hook (the chaos test in tests/test_faults.py): $STRATDIFF_TEST_KILL_IN_WRITE names a
# trigger file holding a count N. Each atomic write of a checkpoint decrements it; the write
# that brings it to 0 deletes the trigger, writes half its temporary file and SIGKILLs its own
# process, as a kill at the worst moment would. Unset in normal use.
KILL_HOOK = "STRATDIFF_TEST_KILL_IN_WRITE"


def _kill_hook(f, path: Path, data: bytes) -> None:
    trigger = Path(os.environ[KILL_HOOK])
    if not path.name.startswith("checkpoint") or not trigger.is_file():
        return
    left = int(trigger.read_text() or 0) - 1
    if left > 0:
        trigger.write_text(str(left))
        return
    trigger.unlink()
    f.write(data[: len(data) // 2])
    f.flush()
    os.fsync(f.fileno())
    os.kill(os.getpid(), signal.SIGKILL)


def save(path: str | Path, state: dict[str, Any]) -> None:
    """Write `state` (a dict of pytrees: flax structs, dicts, arrays, scalars) atomically."""
    payload = {"format": FORMAT, "state": _to_host(flax.serialization.to_state_dict(state))}
    atomic_write_bytes(path, flax.serialization.msgpack_serialize(payload))


def load_raw(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint's state dict, with one clear error for a missing or corrupt file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        payload = flax.serialization.msgpack_restore(path.read_bytes())
    except Exception as e:  # msgpack raises several types on garbage
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable ({type(e).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a {FORMAT} file")
    return payload["state"]


def restore(target: Any, state: Any, path: str | Path, what: str) -> Any:
    """Fill `target`'s structure with `state`; a structure or shape mismatch is a clear error."""
    try:
        restored = flax.serialization.from_state_dict(target, state)
    except Exception as e:
        raise CheckpointError(f"checkpoint {path}: {what} does not match this run ({e})") from None
    want = jax.tree_util.tree_leaves(target)
    got = jax.tree_util.tree_leaves(restored)
    for a, b in zip(want, got):
        if np.shape(a) != np.shape(b):
            raise CheckpointError(
                f"checkpoint {path}: {what} has an array of shape {np.shape(b)} where this run "
                f"expects {np.shape(a)} (different network sizes or environment?)")
    return restored
