"""``journeylake score``: batch-score every customer with the champion models into gold tables."""

from __future__ import annotations

import argparse
from datetime import datetime

from pipelines.cli.quality_gate import add_force_argument, pass_quality_gate
from pipelines.config import add_config_arguments, config_from_args


def _timestamp(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a time as YYYY-MM-DD[THH:MM], got {text!r}") from None


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--as-of",
        type=_timestamp,
        default=None,
        help="compute features as of this time (default: the newest event in silver)",
    )
    add_force_argument(parser)
    add_config_arguments(parser)


def locks(args: argparse.Namespace) -> tuple[str, ...]:
    return ("score",)


def run(args: argparse.Namespace) -> int:
    import time

    from ml.score import write_scores
    from pipelines.services.spark import get_spark
    from pipelines.tables import Tables

    cfg = config_from_args(args)
    from pipelines.services.spark import require_lakehouse

    require_lakehouse(cfg, "run `journeylake ingest` and `journeylake train` first")
    spark = get_spark(cfg, "journeylake-score")
    pass_quality_gate(spark, cfg, "score", args.force)
    tables = Tables.from_config(cfg)
    started = time.perf_counter()
    result = write_scores(spark, cfg, tables, args.as_of)
    seconds = time.perf_counter() - started
    versions = ", ".join(f"{k} v{v}" for k, v in result["model_versions"].items())
    print(
        f"scored {result['customers_scored']:,} customers as of {result['as_of']:%Y-%m-%d %H:%M} "
        f"in {seconds:.1f} s -> {tables.gold('customer_scores')}, {tables.gold('propensity_explanations')}"
    )
    print(f"  models: {versions}")
    return 0
