"""Ingestion: runs the landing -> bronze -> silver -> gold streaming queries.

Two modes:
- ``until_idle``: every query processes what is there now (``availableNow`` trigger) and stops,
  stage after stage, so snapshots (who the customers are) are in silver before the events that
  are checked against them;
- continuous: the same catch-up pass first, then every query keeps running on a processing-time
  trigger until interrupted.

State lives in the checkpoints (one per query), so a killed process resumes exactly where its
last committed micro-batch ended.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import DataStreamWriter, StreamingQuery

from pipelines import bronze, gold, silver
from pipelines.contracts import SNAPSHOT_SOURCES, STREAM_SOURCES
from pipelines.errors import InputError, JourneylakeError
from pipelines.tables import Tables

Trigger = Callable[[DataStreamWriter], DataStreamWriter]


def available_now(writer: DataStreamWriter) -> DataStreamWriter:
    return writer.trigger(availableNow=True)


def every(interval: str) -> Trigger:
    return lambda writer: writer.trigger(processingTime=interval)


@dataclass(frozen=True)
class LayerCounts:
    source: str
    bronze: int
    silver: int
    quarantined: int
    duplicates: int


def present_sources(cfg: Any) -> list[str]:
    """Sources to ingest, snapshots first: those with a landing folder, or with a Kafka topic.

    A missing landing root or one without source folders, Kafka bootstrap servers that accept no
    connection, or a cluster without any ``<kafka.topic_prefix><source>`` topic, is an error.
    """
    if cfg.ingest.source == "kafka":
        check_kafka_reachable(cfg)
        every = [*SNAPSHOT_SOURCES, *STREAM_SOURCES]
        topics = kafka_topics(cfg)
        if topics is None:  # the client could not list them: subscribe to every source's topic
            return every
        found = [s for s in every if bronze.topic_name(cfg, s) in topics]
        if not found:
            raise InputError(
                f"Kafka at {cfg.kafka.bootstrap_servers} has no source topic (expected e.g. "
                f"{bronze.topic_name(cfg, 'transactions')}; kafka.topic_prefix in conf/)"
            )
        return found
    root = Path(cfg.paths.landing)
    if not root.is_dir():
        raise InputError(
            f"landing folder not found: {root} (set paths.landing in conf/, or run `journeylake generate`)"
        )
    found = [s for s in (*SNAPSHOT_SOURCES, *STREAM_SOURCES) if (root / s).is_dir()]
    if not found:
        raise InputError(
            f"landing folder {root} holds no source folder (expected e.g. {root / 'transactions'})"
        )
    return found


def check_kafka_reachable(cfg: Any, timeout: float = 5.0) -> None:
    """Fail fast, naming the servers, when no bootstrap server accepts a TCP connection."""
    import socket

    servers = [s.strip() for s in cfg.kafka.bootstrap_servers.split(",") if s.strip()]
    for server in servers:
        host, _, port = server.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout):
                return
        except (OSError, ValueError):
            continue
    raise InputError(
        f"Kafka is not reachable at {cfg.kafka.bootstrap_servers} (kafka.bootstrap_servers in conf/); "
        "for the local broker run `journeylake kafka up`"
    )


def kafka_topics(cfg: Any, timeout: float = 10.0) -> set[str] | None:
    """The topics the Kafka cluster lists for this client, or None when it cannot list them.

    ``kafka.options`` apply, as for Spark. They are written for Spark's Java client; a setting
    the Python client does not know (``sasl.jaas.config``, say) or a listing that fails is
    reported on stderr and the caller falls back to every source's topic, as before topics were
    listed: the streaming queries then report what is wrong with the cluster themselves.
    """
    import sys

    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    settings = {"bootstrap.servers": cfg.kafka.bootstrap_servers, **bronze.kafka_options(cfg)}
    try:
        metadata = AdminClient({**settings, "log_level": 0}).list_topics(timeout=timeout)
    except (KafkaException, ValueError, TypeError) as exc:
        print(
            f"ingest: could not list the topics of Kafka at {cfg.kafka.bootstrap_servers} ({exc}); "
            "subscribing to every source's topic",
            file=sys.stderr,
        )
        return None
    return set(metadata.topics)


def _checkpoint(cfg: Any, layer: str, name: str) -> str:
    return str(Path(cfg.paths.checkpoints) / layer / name)


def _await(queries: list[StreamingQuery]) -> None:
    from pyspark.errors import StreamingQueryException

    for query in queries:
        try:
            query.awaitTermination()
        except StreamingQueryException as exc:
            for other in queries:
                if other.isActive:
                    other.stop()
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            raise JourneylakeError(f"streaming query {query.name!r} failed: {first_line}") from exc


def prepare(spark: SparkSession, tables: Tables, sources: list[str]) -> None:
    for source in sources:
        bronze.ensure_bronze_table(spark, tables.bronze(source))
    silver.ensure_silver_tables(spark, tables)
    gold.ensure_gold_tables(spark, tables)


def start_all(
    spark: SparkSession, cfg: Any, tables: Tables, sources: list[str], trigger: Trigger
) -> list[StreamingQuery]:
    """Every query on ``trigger``, at most ``ingest.max_files_per_trigger`` files a micro-batch."""
    limit = cfg.ingest.max_files_per_trigger
    queries = [
        bronze.start_bronze_stream(
            spark, cfg, s, tables.bronze(s), Path(_checkpoint(cfg, "bronze", s)), trigger, limit
        )
        for s in sources
    ]
    queries += [
        silver.start_silver_stream(spark, cfg, s, tables, _checkpoint(cfg, "silver", s), trigger, limit)
        for s in sources
    ]
    queries.append(
        gold.start_gold_stream(
            spark, cfg, tables, _checkpoint(cfg, "gold", "customer_features"), trigger, limit
        )
    )
    return queries


def catch_up(
    spark: SparkSession, cfg: Any, tables: Tables, sources: list[str], progress: Callable[[str], None] = print
) -> None:
    """Process everything landed so far, stage by stage, then stop.

    Each query takes its whole backlog as one micro-batch (no file limit): a few large batches
    are far cheaper than many small ones, since every batch pays for Delta commits.
    """
    progress(f"bronze: {len(sources)} sources")
    _await(
        [
            bronze.start_bronze_stream(
                spark, cfg, s, tables.bronze(s), Path(_checkpoint(cfg, "bronze", s)), available_now
            )
            for s in sources
        ]
    )
    # customers first: every other source's records are checked against who the customers are
    customers = [s for s in sources if s == "customers"]
    snapshots = [s for s in sources if s in SNAPSHOT_SOURCES and s != "customers"]
    events = [s for s in sources if s in STREAM_SOURCES]
    for stage in (customers, snapshots, events):
        if not stage:
            continue
        progress(f"silver: {', '.join(stage)}")
        _await(
            [
                silver.start_silver_stream(
                    spark, cfg, s, tables, _checkpoint(cfg, "silver", s), available_now
                )
                for s in stage
            ]
        )
    progress("gold: customer_features")
    _await(
        [
            gold.start_gold_stream(
                spark, cfg, tables, _checkpoint(cfg, "gold", "customer_features"), available_now
            )
        ]
    )


def run(
    spark: SparkSession,
    cfg: Any,
    *,
    until_idle: bool,
    tables: Tables | None = None,
    progress: Callable[[str], None] = print,
) -> None:
    tables = tables or Tables.from_config(cfg)
    sources = present_sources(cfg)
    prepare(spark, tables, sources)
    catch_up(spark, cfg, tables, sources, progress)
    if until_idle:
        return
    progress(f"streaming continuously (trigger every {cfg.ingest.trigger_interval}); Ctrl-C to stop")
    queries = start_all(spark, cfg, tables, sources, every(cfg.ingest.trigger_interval))
    try:
        _await(queries)
    finally:
        for query in queries:
            if query.isActive:
                query.stop()


def layer_counts(spark: SparkSession, tables: Tables, sources: list[str]) -> list[LayerCounts]:
    """Rows per source in each layer: what landed, what is valid, what was set aside and why."""
    quarantine = {
        r["source"]: r["n"]
        for r in spark.table(tables.quarantine).groupBy("source").agg(F.count("*").alias("n")).collect()
    }
    duplicates = {
        r["source"]: r["n"]
        for r in spark.table(tables.duplicates).groupBy("source").agg(F.count("*").alias("n")).collect()
    }
    return [
        LayerCounts(
            source=s,
            bronze=spark.table(tables.bronze(s)).count(),
            silver=spark.table(tables.silver(s)).count(),
            quarantined=quarantine.get(s, 0),
            duplicates=duplicates.get(s, 0),
        )
        for s in sources
    ]
