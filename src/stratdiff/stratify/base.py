"""The base of stratifiers without a schedule or online state (see `stratdiff.stratify`)."""

from __future__ import annotations

from typing import Any

import flax.struct


class StatelessStratifier(flax.struct.PyTreeNode):
    """A stratifier with no schedule and no state that changes online (a checkpoint holds
    nothing of it); subclasses define `split` and `offline_rows`."""

    def scheduled(self):
        return self

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]):
        del state
        return self
