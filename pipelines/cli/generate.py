"""``journeylake generate``: write a synthetic bank's landing files and its hidden truth.

The output is deterministic for a seed (same arguments, same bytes), so tests, benchmarks and
demos can all be reproduced exactly. ``--sink kafka`` publishes the same lines to one Kafka topic
per source instead of landing files (see ``simulator/kafka_writer.py``); the truth still goes to
``--out``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING

from pipelines.config import add_config_arguments, config_from_args
from pipelines.errors import InputError

if TYPE_CHECKING:
    from pipelines.sources.simulator import RunStats, SimConfig
    from pipelines.sources.simulator.kafka_writer import KafkaWriter


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the verb's arguments."""
    parser.add_argument("--customers", type=int, default=2000, help="number of customers (default: 2000)")
    parser.add_argument("--days", type=int, default=30, help="number of simulated days (default: 30)")
    parser.add_argument(
        "--seed", type=int, default=42, help="random seed; same seed, same bytes (default: 42)"
    )
    parser.add_argument(
        "--out",
        required=True,
        help="output folder: landing/ (file sink only) and truth/ are written inside",
    )
    parser.add_argument(
        "--faults", default="default", help="data-fault preset: default | none (default: default)"
    )
    parser.add_argument(
        "--start",
        type=_date,
        default=dt.date(2026, 1, 1),
        help="first simulated day, YYYY-MM-DD (default: 2026-01-01)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace landing/ and truth/ of an earlier run"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    parser.add_argument(
        "--sink",
        choices=("files", "kafka"),
        default="files",
        help="files: landing/<source>/*.jsonl under --out (default); kafka: one message per line on "
        "topic <kafka.topic_prefix><source>, keyed by customer",
    )
    parser.add_argument(
        "--bootstrap",
        metavar="HOST:PORT",
        default=None,
        help="Kafka bootstrap servers for --sink kafka (default: kafka.bootstrap_servers in conf/)",
    )
    add_config_arguments(parser)


def _sink(args: argparse.Namespace) -> AbstractContextManager[KafkaWriter | None]:
    """The writer for ``--sink``: None (the default file writer) or a Kafka producer."""
    if args.sink == "files":
        if args.bootstrap:
            raise InputError("--bootstrap only applies with --sink kafka")
        return nullcontext(None)
    from pipelines.sources.simulator.kafka_writer import KafkaWriter

    cfg = config_from_args(args)
    return KafkaWriter(
        args.bootstrap or cfg.kafka.bootstrap_servers,
        topic_prefix=cfg.kafka.topic_prefix,
        partitions=cfg.kafka.broker.partitions,
        retention_ms=cfg.kafka.retention_ms,
        options=cfg.kafka.options,
    )


def run(args: argparse.Namespace) -> int:
    """Generate, showing a progress bar on a terminal, then print lines per source and the rate."""
    from pipelines.sources.simulator import FaultRates, SimConfig, generate

    if args.faults not in ("default", "none"):
        raise InputError(f"--faults must be 'default' or 'none', got {args.faults!r}")
    config = SimConfig(
        customers=args.customers,
        days=args.days,
        seed=args.seed,
        start=args.start,
        faults=FaultRates.preset(args.faults),
    )
    with _sink(args) as writer:  # leaving it waits until Kafka acknowledged every message
        if args.quiet:
            generate(config, args.out, writer=writer, overwrite=args.overwrite)
            return 0
        stats = _generate_with_progress(config, args, writer)
    _summary(args, stats, writer)
    return 0


def _generate_with_progress(
    config: SimConfig, args: argparse.Namespace, writer: KafkaWriter | None
) -> RunStats:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from pipelines.sources.simulator import generate

    console = Console(file=sys.stdout)
    with Progress(
        TextColumn("simulating days"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as progress:
        task = progress.add_task("days", total=config.days)
        return generate(
            config,
            args.out,
            writer=writer,
            overwrite=args.overwrite,
            progress=lambda done, total: progress.update(task, completed=done),
        )


def _summary(args: argparse.Namespace, stats: RunStats, writer: KafkaWriter | None) -> None:
    """Lines (messages) and files (batches) per source, and the generation rate."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=sys.stdout)
    kafka = writer is not None
    target = f"Kafka {writer.bootstrap} (truth: {args.out})" if writer is not None else args.out
    table = Table(title=f"journeylake generate -> {target}", show_edge=False)
    table.add_column("source")
    if kafka:
        table.add_column("topic")
    table.add_column("lines", justify="right")
    table.add_column("batches" if kafka else "files", justify="right")
    for source, lines in stats.lines.items():
        topic = [f"{writer.topic_prefix}{source}"] if writer is not None else []
        table.add_row(source, *topic, f"{lines:,}", f"{stats.files[source]:,}")
    table.add_row(
        "total", *([""] if kafka else []), f"{stats.total_lines:,}", f"{sum(stats.files.values()):,}"
    )
    console.print(table)
    unit = "messages" if kafka else "lines"
    console.print(f"{stats.total_lines:,} {unit} in {stats.seconds:.1f} s ({stats.rate:,.0f} {unit}/s)")
