"""Benchmark: Kafka -> silver throughput, and producer-to-silver latency at a steady event rate.

1. A generated bank is published to a local broker (its own, on free ports) and ingested from
   Kafka until idle: events/s from topic to silver (compare with bench_ingest.py's file source).
2. The stream keeps running (processing-time trigger ``--trigger``) while a producer publishes
   ``--rate`` transactions/s for ``--seconds``; each event's latency is the time from its
   producer timestamp to the Delta commit that made it visible in bronze and in silver (read
   from the tables' transaction logs, so the measurement adds no work to the pipeline).
3. The same load through the barest raw + parsed path (two Delta appends a micro-batch, nothing
   else): the floor any Spark + Delta design reaches on this machine.

    .venv/bin/python bench/bench_kafka.py [--customers 400] [--days 7] [--rate 1000] [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from _common import free_port

if TYPE_CHECKING:  # Spark is imported once the benchmark's environment is set
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming import StreamingQuery

    from pipelines.config import Config


def _free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two adjacent free ports")


def commit_times(table_dir: Path, column: str, prefix: str, from_version: int) -> dict[str, int]:
    """id -> commit timestamp (ms) of the Delta commit that added the row, for ids with ``prefix``.

    ``column`` is read from each added Parquet file; for bronze it is the raw JSON text.
    """
    import pyarrow.parquet as pq

    seen: dict[str, int] = {}
    for log in sorted((table_dir / "_delta_log").glob("*.json")):
        if int(log.stem) < from_version:
            continue
        committed: int | None = None
        added: list[str] = []
        for line in log.read_text().splitlines():
            action = json.loads(line)
            if "commitInfo" in action:
                committed = action["commitInfo"]["timestamp"]
            elif "add" in action:
                added.append(action["add"]["path"])
        if committed is None:  # no commitInfo: no commit time to report its rows at
            continue
        for path in added:
            values = pq.read_table(table_dir / path, columns=[column]).column(column).to_pylist()
            for value in values:
                if value is None or prefix not in value:
                    continue
                key = json.loads(value)["event_id"] if column == "raw" else value
                if key.startswith(prefix):
                    seen.setdefault(key, committed)
    return seen


def percentiles(values: list[float]) -> str:
    if not values:
        return "no events"
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return (
        f"p50 {at(0.50):.2f}s  p95 {at(0.95):.2f}s  p99 {at(0.99):.2f}s  max {ordered[-1]:.2f}s "
        f"({len(ordered):,} events)"
    )


# The queries the latency run keeps busy: the transactions ingest query and gold behind it.
WATCHED_QUERIES = ("ingest_transactions", "gold_customer_features")


def batch_summary(query: StreamingQuery) -> str:
    """How long a query's recent micro-batches with input took, and how many rows they held."""
    busy = [p for p in query.recentProgress if p.numInputRows]
    if not busy:
        return "no batch with input"
    took = sorted(p.durationMs.get("triggerExecution", 0) / 1000 for p in busy)
    rows = sorted(p.numInputRows for p in busy)
    return (
        f"{len(busy)} batches with input, rows p50 {rows[len(rows) // 2]:,}; "
        f"batch time p50 {took[len(took) // 2]:.2f}s, max {took[-1]:.2f}s"
    )


