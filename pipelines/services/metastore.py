"""The shared catalog: a Derby network server that several Spark processes use at once.

Spark's default (embedded) Derby metastore lets one process open the catalog at a time, but the
streaming job, dbt and an analyst's SQL session must see the same tables together. Locally the
catalog therefore lives in an Apache Derby *network server* — pure Java, jars from
``make jars`` — running as its own process on 127.0.0.1, with its database under
``<home>/metastore/db``. Each Spark process uses its built-in Hive client with Derby's JDBC
network client (see :func:`hive_settings`).

``ensure_running`` is idempotent: a server already answering on the configured port is reused;
otherwise one is started detached (log in ``<home>/logs/metastore.log``) and awaited. The server
listens on the loopback address only and has no authentication: it is for one machine's
development and tests, not for shared deployments (Databricks uses Unity Catalog instead).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from pipelines.config import Config
from pipelines.errors import SetupError
from pipelines.services import jars
from pipelines.services.process import java_executable, pid_alive, port_answers

DERBY_MAIN = "org.apache.derby.drda.NetworkServerControl"
CLIENT_DRIVER = "org.apache.derby.jdbc.ClientDriver"
START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class MetastoreStatus:
    kind: str
    running: bool
    host: str
    port: int
    pid: int | None  # of a server started from this home, else None
    database: Path
    log: Path
    detail: str = ""

    def describe(self) -> str:
        if self.kind != "derby-server":
            return f"metastore kind {self.kind!r}: no local service to run"
        where = f"{self.host}:{self.port}"
        if not self.running:
            return f"stopped (would listen on {where}; database {self.database})"
        owner = f"pid {self.pid}" if self.pid else "started elsewhere"
        return f"running on {where} ({owner}); database {self.database}; log {self.log}"


def database_path(cfg: Config) -> Path:
    return cfg.paths.metastore / "db"


def jdbc_url(cfg: Config) -> str:
    """JDBC URL of the shared catalog's database (absolute path, so any Derby server serves it)."""
    ms = cfg.catalog.metastore
    return f"jdbc:derby://{ms.host}:{ms.port}/{database_path(cfg)};create=true"


def hive_settings(cfg: Config) -> dict[str, str]:
    """Spark settings that point the built-in Hive client at the shared catalog."""
    if cfg.catalog.metastore.kind == "derby-server":
        url, driver = jdbc_url(cfg), CLIENT_DRIVER
    elif cfg.catalog.metastore.kind == "embedded":  # one process only
        url = f"jdbc:derby:;databaseName={cfg.paths.metastore / 'embedded_db'};create=true"
        driver = "org.apache.derby.jdbc.EmbeddedDriver"
    else:
        return {}
    return {
        "spark.sql.catalogImplementation": "hive",
        "spark.hadoop.javax.jdo.option.ConnectionURL": url,
        "spark.hadoop.javax.jdo.option.ConnectionDriverName": driver,
        "spark.hadoop.datanucleus.schema.autoCreateAll": "true",
        "spark.hadoop.hive.metastore.schema.verification": "false",
        "spark.hadoop.hive.metastore.schema.verification.record.version": "false",
    }


def _state_file(cfg: Config) -> Path:
    return cfg.paths.metastore / "server.json"


def _log_file(cfg: Config) -> Path:
    return cfg.paths.logs / "metastore.log"


