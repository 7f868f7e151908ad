"""stratdiff: Energy-Guided Diffusion Stratification for offline-to-online RL.

The Python API (`stratdiff.api`), imported on first use so that `import stratdiff` stays light:

    from stratdiff import load_dataset, resolve_config, train
"""

from stratdiff.version import __version__

_API = ("load_dataset", "resolve_config", "train")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from stratdiff import api

        return getattr(api, name)
    raise AttributeError(f"module 'stratdiff' has no attribute {name!r}")
