"""Errors a user can cause, with messages that name what is at fault and where.

The CLI prints these as one line and exits non-zero. Anything else (a bug, or a failure of the
environment nobody named yet) is printed as one line too, its innermost cause first
(:func:`root_cause`), with the full trace written to the home's log file.
"""

from __future__ import annotations

import re


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


# a Java exception's header line as Py4J and Spark print it: ": org.x.FooException: message",
# "Caused by: java.io.IOException: message", or a Python one: "OSError: [Errno 28] ..."
_HEADER = re.compile(r"^(?::\s|Caused by:\s)?((?:[\w$]+\.)*[\w$]*(?:Exception|Error)):\s*(\S.*)$")
_WRAPPERS = ("Py4JJavaError", "Py4JException", "StreamingQueryException", "PythonException")


def root_cause(exc: BaseException) -> str:
    """The innermost cause of a failure that crossed Spark's Python/JVM bridge, as one line
    ("AccessDeniedException: /home/x/warehouse/silver.db/..."): what went wrong and where, where
    ``first_line`` would give "An error occurred while calling o123.execute"."""
    innermost = exc
    while innermost.__cause__ is not None and innermost.__cause__ is not innermost:
        innermost = innermost.__cause__
    java = getattr(innermost, "java_exception", None) or getattr(innermost, "_origin", None)
    text = ""
    if java is not None:
        try:
            cause = java
            while cause.getCause() is not None and not cause.getCause().equals(cause):
                cause = cause.getCause()
            text = f"{cause.getClass().getName()}: {cause.getMessage()}"
        except Exception:  # the JVM may be gone: fall back to the Python side's text
            text = ""
    text = text or f"{type(innermost).__name__}: {innermost}"
    headers = [m for m in (_HEADER.match(line.strip()) for line in text.splitlines()) if m]
    meaningful = [m for m in headers if not m.group(1).rsplit(".", 1)[-1].startswith(_WRAPPERS)]
    if meaningful:
        # the last "Caused by" is the innermost; otherwise the first header is the error itself
        caused = [m for m in meaningful if m.string.startswith("Caused by")]
        chosen = (caused or meaningful)[-1 if caused else 0]
        return f"{chosen.group(1).rsplit('.', 1)[-1]}: {chosen.group(2)}"
    return first_line(innermost)