def _control(cfg: Config, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    ms = cfg.catalog.metastore
    classpath = os.pathsep.join(str(p) for p in jars.derby_server_classpath())
    return subprocess.run(
        [java_executable(), "-cp", classpath, DERBY_MAIN, *args, "-h", ms.host, "-p", str(ms.port)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _owned_pid(cfg: Config) -> int | None:
    """The pid of a live server this home started on the configured port, if any."""
    try:
        state = json.loads(_state_file(cfg).read_text())
    except (OSError, ValueError):
        return None
    ms = cfg.catalog.metastore
    pid = state.get("pid")
    if (
        state.get("port") == ms.port
        and state.get("host") == ms.host
        and isinstance(pid, int)
        and pid_alive(pid)
    ):
        return pid
    return None


def status(cfg: Config) -> MetastoreStatus:
    ms = cfg.catalog.metastore
    running = ms.kind == "derby-server" and port_answers(ms.host, ms.port)
    return MetastoreStatus(
        kind=ms.kind,
        running=running,
        host=ms.host,
        port=ms.port,
        pid=_owned_pid(cfg) if running else None,
        database=database_path(cfg),
        log=_log_file(cfg),
    )


@contextlib.contextmanager
def _start_lock(cfg: Config):
    """Serialize starts from processes sharing a home (e.g. two commands launched together)."""
    cfg.paths.metastore.mkdir(parents=True, exist_ok=True)
    with open(cfg.paths.metastore / ".start.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        tail = path.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return " | ".join(line.strip() for line in tail if line.strip())


def ensure_running(cfg: Config, timeout: float = START_TIMEOUT_S) -> MetastoreStatus:
    """Make sure the shared catalog's server answers; start it (detached) if it does not.

    No-op for metastore kinds other than ``derby-server``. Raises SetupError with the reason
    (port taken by another program, Java missing, server exited: last lines of its log).
    """
    ms = cfg.catalog.metastore
    if ms.kind != "derby-server":
        return status(cfg)
    if port_answers(ms.host, ms.port):
        return _reuse(cfg)

    with _start_lock(cfg):
        if port_answers(ms.host, ms.port):  # another process started it while we waited
            return _reuse(cfg)
        classpath = os.pathsep.join(str(p) for p in jars.derby_server_classpath())
        log = _log_file(cfg)
        log.parent.mkdir(parents=True, exist_ok=True)
        command = [
            java_executable(),
            f"-Xmx{ms.heap}",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            f"-Dderby.system.home={cfg.paths.metastore}",
            "-Dderby.drda.logConnections=false",
            "-cp",
            classpath,
            DERBY_MAIN,
            "start",
            "-h",
            ms.host,
            "-p",
            str(ms.port),
            "-noSecurityManager",
        ]
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # survives the command that started it
                close_fds=True,
            )
        deadline = time.monotonic() + timeout
        while not port_answers(ms.host, ms.port):
            if proc.poll() is not None:
                raise SetupError(
                    f"the metastore server on {ms.host}:{ms.port} exited at start (code {proc.returncode}): "
                    f"{_log_tail(log) or 'no output'} (log: {log})"
                )
            if time.monotonic() > deadline:
                proc.terminate()
                raise SetupError(
                    f"the metastore server did not accept connections on {ms.host}:{ms.port} "
                    f"within {timeout:.0f}s (log: {log})"
                )
            time.sleep(0.2)
        _state_file(cfg).write_text(
            json.dumps({"pid": proc.pid, "host": ms.host, "port": ms.port, "started": time.time()}) + "\n"
        )
    return status(cfg)


def _reuse(cfg: Config) -> MetastoreStatus:
    """Reuse whatever answers on the port, after checking that it is a Derby server."""
    if _owned_pid(cfg) is None:
        ms = cfg.catalog.metastore
        try:
            ping = _control(cfg, "ping", timeout=30)
        except subprocess.TimeoutExpired:
            ping = None
        if ping is None or ping.returncode != 0:
            raise SetupError(
                f"port {ms.port} on {ms.host} is in use by another program (not a Derby server): "
                "choose another with catalog.metastore.port in conf/targets/<target>.yml "
                "or JOURNEYLAKE_METASTORE_PORT"
            )
    return status(cfg)


def _server_pid(metastore_dir: Path) -> int | None:
    """The pid recorded in ``metastore_dir/server.json``, if that process is still its server."""
    try:
        pid = json.loads((metastore_dir / "server.json").read_text()).get("pid")
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (OSError, ValueError, AttributeError):
        return None
    # guard against a recycled pid: the process must be the server of this very folder
    if isinstance(pid, int) and f"-Dderby.system.home={metastore_dir}" in cmdline and pid_alive(pid):
        return pid
    return None


def stop_servers_under(root: Path, timeout: float = 20.0) -> list[int]:
    """Stop every server whose database lives under ``root`` (e.g. a test run's temp folder).

    Used by the test suite to clean up servers that tests started in homes of their own.
    """
    stopped = []
    for state in root.rglob("server.json"):
        pid = _server_pid(state.parent)
        if pid is None:
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)  # a throw-away database: Derby recovers from its log anyway
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        state.unlink(missing_ok=True)
        stopped.append(pid)
    return stopped


def stop(cfg: Config, timeout: float = 20.0) -> bool:
    """Stop the server this home started. Returns False if there was none to stop.

    A server started from another home (same port) is left alone.
    """
    if cfg.catalog.metastore.kind != "derby-server":
        return False
    pid = _owned_pid(cfg)
    if pid is None:
        _state_file(cfg).unlink(missing_ok=True)
        return False
    with contextlib.suppress(subprocess.TimeoutExpired, SetupError):
        _control(cfg, "shutdown", timeout=timeout)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        time.sleep(1)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap it if this process started it
    _state_file(cfg).unlink(missing_ok=True)
    return True
