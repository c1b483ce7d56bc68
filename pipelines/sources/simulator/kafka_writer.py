"""A ``Writer`` that publishes landing batches to Kafka: one topic per source, one message per line.

The file sink and this one carry the same bytes: every JSON line the simulator would write to
``landing/<source>/<batch>.jsonl`` (malformed lines, duplicates and drift included) becomes one
message on ``<topic_prefix><source>``, in the batch's line order. Two headers keep the truth
ledger's coordinates, so reconciliation per batch works exactly as with files:

- ``journeylake-batch``: the relative path the file sink would have written
  (``landing/transactions/2026-01-01T00-00_000001.jsonl``; also what the ledger's ``file`` holds);
- ``journeylake-line``: the 1-based line number within that batch.

Messages are keyed by the customer the line is about (``customer_number``, else ``login_id``,
else ``device_id``; none for lines that are not a JSON object), and partitioned with Kafka's own
murmur2 hash like Java producers, so one customer's events stay ordered within one partition.
The producer is idempotent with ``acks=all``, so retries neither duplicate nor reorder. Topics are
created on first use with ``kafka.broker.partitions`` partitions and the cluster's default
replication factor.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pipelines.errors import JourneylakeError, SetupError

KEY_FIELDS = ("customer_number", "login_id", "device_id")
BATCH_HEADER = "journeylake-batch"
LINE_HEADER = "journeylake-line"
CONNECT_TIMEOUT_S = 10.0
MESSAGE_TIMEOUT_MS = 120_000  # a message not acknowledged by then is a delivery error


class DeliveryError(JourneylakeError):
    """Kafka did not acknowledge some messages (broker gone, topic not writable, ...)."""


def record_key(line: bytes) -> bytes | None:
    """The customer a landing line is about, as the message key; None if it names none."""
    try:
        record = json.loads(line.decode())  # str: json skips sniffing the encoding of bytes
    except ValueError:  # malformed on purpose (fault injection), or not UTF-8
        return None
    if not isinstance(record, dict):
        return None
    for field in KEY_FIELDS:
        value = record.get(field)
        if value is None or value == "" or isinstance(value, dict | list):
            continue
        return (value if isinstance(value, str) else json.dumps(value)).encode()
    return None


class KafkaWriter:
    """Publishes each batch's lines to ``<topic_prefix><source>``; use as a context manager.

    ``options`` (``kafka.options`` of the configuration: security.protocol, sasl.*, ...) are
    passed to the producer and the admin client as they are. Leaving the ``with`` block waits
    until every message is acknowledged and raises DeliveryError naming the topic and batch of
    the first failure; failures seen while producing raise at the next batch.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        topic_prefix: str,
        partitions: int,
        retention_ms: int | None = None,
        options: Mapping[str, str] | None = None,
        connect_timeout: float = CONNECT_TIMEOUT_S,
    ) -> None:
        from confluent_kafka import KafkaException, Producer
        from confluent_kafka.admin import AdminClient

        self.bootstrap = bootstrap
        self.topic_prefix = topic_prefix
        self.partitions = partitions
        self.retention_ms = retention_ms  # for topics it creates; None: the cluster's default
        self.messages: dict[str, int] = {}  # per topic, produced (acknowledged once closed)
        self._failures: list[str] = []
        self._failed = 0
        self._topics: set[str] = set()
        self._producer: Producer | None = None  # None once closed
        self._admin: AdminClient | None = None
        common: dict[str, Any] = {"bootstrap.servers": bootstrap, **dict(options or {})}
        try:
            self._admin = AdminClient({**common, "log_level": 0})  # reachability probes log nothing
            self._producer = Producer(
                {
                    "client.id": "journeylake-simulator",
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 5,
                    "partitioner": "murmur2_random",  # = the Java client's hash of the key
                    "message.timeout.ms": MESSAGE_TIMEOUT_MS,
                    # errors only: transient warnings (a fresh broker's "coordinator load in
                    # progress") are retried; lasting failures surface as delivery errors
                    "log_level": 3,
                    **common,
                    "error_cb": self._on_error,
                }
            )
        except (KafkaException, ValueError, TypeError) as exc:
            raise SetupError(f"Kafka client configuration (kafka.options) rejected: {exc}") from None
        try:
            self._admin.list_topics(timeout=connect_timeout)
        except KafkaException as exc:
            self._release()
            raise SetupError(
                f"no Kafka broker answers at {bootstrap} within {connect_timeout:.0f}s ({_reason(exc)}); "
                "start the local one with `journeylake kafka up`, or pass --bootstrap HOST:PORT"
            ) from None

    # ------------------------------------------------------------------ Writer
    def write_batch(self, source: str, batch_name: str, lines: bytes | memoryview) -> str:
        rel = f"landing/{source}/{batch_name}.jsonl"
        if self._producer is None:
            raise JourneylakeError(
                f"the Kafka writer to {self.bootstrap} is closed; batch {rel} was not published"
            )
        topic = self._topic(source)
        self._raise_if_failed()
        rows = bytes(lines).split(b"\n")
        if rows and not rows[-1]:
            rows.pop()  # every line ends in a newline: the last piece is empty
        batch = rel.encode()
        produce, poll = self._producer.produce, self._producer.poll
        for number, line in enumerate(rows, 1):
            headers: list[tuple[str, str | bytes | None]] = [
                (BATCH_HEADER, batch),
                (LINE_HEADER, str(number).encode()),
            ]
            key = record_key(line)
            while True:
                try:
                    produce(topic, value=line, key=key, headers=headers, on_delivery=self._on_delivery)
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    poll(0.1)
        poll(0)
        self.messages[topic] = self.messages.get(topic, 0) + len(rows)
        return rel

    # ------------------------------------------------------------------ lifecycle
    def flush(self) -> None:
        """Wait until every message produced so far is acknowledged; raise DeliveryError on a failure
        (the decision API deletes a spooled batch only after this)."""
        if self._producer is None:
            return
        remaining = self._producer.flush(MESSAGE_TIMEOUT_MS / 1000 + 30)
        if remaining:
            self._failures.append(f"{remaining} messages still unacknowledged by {self.bootstrap}")
            self._failed += remaining
        self._raise_if_failed()

    def close(self) -> None:
        """Wait until every message is acknowledged, release the clients; raise DeliveryError on any failure.

        Releasing matters as much as flushing: a live client keeps reconnecting, and logging
        "Connection refused", for as long as the writer object lives, after its broker has gone.
        """
        if self._producer is None:
            return
        remaining = self._producer.flush(MESSAGE_TIMEOUT_MS / 1000 + 30)
        if remaining:
            self._failures.append(f"{remaining} messages still unacknowledged by {self.bootstrap}")
            self._failed += remaining
        self._release()
        self._raise_if_failed()

    def __enter__(self) -> KafkaWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif self._producer is not None:
            self._producer.flush(5)  # already failing: do not wait minutes for a broker that may be the cause
            self._producer.purge()  # what is still queued is abandoned with the failure being raised
            self._release()

    # ------------------------------------------------------------------ internals
    def _topic(self, source: str) -> str:
        topic = f"{self.topic_prefix}{source}"
        if topic in self._topics:
            return topic
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import NewTopic

        assert self._admin is not None, "write_batch checks that the writer is open"
        settings = {"retention.ms": str(self.retention_ms)} if self.retention_ms else {}
        new = NewTopic(topic, num_partitions=self.partitions, config=settings)
        future = self._admin.create_topics([new])[topic]
        try:
            future.result(timeout=60)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise SetupError(
                    f"could not create Kafka topic {topic} on {self.bootstrap}: {_reason(exc)}"
                ) from None
        self._topics.add(topic)
        return topic

    def _release(self) -> None:
        """Shut both clients down now (their threads and connections end), not when garbage collected."""
        producer, self._producer = self._producer, None
        self._admin = None  # the admin client has no close(): dropping the last reference destroys it
        if producer is not None:
            producer.close()

    def _on_delivery(self, err, msg) -> None:
        if err is None:
            return
        self._failed += 1
        if len(self._failures) < 3:
            headers = dict(msg.headers() or [])
            batch = headers.get(BATCH_HEADER, b"?").decode()
            line = headers.get(LINE_HEADER, b"?").decode()
            self._failures.append(f"topic {msg.topic()}, batch {batch} line {line}: {err.str()}")

    def _on_error(self, err) -> None:
        if err.fatal():
            self._failed += 1
            self._failures.append(f"fatal producer error from {self.bootstrap}: {err.str()}")

    def _raise_if_failed(self) -> None:
        if self._failed:
            raise DeliveryError(
                f"{self._failed} message(s) not delivered to Kafka at {self.bootstrap}; first: "
                + "; ".join(self._failures)
            )


def _reason(exc: Exception) -> str:
    err = exc.args[0] if exc.args else exc
    return err.str() if hasattr(err, "str") else str(err)
