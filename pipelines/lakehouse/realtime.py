"""The real-time path: a stateless Kafka -> Kafka query on Spark's real-time trigger.

Micro-batches into Delta cost seconds each (planning, commits), which is fine for the lakehouse
but too slow for moments like "a card payment just failed". Spark's real-time mode
(``trigger(realTime=...)``) keeps a long-running task per partition that processes each record
as it arrives, but only for stateless plans into a Kafka, foreach or console sink. This query
is such a plan: it parses each transaction against its contract, keeps the well-formed ones of
the types that should trigger a timely action, and publishes them to ``<prefix>triggers``
(keyed by customer). Everything still also flows through bronze / silver as usual; this is a
fast lane beside it, not a replacement (no dedup, no quarantine: a malformed message is simply
not a trigger).
"""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from pipelines.config import Config
from pipelines.contracts import get_contract
from pipelines.lakehouse.bronze import kafka_options, topic_name

# transaction types worth acting on within seconds (next-best-action triggers)
TRIGGER_TYPES = ("failed_payment", "salary", "fee")
TRIGGERS_TOPIC = "triggers"


def start_transaction_triggers(
    spark: SparkSession, cfg: Config, checkpoint: Path, batch_duration: str = "5 minutes"
) -> StreamingQuery:
    """Start the real-time query; ``batch_duration`` is how often it checkpoints its offsets."""
    contract = get_contract("transactions")
    schema = contract.spark_schema()
    reader = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", cfg.kafka.bootstrap_servers)
        .option("subscribe", topic_name(cfg, "transactions"))
        .option("startingOffsets", "latest")
    )
    options = kafka_options(cfg)
    for key, value in options.items():
        reader = reader.option(f"kafka.{key}", value)
    parsed = reader.load().select(
        F.from_json(F.col("value").cast("string"), schema).alias("t"),
        F.col("timestamp").alias("produced_at"),
    )
    required = [F.col(f"t.{f.name}").isNotNull() for f in contract.fields if f.required]
    valid = parsed.where(F.col("t.txn_type").isin(*TRIGGER_TYPES))
    for condition in required:
        valid = valid.where(condition)
    out = valid.select(
        F.col("t.customer_number").alias("key"),
        F.to_json(
            F.struct(
                F.col("t.event_id").alias("event_id"),
                F.col("t.customer_number").alias("customer_number"),
                F.col("t.account_id").alias("account_id"),
                F.col("t.txn_type").alias("trigger"),
                F.col("t.amount").alias("amount"),
                F.col("t.event_time").alias("event_time"),
                F.col("produced_at"),
            )
        ).alias("value"),
    )
    writer = (
        out.writeStream.format("kafka")
        .option("kafka.bootstrap.servers", cfg.kafka.bootstrap_servers)
        .option("topic", topic_name(cfg, TRIGGERS_TOPIC))
        .option("checkpointLocation", str(checkpoint))
        .queryName("realtime_transaction_triggers")
        .outputMode("update")  # real-time mode emits each record as it comes; append is not allowed
    )
    for key, value in options.items():
        writer = writer.option(f"kafka.{key}", value)
    # pyspark 4.2's trigger() takes realTime, but its overloads omit it
    return writer.trigger(realTime=batch_duration).start()  # type: ignore[call-overload]
