"""Errors a user can cause, with messages that name what is at fault and where.

The CLI prints these as one line and exits non-zero; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


class JourneylakeError(Exception):
    """Base class for errors caused by input, configuration or environment, not by a bug."""


class ConfigError(JourneylakeError):
    """A configuration file is missing, unreadable or does not validate."""


class InputError(JourneylakeError):
    """Command-line arguments or input data are invalid."""


class SetupError(JourneylakeError):
    """The environment is not ready (missing jars, metastore not reachable, ...)."""


def first_line(exc: BaseException) -> str:
    """The first non-blank line of an error's message (a Py4J error's Java message, not its
    trace): what a one-line report or warning shows; the type's name when there is no message."""
    message = getattr(exc, "getMessage", None)
    text = message() if callable(message) else str(exc)
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__
