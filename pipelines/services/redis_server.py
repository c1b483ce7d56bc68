"""The online store's local server: Redis from the OS packages, run from the home.

``up`` is idempotent: a server of this home already answering is reused; a port answering
without this home's password is someone else's, and refused by name. The server listens on
``online_store.host`` (loopback) with protected mode on and a password: the one in
``$<online_store.password_env>`` or, when that is unset, one made once and kept in
``<home>/online_store/password`` (mode 0600). Data lives in ``<home>/online_store/``, with the
append-only file on (fsync every second) and snapshots, so ``down`` and ``up`` keep every key;
``maxmemory`` with ``noeviction`` makes a full store refuse writes rather than drop customers.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from pipelines.config import Config
from pipelines.errors import SetupError
from pipelines.services.process import log_tail, pid_alive, port_answers, read_pid, terminate

START_TIMEOUT_S = 20.0
INSTALL_HINT = "install it with `apt-get install redis-server` (Debian/Ubuntu) or your OS's redis package"


def store_dir(cfg: Config) -> Path:
    return cfg.paths.home / "online_store"


def _pid_file(cfg: Config) -> Path:
    return store_dir(cfg) / "redis.pid"


def _log_file(cfg: Config) -> Path:
    return cfg.paths.logs / "online_store.log"


def _conf_file(cfg: Config) -> Path:
    return store_dir(cfg) / "redis.conf"


def store_password(cfg: Config) -> str:
    """The store's password: from the environment, else this home's own (made once, 0600)."""
    from_env = os.environ.get(cfg.online_store.password_env)
    if from_env:
        return from_env
    path = store_dir(cfg) / "password"
    if path.is_file():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
    return secret


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if not found:
        raise SetupError(f"redis-server is not installed (the online store needs it): {INSTALL_HINT}")
    return found


def _write_conf(cfg: Config) -> Path:
    st = cfg.online_store
    folder = store_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    conf = _conf_file(cfg)
    lines = [
        f"bind {st.host}",
        "protected-mode yes",
        f"port {st.port}",
        f'requirepass "{store_password(cfg)}"',
        "daemonize no",
        f'dir "{folder}"',
        f'pidfile "{_pid_file(cfg)}"',
        'logfile ""',  # stdout, which up() sends to the log file
        "appendonly yes",
        "appendfsync everysec",
        "save 3600 1 300 100 60 10000",
        f"maxmemory {st.maxmemory}",
        "maxmemory-policy noeviction",
        "tcp-keepalive 60",
    ]
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds the password
    with os.fdopen(fd, "w") as fh:
        fh.write("# written by journeylake online-store up; edit conf/ instead\n" + "\n".join(lines) + "\n")
    return conf


@dataclass(frozen=True)
class StoreStatus:
    running: bool
    host: str
    port: int
    pid: int | None
    data: Path
    detail: str = ""

    def describe(self) -> str:
        where = f"{self.host}:{self.port}"
        if not self.running:
            return f"stopped (would listen on {where}; data {self.data})"
        owner = f"pid {self.pid}" if self.pid else "started elsewhere"
        extra = f"; {self.detail}" if self.detail else ""
        return f"running on {where} ({owner}); data {self.data}{extra}"


def _client(cfg: Config, timeout: float = 1.0):  # -> redis.Redis
    import redis

    st = cfg.online_store
    return redis.Redis(
        host=st.host,
        port=st.port,
        password=store_password(cfg),
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
    )


def _answers_as_ours(cfg: Config) -> bool | None:
    """True: a server with this home's password answers; False: something else holds the port;
    None: nothing listens."""
    import redis

    st = cfg.online_store
    if not port_answers(st.host, st.port):
        return None
    try:
        return bool(_client(cfg).ping())
    except redis.AuthenticationError:
        return False
    except redis.ResponseError as exc:  # e.g. "NOAUTH" / "WRONGPASS"
        return False if "auth" in str(exc).lower() or "pass" in str(exc).lower() else None
    except redis.RedisError:
        return False


def status(cfg: Config) -> StoreStatus:
    st = cfg.online_store
    ours = _answers_as_ours(cfg)
    pid = read_pid(_pid_file(cfg))
    if ours is None:
        return StoreStatus(False, st.host, st.port, None, store_dir(cfg))
    if ours is False:
        return StoreStatus(True, st.host, st.port, None, store_dir(cfg), "another server holds the port")
    info = _client(cfg).info()
    detail = (
        f"{info.get('used_memory_human', '?')} used of {st.maxmemory}; "
        f"{sum(v.get('keys', 0) for k, v in info.items() if k.startswith('db') and isinstance(v, dict))} keys"
    )
    return StoreStatus(True, st.host, st.port, pid, store_dir(cfg), detail)


def up(cfg: Config) -> tuple[StoreStatus, bool]:
    """Start the server unless this home's answers already; (status, whether it was started)."""
    st = cfg.online_store
    ours = _answers_as_ours(cfg)
    if ours:
        return status(cfg), False
    if ours is False:
        raise SetupError(
            f"online store port {st.host}:{st.port} is taken by another server (it does not take this "
            f"home's password); stop it or set online_store.port (or $JOURNEYLAKE_STORE_PORT)"
        )
    binary = redis_binary()
    conf = _write_conf(cfg)
    log = _log_file(cfg)
    log.parent.mkdir(parents=True, exist_ok=True)
    offset = log.stat().st_size if log.exists() else 0
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [binary, str(conf)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives this command, like the other local services
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if _answers_as_ours(cfg):
            return status(cfg), True
        time.sleep(0.05)
    if proc.poll() is None:
        terminate(proc.pid, 5)
    tail = log_tail(log)[-2000:] if log.exists() else ""
    new = tail if offset == 0 else log.read_text(errors="replace")[offset:][-2000:]
    raise SetupError(f"online store did not start on {st.host}:{st.port} (log {log}):\n{new.strip() or tail}")


def down(cfg: Config, timeout: float = 20.0) -> bool:
    """Stop this home's server, saving its data; False when none of this home's was running."""
    import redis

    pid = read_pid(_pid_file(cfg))
    if _answers_as_ours(cfg):
        try:
            _client(cfg, timeout).shutdown(save=True)
        except redis.ConnectionError:
            pass  # the connection closes as the server exits
        except redis.RedisError:
            if pid:
                terminate(pid, timeout)
        deadline = time.monotonic() + timeout
        while pid and pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        return True
    if pid:
        return terminate(pid, timeout)
    return False


def stop_servers_under(root: Path, timeout: float = 10.0) -> list[int]:
    """Stop every store server whose data lives under ``root`` (a test run's temp folder)."""
    stopped = []
    for pid_file in root.rglob("online_store/redis.pid"):
        pid = read_pid(pid_file)
        if pid is not None and terminate(pid, timeout):
            stopped.append(pid)
    return stopped
