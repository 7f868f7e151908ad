"""Run files under faults: a full disk and damaged files, each reported as one line.

- `DiskFullError`: a write failed for lack of space (ENOSPC, EDQUOT). Its message names the
  file and the space left on its file system. `disk_full(err, path, then)` turns such an
  `OSError` into one (None for any other error).
- `DamagedFileError`: a run file that cannot be read back (metrics.csv, config.json,
  offline_agent.json, a sweep's sweep.json). Its message names the file and what to do.
- `read_metrics_csv(path)`: metrics.csv checked row by row.
- `read_json(path, keys, fix)`: a JSON object with the keys a reader needs.
- `remove_temporaries(*folders)`: the temporary files of writers that died mid-write (a kill),
  for a process that holds the folder's lock.

Standard library only (the sweep's parent process imports it).
"""

from __future__ import annotations

import csv
import errno
import json
import re
import shutil
from pathlib import Path
from typing import Any

from stratdiff.errors import UserError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
# temporaries of the atomic writers: ".NAME.tmp-PID" (checkpoint.atomic_write_bytes), "NAME.tmp"
_TEMPORARY = re.compile(r"^(\..+\.tmp-\d+|.+\.tmp)$")


class DiskFullError(UserError, RuntimeError):
    """A write of a run failed for lack of space; the message names the file and the free space."""


class DamagedFileError(UserError, RuntimeError):
    """A run file cannot be read back; the message names the file and what to do."""


def free_space(path: str | Path) -> str:
    """Free space on the file system holding `path` (or its nearest existing parent), e.g. '1.2 MB'."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        free = float(shutil.disk_usage(p).free)
    except OSError:
        return "unknown"
    for unit in ("bytes", "kB", "MB", "GB"):
        if free < 1000 or unit == "GB":
            return f"{free:.0f} {unit}" if unit == "bytes" else f"{free:.1f} {unit}"
        free /= 1000
    return "unknown"  # unreachable


def is_disk_full(err: BaseException) -> bool:
    """An OSError meaning "no space left" (HDF5 reports it in its message, without an errno)."""
    return isinstance(err, OSError) and (err.errno in NO_SPACE or "No space left on device" in str(err))


def disk_full(err: BaseException, path: str | Path, then: str) -> DiskFullError | None:
    """A DiskFullError for `err` writing `path` ("… free there; `then`"), or None when `err`
    is not a lack of space."""
    if not is_disk_full(err):
        return None
    return DiskFullError(f"no space left on the device writing {path} ({free_space(path)} free there); {then}")


def remove_temporaries(*folders: str | Path) -> list[Path]:
    """Remove the temporary files atomic writers leave when killed mid-write, in `folders`
    (not below). Only for a process holding their lock (no other writer is live). Returns them."""
    gone = []
    for folder in folders:
        for p in sorted(Path(folder).glob("*")) if Path(folder).is_dir() else []:
            if p.is_file() and _TEMPORARY.match(p.name):
                p.unlink(missing_ok=True)
                gone.append(p)
    return gone


def read_json(path: str | Path, keys: tuple[str, ...], fix: str) -> dict[str, Any]:
    """The JSON object in `path`, which must hold `keys`; else a DamagedFileError naming the
    file and ending with `fix` (what to do)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DamagedFileError(f"{path} is damaged (not readable JSON: {e}); {fix}") from None
    if not isinstance(data, dict):
        raise DamagedFileError(f"{path} is damaged (not a JSON object); {fix}")
    missing = [k for k in keys if k not in data]
    if missing:
        raise DamagedFileError(f"{path} is damaged (no {', '.join(map(repr, missing))}); {fix}")
    return data


def read_metrics_csv(path: str | Path, fix: str) -> tuple[list[str], list[dict[str, str]]]:
    """metrics.csv's header and rows (empty cells dropped), checked: a `step` and a `phase`
    column, every row as wide as the header, steps increasing, phases `offline`/`online`,
    every other cell a number. A damaged file is a DamagedFileError naming the file and the
    line, ending with `fix`."""
    path = Path(path)

    def damaged(line: int, why: str) -> DamagedFileError:
        return DamagedFileError(f"{path} is damaged (line {line}: {why}); {fix}")

    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise damaged(1, "no header")
            if not header and next(reader, None) is None:
                return [], []  # a run that has logged nothing yet writes an empty header
            if "step" not in header or "phase" not in header or len(set(header)) != len(header):
                raise damaged(1, "the header needs unique columns, among them step and phase")
            rows, last = [], -1.0
            for cells in reader:
                line = reader.line_num
                if len(cells) != len(header):
                    raise damaged(line, f"{len(cells)} fields where the header has {len(header)}")
                row = {k: v for k, v in zip(header, cells) if v != ""}
                if row.get("phase") not in ("offline", "online"):
                    raise damaged(line, f"phase {row.get('phase')!r}")
                for k, v in row.items():
                    if k != "phase":
                        try:
                            float(v)
                        except ValueError:
                            raise damaged(line, f"{k}={v!r} is not a number") from None
                step = float(row.get("step", "nan"))
                if not step > last:
                    raise damaged(line, f"step {row.get('step')!r} does not follow step {last:g}")
                last = step
                rows.append(row)
    except (UnicodeDecodeError, csv.Error) as e:
        raise DamagedFileError(f"{path} is damaged ({e}); {fix}") from None
    return header, rows
