"""The errors a command reports as one line (bad input, bad state), not as a traceback.

This module is the ground floor of the package: it imports nothing from `stratdiff`. Each
module's own error class (`DatasetError`, `ConfigError`, `RunError`, ...) derives from
`UserError`, so a command catches them all without importing the modules that raise them.
"""

from __future__ import annotations


class UserError(Exception):
    """The user's input or run folder is wrong; the message names the file, key or option."""


def user_errors() -> tuple[type[BaseException], ...]:
    """Error classes that mean "the user's input or run folder is wrong" (for `except`)."""
    return (UserError,)
