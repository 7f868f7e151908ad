"""The errors a command reports as one line (bad input, bad state), not as a traceback."""

from __future__ import annotations


def user_errors() -> tuple[type[BaseException], ...]:
    """Error classes that mean "the user's input or run folder is wrong", gathered lazily
    so that commands which never load JAX do not import it."""
    from stratdiff.checkpoint import CheckpointError
    from stratdiff.data import DatasetError
    from stratdiff.envs import UnknownEnvError
    from stratdiff.locks import FolderBusyError
    from stratdiff.methods import ConfigError
    from stratdiff.runfiles import DamagedFileError, DiskFullError
    from stratdiff.runner import DivergenceError, RunError

    return (CheckpointError, DatasetError, UnknownEnvError, FolderBusyError, ConfigError, DivergenceError,
            RunError, DiskFullError, DamagedFileError)
