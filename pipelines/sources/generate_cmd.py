"""``journeylake generate``: write a synthetic bank's landing files and its hidden truth.

The output is deterministic for a seed (same arguments, same bytes), so tests, benchmarks and
demos can all be reproduced exactly.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from pipelines.errors import InputError


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
    parser.add_argument("--out", required=True, help="output folder: landing/ and truth/ are written inside")
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
    if args.quiet:
        generate(config, args.out, overwrite=args.overwrite)
        return 0

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

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
        stats = generate(
            config,
            args.out,
            overwrite=args.overwrite,
            progress=lambda done, total: progress.update(task, completed=done),
        )

    table = Table(title=f"journeylake generate -> {args.out}", show_edge=False)
    table.add_column("source")
    table.add_column("lines", justify="right")
    table.add_column("files", justify="right")
    for source, lines in stats.lines.items():
        table.add_row(source, f"{lines:,}", f"{stats.files[source]:,}")
    table.add_row("total", f"{stats.total_lines:,}", f"{sum(stats.files.values()):,}")
    console.print(table)
    console.print(f"{stats.total_lines:,} lines in {stats.seconds:.1f} s ({stats.rate:,.0f} lines/s)")
    return 0
