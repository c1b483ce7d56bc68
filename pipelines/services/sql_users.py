"""Who may use the SQL endpoint: the users file the endpoint checks every login against.

One line per user, ``<user> <role> pbkdf2_sha256$<iterations>$<salt>$<key>`` (salt and key
base64): passwords are never stored, only PBKDF2-HMAC-SHA256 keys of them, which the endpoint's JVM
(``pipelines/services/jvm/SqlEndpointAuth.java``) recomputes at each login. The role is one of
``sql_endpoint.roles`` (a line without one has ``sql_endpoint.default_role``); the endpoint reads
it at every statement (``SqlEndpointAccess.java``). The file lives under the home
(``sql_endpoint.users_file``, mode 0600) and is read at every login, so adding or removing a user
or changing a role needs no restart.

When the file names nobody, the endpoint's first start adds ``sql_endpoint.default_user`` with
the password from ``$<sql_endpoint.password_env>``, else one made once and kept in the home.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from pipelines.config import Config
from pipelines.errors import InputError
from pipelines.services.home_secrets import env_or_home_secret

ITERATIONS = 120_000  # per login, in the endpoint's JVM: a few tens of milliseconds
USER_NAME = re.compile(r"^[A-Za-z_][\w.-]{0,63}$")
SCHEME = "pbkdf2_sha256"


def users_file(cfg: Config) -> Path:
    path = cfg.sql_endpoint.users_file
    return path if path.is_absolute() else cfg.paths.home / path


def default_password_file(cfg: Config) -> Path:
    """Where the default user's password is kept when ``$<password_env>`` is not set."""
    return users_file(cfg).with_name("default-password")


def hash_password(password: str, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    key = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations, dklen=32)
    return f"{SCHEME}${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"


@dataclass(frozen=True)
class SqlUser:
    role: str
    key: str  # the password's PBKDF2 key, as stored


def read_users(cfg: Config) -> dict[str, SqlUser]:
    """user -> their role and stored key, in file order."""
    path = users_file(cfg)
    if not path.is_file():
        return {}
    users: dict[str, SqlUser] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) not in (2, 3) or not parts[-1].startswith(f"{SCHEME}$"):
            raise InputError(
                f"{path}:{number}: expected '<user> <role> {SCHEME}$...' "
                "(edit it with `journeylake sql-user`)"
            )
        role = parts[1] if len(parts) == 3 else cfg.sql_endpoint.default_role
        users[parts[0]] = SqlUser(role, parts[-1])
    return users


def check_role(cfg: Config, role: str) -> str:
    if role not in cfg.sql_endpoint.roles:
        raise InputError(f"role {role!r}: sql_endpoint.roles has {', '.join(sorted(cfg.sql_endpoint.roles))}")
    return role


def _write_users(cfg: Config, users: dict[str, SqlUser]) -> None:
    path = users_file(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("# journeylake SQL endpoint users: edit with `journeylake sql-user add|remove|list`\n")
        fh.writelines(f"{user} {u.role} {u.key}\n" for user, u in users.items())
    os.replace(tmp, path)  # a login reads the old file or the new one, never half of one


def set_user(cfg: Config, user: str, password: str, role: str | None = None) -> bool:
    """Add ``user`` or change their password (and role, when given); True when the user is new.
    A new user without a role gets ``sql_endpoint.default_role``."""
    if not USER_NAME.match(user):
        raise InputError(
            f"user name {user!r}: use letters, digits, '_', '.', '-' (up to 64), starting with a letter"
        )
    if len(password) < 12:
        raise InputError(f"the password for {user} has {len(password)} characters; use 12 or more")
    users = read_users(cfg)
    new = user not in users
    kept = users[user].role if not new else cfg.sql_endpoint.default_role
    users[user] = SqlUser(check_role(cfg, role or kept), hash_password(password))
    _write_users(cfg, users)
    return new


def set_role(cfg: Config, user: str, role: str) -> None:
    users = read_users(cfg)
    if user not in users:
        raise InputError(f"no SQL endpoint user {user!r} in {users_file(cfg)}")
    users[user] = SqlUser(check_role(cfg, role), users[user].key)
    _write_users(cfg, users)


def remove_user(cfg: Config, user: str) -> None:
    users = read_users(cfg)
    if user not in users:
        raise InputError(f"no SQL endpoint user {user!r} in {users_file(cfg)}")
    del users[user]
    _write_users(cfg, users)


def ensure_a_user(cfg: Config) -> str | None:
    """Add the default user when nobody may log in yet; their name when added, else None."""
    if read_users(cfg):
        return None
    s = cfg.sql_endpoint
    password = env_or_home_secret(
        s.password_env, default_password_file(cfg), "the SQL endpoint's default password"
    )
    set_user(cfg, s.default_user, password)
    return s.default_user


def password_hint(cfg: Config) -> str:
    """Where the default user's password is, in words for the endpoint's start message."""
    s = cfg.sql_endpoint
    if os.environ.get(s.password_env):
        return f"password: ${s.password_env}"
    return f"password: in {default_password_file(cfg)}"


def default_credentials(cfg: Config) -> tuple[str, str]:
    """The default user and their password (from the environment or the home), for local clients."""
    s = cfg.sql_endpoint
    password = env_or_home_secret(
        s.password_env, default_password_file(cfg), "the SQL endpoint's default password"
    )
    return s.default_user, password
