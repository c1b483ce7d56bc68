"""The local Kafka broker and the simulator's Kafka sink, against a real broker (no mocks).

One broker per test run (the ``kafka_broker`` fixture, on the session's private port). The world
published to Kafka is compared with a file-sink run of the same seed: same lines, one message
each, with the batch and line of the file it would have been in, keyed by customer.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.services import kafka_broker as broker

pytestmark = pytest.mark.slow

CUSTOMERS, DAYS, SEED = 30, 2, 3


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True, timeout=timeout
    )


@dataclass(frozen=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    batch: str
    line: int


def _watermarks(bootstrap: str, topics: list[str]) -> dict[tuple[str, int], int]:
    """High watermark per (topic, partition): where this test's messages start (topics may exist)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "journeylake-tests"})
    try:
        metadata = consumer.list_topics(timeout=30)
        marks = {}
        for topic in topics:
            if topic not in metadata.topics:
                continue
            for partition in metadata.topics[topic].partitions:
                _low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
                marks[(topic, partition)] = high
        return marks
    finally:
        consumer.close()


def _consume(bootstrap: str, topics: list[str], since: dict[tuple[str, int], int]) -> list[Message]:
    """Every message of ``topics`` from the offsets in ``since`` (else the beginning) to the end."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "journeylake-tests",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        metadata = consumer.list_topics(timeout=30)
        assignment = [
            TopicPartition(topic, partition, since.get((topic, partition), OFFSET_BEGINNING))
            for topic in topics
            for partition in metadata.topics[topic].partitions
        ]
        consumer.assign(assignment)
        pending = {(tp.topic, tp.partition) for tp in assignment}
        messages: list[Message] = []
        deadline = time.monotonic() + 120
        while pending and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            if msg.error():
                assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
                pending.discard((msg.topic(), msg.partition()))
                continue
            headers = dict(msg.headers() or [])
            messages.append(
                Message(
                    msg.topic(),
                    msg.partition(),
                    msg.offset(),
                    msg.key(),
                    msg.value(),
                    headers["journeylake-batch"].decode(),
                    int(headers["journeylake-line"]),
                )
            )
        assert not pending, f"partitions not read to the end within 120 s: {sorted(pending)}"
        return messages
    finally:
        consumer.close()


def _expected_key(line: bytes) -> bytes | None:
    """The documented rule, written out independently of the writer's code."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    for field in ("customer_number", "login_id", "device_id"):
        if record.get(field) not in (None, ""):
            value = record[field]
            return (value if isinstance(value, str) else json.dumps(value)).encode()
    return None


@dataclass(frozen=True)
class Published:
    bootstrap: str
    files_out: Path
    kafka_out: Path
    topics: list[str]
    since: dict[tuple[str, int], int]
    lines: dict[tuple[str, int], bytes]  # (landing file, line number) -> line, from the file sink
    ledger_order: dict[str, list[tuple[str, int]]]  # source -> (file, line) in delivery order
    messages: list[Message]
    generate_output: str


@pytest.fixture(scope="module")
def published(kafka_broker: str, jl_config, tmp_path_factory: pytest.TempPathFactory) -> Published:
    """The same world twice: landing files, and `generate --sink kafka` to the test broker."""
    from pipelines.contracts import CONTRACTS
    from pipelines.sources.simulator import FaultRates, SimConfig, generate

    files_out = tmp_path_factory.mktemp("file-sink")
    kafka_out = tmp_path_factory.mktemp("kafka-sink")
    generate(
        SimConfig(customers=CUSTOMERS, days=DAYS, seed=SEED, faults=FaultRates.preset("default")),
        files_out,
        overwrite=True,
    )
    # a source that delivered nothing in so small a world (the app chat, say) has no topic
    landed = [source for source in CONTRACTS if (files_out / "landing" / source).is_dir()]
    topics = [f"{jl_config.kafka.topic_prefix}{source}" for source in landed]
    since = _watermarks(kafka_broker, topics)
    result = _cli(
        "generate",
        *("--customers", str(CUSTOMERS), "--days", str(DAYS), "--seed", str(SEED)),
        *("--out", str(kafka_out), "--overwrite", "--sink", "kafka"),
    )
    assert result.returncode == 0, result.stderr[-3000:]

    lines: dict[tuple[str, int], bytes] = {}
    for path in sorted((files_out / "landing").rglob("*.jsonl")):
        rel = path.relative_to(files_out).as_posix()
        for number, line in enumerate(path.read_bytes().split(b"\n")[:-1], 1):
            lines[(rel, number)] = line
    ledger = pq.read_table(files_out / "truth" / "records", columns=["source", "file", "line"])
    order: dict[str, list[tuple[str, int]]] = {}
    for row in ledger.to_pylist():
        order.setdefault(row["source"], []).append((row["file"], row["line"]))
    return Published(
        bootstrap=kafka_broker,
        files_out=files_out,
        kafka_out=kafka_out,
        topics=topics,
        since=since,
        lines=lines,
        ledger_order=order,
        messages=_consume(kafka_broker, topics, since),
        generate_output=result.stdout,
    )


