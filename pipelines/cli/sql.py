"""`journeylake sql -e QUERY`: one query against the shared catalog; `journeylake sql`: the endpoint.

With ``-e`` the query runs in its own Spark process on the same catalog as the streaming job
and dbt, so tables show what they hold right now. ``--format table`` (default) prints aligned
columns, ``--format csv`` a header and rows for other tools. Without ``-e`` it starts the SQL
endpoint (Spark's Thrift JDBC/ODBC server, see :mod:`pipelines.services.sql_endpoint`) on loopback and
keeps it up until Ctrl-C.
"""

from __future__ import annotations

import argparse
import csv
import sys
from typing import Any

from pipelines.config import add_config_arguments, config_from_args
from pipelines.errors import InputError, first_line

DEFAULT_MAX_ROWS = 1000


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-e",
        "--execute",
        metavar="QUERY",
        help="the SQL statement to run (without it: start the JDBC/ODBC endpoint for SQL clients)",
    )
    parser.add_argument(
        "--port", type=int, default=None, help="the endpoint's port on 127.0.0.1 (default: sql_endpoint.port)"
    )
    parser.add_argument(
        "--format",
        choices=("table", "csv"),
        default="table",
        help="output: aligned columns (default) or CSV with a header",
    )
    parser.add_argument(
        "--max-rows",
        type=int,
        default=DEFAULT_MAX_ROWS,
        help=f"print at most this many rows (default {DEFAULT_MAX_ROWS}; 0 = all)",
    )
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if not args.execute:
        return serve(args)
    if args.max_rows < 0:
        raise InputError(f"--max-rows must be 0 or more, got {args.max_rows}")

    from pipelines.services.spark import get_spark

    cfg = config_from_args(args)
    spark = get_spark(cfg, app_name="journeylake-sql")
    try:
        columns, rows, truncated = _execute(spark, args.execute, args.max_rows)
    finally:
        spark.stop()

    if args.format == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([["" if v is None else _text(v) for v in row] for row in rows])
    elif columns:
        _print_table(columns, rows)
    else:
        print("OK")
    if truncated:
        print(f"(showing the first {args.max_rows} rows; use --max-rows 0 for all)", file=sys.stderr)
    return 0


def serve(args: argparse.Namespace) -> int:
    """Run the SQL endpoint in the foreground until interrupted."""
    from pipelines.services import sql_endpoint, sql_users

    cfg = config_from_args(args)
    port = args.port or cfg.sql_endpoint.port
    if not 1 <= port <= 65535:
        raise InputError(f"--port {port}: expected 1-65535")
    print(f"starting the SQL endpoint (log: {cfg.paths.logs / 'sql-endpoint.log'}) ...", flush=True)
    import signal

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)  # a service manager's stop also stops the server
    process = sql_endpoint.start(cfg, port)
    user = cfg.sql_endpoint.default_user
    users = sql_users.read_users(cfg)
    hint = sql_users.password_hint(cfg) if user in users else "use a user of `journeylake sql-user list`"
    print(sql_endpoint.connection_help(port, user, hint) + "\nCtrl-C stops it.", flush=True)
    try:
        process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        sql_endpoint.stop(process)
    return 0


def _execute(spark: Any, query: str, max_rows: int) -> tuple[list[str], list[tuple], bool]:
    """Run ``query``; user errors (syntax, unknown table or column) become one-line InputErrors."""
    from pyspark.errors import PySparkException

    try:
        frame = spark.sql(query)
        columns = frame.columns
        if max_rows and columns:
            collected = frame.limit(max_rows + 1).collect()
        else:
            collected = frame.collect()
    except PySparkException as exc:
        raise InputError(f"query failed: {first_line(exc)}") from None
    truncated = bool(max_rows) and len(collected) > max_rows
    rows = [tuple(row) for row in collected[: max_rows or None]]
    return columns, rows, truncated


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _print_table(columns: list[str], rows: list[tuple]) -> None:
    cells = [["NULL" if v is None else _text(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [
        all(isinstance(row[i], int | float) or row[i] is None for row in rows) for i in range(len(columns))
    ]

    def line(values: list[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    print(line(list(columns)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print(line(row))
    print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
