"""``journeylake export-segments``: write marketing's dated segment files (CSV + Parquet + manifest).

Runs on a schedule (resources/export_job.yml on Databricks; cron or any scheduler locally) and by
hand. ``--build`` first rebuilds ``gold.segment_exports`` with dbt, so a changed segment definition
in conf/ takes effect in the same run.
"""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime
from pathlib import Path

from pipelines.cli.quality_gate import add_force_argument, pass_quality_gate
from pipelines.config import add_config_arguments, config_from_args
from pipelines.errors import InputError


def _export_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date as YYYY-MM-DD, got {text!r}") from None


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--date",
        type=_export_date,
        default=None,
        help="the export's date, YYYY-MM-DD (default: today, UTC); re-running a date replaces its files",
    )
    parser.add_argument("--out", help="folder that receives <date>/ (default: paths.exports from conf/)")
    parser.add_argument(
        "--segment",
        action="append",
        metavar="NAME",
        help="export only this segment (repeatable; default: every segment in conf/)",
    )
    parser.add_argument(
        "--build",
        action="store_true",
        help="rebuild gold.segment_exports with dbt first (picks up changed segment definitions)",
    )
    add_force_argument(parser)
    add_config_arguments(parser)


def locks(args: argparse.Namespace) -> tuple[str, ...]:
    return ("export-segments",)


def run(args: argparse.Namespace) -> int:
    from pipelines.lakehouse.segment_export import check_segments, export_segments
    from pipelines.services.spark import get_spark

    cfg = config_from_args(args)
    if not cfg.segments:
        raise InputError("no segments are defined: add some under `segments:` in conf/base.yml")
    export_date = args.date or datetime.now(UTC).date()
    out = Path(args.out).resolve() if args.out else cfg.paths.exports
    from pipelines.services.spark import require_lakehouse

    require_lakehouse(cfg, "run `journeylake ingest`, `journeylake dbt build` and `journeylake score` first")
    spark = get_spark(cfg, "journeylake-export")
    pass_quality_gate(spark, cfg, "export-segments", args.force)
    if args.build:
        from pipelines.services.dbt_runner import run_dbt

        check_segments(spark, cfg, args.segment)  # a bad `where` is named before dbt runs
        run_dbt(cfg, ["build", "--select", "segment_exports"])
    manifest = export_segments(spark, cfg, export_date, out, args.segment)
    print(f"segment export {manifest['export_date']} -> {out / manifest['export_date']}")
    for segment in manifest["segments"]:
        excluded = ", ".join(f"{n} {reason}" for reason, n in segment["excluded"].items()) or "none"
        print(
            f"  {segment['name']:<24} {segment['rows']:>8,} rows  ({segment['matched']:,} matched; "
            f"excluded: {excluded})  channel {segment['channel']}"
        )
    print(f"  filters: {'; '.join(manifest['filters_applied'])}")
    return 0
