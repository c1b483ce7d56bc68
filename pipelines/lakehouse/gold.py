"""Gold (streaming): ``gold.customer_features``, one current row per customer.

A streaming query follows every silver event table. For each micro-batch it finds the customers
the batch touched, recomputes their features from silver as of the stream's event-time
high-water mark, and merges them into the table. Recomputing the touched customers (rather than
adding deltas to running counters) is what makes the table exact under late and out-of-order
data: a late event lands in silver with its event time and the next recomputation of
that customer counts it, whatever the order of arrival. The same function computes the features
in batch, which is how tests check the stream.

Each row says the time its features are as of (``features_as_of``); a customer with no new
events keeps the row of their last update, and counts over "the last hour" are relative to it.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from pipelines.config import Config
from pipelines.lakehouse.batch_writes import CommitListener
from pipelines.lakehouse.features import (
    AS_OF,
    EVENT_SOURCES,
    KEYS,
    REALTIME_FEATURE_NAMES,
    Cutoffs,
    realtime_features,
    session_owners,
)
from pipelines.services.spark import BACKGROUND_POOL, one_row, scheduler_pool
from pipelines.tables import STREAMED_TABLE_PROPERTIES, Tables, ensure_properties, properties_sql

TRIGGER_SOURCES = (*EVENT_SOURCES, "accounts")


def compute_features(
    spark: SparkSession, tables: Tables, as_of: datetime, customers: DataFrame | None = None
) -> DataFrame:
    """Features of ``customers`` (a frame with ``customer_number``; all customers when None) at ``as_of``.

    The definitions are ``pipelines.lakehouse.features``' (the ones training and scoring use);
    this gives them the table's shape: ``features_as_of`` for the cut-off.
    """
    cutoffs = Cutoffs.at(spark, [as_of])
    if customers is None:
        profiles = cutoffs.latest_snapshot(spark.table(tables.silver("customers")), "customer_number")
        population = profiles.select(*KEYS)
    else:
        population = cutoffs.each(customers.select("customer_number").distinct()).select(*KEYS)
    features = realtime_features(spark, tables, cutoffs, population, scope=customers)
    return features.select(
        "customer_number",
        F.col(AS_OF).alias("features_as_of"),
        *REALTIME_FEATURE_NAMES,
    )


def ensure_gold_tables(spark: SparkSession, tables: Tables) -> None:
    schema = compute_features(
        spark, tables, datetime(2000, 1, 1), spark.createDataFrame([], "customer_number STRING")
    ).schema
    ddl = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in schema.fields)
    spark.sql(
        f"CREATE TABLE IF NOT EXISTS {tables.customer_features} ({ddl}) USING delta "
        f"{properties_sql(STREAMED_TABLE_PROPERTIES)}"
    )
    ensure_properties(spark, tables.customer_features, STREAMED_TABLE_PROPERTIES)


def touched_customers(spark: SparkSession, tables: Tables, batch: DataFrame, until: datetime) -> DataFrame:
    """Customers whose features a batch of trigger rows can change."""
    direct = batch.where(F.col("customer_number").isNotNull()).select("customer_number")
    sessions = batch.where(F.col("session_id").isNotNull()).select("session_id").distinct()
    owners = session_owners(spark, tables, Cutoffs.at(spark, [until]), sessions)
    via_digital = owners.select("customer_number")
    return direct.unionByName(via_digital).distinct()


def process_batch(
    batch: DataFrame, batch_id: int, *, tables: Tables, listener: CommitListener | None = None
) -> None:
    """Recompute the touched customers' features at the high-water mark and merge them
    (``listener`` is told the merged rows: the online store's write-through)."""
    from delta.tables import DeltaTable

    spark = batch.sparkSession
    cached = [batch.persist()]
    try:
        batch_max = one_row(cached[0].agg(F.max("event_time")))[0]
        if batch_max is None:
            return
        previous = one_row(spark.table(tables.customer_features).agg(F.max("features_as_of")))[0]
        as_of = max(batch_max, previous) if previous else batch_max
        customers = touched_customers(spark, tables, cached[0], as_of).persist()
        cached.append(customers)
        features = compute_features(spark, tables, as_of, customers)
        told = None
        if listener is not None:
            # collected before the merge and told after it: no Spark job between commit and store
            features = features.persist()
            cached.append(features)
            told = features.toPandas()
        (
            DeltaTable.forName(spark, tables.customer_features)
            .alias("t")
            .merge(features.alias("s"), "t.customer_number = s.customer_number")
            .whenMatchedUpdateAll()
            .whenNotMatchedInsertAll()
            .execute()
        )
        if listener is not None and told is not None:
            listener.features(told, time.time())
    finally:
        for df in cached:  # a failed batch leaves nothing cached behind for the retry
            df.unpersist()


def trigger_stream(spark: SparkSession, tables: Tables, max_files: int | None) -> DataFrame:
    """One stream over every silver table whose rows can change a customer's features."""
    parts = []
    for source in TRIGGER_SOURCES:
        # an erasure's commits change rows: skipped (silver's streamed tables are otherwise appended)
        reader = spark.readStream.format("delta").option("skipChangeCommits", "true")
        if max_files:
            reader = reader.option("maxFilesPerTrigger", max_files)
        df = reader.table(tables.silver(source))
        time_col = "snapshot_time" if source == "accounts" else "event_time"
        parts.append(
            df.select(
                F.col("customer_number")
                if source != "digital"
                else F.lit(None).cast("string").alias("customer_number"),
                F.col("session_id")
                if source == "digital"
                else F.lit(None).cast("string").alias("session_id"),
                F.col(time_col).alias("event_time"),
            )
        )
    stream = parts[0]
    for part in parts[1:]:
        stream = stream.unionByName(part)
    return stream


def start_gold_stream(
    spark: SparkSession,
    cfg: Config,
    tables: Tables,
    checkpoint: str,
    configure_trigger: Any,
    max_files: int | None = None,
    listener: CommitListener | None = None,
) -> StreamingQuery:
    ensure_gold_tables(spark, tables)

    def run_batch(batch: DataFrame, batch_id: int) -> None:
        process_batch(batch, batch_id, tables=tables, listener=listener)

    writer = (
        trigger_stream(spark, tables, max_files)
        .writeStream.queryName("gold_customer_features")
        .option("checkpointLocation", checkpoint)
        .foreachBatch(run_batch)
    )
    # its jobs take the task slots the ingest queries leave: a gold batch (10-15 s on two cores)
    # does not hold back the ingest batches that run meanwhile
    with scheduler_pool(spark, BACKGROUND_POOL):
        return configure_trigger(writer).start()
