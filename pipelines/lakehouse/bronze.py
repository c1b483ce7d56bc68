"""Bronze: every landing line or Kafka message, exactly as delivered, with ingestion metadata.

One Structured Streaming query per source reads the source's landing folder as text (or, with
``ingest.source: kafka``, the source's topic), so a malformed line is kept with its raw text
rather than dropped by a JSON reader. Each row records which file it came from (for Kafka: the
topic, partition, offset and producer timestamp) and when it was ingested. Bronze does not
parse the JSON at all: parsing is the dearest step per row and silver does it once, from the
same micro-batch (a record is traced from silver or quarantine back to its bronze line by file
and ``sha2(raw, 256)``).

The source's ingest query (:func:`pipelines.lakehouse.ingest.start_source_stream`) appends each
micro-batch here with every row tagged by its batch (``_bronze_batch``), which makes the append
exactly-once without the per-batch table-state lookup of Delta's streaming sink (see
:mod:`pipelines.lakehouse.batch_writes`).

Raw PII lives here and only here: bronze is the restricted layer.
"""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipelines.config import Config
from pipelines.contracts import get_contract
from pipelines.errors import InputError
from pipelines.lakehouse.batch_writes import append_once
from pipelines.tables import STREAMED_TABLE_PROPERTIES, ensure_properties, properties_sql

BRONZE_COLUMNS = ("raw", "_source_file", "_ingested_at", "_ingest_date")
BRONZE_DDL = "raw STRING, _source_file STRING, _ingested_at TIMESTAMP, _ingest_date DATE"
# Where a Kafka message came from (null for landing files). Checkpointed offsets make the Kafka
# source exactly-once; these columns make every bronze row traceable to its message.
KAFKA_COLUMNS = {
    "_kafka_topic": "STRING",
    "_kafka_partition": "INT",
    "_kafka_offset": "BIGINT",
    "_kafka_timestamp": "TIMESTAMP",
}
# Messages the simulator (or a bank's producer) tags with the file a batch would have been: keeps
# per-batch reconciliation and lineage the same for both sources.
BATCH_HEADER = "journeylake-batch"
# The micro-batch that wrote a row: ``<query id>/<batch id>`` (exactly-once appends).
BATCH_COLUMN = "_bronze_batch"
# Columns added after the first release; a table created before gets them with ALTER TABLE.
ADDED_COLUMNS = {**KAFKA_COLUMNS, BATCH_COLUMN: "STRING"}
# Data-skipping statistics only on the lineage columns: min/max statistics of the long raw text
# are useless for skipping and measured to cost about half of the write time.
STATS_COLUMNS = f"_source_file,_ingested_at,{BATCH_COLUMN}"
BRONZE_PROPERTIES = {"delta.dataSkippingStatsColumns": STATS_COLUMNS, **STREAMED_TABLE_PROPERTIES}


def landing_dir(cfg: Config, source: str) -> Path:
    return Path(cfg.paths.landing) / source


def ensure_bronze_table(spark: SparkSession, table: str) -> None:
    added_ddl = ", ".join(f"{name} {kind}" for name, kind in ADDED_COLUMNS.items())
    spark.sql(
        f"CREATE TABLE IF NOT EXISTS {table} ({BRONZE_DDL}, {added_ddl}) USING delta "
        f"PARTITIONED BY (_ingest_date) {properties_sql(BRONZE_PROPERTIES)}"
    )
    missing = [name for name in ADDED_COLUMNS if name not in spark.table(table).columns]
    if missing:  # a table created before these columns existed
        added = ", ".join(f"{name} {ADDED_COLUMNS[name]}" for name in missing)
        spark.sql(f"ALTER TABLE {table} ADD COLUMNS ({added})")
    ensure_properties(spark, table, BRONZE_PROPERTIES)


def topic_name(cfg: Config, source: str) -> str:
    return f"{cfg.kafka.topic_prefix}{source}"


def kafka_options(cfg: Config) -> dict[str, str]:
    """``kafka.options`` with ``${ENV_VAR}`` references filled in (secrets stay out of conf/)."""
    import os
    import re

    def variable(reference: re.Match[str]) -> str:  # a named function: a lambda's type is not inferred here
        return os.environ[reference.group(1)]

    resolved = {}
    for key, value in cfg.kafka.options.items():
        missing = [name for name in re.findall(r"\$\{(\w+)\}", value) if name not in os.environ]
        if missing:
            raise InputError(
                f"kafka.options.{key} refers to the environment variable {missing[0]}, which is not set"
            )
        resolved[key] = re.sub(r"\$\{(\w+)\}", variable, value)
    return resolved


