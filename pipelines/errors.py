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
