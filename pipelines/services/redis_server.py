"""The online store's local server: Redis from the OS packages, run from the home.

``journeylake online-store up`` runs ``redis-server <home>/online_store/redis.conf`` detached, on
the lifecycle the local services share (pipelines/services/process.py): started idempotently
under a lock, awaited until it answers a PING with this home's password, pid in
``<home>/online_store/server.json``, log in ``<home>/logs/online_store.log``. The configuration
file is written from ``online_store.*`` at each start (mode 0600: it holds the password):

- it listens on ``online_store.host`` (loopback) only, with protected mode on and a password:
  the one in ``$<online_store.password_env>`` or, when that is unset, one made once and kept in
  ``<home>/online_store/password`` (mode 0600); clients get it from :func:`store_password`;
- data lives in ``<home>/online_store/``, in the append-only file (fsync every second; Redis
  rewrites it when it has doubled), so ``down`` and ``up`` keep every key. No snapshot schedule:
  under a decision load every write counts towards it, so it would fork the whole store every
  minute (a pause of the server, then a child dumping every key on the API's cores) to copy what
  the append-only file already holds, and the lakehouse can rebuild with ``sync``;
- ``maxmemory`` with ``noeviction`` makes a full store refuse writes rather than drop customers.

``down`` sends SHUTDOWN SAVE (then SIGTERM, which also saves, and SIGKILL after a timeout). A port
answering that does not take this home's password is someone else's, and refused by name.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pipelines.config import Config
from pipelines.errors import SetupError
from pipelines.services.home_secrets import env_or_home_secret
from pipelines.services.process import ManagedService, ServiceState, stop_under

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 20.0
SERVICE_NAME = "the online store"
INSTALL_HINT = (
    "install it with `apt-get install redis-server` (Debian/Ubuntu), `brew install redis` (macOS) "
    "or your OS's redis package"
)


@dataclass(frozen=True, kw_only=True)
class StoreStatus(ServiceState):
    """The online store's state; ``detail`` says how much memory it uses and how many keys it holds."""


def store_dir(cfg: Config) -> Path:
    return cfg.paths.home / "online_store"


def log_file(cfg: Config) -> Path:
    return cfg.paths.logs / "online_store.log"


def _conf_file(cfg: Config) -> Path:
    return store_dir(cfg) / "redis.conf"


def password_file(cfg: Config) -> Path:
    return store_dir(cfg) / "password"


def store_password(cfg: Config) -> str:
    """The store's password, for the server and every client: ``$<online_store.password_env>``,
    else this home's own (made once, kept in ``<home>/online_store/password``, mode 0600)."""
    return env_or_home_secret(
        cfg.online_store.password_env, password_file(cfg), "the online store's password"
    )


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if not found:
        raise SetupError(f"redis-server is not installed (the online store needs it): {INSTALL_HINT}")
    return found


def service(cfg: Config) -> ManagedService:
    """The store's lifecycle: state and lock in ``<home>/online_store``, log under the logs."""
    st = cfg.online_store
    return ManagedService(
        name=SERVICE_NAME,
        host=st.host,
        port=st.port,
        folder=store_dir(cfg),
        log=log_file(cfg),
        stop_command="journeylake online-store down",
        port_advice="choose another with online_store.port in conf/targets/<target>.yml "
        "or JOURNEYLAKE_STORE_PORT",
    )


def _quoted(value: str) -> str:
    """A value as a Redis configuration string (a password may hold quotes or spaces)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _write_conf(cfg: Config) -> Path:
    st = cfg.online_store
    folder = store_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Written by `journeylake online-store up` from the configuration (online_store.*) at each",
        "# start: change the configuration, not this file.",
        f"bind {st.host}",
        "protected-mode yes",
        f"port {st.port}",
        f"requirepass {_quoted(store_password(cfg))}",
        "daemonize no",  # the lifecycle helper detaches it and records its pid
        f"dir {_quoted(str(folder))}",
        'logfile ""',  # stdout, which the lifecycle helper sends to the log file
        "appendonly yes",
        "appendfsync everysec",
        'save ""',  # the append-only file is the persistence (see the module's docstring)
        f"maxmemory {st.maxmemory}",
        "maxmemory-policy noeviction",
        "tcp-keepalive 60",
    ]
    conf = _conf_file(cfg)
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # it holds the password, also when an older file was wider open
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return conf


def _client(cfg: Config, timeout: float = 1.0) -> redis.Redis:
    """A client for the lifecycle's probes: one try each (redis-py retries 3 times by default,
    which made a port held by a silent program take seconds to refuse)."""
    st = cfg.online_store
    return redis.Redis(
        host=st.host,
        port=st.port,
        password=store_password(cfg),
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


def _answers_as_ours(cfg: Config, timeout: float = 1.0) -> bool:
    """Whether a Redis server taking this home's password answers a PING on the port."""
    try:
        return bool(_client(cfg, timeout).ping())
    except redis.RedisError:  # refused, wrong password, not Redis, or still loading its data
        return False


def _command(cfg: Config) -> list[str]:
    binary = redis_binary()  # raises with the install hint before anything is written
    return [binary, str(_write_conf(cfg))]


def status(cfg: Config) -> StoreStatus:
    """Whether the store answers on its port, whether this home started it, and what it holds."""
    st = cfg.online_store
    probe = service(cfg).probe()
    detail = probe.detail
    if probe.running:
        try:
            client = _client(cfg)
            memory = client.info("memory").get("used_memory_human", "?")
            keys = sum(v.get("keys", 0) for v in client.info("keyspace").values() if isinstance(v, dict))
            detail += f"; {memory} used of {st.maxmemory}; {keys:,} keys"
        except redis.RedisError:
            detail += "; it does not take this home's password: another program's server"
    return StoreStatus(
        running=probe.running,
        host=st.host,
        port=st.port,
        pid=probe.pid,
        data=store_dir(cfg),
        log=log_file(cfg),
        detail=detail,
    )


def up(cfg: Config, timeout: float = START_TIMEOUT_S) -> tuple[StoreStatus, bool]:
    """Start the server unless one taking this home's password answers; (status, whether started).

    Raises SetupError when redis-server is not installed, the port is taken by another program, or
    the server exits at start (quoting its log).
    """
    started = service(cfg).up(
        lambda: _command(cfg),
        ready=lambda seconds: _answers_as_ours(cfg, seconds),
        recognizes=lambda: _answers_as_ours(cfg),
        timeout=timeout,
    )
    return status(cfg), started


def down(cfg: Config, timeout: float = STOP_TIMEOUT_S) -> str | None:
    """Stop this home's server, saving its data: "stopped (pid N)", or None if none was running."""

    def shutdown() -> None:
        try:  # redis-py returns once the connection closes as the server exits
            _client(cfg, timeout).shutdown(save=True)
        except redis.RedisError:
            pass  # e.g. the save failed: SIGTERM comes next (it saves too), then SIGKILL

    return service(cfg).down(timeout, shutdown=shutdown)


def stop_servers_under(root: Path, timeout: float = STOP_TIMEOUT_S) -> list[int]:
    """Stop every store server whose home lives under ``root`` (a test run's temp folder)."""
    return stop_under(root, SERVICE_NAME, timeout)
