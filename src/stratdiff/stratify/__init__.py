"""Stratifiers: decide, per batch sample, whether it is offline-like or online-like.

A stratifier is a pytree with

    stratifier.split(agent, batch, key) -> (stratifier, online_like | None, next_candidates | None, metrics)

called inside jit once per online update call (`batch` has a leading UTD axis), after
`stratifier.scheduled()` (on the host, before each call: the stratifier with that call's static
work decided, e.g. whether it takes a CEP step; a stratifier without a schedule returns itself), and
`state_dict()` / `load_state_dict(state)` for what changes online (checkpoints; the runner
restores the saved state against `state_dict()`'s structure before passing it in).
`online_like=None` means every sample is offline-like, i.e. the backbone's base
losses. `stratifier.offline_rows(batch_size)` is a static bound on the number of
offline-like samples per step (None: no bound); the runner passes it on to the agent's
update as `offline_rows` (Cal-QL computes its regulariser on those rows only).
Stratifiers are built by `build(name, context)` after the offline phase; `check(name,
run_config)` validates a run's stratifier options before it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stratdiff.stratify.base import StatelessStratifier


class NoStratifier(StatelessStratifier):
    """Every sample offline-like: the plain backbone (Cal-QL, IQL)."""

    def split(self, agent, batch, key):
        del agent, batch, key
        return self, None, None, {}

    def offline_rows(self, batch_size: int) -> None:
        del batch_size
        return None


def _build_none(context: dict[str, Any]) -> NoStratifier:
    del context
    return NoStratifier()


def _build_stratdiff(context: dict[str, Any]):
    from stratdiff.stratify.stratdiff import build  # imports the diffusion stack only when used

    return build(context)


# name -> builder(context) -> stratifier. The context carries the run config, dataset,
# offline buffer, normaliser, agent (its critic), key, output folder and a progress flag.
STRATIFIERS: dict[str, Callable[[dict[str, Any]], Any]] = {"none": _build_none, "stratdiff": _build_stratdiff}


def _check_none(run_config) -> None:
    """No options; `stratifier.*` values are ignored, as source options are for methods without
    a batch source of their own (a sweep may pass the same --set to several methods)."""
    del run_config


def _check_stratdiff(run_config) -> None:
    from stratdiff.stratify.stratdiff import stratifier_config

    stratifier_config(run_config)


# name -> check(run_config): raises ValueError for bad stratifier options before any training
CHECKS: dict[str, Callable[[Any], None]] = {"none": _check_none, "stratdiff": _check_stratdiff}


def _stratdiff_dataset_values(options, dataset_name, kind):
    from stratdiff.stratify.stratdiff import dataset_values

    return dataset_values(options, dataset_name, kind)


# name -> (options, dataset name, task kind) -> (values, note): the values a stratifier takes per
# dataset that the paper's tables do not give for this dataset, filled with the task kind's
# defaults (the runner records them in config.json) and a line saying so; absent: none.
DATASET_VALUES: dict[str, Callable[[dict[str, Any], str, str], tuple[dict[str, Any], str | None]]] = {
    "stratdiff": _stratdiff_dataset_values}


def dataset_values(name: str, options: dict[str, Any], dataset_name: str, kind: str):
    """`DATASET_VALUES[name]`'s answer, or ({}, None) for a stratifier without per-dataset values."""
    if name not in DATASET_VALUES:
        return {}, None
    return DATASET_VALUES[name](options, dataset_name, kind)


def check(name: str, run_config) -> None:
    """Validate the run's `stratifier` options for stratifier `name` (ValueError naming the option)."""
    if name not in CHECKS:
        raise ValueError(f"unknown stratifier {name!r} (known: {', '.join(CHECKS)})")
    CHECKS[name](run_config)


def build(name: str, context: dict[str, Any]):
    if name not in STRATIFIERS:
        raise ValueError(f"unknown stratifier {name!r} (known: {', '.join(STRATIFIERS)})")
    return STRATIFIERS[name](context)
