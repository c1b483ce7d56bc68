"""``journeylake decide``: the streaming decision job writing ``gold.next_best_actions``.

Two lanes, one funnel: by default the job follows silver (every trigger after the lakehouse has
checked and deduplicated it); ``--live`` reads the trigger sources' raw records (Kafka topics or
the landing folder) and decides within seconds, with the customers' context held in memory
(:mod:`pipelines.nba.live`). Run one of them per bank.
"""

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
    parser.add_argument(
        "--live",
        action="store_true",
        help="the live lane: decide on raw events as they arrive (Kafka or landing files), with "
        "the customers' context in memory, re-read from the lakehouse every "
        "decisioning.live.refresh_seconds (default: follow silver)",
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


def locks(args: argparse.Namespace) -> tuple[str, ...]:
    return ("decide",)


def run(args: argparse.Namespace) -> int:
    from pipelines.lakehouse.ingest import available_now, await_queries, every
    from pipelines.nba.decide import start_decision_stream
    from pipelines.nba.live import start_live_decisions
    from pipelines.services.spark import get_spark
    from pipelines.tables import Tables

    cfg = config_from_args(args)
    since = parse_since(args.since)
    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", flush=True)

    from pipelines.services.spark import require_lakehouse

    require_lakehouse(cfg, "run `journeylake ingest` first")
    spark = get_spark(cfg, "journeylake-decide")
    tables = Tables.from_config(cfg)
    lane = "next_best_actions_live" if args.live else "next_best_actions"
    checkpoint = str(cfg.paths.checkpoints / "gold" / lane)
    interval = cfg.decisioning.live.trigger if args.live else cfg.ingest.trigger_interval
    trigger = available_now if args.until_idle else every(interval)
    if not args.until_idle:
        what = f"live lane, from {cfg.ingest.source}" if args.live else "from silver"
        progress(f"deciding continuously ({what}, trigger every {interval}); Ctrl-C to stop")
    start = start_live_decisions if args.live else start_decision_stream
    from pipelines.lakehouse.batch_writes import Listeners
    from pipelines.serving.outbound import DECISIONS_TOPIC, DecisionPublisher
    from pipelines.serving.write_through import StoreFeed

    feed = StoreFeed.open(cfg)  # served actions written through to a running online store
    if feed is not None:
        progress("online store: served actions written through")
    publisher = DecisionPublisher.open(cfg)  # decisioning.api.publish_decisions
    if publisher is not None:
        progress(f"decisions published to {cfg.kafka.topic_prefix}{DECISIONS_TOPIC}")
    listeners = Listeners(feed, publisher) or None
    query = start(spark, cfg, tables, checkpoint, trigger, progress, since=since, listener=listeners)
    try:
        await_queries([query])
    finally:
        if publisher is not None:
            publisher.close()
    served = spark.table(tables.gold("next_best_actions")).count()
    logged = spark.table(tables.gold("decision_log")).count()
    print(
        f"{tables.gold('next_best_actions')}: {served:,} rows; {tables.gold('decision_log')}: {logged:,} rows"
    )
    return 0
