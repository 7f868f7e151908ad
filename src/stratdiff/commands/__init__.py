"""Command groups of the `stratdiff` CLI (one module per group)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any


def run_and_print(prog: str, run: Callable[[], dict[str, Any]], errors: tuple[type[BaseException], ...],
                  shown: Callable[[dict[str, Any]], dict[str, Any]] = lambda result: result) -> int:
    """A command's `main` body: call `run`; on one of `errors` print one line `PROG: error: ...`
    to stderr and return 1, else print `shown(result)` as JSON and return 0."""
    try:
        result = run()
    except errors as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(shown(result), indent=2))
    return 0
