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
- the pid in ``<home>/kafka/server.json``; ``down`` sends SIGTERM (a clean shutdown flushes and
  closes the logs) and SIGKILL after a timeout (the lifecycle is pipelines/services/process.py's).

``up`` and ``down`` are idempotent: a broker this home already runs is reused, and stopping one
that does not run is a no-op; both say which happened. ``up`` returns only once the broker answers
a metadata request listing itself (registered and unfenced), not merely once its port is open.
"""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from pipelines.config import PROJECT_ROOT, Config
from pipelines.errors import ConfigError, SetupError
from pipelines.services import jars
from pipelines.services.process import (
    ManagedService,
    ServiceState,
    java_executable,
    log_problems,
    log_size,
    port_answers,
    stop_under,
)

HOST = "127.0.0.1"
BROKER_MAIN = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"
LOG4J_CONFIG = PROJECT_ROOT / "conf" / "jvm" / "kafka-broker-log4j2.properties"
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
FORMAT_TIMEOUT_S = 120.0
NODE_ID = 1
SERVICE_NAME = "the Kafka broker"


@dataclass(frozen=True, kw_only=True)
class BrokerStatus(ServiceState):
    controller_port: int
    address_words = ", bootstrap "

    @property
    def bootstrap(self) -> str:
        return self.address


def broker_dir(cfg: Config) -> Path:
    return cfg.paths.home / "kafka"


def data_dir(cfg: Config) -> Path:
    return broker_dir(cfg) / "data"


def log_file(cfg: Config) -> Path:
    return cfg.paths.logs / "kafka.log"


def bootstrap(cfg: Config) -> str:
    """The local broker's client address (what ``kafka.bootstrap_servers`` points at by default)."""
    return f"{HOST}:{cfg.kafka.broker.port}"


def service(cfg: Config) -> ManagedService:
    """The broker's lifecycle: state and lock in ``<home>/kafka``, log in ``<home>/logs/kafka.log``."""
    return ManagedService(
        name=SERVICE_NAME,
        host=HOST,
        port=cfg.kafka.broker.port,
        folder=broker_dir(cfg),
        log=log_file(cfg),
        stop_command="journeylake kafka down",
        port_advice="choose another with kafka.broker.port in conf/targets/<target>.yml "
        "or JOURNEYLAKE_KAFKA_PORT",
    )


def _properties_file(cfg: Config) -> Path:
    return broker_dir(cfg) / "server.properties"


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
    probe = service(cfg).probe()
    return BrokerStatus(
        running=probe.running,
        host=HOST,
        port=cfg.kafka.broker.port,
        controller_port=cfg.kafka.broker.controller_port,
        pid=probe.pid,
        data=data_dir(cfg),
        log=log_file(cfg),
        detail=probe.detail,
    )


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
        # what erasure cannot rewrite leaves with the topics' retention (kafka.retention_days)
        f"log.retention.ms={cfg.kafka.retention_ms}",
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
        "-cp",
        os.pathsep.join(str(p) for p in jars.kafka_broker_classpath()),
    ]


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
    offset = log_size(log)
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
            f"{log_problems(log, offset) or 'no output'} (log: {log})"
        )


def _prepare(cfg: Config) -> list[str]:
    """Check the ports, write the properties, format the storage once; the broker's command."""
    broker = cfg.kafka.broker
    if broker.port == broker.controller_port:
        raise ConfigError(
            f"kafka.broker.port and kafka.broker.controller_port are both {broker.port}: they must differ"
        )
    if port_answers(HOST, broker.controller_port):
        raise SetupError(
            f"the Kafka controller port {broker.controller_port} on {HOST} is in use by another program: "
            "choose another with kafka.broker.controller_port (or JOURNEYLAKE_KAFKA_PORT, which also "
            "moves the controller to the next port)"
        )
    jars.kafka_broker_classpath()  # raises "... run `make jars`" before anything is written
    data_dir(cfg).mkdir(parents=True, exist_ok=True)
    log_file(cfg).parent.mkdir(parents=True, exist_ok=True)
    _properties_file(cfg).write_text(_properties(cfg))
    _format_storage(cfg)
    return [*_jvm(cfg, broker.heap), BROKER_MAIN, str(_properties_file(cfg))]


def up(cfg: Config, timeout: float = START_TIMEOUT_S) -> tuple[BrokerStatus, bool]:
    """Make sure a broker serves ``bootstrap(cfg)``; start this home's (detached) if none does.

    Returns the status and whether this call started the broker. A broker answering on the port
    that this home did not start (e.g. another checkout's) is reused. Raises SetupError with the
    reason (jars missing, a port taken by another program, the broker exiting: its first error
    lines and the log file).
    """
    port = cfg.kafka.broker.port
    started = service(cfg).up(
        lambda: _prepare(cfg),
        ready=lambda seconds: _serves(HOST, port, timeout=seconds),
        recognizes=lambda: _serves(HOST, port),
        timeout=timeout,
    )
    return status(cfg), started


def down(cfg: Config, timeout: float = STOP_TIMEOUT_S) -> str | None:
    """Stop the broker this home started: "stopped", "killed (...)", or None if none was running.

    A broker started from another home (same port) is left alone.
    """
    return service(cfg).down(timeout)


def stop_brokers_under(root: Path, timeout: float = STOP_TIMEOUT_S) -> list[int]:
    """Stop every broker whose home lives under ``root`` (e.g. a test run's temp folder)."""
    return stop_under(root, SERVICE_NAME, timeout)
