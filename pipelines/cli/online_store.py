"""``journeylake online-store up|sync|status|down``: the online store the decision API reads.

``up`` starts the local Redis server (pipelines/services/redis_server.py); ``sync`` loads it from
the lakehouse (pipelines/serving/sync.py), idempotent and resumable; ``status`` says whether it
runs, what it holds and how stale the write-through has been; ``down`` stops it, saving its data.
"""

from __future__ import annotations

import argparse

from pipelines.config import Config, add_config_arguments, config_from_args


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        choices=("up", "sync", "status", "down"),
        help="start the server (no-op if running), load it from the lakehouse, show its state, or stop it",
    )
    parser.add_argument(
        "--full", action="store_true", help="sync: start afresh even if an earlier sync stopped half-way"
    )
    add_config_arguments(parser)


def locks(args: argparse.Namespace) -> tuple[str, ...]:
    return ("online-store-sync",) if args.action == "sync" else ()


def run(args: argparse.Namespace) -> int:
    from pipelines.services import redis_server

    cfg = config_from_args(args)
    if args.action == "up":
        state, started = redis_server.up(cfg)
        print(f"online store: {'started, ' if started else 'already '}{state.describe()}")
        return 0
    if args.action == "down":
        how = redis_server.down(cfg)
        print(
            f"online store: {how}"
            if how
            else "online store: not running (no server started from this home); nothing to stop"
        )
        return 0
    if args.action == "status":
        state = redis_server.status(cfg)
        print(f"online store: {state.describe()}")
        if state.running and state.pid is not None:
            print(f"online store: {staleness_line(cfg)}")
        return 0 if state.running else 3
    return sync(cfg, full=args.full)


def staleness_line(cfg: Config) -> str:
    from pipelines.serving.store import StoreWriter, connect

    writer = StoreWriter(connect(cfg), cfg.online_store.contact_history_days)
    meta = writer.meta()
    delays = sorted(writer.staleness())
    synced = meta.get("synced_at", "never")
    if not delays:
        return f"synced {synced}; no write-through yet"
    p50 = delays[len(delays) // 2]
    p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
    return (
        f"synced {synced}; write-through staleness (commit -> store) p50 {p50:.0f} ms, "
        f"p99 {p99:.0f} ms over {len(delays):,} batches"
    )


def sync(cfg: Config, full: bool) -> int:
    from rich.console import Console

    from pipelines.services.spark import get_spark
    from pipelines.serving.sync import sync as run_sync

    console = Console(stderr=True)
    from pipelines.services.spark import require_lakehouse

    require_lakehouse(
        cfg, "run `journeylake ingest` (and `decide`, `score`) first: the store is loaded from the lakehouse"
    )
    spark = get_spark(cfg, "journeylake-online-store-sync")
    with console.status("online store sync: starting") as shown:

        def progress(stage: str, message: str) -> None:
            console.print(f"online store sync: {stage}: {message}")
            shown.update(f"online store sync: after {stage}")

        results = run_sync(spark, cfg, progress, full=full)
    total = sum(r.rows for r in results)
    print(f"online store: synced {total:,} rows in {sum(r.seconds for r in results):.1f} s")
    return 0
