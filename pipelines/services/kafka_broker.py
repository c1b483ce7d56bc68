"""The local Kafka broker: one KRaft node (broker and controller in one JVM) on 127.0.0.1.

Kafka is the production event source; locally, development, the demo and the tests need a real
broker without Docker or a downloaded distribution. ``journeylake kafka up`` therefore runs Apache
Kafka from its own jars (``make jars`` resolves ``conf/jvm/kafka-broker.pom.xml`` into
``.cache/jars/kafka/``) as a detached process:

- listeners on the loopback address only: clients on ``127.0.0.1:<kafka.broker.port>``, the KRaft
  controller on ``127.0.0.1:<kafka.broker.controller_port>``; plaintext, no authentication: it is
  for one machine's development and tests, never for shared deployments;
- data under ``<home>/kafka/data`` (formatted on first start with a cluster id kept in
  ``<home>/kafka/cluster.id``), kept across restarts, never expired by time;
- ``<home>/kafka/server.properties`` written from the configuration at each start (so a changed
  port or ``JOURNEYLAKE_KAFKA_PORT`` applies on the next ``up``); log in ``<home>/logs/kafka.log``;
- the pid in ``<home>/kafka/broker.pid``; ``down`` sends SIGTERM (a clean shutdown flushes and
  closes the logs) and SIGKILL after a timeout.

``up`` and ``down`` are idempotent: a broker this home already runs is reused, and stopping one
that does not run is a no-op; both say which happened. ``up`` returns only once the broker answers
a metadata request listing itself (registered and unfenced), not merely once its port is open.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipelines.config import PROJECT_ROOT, Config
from pipelines.errors import ConfigError, SetupError
from pipelines.services import jars
from pipelines.services.process import java_executable, pid_alive, port_answers

HOST = "127.0.0.1"
BROKER_MAIN = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"
LOG4J_CONFIG = PROJECT_ROOT / "conf" / "jvm" / "kafka-broker-log4j2.properties"
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
FORMAT_TIMEOUT_S = 120.0
NODE_ID = 1
_OWNER_FLAG = "-Djourneylake.kafka.home="  # marks a broker JVM with the folder it belongs to
_PORT_ADVICE = "choose another with kafka.broker.port in conf/targets/<target>.yml or JOURNEYLAKE_KAFKA_PORT"


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    host: str
    port: int
    controller_port: int
    pid: int | None  # of a broker started from this home, else None
    data: Path
    log: Path
    detail: str = ""

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def describe(self) -> str:
        if not self.running:
            return f"stopped (would listen on {self.bootstrap}; data {self.data}){self.detail}"
        owner = f"pid {self.pid}" if self.pid else "started elsewhere, not from this home"
        return f"running, bootstrap {self.bootstrap} ({owner}); data {self.data}; log {self.log}"


def broker_dir(cfg: Config) -> Path:
    return cfg.paths.home / "kafka"


def data_dir(cfg: Config) -> Path:
    return broker_dir(cfg) / "data"


def log_file(cfg: Config) -> Path:
    return cfg.paths.logs / "kafka.log"


def bootstrap(cfg: Config) -> str:
    """The local broker's client address (what ``kafka.bootstrap_servers`` points at by default)."""
    return f"{HOST}:{cfg.kafka.broker.port}"


def _pid_file(cfg: Config) -> Path:
    return broker_dir(cfg) / "broker.pid"


def _properties_file(cfg: Config) -> Path:
    return broker_dir(cfg) / "server.properties"


