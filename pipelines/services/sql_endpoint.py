"""The SQL endpoint for analysts: Spark's Thrift (JDBC/ODBC) server on the shared catalog.

``journeylake sql`` without ``-e`` starts Spark's own ``HiveThriftServer2`` (it ships inside
pyspark) with the same settings as every other journeylake process (Delta, the shared metastore,
the warehouse), listening on loopback only. Any HiveServer2 client connects: beeline, DBeaver or
another JDBC tool, PyHive, ODBC drivers. It reads the tables the streaming job is writing.

Every connection logs in with a user name and password (HiveServer2's ``CUSTOM``
authentication, SASL PLAIN): our ``SqlEndpointAuth`` class checks them against the users file of
:mod:`pipelines.services.sql_users`. Every statement is then checked against the user's role
(``sql_endpoint.roles``) by ``SqlEndpointAccess``, a Spark SQL extension that analyzes the
statement as the session's user and refuses it when it touches a schema the role does not read
(by any route: name, view, SHOW/DESCRIBE, EXPLAIN), reads files by path, or writes. Both classes
are compiled from ``pipelines/services/jvm/*.java`` into the jar cache the first time they are
needed (and again when a source changes), with the JDK's ``javac``.
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

HOST = "127.0.0.1"
THRIFT_SERVER_CLASS = "org.apache.spark.sql.hive.thriftserver.HiveThriftServer2"
JVM_SOURCES = Path(__file__).resolve().parent / "jvm"
AUTH_CLASS = "journeylake.SqlEndpointAuth"
ACCESS_EXTENSION = "journeylake.SqlEndpointAccess"
EXAMPLE_QUERY = "SELECT * FROM gold.customer_360 LIMIT 5"  # the start message's, tested as it is


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def auth_jar() -> Path:
    """The login and access checks' jar, compiled into the jar cache when missing or when a
    source changed."""
    import hashlib
    import shutil
    import tempfile

    from pipelines.services.jars import cache_dir

    sources = sorted(JVM_SOURCES.glob("*.java"))
    digest = hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in sources)).hexdigest()[:12]
    jar = cache_dir() / "sql-endpoint" / f"journeylake-sql-auth-{digest}.jar"
    if jar.is_file():
        return jar
    javac, jar_tool = shutil.which("javac"), shutil.which("jar")
    if not javac or not jar_tool:
        raise SetupError(
            "the SQL endpoint's login check is compiled with the JDK's javac and jar, which are not on "
            "PATH; install a JDK 17 (Debian: apt-get install openjdk-17-jdk-headless)"
        )
    spark_jars = sorted((spark_home() / "jars").glob("*.jar"))
    if not any(j.name.startswith("spark-hive-thriftserver_") for j in spark_jars):
        raise SetupError(f"no spark-hive-thriftserver jar in {spark_home() / 'jars'}: is pyspark complete?")
    jar.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=jar.parent) as work:
        class_path = os.pathsep.join(str(j) for j in spark_jars)
        compiled = subprocess.run(
            [javac, "--release", "17", "-nowarn", "-cp", class_path, "-d", work, *map(str, sources)],
            capture_output=True,
            text=True,
        )
        if compiled.returncode != 0:
            raise SetupError(f"compiling {JVM_SOURCES}/*.java failed: {compiled.stderr.strip()[:800]}")
        staged = Path(work) / jar.name
        packed = subprocess.run(
            [jar_tool, "cf", str(staged), "-C", work, "journeylake"], capture_output=True, text=True
        )
        if packed.returncode != 0:
            raise SetupError(f"packing {jar.name} failed: {packed.stderr.strip()[:500]}")
        staged.replace(jar)  # whole or not at all: another process may be compiling it too
    return jar


def roles_file(cfg: Config) -> Path:
    from pipelines.services.sql_users import users_file

    return users_file(cfg).with_name("roles.properties")


def write_roles(cfg: Config) -> Path:
    """``sql_endpoint.roles`` as the access check reads them (Java properties), each role's layers
    named by their schemas; the session's starting schema (``default``, empty) is readable by all."""
    from pipelines.tables import schema_name

    lines = ["# written by `journeylake sql` from conf/ at each start: edit sql_endpoint.roles instead"]
    for name, role in cfg.sql_endpoint.roles.items():
        schemas = ["default", *(schema_name(cfg, layer) for layer in role.layers)]
        lines += [
            f"role.{name}.schemas={','.join(schemas)}",
            f"role.{name}.path_queries={str(role.path_queries).lower()}",
            f"role.{name}.read_only={str(role.read_only).lower()}",
            f"role.{name}.settable={','.join(role.settable)}",
        ]
    path = roles_file(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def command(cfg: Config, port: int) -> list[str]:
    """The spark-submit command line that starts the endpoint for ``cfg`` on ``port``."""
    from pipelines.services.spark import spark_settings
    from pipelines.services.sql_users import users_file

    submit = spark_home() / "bin" / "spark-submit"
    settings = spark_settings(cfg, "journeylake-sql-endpoint")
    # Every jar on the JVM's own class path, none added at run time: Hive closes a JDBC session's
    # class loaders when the session ends, and a jar added with spark.jars sits in one of them.
    # A class of Delta first needed after a client disconnected (a LIMIT query's data-skipping
    # reader) then failed with NoClassDefFoundError while count(*) on the same table worked.
    added = [jar for jar in settings.pop("spark.jars", "").split(",") if jar]
    own = [jar for jar in settings.get("spark.driver.extraClassPath", "").split(os.pathsep) if jar]
    settings["spark.driver.extraClassPath"] = os.pathsep.join([*own, *added, str(auth_jar())])
    settings["spark.driver.extraJavaOptions"] += (
        f" -Djourneylake.sql.users={users_file(cfg)} -Djourneylake.sql.roles={roles_file(cfg)}"
        f" -Djourneylake.sql.roles.default={cfg.sql_endpoint.default_role}"
    )
    extensions = [e for e in settings.get("spark.sql.extensions", "").split(",") if e]
    settings["spark.sql.extensions"] = ",".join([*extensions, ACCESS_EXTENSION])
    args = [str(submit), "--class", THRIFT_SERVER_CLASS, "--name", settings.pop("spark.app.name")]
    for key, value in settings.items():
        args += ["--conf", f"{key}={value}"]
    args += [
        "spark-internal",
        "--hiveconf",
        f"hive.server2.thrift.port={port}",
        "--hiveconf",
        f"hive.server2.thrift.bind.host={HOST}",
        "--hiveconf",
        "hive.server2.authentication=CUSTOM",
        "--hiveconf",
        f"hive.server2.custom.authentication.class={AUTH_CLASS}",
        "--hiveconf",
        "hive.server2.enable.doAs=true",  # statements run as the session's user: the role check's
    ]
    return args


def connection_help(port: int, user: str, password_from: str) -> str:
    url = f"jdbc:hive2://{HOST}:{port}/default"
    return (
        f"SQL endpoint (HiveServer2 protocol) on {HOST}:{port}; log in as {user} ({password_from})\n"
        f"  JDBC URL: {url}\n"
        f'  beeline:  beeline -u "{url}" -n {user} -p "$PASSWORD" -e "{EXAMPLE_QUERY}"\n'
        f"  Python:   from pyhive import hive; hive.connect(host='{HOST}', port={port}, username='{user}', "
        "password=PASSWORD, auth='CUSTOM').cursor()"
    )


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


def start(cfg: Config, port: int | None = None, timeout_s: float = 180.0) -> subprocess.Popen[bytes]:
    """Start the endpoint in the background and wait until it accepts connections.

    The caller owns the returned process (``stop`` it). Its output goes to
    ``<home>/logs/sql-endpoint.log``; if it dies or does not come up in time, the error says so
    and points at that log.
    """
    from pipelines.services import metastore
    from pipelines.services.sql_users import ensure_a_user

    port = port or cfg.sql_endpoint.port
    if _listening(port):
        raise SetupError(f"port {port} on {HOST} is already in use; choose another with --port")
    if cfg.catalog.metastore.kind == "derby-server":
        metastore.ensure_running(cfg)
    cfg.paths.logs.mkdir(parents=True, exist_ok=True)
    log_path = cfg.paths.logs / "sql-endpoint.log"
    ensure_a_user(cfg)  # nobody could log in otherwise
    write_roles(cfg)
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
