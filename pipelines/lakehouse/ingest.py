"""Ingestion: runs the landing (or Kafka) -> bronze + silver queries, one per source, and gold.

Each source has one query: every micro-batch of raw records is appended to bronze and, from the
same batch, parsed, checked and deduplicated into silver (quarantine and the duplicates log
beside it). One query instead of a bronze query feeding a silver query halves the queries, the
triggers and the Delta reads, and an event reaches silver one trigger after it lands, not two.
Gold follows the silver tables in a query of its own.

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
from functools import partial
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import DataStreamWriter, StreamingQuery

from pipelines.config import Config
from pipelines.contracts import SNAPSHOT_SOURCES, STREAM_SOURCES
from pipelines.errors import InputError, JourneylakeError, root_cause
from pipelines.lakehouse import bronze, gold, intents, silver
from pipelines.lakehouse.batch_writes import CommitListener, batch_tag, checkpoint_id, run_together
from pipelines.lakehouse.compaction import PeriodicCompaction
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


def present_sources(cfg: Config) -> list[str]:
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


def check_kafka_reachable(cfg: Config, timeout: float = 5.0) -> None:
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


def kafka_topics(cfg: Config, timeout: float = 10.0) -> set[str] | None:
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


def _checkpoint(cfg: Config, layer: str, name: str) -> Path:
    return Path(cfg.paths.checkpoints) / layer / name


def await_queries(queries: list[StreamingQuery], meanwhile: Callable[[], object] | None = None) -> None:
    """Wait for every query to end; the first to fail stops the others and is reported by name.
    ``meanwhile`` is called about every second while they run (the periodic compaction)."""
    from pyspark.errors import StreamingQueryException

    pending = list(queries)
    while pending:
        if meanwhile is not None:
            meanwhile()
        try:
            pending[0].awaitTermination(1)
        except StreamingQueryException:
            pass  # found below, with any other query that failed meanwhile
        failed = next((q for q in queries if not q.isActive and q.exception() is not None), None)
        if failed is not None:
            for other in queries:
                if other.isActive:
                    other.stop()
            exc = failed.exception()
            cause = root_cause(exc) if exc is not None else "no reason given"
            raise JourneylakeError(f"streaming query {failed.name!r} failed: {cause}") from exc
        pending = [q for q in pending if q.isActive]


def prepare(spark: SparkSession, tables: Tables, sources: list[str]) -> None:
    for source in sources:
        bronze.ensure_bronze_table(spark, tables.bronze(source))
    silver.ensure_silver_tables(spark, tables)
    gold.ensure_gold_tables(spark, tables)


def start_source_stream(
    spark: SparkSession,
    cfg: Config,
    source: str,
    tables: Tables,
    checkpoint: Path,
    configure_trigger: Trigger,
    max_files: int | None = None,
    listener: CommitListener | None = None,
) -> StreamingQuery:
    """Start the landing (or Kafka) -> bronze + silver query for ``source``.

    Each micro-batch is appended to bronze and processed into silver at the same time (two
    threads: the bronze append is mostly Delta bookkeeping on the driver). Both writes tag
    their rows with ``<query id>/<batch id>``, so a batch replayed after a crash skips each table
    an earlier attempt wrote, whichever of the two finished first.
    """
    table = silver.SILVER_TABLES[source]
    bronze_table = tables.bronze(source)
    bronze.ensure_bronze_table(spark, bronze_table)
    batches_run = 0  # only the first batch after a start can replay a written one

    def run_batch(batch: DataFrame, batch_id: int) -> None:
        nonlocal batches_run
        maybe_replay = batches_run == 0
        run_together(
            [
                partial(
                    bronze.append_batch,
                    batch,
                    bronze_table,
                    batch_tag(checkpoint, batch_id),
                    maybe_replay=maybe_replay,
                ),
                partial(
                    silver.process_batch,
                    batch,
                    batch_id,
                    table=table,
                    tables=tables,
                    cfg=cfg,
                    run_id=checkpoint_id(checkpoint),
                    maybe_replay=maybe_replay,
                    listener=listener,
                ),
            ],
            f"ingest-{source}",
        )
        batches_run += 1

    writer: DataStreamWriter = (
        bronze.read_source(spark, cfg, source, max_files)
        .writeStream.queryName(f"ingest_{source}")
        .option("checkpointLocation", str(checkpoint))
        .foreachBatch(run_batch)
    )
    return configure_trigger(writer).start()


def start_all(
    spark: SparkSession,
    cfg: Config,
    tables: Tables,
    sources: list[str],
    trigger: Trigger,
    gold_trigger: Trigger | None = None,
    listener: CommitListener | None = None,
) -> list[StreamingQuery]:
    """Every query on ``trigger`` (gold on ``gold_trigger`` if given).

    At most ``ingest.max_files_per_trigger`` files a micro-batch.
    """
    limit = cfg.ingest.max_files_per_trigger
    queries = [
        start_source_stream(spark, cfg, s, tables, _checkpoint(cfg, "ingest", s), trigger, limit, listener)
        for s in sources
    ]
    queries.append(
        gold.start_gold_stream(
            spark,
            cfg,
            tables,
            str(_checkpoint(cfg, "gold", "customer_features")),
            gold_trigger or trigger,
            limit,
            listener,
        )
    )
    return queries


def source_stages(sources: list[str]) -> list[list[str]]:
    """Sources in the order silver needs them: customers first, then every other source at once.

    Every other source's records are checked against who the customers are.
    """
    stages = [[s for s in sources if s == "customers"], [s for s in sources if s != "customers"]]
    return [stage for stage in stages if stage]


def upgrade_checkpoints(
    spark: SparkSession, cfg: Config, tables: Tables, sources: list[str], progress: Callable[[str], None]
) -> None:
    """Move a home from two queries per source (before this release) to one ingest query.

    Earlier releases ran landing -> bronze and bronze -> silver as two queries. For each source
    whose old bronze checkpoint is still there: bronze rows silver has not taken yet are first
    processed by the old silver query (until idle, in stage order), its checkpoint is retired,
    and the bronze checkpoint becomes the ingest query's, which resumes after the last landed
    file or offset. The steps are ordered so that a crash between them repeats nothing.
    """
    pending = [s for s in sources if _checkpoint(cfg, "bronze", s).is_dir()]
    pending = [s for s in pending if not _checkpoint(cfg, "ingest", s).exists()]
    if not pending:
        return
    progress(f"upgrade: one ingest query per source ({', '.join(pending)})")
    for stage in source_stages(pending):
        draining = [s for s in stage if _checkpoint(cfg, "silver", s).is_dir()]
        await_queries(
            [
                silver.start_silver_stream(
                    spark, cfg, s, tables, str(_checkpoint(cfg, "silver", s)), available_now
                )
                for s in draining
            ]
        )
    for source in pending:
        old_silver = _checkpoint(cfg, "silver", source)
        if old_silver.is_dir():
            retired = _checkpoint(cfg, "retired", f"silver_{source}")
            retired.parent.mkdir(parents=True, exist_ok=True)
            old_silver.rename(retired)
        new = _checkpoint(cfg, "ingest", source)
        new.parent.mkdir(parents=True, exist_ok=True)
        _checkpoint(cfg, "bronze", source).rename(new)


def catch_up(
    spark: SparkSession,
    cfg: Config,
    tables: Tables,
    sources: list[str],
    progress: Callable[[str], None] = print,
    listener: CommitListener | None = None,
) -> None:
    """Process everything landed so far, stage by stage, then stop.

    Each query takes its whole backlog as one micro-batch (no file limit): a few large batches
    are far cheaper than many small ones, since every batch pays for Delta commits.
    """
    upgrade_checkpoints(spark, cfg, tables, sources, progress)
    for stage in source_stages(sources):
        progress(f"bronze + silver: {', '.join(stage)}")
        await_queries(
            [
                start_source_stream(
                    spark, cfg, s, tables, _checkpoint(cfg, "ingest", s), available_now, listener=listener
                )
                for s in stage
            ]
        )
    progress("gold: customer_features")
    await_queries(
        [
            gold.start_gold_stream(
                spark,
                cfg,
                tables,
                str(_checkpoint(cfg, "gold", "customer_features")),
                available_now,
                listener=listener,
            )
        ]
    )


def run(
    spark: SparkSession,
    cfg: Config,
    *,
    until_idle: bool,
    tables: Tables | None = None,
    progress: Callable[[str], None] = print,
    listener: CommitListener | None = None,
) -> None:
    """Ingest what has landed (``until_idle``) or stream continuously; ``listener`` is told what
    each micro-batch committed (the online store's write-through)."""
    tables = tables or Tables.from_config(cfg)
    sources = present_sources(cfg)
    prepare(spark, tables, sources)
    if any(s in intents.SPOKEN for s in sources):  # which model reads what customers say, or none
        progress(intents.current_scorer(cfg).describe(cfg))
    catch_up(spark, cfg, tables, sources, progress, listener)
    if until_idle:
        return
    progress(
        f"streaming continuously (trigger every {cfg.ingest.trigger_interval}, gold every "
        f"{cfg.ingest.gold_trigger_interval}); Ctrl-C to stop"
    )
    queries = start_all(
        spark,
        cfg,
        tables,
        sources,
        every(cfg.ingest.trigger_interval),
        every(cfg.ingest.gold_trigger_interval),
        listener,
    )
    compaction = PeriodicCompaction(
        spark, partial(compaction_targets, tables, sources), cfg.ingest.compact_every_minutes, progress
    )
    try:
        await_queries(queries, compaction.when_due)
    finally:
        for query in queries:
            if query.isActive:
                query.stop()


def compaction_targets(tables: Tables, sources: list[str]) -> dict[str, str | None]:
    """The tables ingest appends to, each with the partition filter its compaction needs: bronze
    only in its partitions of yesterday and today (older ones were compacted when they were
    current), silver, quarantine and duplicates whole (files past the small-file size are left
    alone). Not consent_current or gold: they are rewritten in place, and a
    compaction there could make the rewrite retry."""
    recent = "_ingest_date >= date_sub(current_date(), 1)"
    return {
        **{tables.bronze(source): recent for source in sources},
        **{tables.silver(source): None for source in sources},
        tables.quarantine: None,
        tables.duplicates: None,
    }


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