def produce_steadily(
    bootstrap: str, topic: str, accounts: list[tuple[str, str]], rate: int, seconds: int, prefix: str = "LAT-"
) -> dict[str, int]:
    """Publish ``rate`` valid transactions a second for ``seconds``; event id -> producer time (ms)."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": "all", "log_level": 3})
    sent: dict[str, int] = {}
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < seconds:
        due = int((time.monotonic() - started) * rate)
        while n < due:
            customer, account = accounts[n % len(accounts)]
            now_ms = int(time.time() * 1000)
            event_id = f"{prefix}{n:08d}"
            record = {
                "event_id": event_id,
                "event_time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now_ms / 1000))
                + f".{now_ms % 1000:03d}Z",
                "schema_version": 1,
                "customer_number": customer,
                "account_id": account,
                "txn_type": "failed_payment",
                "amount": -12.5,
                "currency": "GBP",
                "merchant_category": None,
                "counterparty": "BENCH",
                "balance_after": None,
            }
            producer.produce(topic, json.dumps(record).encode(), key=customer.encode(), timestamp=now_ms)
            sent[event_id] = now_ms
            n += 1
        producer.poll(0)
        time.sleep(0.002)
    producer.flush(30)
    return sent


def floor_latency(
    spark: SparkSession, cfg: Config, work: Path, accounts: list[tuple[str, str]], rate: int, seconds: int
) -> None:
    """The same load through the barest bronze + silver path there is, alone on the machine.

    One query on the transactions topic whose micro-batch makes two Delta appends: the raw
    messages, and the same lines parsed once into the contract's typed fields. No checks, dedup,
    PII tokens, quarantine, other sources or gold; each batch starts as soon as the last one
    ends; no Delta checkpoint during the run (a table's first one stalls an append by seconds).
    What any Spark + Delta design with a raw and a parsed table could at best reach here.
    """
    from pyspark.sql import functions as F

    from pipelines.lakehouse.bronze import read_kafka
    from pipelines.lakehouse.silver import SILVER_TABLES
    from pipelines.tables import STREAMED_TABLE_PROPERTIES, properties_sql

    raw_dir, parsed_dir = work / "floor" / "raw", work / "floor" / "parsed"
    schema = SILVER_TABLES["transactions"].contract.spark_schema()
    stream = read_kafka(spark, cfg, "transactions").select("raw", "_ingested_at")
    properties = {**STREAMED_TABLE_PROPERTIES, "delta.checkpointInterval": "1000000"}
    for path, table_schema in ((raw_dir, stream.schema), (parsed_dir, schema)):
        spark.createDataFrame([], table_schema).write.format("delta").save(str(path))
        spark.sql(f"ALTER TABLE delta.`{path}` SET {properties_sql(properties)}")

    def append_both(batch: DataFrame, _batch_id: int) -> None:
        rows = batch.persist()
        try:
            rows.write.format("delta").mode("append").save(str(raw_dir))
            parsed = rows.select(F.from_json("raw", schema).alias("r")).select("r.*")
            parsed.write.format("delta").mode("append").save(str(parsed_dir))
        finally:
            rows.unpersist()

    query = (
        stream.writeStream.foreachBatch(append_both)
        .option("checkpointLocation", str(work / "floor" / "checkpoint"))
        .trigger(processingTime="0 seconds")
        .start()
    )
    time.sleep(15)  # the topic's backlog is read first
    topic = f"{cfg.kafka.topic_prefix}transactions"
    sent = produce_steadily(cfg.kafka.bootstrap_servers, topic, accounts, rate, seconds, prefix="FLOOR-")
    deadline = time.monotonic() + 120
    seen: dict[str, int] = {}
    while time.monotonic() < deadline:
        seen = commit_times(parsed_dir, "event_id", "FLOOR-", 0)
        if len(seen) >= len(sent):
            break
        time.sleep(2)
    summary = batch_summary(query)
    query.stop()
    latencies = [(seen[e] - t) / 1000 for e, t in sent.items() if e in seen]
    print(
        "floor: the barest raw + parsed path, same load, alone (two Delta appends a batch; no checks, "
        "dedup, PII tokens, other sources or gold; next batch at once):"
    )
    print(f"  producer -> parsed commit: {percentiles(latencies)}")
    print(f"  {summary}")


def realtime_latency(
    spark: SparkSession, cfg: Config, accounts: list[tuple[str, str]], rate: int, seconds: int
) -> None:
    """The same load through the real-time query (Kafka -> triggers topic), alone on the machine."""
    from confluent_kafka import Consumer
    from confluent_kafka.admin import AdminClient, NewTopic

    from pipelines.lakehouse.bronze import topic_name
    from pipelines.lakehouse.realtime import TRIGGERS_TOPIC, start_transaction_triggers

    admin = AdminClient({"bootstrap.servers": cfg.kafka.bootstrap_servers, "log_level": 3})
    wanted = [topic_name(cfg, "transactions"), topic_name(cfg, TRIGGERS_TOPIC)]
    for future in admin.create_topics([NewTopic(t, cfg.kafka.broker.partitions, 1) for t in wanted]).values():
        try:
            future.result()
        except Exception:  # already there  # noqa: BLE001
            pass
    query = start_transaction_triggers(spark, cfg, cfg.paths.checkpoints / "realtime" / "bench")
    time.sleep(15)  # its long-running tasks start
    consumer = Consumer(
        {
            "bootstrap.servers": cfg.kafka.bootstrap_servers,
            "group.id": "bench-realtime",
            "auto.offset.reset": "latest",
            "log_level": 3,
        }
    )
    consumer.subscribe([topic_name(cfg, TRIGGERS_TOPIC)])
    consumer.poll(5)  # join the group before the load starts
    topic = f"{cfg.kafka.topic_prefix}transactions"
    received: dict[str, int] = {}
    stop = threading.Event()

    def consume() -> None:
        while not stop.is_set():
            message = consumer.poll(0.2)
            if message is None or message.error():
                continue
            value = message.value()
            if value is not None:  # a message without a value (a tombstone) names no event
                received[json.loads(value)["event_id"]] = message.timestamp()[1]

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    sent = produce_steadily(cfg.kafka.bootstrap_servers, topic, accounts, rate, seconds, prefix="RT-")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(received) < len(sent):
        time.sleep(1)
    stop.set()
    reader.join(timeout=10)
    consumer.close()
    query.stop()
    latencies = [(received[e] - t) / 1000 for e, t in sent.items() if e in received]
    print("real-time trigger, stateless Kafka -> triggers topic, same load, alone:")
    print(f"  producer -> trigger published: {percentiles(latencies)}")
    if len(latencies) < len(sent):
        print(f"  {len(sent) - len(latencies):,} of {len(sent):,} events not seen within a minute")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=400)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--rate", type=int, default=1000, help="events/s during the latency run")
    parser.add_argument("--seconds", type=int, default=60, help="length of the latency run")
    parser.add_argument("--trigger", default="1 second", help="processing-time trigger of the latency run")
    parser.add_argument(
        "--realtime-only", action="store_true", help="only the real-time lane (no lakehouse ingestion)"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="journeylake-bench-kafka-"))
    os.environ["JOURNEYLAKE_HOME"] = str(work / "home")
    os.environ["JOURNEYLAKE_METASTORE_PORT"] = str(free_port())
    os.environ["JOURNEYLAKE_KAFKA_PORT"] = str(_free_port_pair())
    os.environ.pop("JOURNEYLAKE_TARGET", None)

    from pipelines.config import load_config
    from pipelines.lakehouse import ingest
    from pipelines.services import kafka_broker, metastore
    from pipelines.services.spark import get_spark
    from pipelines.sources.simulator import FaultRates, SimConfig, generate
    from pipelines.sources.simulator.kafka_writer import KafkaWriter
    from pipelines.tables import Tables

    overrides: dict[str, object] = {"ingest.source": "kafka", "ingest.trigger_interval": args.trigger}
    if args.realtime_only:  # real-time mode holds one task slot per partition for the whole run
        overrides["kafka.broker.partitions"] = 1
    cfg = load_config("local", overrides=overrides)
    kafka_broker.up(cfg)
    if args.realtime_only:
        try:
            spark = get_spark(cfg, "journeylake-bench-kafka")
            accounts = [(f"C{n:08d}", f"A{n:08d}") for n in range(500)]
            realtime_latency(spark, cfg, accounts, args.rate, args.seconds)
            spark.stop()
        finally:
            kafka_broker.down(cfg)
            metastore.stop(cfg)
            shutil.rmtree(work, ignore_errors=True)
        return
    try:
        t0 = time.perf_counter()
        with KafkaWriter(
            cfg.kafka.bootstrap_servers,
            topic_prefix=cfg.kafka.topic_prefix,
            partitions=cfg.kafka.broker.partitions,
        ) as writer:
            stats = generate(
                SimConfig(
                    customers=args.customers, days=args.days, seed=1, faults=FaultRates.preset("default")
                ),
                work / "world",  # truth only: the lines go to Kafka
                writer=writer,
            )
        events = stats.total_lines
        publish_s = time.perf_counter() - t0
        print(f"published {events:,} generated events to Kafka in {publish_s:.1f}s (simulator + producer)")

        spark = get_spark(cfg, "journeylake-bench-kafka")
        tables = Tables.from_config(cfg)
        t0 = time.perf_counter()
        ingest.run(spark, cfg, until_idle=True, tables=tables, progress=lambda _m: None)
        catch_up_s = time.perf_counter() - t0
        cores = os.cpu_count() or 1
        print(
            f"Kafka -> bronze -> silver -> gold until idle (cold JVM): {events:,} events in "
            f"{catch_up_s:.1f}s = {events / catch_up_s:,.0f} events/s "
            f"({events / catch_up_s / cores:,.0f}/core); the fixed cost of each batch (10 sources, customers "
            "first, then gold) dominates a set this small (see bench_ingest.py for ~1M lines)"
        )

        accounts = [
            (r["customer_number"], r["account_id"])
            for r in spark.table(tables.silver("accounts"))
            .select("customer_number", "account_id")
            .distinct()
            .orderBy("customer_number")
            .collect()
        ]
        warehouse = cfg.paths.warehouse
        bronze_dir, silver_dir = (
            warehouse / "bronze.db" / "transactions",
            warehouse / "silver.db" / "transactions",
        )
        versions = {
            d: max(int(p.stem) for p in (d / "_delta_log").glob("*.json")) + 1
            for d in (bronze_dir, silver_dir)
        }

        runner = threading.Thread(
            target=ingest.run,
            args=(spark, cfg),
            kwargs={"until_idle": False, "tables": tables, "progress": lambda _m: None},
            daemon=True,
        )
        runner.start()
        time.sleep(20)  # the catch-up pass of the continuous run, then its queries start
        topic = f"{cfg.kafka.topic_prefix}transactions"
        sent = produce_steadily(cfg.kafka.bootstrap_servers, topic, accounts, args.rate, args.seconds)
        deadline = time.monotonic() + 600
        silver_seen: dict[str, int] = {}
        while time.monotonic() < deadline:
            silver_seen = commit_times(silver_dir, "event_id", "LAT-", versions[silver_dir])
            if len(silver_seen) >= len(sent):
                break
            time.sleep(2)
        batches = {q.name: batch_summary(q) for q in spark.streams.active if q.name in WATCHED_QUERIES}
        for query in spark.streams.active:
            query.stop()
        runner.join(timeout=120)
        bronze_seen = commit_times(bronze_dir, "raw", "LAT-", versions[bronze_dir])
        to_bronze = [(bronze_seen[e] - t) / 1000 for e, t in sent.items() if e in bronze_seen]
        to_silver = [(silver_seen[e] - t) / 1000 for e, t in sent.items() if e in silver_seen]
        print(
            f"latency at {args.rate:,} events/s for {args.seconds}s "
            f"(trigger {args.trigger}, every source's queries running):"
        )
        print(f"  producer -> bronze commit: {percentiles(to_bronze)}")
        print(f"  producer -> silver commit: {percentiles(to_silver)}")
        for name, summary in batches.items():
            print(f"  {name}: {summary}")
        if len(to_silver) < len(sent):
            print(f"  {len(sent) - len(to_silver):,} of {len(sent):,} events not in silver after 10 minutes")
        floor_latency(spark, cfg, work, accounts, args.rate, args.seconds)
        if cfg.kafka.broker.partitions <= cores:
            realtime_latency(spark, cfg, accounts, args.rate, args.seconds)
        else:  # its tasks never end: partitions it has no slot for are never read
            print(
                f"real-time lane: skipped, it holds a task slot per partition ({cfg.kafka.broker.partitions} "
                f"partitions, {cores} cores); measure it with --realtime-only (one partition)"
            )
        spark.stop()
    finally:
        kafka_broker.down(cfg)
        metastore.stop(cfg)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
