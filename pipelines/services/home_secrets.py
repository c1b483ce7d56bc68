"""Secrets a local service needs: from the environment, else made once and kept in the home.

A deployment sets the environment variable from its secret store; on one machine the first
command that needs the secret makes a random one and keeps it in a file only its owner can read
(mode 0600), so every later command of the same home finds the same one.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from pipelines.errors import SetupError


def env_or_home_secret(env_name: str, path: Path, what: str) -> str:
    """``$env_name`` when set, else the secret kept in ``path`` (made now when missing)."""
    from_env = os.environ.get(env_name)
    if from_env:
        return from_env
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another command made it just now
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(32) + "\n")
    secret = path.read_text().strip()
    if not secret:
        raise SetupError(f"{path}: {what} file is empty; delete it to make a new one")
    return secret