def test_up_is_idempotent_and_status_reports_it(kafka_broker: str, jl_config) -> None:
    assert kafka_broker == f"127.0.0.1:{jl_config.kafka.broker.port}"
    again = _cli("kafka", "up")
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stdout
    assert f"bootstrap {kafka_broker}" in again.stdout

    state = _cli("kafka", "status")
    assert state.returncode == 0, state.stderr
    assert f"running, bootstrap {kafka_broker}" in state.stdout
    assert str(jl_config.paths.home / "kafka" / "data") in state.stdout
    assert broker.status(jl_config).pid is not None  # started from this (test) home


def test_every_landing_line_is_one_message_with_its_batch_and_line(published: Published) -> None:
    got = {(m.batch, m.line): m.value for m in published.messages}
    assert len(got) == len(published.messages), "a (batch, line) was published twice"
    assert got == published.lines  # same lines, same bytes, same coordinates: faults included

    per_topic: dict[str, int] = {}
    for m in published.messages:
        per_topic[m.topic] = per_topic.get(m.topic, 0) + 1
    manifest = json.loads((published.files_out / "truth" / "manifest.json").read_text())
    prefix = published.topics[0].split(".")[0] + "."
    assert per_topic == {f"{prefix}{source}": n for source, n in manifest["lines"].items() if n}
    for m in published.messages:
        assert m.topic == f"{prefix}{m.batch.split('/')[1]}"  # a batch's lines go to its source's topic


def test_kafka_sink_writes_truth_but_no_landing_files(published: Published) -> None:
    assert not (published.kafka_out / "landing").exists()
    ledger = pq.read_table(published.kafka_out / "truth" / "records", columns=["file", "line"])
    assert {(r["file"], r["line"]) for r in ledger.to_pylist()} == set(published.lines)
    kafka_manifest = json.loads((published.kafka_out / "truth" / "manifest.json").read_text())
    files_manifest = json.loads((published.files_out / "truth" / "manifest.json").read_text())
    assert kafka_manifest["lines"] == files_manifest["lines"]
    assert "journeylake.transactions" in published.generate_output


def test_messages_are_keyed_by_customer_and_malformed_lines_have_no_key(published: Published) -> None:
    malformed = 0
    for m in published.messages:
        assert m.key == _expected_key(m.value), (m.batch, m.line)
        try:
            json.loads(m.value)
        except ValueError:
            malformed += 1
            assert m.key is None
    assert malformed > 0, "the default faults should include malformed lines (seed 3 has some)"
    keyed = [m for m in published.messages if m.key is not None]
    assert len(keyed) > 0.9 * len(published.messages)


def test_a_customers_messages_stay_in_one_partition_in_delivery_order(published: Published) -> None:
    by_coordinates = {(m.batch, m.line): m for m in published.messages}
    for source, coordinates in published.ledger_order.items():
        expected: dict[bytes, list[tuple[str, int]]] = {}  # key -> its lines in delivery order
        for coordinate in coordinates:
            key = _expected_key(published.lines[coordinate])
            if key is not None:
                expected.setdefault(key, []).append(coordinate)
        for key, wanted in expected.items():
            messages = [by_coordinates[c] for c in wanted]
            partitions = {m.partition for m in messages}
            assert len(partitions) == 1, f"{source}: key {key!r} spread over partitions {partitions}"
            offsets = [m.offset for m in messages]
            assert offsets == sorted(offsets), f"{source}: key {key!r} out of delivery order"
    topic = f"{published.topics[0].split('.')[0]}.transactions"
    assert len({m.partition for m in published.messages if m.topic == topic}) > 1  # keys do spread


