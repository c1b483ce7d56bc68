"""The shared catalog: a Derby network server that several Spark processes use at once.

Spark's default (embedded) Derby metastore lets one process open the catalog at a time, but the
streaming job, dbt and an analyst's SQL session must see the same tables together. Locally the
catalog therefore lives in an Apache Derby *network server* — pure Java, jars from
``make jars`` — running as its own process on 127.0.0.1, with its database under
``<home>/metastore/db``. Each Spark process uses its built-in Hive client with Derby's JDBC
network client (see :func:`hive_settings`).

``ensure_running`` is idempotent: this home's server already running is reused; another home's
answering on the port is refused by name (each home owns its catalog, on a port derived from
its path unless configured); otherwise one is started detached (log in
``<home>/logs/metastore.log``) and awaited. The server
listens on the loopback address only and has no authentication: it is for one machine's
development and tests, not for shared deployments (Databricks uses Unity Catalog instead).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pipelines.config import Config
from pipelines.errors import SetupError
from pipelines.services import jars
from pipelines.services.process import ManagedService, ServiceState, java_executable, stop_under

DERBY_MAIN = "org.apache.derby.drda.NetworkServerControl"
CLIENT_DRIVER = "org.apache.derby.jdbc.ClientDriver"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
SERVICE_NAME = "the metastore server"


@dataclass(frozen=True, kw_only=True)
class MetastoreStatus(ServiceState):
    kind: str
    data_words = "database"

    @property
    def database(self) -> Path:
        return self.data

    def describe(self) -> str:
        if self.kind != "derby-server":
            return f"metastore kind {self.kind!r}: no local service to run"
        return super().describe()


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


def service(cfg: Config) -> ManagedService:
    """The metastore's lifecycle: state and start lock in ``<home>/metastore``, log in the logs."""
    ms = cfg.catalog.metastore
    return ManagedService(
        name=SERVICE_NAME,
        host=ms.host,
        port=ms.port,
        folder=cfg.paths.metastore,
        log=cfg.paths.logs / "metastore.log",
        stop_command="journeylake metastore stop",
        port_advice="choose another with catalog.metastore.port in conf/targets/<target>.yml "
        "or JOURNEYLAKE_METASTORE_PORT",
    )


def _control(cfg: Config, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    ms = cfg.catalog.metastore
    classpath = os.pathsep.join(str(p) for p in jars.derby_server_classpath())
    return subprocess.run(
        [java_executable(), "-cp", classpath, DERBY_MAIN, *args, "-h", ms.host, "-p", str(ms.port)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _is_derby(cfg: Config) -> bool:
    """Whether what answers on the port is a Derby network server (it answers Derby's ping)."""
    try:
        return _control(cfg, "ping", timeout=30).returncode == 0
    except (subprocess.TimeoutExpired, SetupError):
        return False


def status(cfg: Config) -> MetastoreStatus:
    ms = cfg.catalog.metastore
    svc = service(cfg)
    probe = svc.probe() if ms.kind == "derby-server" else None
    return MetastoreStatus(
        kind=ms.kind,
        running=probe.running if probe else False,
        host=ms.host,
        port=ms.port,
        pid=probe.pid if probe else None,
        data=database_path(cfg),
        log=svc.log,
        detail=probe.detail if probe else "",
    )


def _command(cfg: Config) -> list[str]:
    ms = cfg.catalog.metastore
    classpath = os.pathsep.join(str(p) for p in jars.derby_server_classpath())
    return [
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


def ensure_running(cfg: Config, timeout: float = START_TIMEOUT_S) -> MetastoreStatus:
    """Make sure the shared catalog's server answers; start it (detached) if it does not.

    No-op for metastore kinds other than ``derby-server``. This home's server already running is
    reused; a Derby server of another home answering on the port is not (a catalog shared by
    two homes outlives either one's tables, and neither can stop it): SetupError names it, as it
    names any other reason (port taken by another program, Java missing, server exited: its log).
    """
    if cfg.catalog.metastore.kind != "derby-server":
        return status(cfg)
    service(cfg).up(
        lambda: _command(cfg),
        ready=lambda _seconds: True,  # Derby serves as soon as it listens
        recognizes=lambda: _refuse_foreign(cfg),
        timeout=timeout,
    )
    return status(cfg)


def _refuse_foreign(cfg: Config) -> bool:
    """Called when a server this home did not start answers on the port: SetupError naming it
    if it is a metastore (whose home, when this machine's processes tell); False otherwise."""
    if not _is_derby(cfg):
        return False
    port = cfg.catalog.metastore.port
    other = server_home(port)
    whose = f"home {other}" if other else "another home or checkout"
    raise SetupError(
        f"port {port} answers with a metastore server this home did not start ({whose}); each home "
        f"runs its own: stop that one (`journeylake metastore stop` with its home), or give this home "
        f"another port (catalog.metastore.port, or 0 for one derived from the home, or "
        f"JOURNEYLAKE_METASTORE_PORT)"
    )


def server_home(port: int) -> Path | None:
    """The home whose Derby server listens on ``port``, read from this machine's processes."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if DERBY_MAIN not in args or "start" not in args:
            continue
        if "-p" in args and args.index("-p") + 1 < len(args) and args[args.index("-p") + 1] == str(port):
            for arg in args:
                if arg.startswith("-Dderby.system.home="):
                    return Path(arg.split("=", 1)[1]).parent  # <home>/metastore
    return None


def stop_servers_under(root: Path, timeout: float = STOP_TIMEOUT_S) -> list[int]:
    """Stop every server whose home lives under ``root`` (e.g. a test run's temp folder).

    Used by the test suite to clean up servers that tests started in homes of their own; a
    throw-away database needs no clean shutdown (Derby recovers from its log anyway).
    """
    return stop_under(root, SERVICE_NAME, timeout)


def stop(cfg: Config, timeout: float = STOP_TIMEOUT_S) -> bool:
    """Stop the server this home started (Derby's shutdown command, then signals). Returns False
    if there was none to stop; a server started from another home (same port) is left alone.
    """
    if cfg.catalog.metastore.kind != "derby-server":
        return False

    def shutdown() -> None:
        _control(cfg, "shutdown", timeout=timeout)

    return service(cfg).down(timeout, shutdown=shutdown) is not None
