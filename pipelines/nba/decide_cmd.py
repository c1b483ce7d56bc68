"""``journeylake decide``: the streaming decision job writing ``gold.next_best_actions``."""

from __future__ import annotations

import argparse
import time

from pipelines.config import add_config_arguments, config_from_args


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--until-idle",
        action="store_true",
        help="decide for the trigger events in silver so far, then stop (default: keep streaming)",
    )
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from pipelines.ingest import _await, available_now, every
    from pipelines.nba.decide import start_decision_stream
    from pipelines.spark import get_spark
    from pipelines.tables import Tables

    cfg = config_from_args(args)
    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", flush=True)

    spark = get_spark(cfg, "journeylake-decide")
    tables = Tables.from_config(cfg)
    checkpoint = str(cfg.paths.checkpoints / "gold" / "next_best_actions")
    trigger = available_now if args.until_idle else every(cfg.ingest.trigger_interval)
    if not args.until_idle:
        progress(f"deciding continuously (trigger every {cfg.ingest.trigger_interval}); Ctrl-C to stop")
    query = start_decision_stream(spark, cfg, tables, checkpoint, trigger, progress)
    _await([query])
    served = spark.table(tables.gold("next_best_actions")).count()
    logged = spark.table(tables.gold("decision_log")).count()
    print(
        f"{tables.gold('next_best_actions')}: {served:,} rows; {tables.gold('decision_log')}: {logged:,} rows"
    )
    return 0