def test_generate_without_a_broker_names_the_address(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    result = _cli(
        "generate",
        *("--customers", "5", "--days", "1", "--out", str(tmp_path / "out"), "--sink", "kafka"),
        *("--bootstrap", address),
        timeout=120,
    )
    assert result.returncode == 1
    assert f"no Kafka broker answers at {address}" in result.stderr
    assert "journeylake kafka up" in result.stderr
    assert "Traceback" not in result.stderr


def _kafka_client_threads() -> list[str]:
    """Names of this process's librdkafka threads (each client runs rdk:main, rdk:broker... threads)."""
    tasks = Path("/proc/self/task")
    names = (((tasks / task / "comm").read_text().strip()) for task in tasks.iterdir())
    return sorted(name for name in names if name.startswith("rdk:"))


def test_a_closed_writer_releases_its_clients_and_refuses_more_batches(kafka_broker: str) -> None:
    # a writer kept alive after close (as generate's summary does) must not keep connecting to a
    # broker that may be gone: that printed "Connection refused" lines after a run had ended
    from pipelines.errors import JourneylakeError
    from pipelines.sources.simulator.kafka_writer import KafkaWriter

    before = _kafka_client_threads()
    with KafkaWriter(kafka_broker, topic_prefix="release-test.", partitions=1) as writer:
        writer.write_batch("transactions", "b1", b'{"customer_number": "C1"}\n')
        assert len(_kafka_client_threads()) > len(before)  # the producer and admin client run
    assert writer.messages == {"release-test.transactions": 1}
    assert _kafka_client_threads() == before
    with pytest.raises(JourneylakeError, match=r"is closed; batch landing/transactions/b2\.jsonl"):
        writer.write_batch("transactions", "b2", b'{"customer_number": "C1"}\n')
    writer.close()  # closing twice is harmless


def test_topics_keep_records_for_the_retention_and_the_erasure_note_says_until_when(
    kafka_broker: str, jl_config
) -> None:
    """What erasure cannot rewrite leaves with the retention: topics the writer creates carry it,
    and a topic that keeps records forever is named as such."""
    import datetime as dt

    from confluent_kafka.admin import AdminClient, NewTopic

    from pipelines.services.kafka_topics import retention_note, topic_retention
    from pipelines.sources.simulator.kafka_writer import KafkaWriter

    cfg = jl_config.model_copy(
        update={
            "kafka": jl_config.kafka.model_copy(
                update={"bootstrap_servers": kafka_broker, "topic_prefix": "keep."}
            )
        }
    )
    with KafkaWriter(
        kafka_broker, topic_prefix="keep.", partitions=1, retention_ms=cfg.kafka.retention_ms
    ) as writer:
        writer.write_batch("transactions", "b1", b'{"customer_number": "C1"}\n')
    assert topic_retention(cfg) == {"keep.transactions": cfg.kafka.retention_ms}
    now = dt.datetime(2026, 12, 7, tzinfo=dt.UTC)
    until = (now + dt.timedelta(days=cfg.kafka.retention_days)).date().isoformat()
    assert retention_note(cfg, now).endswith(f"at most {cfg.kafka.retention_days} days (by {until})")
    forever = NewTopic("keep.forever", num_partitions=1, config={"retention.ms": "-1"})
    admin = AdminClient({"bootstrap.servers": kafka_broker})  # kept: its futures die with it
    admin.create_topics([forever])["keep.forever"].result(30)
    assert "keep.forever keep records forever" in retention_note(cfg, now)


def test_down_is_idempotent_and_a_restart_keeps_the_topics(published: Published, jl_config) -> None:
    # last in this file: it leaves the broker running again for whoever uses it next
    before = sorted((m.topic, m.partition, m.offset, m.value) for m in published.messages)
    try:
        first = _cli("kafka", "down")
        assert first.returncode == 0, first.stderr
        assert first.stdout.startswith("kafka: stopped (pid ")
        second = _cli("kafka", "down")
        assert second.returncode == 0, second.stderr
        assert "not running" in second.stdout
        state = _cli("kafka", "status")
        assert state.returncode == 3
        assert "stopped" in state.stdout
        assert not broker.status(jl_config).running
    finally:
        restarted = _cli("kafka", "up")
    assert restarted.returncode == 0, restarted.stderr
    assert restarted.stdout.startswith("kafka: started")

    after = _consume(published.bootstrap, published.topics, published.since)
    assert sorted((m.topic, m.partition, m.offset, m.value) for m in after) == before
