"""``journeylake decide``: the streaming decision job writing ``gold.next_best_actions``."""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

from pipelines.config import add_config_arguments, config_from_args
from pipelines.errors import InputError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--until-idle",
        action="store_true",
        help="decide for the trigger events in silver so far, then stop (default: keep streaming)",
    )
    parser.add_argument(
        "--since",
        metavar="TIME",
        help="act only on events that happened at or after TIME (ISO 8601, UTC if no zone); "
        "default: every event in silver (a filter on event time, applied on every start)",
    )
    add_config_arguments(parser)


def parse_since(value: str | None) -> datetime | None:
    """``--since`` as an aware UTC datetime; a bad value is an InputError naming the flag."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(
            f"--since {value!r} is not an ISO 8601 time (e.g. 2026-01-31 or 2026-01-31T08:00)"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def run(args: argparse.Namespace) -> int:
    from pipelines.ingest import _await, available_now, every
    from pipelines.nba.decide import start_decision_stream
    from pipelines.spark import get_spark
    from pipelines.tables import Tables

    cfg = config_from_args(args)
    since = parse_since(args.since)
    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", flush=True)

    spark = get_spark(cfg, "journeylake-decide")
    tables = Tables.from_config(cfg)
    checkpoint = str(cfg.paths.checkpoints / "gold" / "next_best_actions")
    trigger = available_now if args.until_idle else every(cfg.ingest.trigger_interval)
    if not args.until_idle:
        progress(f"deciding continuously (trigger every {cfg.ingest.trigger_interval}); Ctrl-C to stop")
    query = start_decision_stream(spark, cfg, tables, checkpoint, trigger, progress, since=since)
    _await([query])
    served = spark.table(tables.gold("next_best_actions")).count()
    logged = spark.table(tables.gold("decision_log")).count()
    print(
        f"{tables.gold('next_best_actions')}: {served:,} rows; {tables.gold('decision_log')}: {logged:,} rows"
    )
    return 0