def _owner_pid(folder: Path) -> int | None:
    """The pid in ``folder/broker.pid`` if that process is alive and is the broker of ``folder``."""
    try:
        pid = int((folder / "broker.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except (OSError, ValueError):
        return None
    # guard against a recycled pid: the process must be the broker of this very folder
    if f"{_OWNER_FLAG}{folder}" in cmdline and pid_alive(pid):
        return pid
    return None


def _owned_pid(cfg: Config) -> int | None:
    return _owner_pid(broker_dir(cfg))


def _started_port(cfg: Config) -> int | None:
    """The client port this home's broker was last started with (from its server.properties)."""
    try:
        text = _properties_file(cfg).read_text()
    except OSError:
        return None
    match = re.search(r"^advertised\.listeners=PLAINTEXT://[^:]+:(\d+)$", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def _serves(host: str, port: int, timeout: float = 5.0) -> bool:
    """True if a Kafka broker on host:port answers a metadata request that lists a broker.

    A fenced or still-registering broker lists none, so this is "ready for clients", which an open
    TCP port is not (Kafka binds its sockets before the node has caught up with its controller).
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": f"{host}:{port}", "log_level": 0})  # probes: no log spam
    try:
        return bool(admin.list_topics(timeout=timeout).brokers)
    except KafkaException:
        return False


def status(cfg: Config) -> BrokerStatus:
    """Whether a broker answers on the configured port, and whether this home started it."""
    broker = cfg.kafka.broker
    pid = _owned_pid(cfg)
    running = port_answers(HOST, broker.port)
    detail = ""
    if pid is not None and not running:
        started = _started_port(cfg)
        if started is not None and started != broker.port:
            detail = f"; this home's broker (pid {pid}) runs on port {started} instead"
        else:
            detail = f"; pid {pid} from this home is starting or hung, see {log_file(cfg)}"
    return BrokerStatus(
        running=running,
        host=HOST,
        port=broker.port,
        controller_port=broker.controller_port,
        pid=pid if running else None,
        data=data_dir(cfg),
        log=log_file(cfg),
        detail=detail,
    )


@contextlib.contextmanager
def _lock(cfg: Config) -> Iterator[None]:
    """Serialize up/down from processes sharing a home (e.g. two commands launched together)."""
    broker_dir(cfg).mkdir(parents=True, exist_ok=True)
    with open(broker_dir(cfg) / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _properties(cfg: Config) -> str:
    broker = cfg.kafka.broker
    data = str(data_dir(cfg)).replace("\\", "\\\\")
    lines = [
        "# Written by `journeylake kafka up` from the configuration (kafka.broker.*) at each start:",
        "# change the configuration, not this file.",
        "process.roles=broker,controller",
        f"node.id={NODE_ID}",
        f"controller.quorum.voters={NODE_ID}@{HOST}:{broker.controller_port}",
        f"listeners=PLAINTEXT://{HOST}:{broker.port},CONTROLLER://{HOST}:{broker.controller_port}",
        f"advertised.listeners=PLAINTEXT://{HOST}:{broker.port}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        f"log.dirs={data}",
        f"num.partitions={broker.partitions}",
        # one node: every internal topic has one replica, and few partitions (the defaults of 50
        # cost seconds and hundreds of files on a laptop)
        "default.replication.factor=1",
        "min.insync.replicas=1",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=4",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "transaction.state.log.num.partitions=4",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "share.coordinator.state.topic.num.partitions=4",
        "group.initial.rebalance.delay.ms=0",
        "num.network.threads=2",
        "num.io.threads=2",
        # the local source is replayed from the earliest offset: keep everything until `make clean`
        "log.retention.ms=-1",
    ]
    return "\n".join(lines) + "\n"


def _jvm(cfg: Config, heap: str) -> list[str]:
    return [
        java_executable(),
        f"-Xmx{heap}",
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",  # quick start and few compiler threads; plenty for one laptop
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
        f"{_OWNER_FLAG}{broker_dir(cfg)}",
        "-cp",
        os.pathsep.join(str(p) for p in jars.kafka_broker_classpath()),
    ]


def _problem_lines(log: Path, offset: int, limit: int = 3) -> str:
    """The first ERROR/FATAL lines the broker logged since ``offset`` (else the last lines)."""
    try:
        with open(log, "rb") as fh:
            fh.seek(offset)
            lines = [ln.strip() for ln in fh.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    problems = [ln for ln in lines if re.search(r"\b(ERROR|FATAL)\b|Exception:", ln)]
    chosen = problems[:limit] or lines[-limit:]
    return " | ".join(ln[:300] for ln in chosen)


def _log_size(log: Path) -> int:
    try:
        return log.stat().st_size
    except OSError:
        return 0


def _cluster_id(cfg: Config) -> str:
    """This home's cluster id (Kafka's base64 UUID), created once and kept beside the data."""
    path = broker_dir(cfg) / "cluster.id"
    with contextlib.suppress(OSError):
        existing = path.read_text().strip()
        if existing:
            return existing
    while True:  # Kafka's own rule: an id never starts with "-" (it would read as an option)
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            break
    path.write_text(cluster_id + "\n")
    return cluster_id


def _format_storage(cfg: Config) -> None:
    """Format the data folder on first start (KRaft refuses to start on unformatted storage)."""
    if (data_dir(cfg) / "meta.properties").is_file():
        return
    log = log_file(cfg)
    offset = _log_size(log)
    command = [
        *_jvm(cfg, "256m"),
        STORAGE_TOOL,
        "format",
        "--cluster-id",
        _cluster_id(cfg),
        "--config",
        str(_properties_file(cfg)),
        "--ignore-formatted",
    ]
    with open(log, "ab") as out:
        try:
            proc = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=FORMAT_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            raise SetupError(
                f"formatting the Kafka storage in {data_dir(cfg)} took over {FORMAT_TIMEOUT_S:.0f}s "
                f"(log: {log})"
            ) from None
    if proc.returncode != 0:
        raise SetupError(
            f"formatting the Kafka storage in {data_dir(cfg)} failed (code {proc.returncode}): "
            f"{_problem_lines(log, offset) or 'no output'} (log: {log})"
        )


def _await_ready(cfg: Config, pid: int, timeout: float, proc: subprocess.Popen | None, offset: int) -> None:
    broker, log = cfg.kafka.broker, log_file(cfg)
    deadline = time.monotonic() + timeout
    while True:
        exited = proc.poll() is not None if proc is not None else not pid_alive(pid)
        if exited:
            code = f" (code {proc.returncode})" if proc is not None else ""
            raise SetupError(
                f"the Kafka broker on {HOST}:{broker.port} exited at start{code}: "
                f"{_problem_lines(log, offset) or 'no output'} (log: {log})"
            )
        remaining = deadline - time.monotonic()
        if port_answers(HOST, broker.port) and _serves(
            HOST, broker.port, timeout=max(1.0, min(5.0, remaining))
        ):
            return
        if time.monotonic() > deadline:
            raise SetupError(
                f"the Kafka broker (pid {pid}) did not accept clients on {HOST}:{broker.port} within "
                f"{timeout:.0f}s: {_problem_lines(log, offset) or 'nothing logged'} (log: {log})"
            )
        time.sleep(0.5)


def _check_ports(cfg: Config) -> None:
    broker = cfg.kafka.broker
    if broker.port == broker.controller_port:
        raise ConfigError(
            f"kafka.broker.port and kafka.broker.controller_port are both {broker.port}: they must differ"
        )


def up(cfg: Config, timeout: float = START_TIMEOUT_S) -> tuple[BrokerStatus, bool]:
    """Make sure a broker serves ``bootstrap(cfg)``; start this home's (detached) if none does.

    Returns the status and whether this call started the broker. Raises SetupError with the reason
    (jars missing, a port taken by another program, the broker exiting: its first error lines and
    the log file).
    """
    _check_ports(cfg)
    broker, log = cfg.kafka.broker, log_file(cfg)
    with _lock(cfg):
        pid = _owned_pid(cfg)
        started = _started_port(cfg)
        if pid is not None and started is not None and started != broker.port:
            raise SetupError(
                f"this home's Kafka broker (pid {pid}) runs on port {started}, not on the configured "
                f"{broker.port}: stop it with `journeylake kafka down` first"
            )
        if pid is not None:  # this home's broker: running, or still starting in another process
            try:
                _await_ready(cfg, pid, timeout, None, _log_size(log))
            except SetupError as exc:
                raise SetupError(f"{exc}; stop it with `journeylake kafka down` and retry") from None
            return status(cfg), False
        if port_answers(HOST, broker.port):
            if _serves(HOST, broker.port):  # e.g. another checkout's broker: usable, say whose
                return status(cfg), False
            raise SetupError(f"port {broker.port} on {HOST} is in use by another program: {_PORT_ADVICE}")
        if port_answers(HOST, broker.controller_port):
            raise SetupError(
                f"the Kafka controller port {broker.controller_port} on {HOST} is in use by another program: "
                "choose another with kafka.broker.controller_port (or JOURNEYLAKE_KAFKA_PORT, which also "
                "moves the controller to the next port)"
            )

        jars.kafka_broker_classpath()  # raises "... run `make jars`" before anything is written
        data_dir(cfg).mkdir(parents=True, exist_ok=True)
        log.parent.mkdir(parents=True, exist_ok=True)
        _properties_file(cfg).write_text(_properties(cfg))
        _format_storage(cfg)

        offset = _log_size(log)
        command = [*_jvm(cfg, broker.heap), BROKER_MAIN, str(_properties_file(cfg))]
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # survives the command that started it
                close_fds=True,
            )
        _pid_file(cfg).write_text(f"{proc.pid}\n")
        try:
            _await_ready(cfg, proc.pid, timeout, proc, offset)
        except SetupError:
            _terminate(proc.pid, STOP_TIMEOUT_S)
            _pid_file(cfg).unlink(missing_ok=True)
            raise
    return status(cfg), True


def _terminate(pid: int, timeout: float) -> str:
    """SIGTERM (Kafka shuts down cleanly), SIGKILL if still alive after ``timeout`` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    how = "stopped"
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        how = f"killed (no clean shutdown within {timeout:.0f}s)"
        deadline = time.monotonic() + 10
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap it if this process started it
    return how


def down(cfg: Config, timeout: float = STOP_TIMEOUT_S) -> str | None:
    """Stop the broker this home started: "stopped", "killed (...)", or None if none was running.

    A broker started from another home (same port) is left alone.
    """
    with _lock(cfg):
        pid = _owned_pid(cfg)
        if pid is None:
            _pid_file(cfg).unlink(missing_ok=True)  # stale: the process is gone
            return None
        how = _terminate(pid, timeout)
        _pid_file(cfg).unlink(missing_ok=True)
        return f"{how} (pid {pid})"


def stop_brokers_under(root: Path, timeout: float = STOP_TIMEOUT_S) -> list[int]:
    """Stop every broker whose home lives under ``root`` (e.g. a test run's temp folder)."""
    stopped = []
    for pid_file in root.rglob("kafka/broker.pid"):
        pid = _owner_pid(pid_file.parent.resolve())
        if pid is not None:
            _terminate(pid, timeout)
            stopped.append(pid)
        pid_file.unlink(missing_ok=True)
    return stopped
