"""Progress bars (tqdm) that keep logs short: on a terminal a bar redraws as often as tqdm
likes; written to a file or a pipe (`stratdiff quickstart > log`), at most once every
`LOG_INTERVAL_S` seconds, plus its first and last state."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from tqdm.auto import tqdm

LOG_INTERVAL_S = 5.0  # seconds between a bar's updates when it does not write to a terminal


def is_terminal(stream: TextIO | None) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except ValueError:  # a closed stream
        return False


def progress_bar(file: TextIO | None = None, **kwargs: Any) -> tqdm:
    """`tqdm(file=file, **kwargs)`; where the bar's stream (default stderr) is not a terminal
    (and the bar is not a notebook widget), its `mininterval` is at least `LOG_INTERVAL_S`."""
    notebook = any(c.__module__ == "tqdm.notebook" for c in tqdm.__mro__)  # tqdm.auto chose the widget
    if not notebook and not is_terminal(file if file is not None else sys.stderr):
        kwargs["mininterval"] = max(float(kwargs.get("mininterval", 0.1)), LOG_INTERVAL_S)
    return tqdm(file=file, **kwargs)
