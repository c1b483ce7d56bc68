"""The SQL endpoint for analysts: Spark's Thrift (JDBC/ODBC) server on the shared catalog.

``journeylake sql`` without ``-e`` starts Spark's own ``HiveThriftServer2`` (it ships inside
pyspark) with the same settings as every other journeylake process (Delta, the shared metastore,
the warehouse), listening on loopback only. Any HiveServer2 client connects: beeline, DBeaver or
another JDBC tool, PyHive, ODBC drivers. It reads the tables the streaming job is writing.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from pipelines.config import Config
from pipelines.errors import SetupError

DEFAULT_PORT = 10015
HOST = "127.0.0.1"
THRIFT_SERVER_CLASS = "org.apache.spark.sql.hive.thriftserver.HiveThriftServer2"


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def command(cfg: Config, port: int) -> list[str]:
    """The spark-submit command line that starts the endpoint for ``cfg`` on ``port``."""
    from pipelines.services.spark import spark_settings

    submit = spark_home() / "bin" / "spark-submit"
    settings = spark_settings(cfg, "journeylake-sql-endpoint")
    args = [str(submit), "--class", THRIFT_SERVER_CLASS, "--name", settings.pop("spark.app.name")]
    for key, value in settings.items():
        args += ["--conf", f"{key}={value}"]
    args += [
        "spark-internal",
        "--hiveconf",
        f"hive.server2.thrift.port={port}",
        "--hiveconf",
        f"hive.server2.thrift.bind.host={HOST}",
    ]
    return args


def connection_help(port: int) -> str:
    url = f"jdbc:hive2://{HOST}:{port}/default"
    return (
        f"SQL endpoint (HiveServer2 protocol) on {HOST}:{port}\n"
        f"  JDBC URL: {url}\n"
        f'  beeline:  beeline -u "{url}" -e "SELECT * FROM gold.customer_360 LIMIT 5"\n'
        f"  Python:   from pyhive import hive; hive.connect(host='{HOST}', port={port}).cursor()"
    )


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


def start(cfg: Config, port: int = DEFAULT_PORT, timeout_s: float = 180.0) -> subprocess.Popen[bytes]:
    """Start the endpoint in the background and wait until it accepts connections.

    The caller owns the returned process (``stop`` it). Its output goes to
    ``<home>/logs/sql-endpoint.log``; if it dies or does not come up in time, the error says so
    and points at that log.
    """
    from pipelines.services import metastore

    if _listening(port):
        raise SetupError(f"port {port} on {HOST} is already in use; choose another with --port")
    if cfg.catalog.metastore.kind == "derby-server":
        metastore.ensure_running(cfg)
    cfg.paths.logs.mkdir(parents=True, exist_ok=True)
    log_path = cfg.paths.logs / "sql-endpoint.log"
    env = {**os.environ, "SPARK_HOME": str(spark_home()), "PYSPARK_PYTHON": sys.executable}
    env.setdefault("SPARK_LOCAL_IP", HOST)
    with log_path.open("ab") as log:
        process = subprocess.Popen(command(cfg, port), stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SetupError(f"the SQL endpoint exited with code {process.returncode}; see {log_path}")
        if _listening(port):
            return process
        time.sleep(1.0)
    stop(process)
    raise SetupError(f"the SQL endpoint did not open port {port} within {timeout_s:.0f}s; see {log_path}")


def stop(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
