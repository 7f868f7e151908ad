"""Offline datasets: loading, validation, transforms and replay buffers.

Names are imported lazily, so `stratdiff data inspect` (which needs only the loaders) does not
import JAX; `from stratdiff.data import OfflineBuffer` imports the buffers (and JAX) on use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    # dataset.py
    "Dataset": "dataset",
    "DatasetInfo": "dataset",
    "DatasetError": "dataset",
    "trajectory_ends": "dataset",
    # loaders.py
    "load_dataset": "loaders",
    "read_d4rl_hdf5": "loaders",
    "read_minari": "loaders",
    "write_d4rl_hdf5": "loaders",
    "write_minari": "loaders",
    "qlearning_transitions": "loaders",
    "data_root": "loaders",
    "minari_root": "loaders",
    # validation.py
    "validate_dataset": "validation",
    "ACTION_TOLERANCE": "validation",
    # transforms.py
    "StateNormalizer": "transforms",
    "RewardTransform": "transforms",
    "REWARD_TRANSFORMS": "transforms",
    "STATE_NORMALIZERS": "transforms",
    "make_reward_transform": "transforms",
    "make_normalizer": "transforms",
    "apply_reward_transform": "transforms",
    "mc_returns": "transforms",
    # buffers.py (imports JAX)
    "OfflineBuffer": "buffers",
    "OnlineBuffer": "buffers",
    "mixed_batch": "buffers",
    "mixed_batches": "buffers",
    "concat_batches": "buffers",
    "n_offline": "buffers",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'stratdiff.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"stratdiff.data.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # for type checkers and IDEs
    from stratdiff.data.buffers import OfflineBuffer, OnlineBuffer, concat_batches, mixed_batch, mixed_batches, n_offline
    from stratdiff.data.dataset import Dataset, DatasetError, DatasetInfo, trajectory_ends
    from stratdiff.data.loaders import (
        data_root,
        load_dataset,
        minari_root,
        qlearning_transitions,
        read_d4rl_hdf5,
        read_minari,
        write_d4rl_hdf5,
        write_minari,
    )
    from stratdiff.data.transforms import (
        REWARD_TRANSFORMS,
        STATE_NORMALIZERS,
        RewardTransform,
        StateNormalizer,
        apply_reward_transform,
        make_normalizer,
        make_reward_transform,
        mc_returns,
    )
    from stratdiff.data.validation import ACTION_TOLERANCE, validate_dataset
