"""``journeylake ingest``: stream landing files (or Kafka topics) into bronze / silver / gold Delta tables."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

from pipelines.config import add_config_arguments, config_from_args

if TYPE_CHECKING:  # pragma: no cover - the command imports Spark only when it runs
    from pyspark.sql import SparkSession

    from pipelines.config import Config
    from pipelines.tables import Tables


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--until-idle",
        action="store_true",
        help="process what has landed, then stop (default: keep streaming until Ctrl-C)",
    )
    parser.add_argument("--landing", help="landing folder to read (default: paths.landing from conf/)")
    parser.add_argument(
        "--source",
        choices=("files", "kafka"),
        default=None,
        help="read the landing folder or Kafka topics (default: ingest.source from conf/)",
    )
    parser.add_argument(
        "--bootstrap", metavar="HOST:PORT", help="Kafka bootstrap servers (default: kafka.bootstrap_servers)"
    )
    add_config_arguments(parser)


def print_layer_counts(spark: SparkSession, cfg: Config, tables: Tables) -> None:
    from rich.console import Console
    from rich.table import Table

    from pipelines.lakehouse.ingest import layer_counts, present_sources

    table = Table(title="rows per layer")
    for column in ("source", "bronze", "silver", "quarantined", "duplicates removed"):
        table.add_column(column, justify="left" if column == "source" else "right")
    for c in layer_counts(spark, tables, present_sources(cfg)):
        table.add_row(c.source, f"{c.bronze:,}", f"{c.silver:,}", f"{c.quarantined:,}", f"{c.duplicates:,}")
    features = spark.table(tables.customer_features).count()
    Console().print(table)
    print(f"{tables.customer_features}: {features:,} customers")


def locks(args: argparse.Namespace) -> tuple[str, ...]:
    return ("ingest",)


def run(args: argparse.Namespace) -> int:
    from pipelines.lakehouse import ingest
    from pipelines.services.spark import get_spark
    from pipelines.tables import Tables

    cfg = config_from_args(args)
    if args.landing:
        from pathlib import Path

        cfg = cfg.model_copy(
            update={"paths": cfg.paths.model_copy(update={"landing": Path(args.landing).resolve()})}
        )
    if args.source:
        cfg = cfg.model_copy(update={"ingest": cfg.ingest.model_copy(update={"source": args.source})})
    if args.bootstrap:
        cfg = cfg.model_copy(
            update={"kafka": cfg.kafka.model_copy(update={"bootstrap_servers": args.bootstrap})}
        )
    ingest.present_sources(cfg)  # fail fast, before starting Spark, on a missing landing folder
    started = time.monotonic()
    spark = get_spark(cfg, "journeylake-ingest")
    tables = Tables.from_config(cfg)

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", flush=True)

    from pipelines.serving.write_through import StoreFeed

    feed = StoreFeed.open(cfg)  # consent, responses and features written through to a running store
    if feed is not None:
        progress("online store: consent, offer responses and features written through")
    ingest.run(spark, cfg, until_idle=args.until_idle, tables=tables, progress=progress, listener=feed)
    if args.until_idle:
        print_layer_counts(spark, cfg, tables)
    return 0
