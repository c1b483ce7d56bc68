"""``journeylake explain-decision DECISION_ID``: why a decision chose what it chose, from the log."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from pipelines.config import add_config_arguments, config_from_args

if TYPE_CHECKING:  # pragma: no cover - the command imports Spark only when it runs
    import pandas as pd
    from pyspark.sql import SparkSession

    from pipelines.tables import Tables


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("decision_id", help="a decision id from gold.next_best_actions or gold.decision_log")
    add_config_arguments(parser)


def explain(spark: SparkSession, tables: Tables, decision_id: str) -> str:
    """The decision's served actions with their trace, then every candidate's fate."""
    from pyspark.sql import functions as F

    from pipelines.errors import InputError

    log: pd.DataFrame = (
        spark.table(tables.gold("decision_log"))
        .where(F.col("decision_id") == decision_id)
        .orderBy("channel", F.col("priority").desc_nulls_last(), "action_id")
        .toPandas()
    )
    if log.empty:
        raise InputError(f"decision {decision_id!r} is not in {tables.gold('decision_log')}")
    first = log.iloc[0]
    lines = [
        f"decision {decision_id}: customer {first.customer_number}, decided at {first.decided_at}, "
        f"policy {first.policy}"
    ]
    served: pd.DataFrame = (
        spark.table(tables.gold("next_best_actions")).where(F.col("decision_id") == decision_id).toPandas()
    )
    for row in served.itertuples():
        lines.append(f"  served on {row.channel}: {row.action_id} (expires {row.expires_at})")
        lines.extend(f"    {step}" for step in row.rule_trace)
        lines.extend(f"    reason: {reason}" for reason in row.reason_codes)
    lines.append("  candidates:")
    for row in log.itertuples():
        priority = (
            "" if row.priority != row.priority or row.priority is None else f" priority {row.priority:,.2f}"
        )
        rule = f" {row.rule}" if isinstance(row.rule, str) else ""
        detail = f": {row.detail}" if isinstance(row.detail, str) else ""
        lines.append(f"    {row.action_id:<26}{row.channel:<8}{row.stage}{rule}{priority}{detail}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from pipelines.services.spark import get_spark, require_tables
    from pipelines.tables import Tables

    cfg = config_from_args(args)
    from pipelines.services.spark import require_lakehouse

    require_lakehouse(cfg, "run `journeylake ingest` and `journeylake decide` first")
    spark = get_spark(cfg, "journeylake-explain-decision")
    tables = Tables.from_config(cfg)
    require_tables(
        spark, [tables.gold("decision_log")], "no decisions on this home yet: run `journeylake decide` first"
    )
    print(explain(spark, tables, args.decision_id))
    return 0