def read_kafka(spark: SparkSession, cfg: Config, source: str) -> DataFrame:
    """The source's Kafka topic as a stream of raw messages with their metadata.

    The message value is decoded as UTF-8 text and kept as is; whether it is valid JSON is
    silver's business, exactly as for a landing line. ``kafka.options`` pass through as
    ``kafka.<key>`` (security settings of a bank's cluster).
    """
    get_contract(source)
    reader = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", cfg.kafka.bootstrap_servers)
        .option("subscribe", topic_name(cfg, source))
        .option("startingOffsets", cfg.kafka.starting_offsets)
        .option("includeHeaders", "true")
        .option("failOnDataLoss", "true")  # offsets that vanished (retention) stop the stream loudly
    )
    if cfg.kafka.max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", cfg.kafka.max_offsets_per_trigger)
    for key, value in kafka_options(cfg).items():
        reader = reader.option(f"kafka.{key}", value)
    messages = reader.load()
    batch = F.expr(f"element_at(filter(headers, h -> h.key = '{BATCH_HEADER}'), 1).value").cast("string")
    ingested_at = F.current_timestamp()
    return messages.select(
        F.col("value").cast("string").alias("raw"),
        F.coalesce(
            batch, F.format_string("kafka://%s/%d/%d", F.col("topic"), F.col("partition"), F.col("offset"))
        ).alias("_source_file"),
        ingested_at.alias("_ingested_at"),
        F.to_date(ingested_at).alias("_ingest_date"),
        F.col("topic").alias("_kafka_topic"),
        F.col("partition").alias("_kafka_partition"),
        F.col("offset").alias("_kafka_offset"),
        F.col("timestamp").alias("_kafka_timestamp"),
    )


def read_landing(spark: SparkSession, cfg: Config, source: str, max_files: int | None = None) -> DataFrame:
    """The source's landing files as a stream of raw lines with their metadata."""
    get_contract(source)  # an unknown source fails here, naming it
    folder = landing_dir(cfg, source)
    if not folder.is_dir():
        raise InputError(
            f"landing folder for source {source!r} not found: {folder} "
            "(run `journeylake generate` or point paths.landing at your landing zone)"
        )
    # every *.jsonl under the folder, subfolders too: sources re-deliver into retry/ or per-day
    # folders, and a file skipped there would be lost without a word. Folders named _* or .*
    # stay unread (Spark's hidden paths): a sender writes there and renames into place when done.
    reader = (
        spark.readStream.format("text")
        .option("pathGlobFilter", "*.jsonl")
        .option("recursiveFileLookup", "true")
    )
    if max_files:
        reader = reader.option("maxFilesPerTrigger", max_files)
    lines = reader.load(str(folder))
    ingested_at = F.current_timestamp()
    return lines.select(
        F.col("value").alias("raw"),
        F.col("_metadata.file_path").alias("_source_file"),
        ingested_at.alias("_ingested_at"),
        F.to_date(ingested_at).alias("_ingest_date"),
        *[F.lit(None).cast(kind).alias(name) for name, kind in KAFKA_COLUMNS.items()],
    )


def read_source(spark: SparkSession, cfg: Config, source: str, max_files: int | None = None) -> DataFrame:
    """The source's raw records as a stream: its Kafka topic or its landing folder, as configured."""
    if cfg.ingest.source == "kafka":
        return read_kafka(spark, cfg, source)
    return read_landing(spark, cfg, source, max_files)


def append_batch(batch: DataFrame, table: str, tag: str, *, maybe_replay: bool) -> None:
    """Append a micro-batch of raw records to bronze, each row tagged with its batch (exactly once).

    The checkpoint says which files (offsets) each micro-batch holds, and the tag lets a batch
    replayed after a crash see that it was written (:func:`pipelines.lakehouse.batch_writes.append_once`).
    """
    append_once(
        batch.withColumn(BATCH_COLUMN, F.lit(tag)), table, BATCH_COLUMN, tag, maybe_replay=maybe_replay
    )
