"""Run logging: metrics.csv (every key ever logged, one row per log step) and TensorBoard.

Both are written in the calling thread, so a write that fails (a full disk) stops the run
with a DiskFullError naming the file; metrics.csv never keeps half a row.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

from stratdiff import runfiles

# what to do about a damaged metrics.csv (its rows cannot be trusted, so the run starts over)
METRICS_FIX = ("start the run over with `stratdiff train ... --force` (it deletes the run's files in "
               "its folder), or move the folder away")
NO_SPACE_FIX = "free some space, then run the same command with --resume: the last good checkpoint is kept"


class MetricsLogger:
    """Append rows of scalars to `metrics.csv`, widening the header when new keys appear,
    and mirror them to TensorBoard event files (tensorboardX)."""

    def __init__(self, out_dir: str | Path, tensorboard: bool = True):
        self.path = Path(out_dir) / "metrics.csv"
        self.rows: list[dict[str, Any]] = []
        self.keys: list[str] = []
        if self.path.exists():  # checked: a damaged file is a DamagedFileError, not rows to append to
            self.keys, self.rows = runfiles.read_metrics_csv(self.path, METRICS_FIX)
        self._tb = None
        if tensorboard:
            self._tb = _EventWriter(Path(out_dir) / "tensorboard")

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after global step `step` (used when resuming from a checkpoint)."""
        self.rows = [r for r in self.rows if float(r["step"]) <= step]
        self._rewrite()

    def log(self, row: dict[str, Any]) -> None:
        row = {k: (v if isinstance(v, (str, int)) else float(v)) for k, v in row.items()}
        self.rows.append(row)
        new = [k for k in row if k not in self.keys]
        if new or not self.path.exists():
            self.keys += new
            self._rewrite()
        else:
            size = self.path.stat().st_size
            try:
                with open(self.path, "a", newline="") as f:
                    csv.DictWriter(f, fieldnames=self.keys).writerow(row)
            except OSError as e:
                os.truncate(self.path, size)  # no half row
                raise runfiles.disk_full(e, self.path, NO_SPACE_FIX) or e from None
        if self._tb is not None:
            step = int(row["step"])
            self._tb.write(step, {k: v for k, v in row.items()
                                  if k != "step" and isinstance(v, float) and math.isfinite(v)})

    def _rewrite(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.keys)
                writer.writeheader()
                writer.writerows(self.rows)
            os.replace(tmp, self.path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise runfiles.disk_full(e, self.path, NO_SPACE_FIX) or e from None

    def close(self, quiet: bool = False) -> None:
        """Close the TensorBoard file; `quiet` (closing after another error) ignores a failed flush."""
        if self._tb is not None:
            try:
                self._tb.close()
            except runfiles.DiskFullError:
                if not quiet:
                    raise
            self._tb = None


class _EventWriter:
    """TensorBoard scalars written and flushed in the calling thread (tensorboardX's
    SummaryWriter writes from a thread of its own, where a full disk kills the thread and
    leaves the run blocked on its queue)."""

    def __init__(self, folder: Path):
        from tensorboardX.event_file_writer import EventsWriter

        folder.mkdir(parents=True, exist_ok=True)
        self._path = folder
        self._writer = self._guard(lambda: EventsWriter(str(folder / "events")))

    def _guard(self, fn):
        try:
            return fn()
        except OSError as e:
            raise runfiles.disk_full(e, self._path, NO_SPACE_FIX) or e from None

    def write(self, step: int, scalars: dict[str, float]) -> None:
        import time

        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.summary import scalar

        for k, v in scalars.items():
            self._guard(lambda: self._writer.write_event(Event(wall_time=time.time(), step=step,
                                                               summary=scalar(k, v))))
        self._guard(self._writer.flush)

    def close(self) -> None:
        self._guard(self._writer.close)
