"""``journeylake evaluate-policy``: value of the current and alternative policies from the decision log."""

from __future__ import annotations

import argparse

from pipelines.config import add_config_arguments, config_from_args


def configure(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from pipelines.nba.catalog import load_catalog
    from pipelines.nba.evaluate import evaluate_policies, format_report
    from pipelines.services.spark import get_spark
    from pipelines.tables import Tables

    cfg = config_from_args(args)
    catalog = load_catalog(cfg)
    from pipelines.services.spark import require_lakehouse

    require_lakehouse(cfg, "run `journeylake ingest` and `journeylake decide` first")
    spark = get_spark(cfg, "journeylake-evaluate-policy")
    print(format_report(evaluate_policies(spark, cfg, Tables.from_config(cfg), catalog)))
    return 0
