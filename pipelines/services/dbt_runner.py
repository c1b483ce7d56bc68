"""The dbt project run in this process, on the pipeline's own catalog.

Locally, dbt-spark's ``session`` method runs dbt inside this process, on the Spark session that
:func:`pipelines.services.spark.get_spark` builds from ``conf/`` (Delta, the shared metastore, the same
warehouse), so the models read the streaming pipeline's silver tables while it runs. The
schema names come from ``conf/`` as dbt vars; dbt's own files (target/, logs) live under the
project home. On Databricks (metastore kind ``unity``) dbt connects over HTTP instead.
"""

from __future__ import annotations

import json
import os
from typing import Any

from pipelines.config import PROJECT_ROOT, Config
from pipelines.errors import JourneylakeError

DBT_DIR = PROJECT_ROOT / "dbt"


def work_schema(cfg: Config) -> str:
    """The schema of dbt's staging views and intermediate tables: gold's, suffixed ``_work``."""
    from pipelines.tables import schema_name

    return f"{schema_name(cfg, 'gold')}_work"


def dbt_vars(cfg: Config) -> dict[str, Any]:
    """Schema names and segment definitions from conf/, as the dbt vars the project reads."""
    from pipelines.tables import schema_name

    return {
        "silver_schema": schema_name(cfg, "silver"),
        "gold_schema": schema_name(cfg, "gold"),
        "work_schema": work_schema(cfg),
        "unrecognised_intent": cfg.ml.text.unrecognised_label,
        "segments": [
            {"name": name, "where": segment.where, "channel": segment.channel}
            for name, segment in cfg.segments.items()
        ],
    }


def run_dbt(cfg: Config, arguments: list[str], extra_vars: dict[str, Any] | None = None) -> Any:
    """Run ``dbt <arguments>`` against the configured catalog; raise naming what failed.

    Returns dbt's result object (``.result`` holds per-node results for build/run/test).
    """
    import logging

    from dbt.cli.main import dbtRunner

    # dbt reports a failing query itself; pyspark's query-context logger would add a JVM stack trace
    logging.getLogger("SQLQueryContextLogger").setLevel(logging.CRITICAL)
    local = cfg.catalog.metastore.kind != "unity"
    if local:
        from pipelines.services.spark import get_spark, require_lakehouse

        if arguments and arguments[0] in ("build", "run", "test"):
            require_lakehouse(cfg, "run `journeylake ingest` first (the dbt models are built from silver)")

        spark = get_spark(cfg, "journeylake-dbt")  # dbt-spark's session method reuses it
        if arguments and arguments[0] in ("build", "run", "test"):
            from pipelines.services.spark import require_tables
            from pipelines.tables import Tables

            require_tables(
                spark,
                [Tables.from_config(cfg).silver("customers")],
                "run `journeylake ingest` first (the dbt models are built from silver)",
            )
        spark.sql(f"CREATE SCHEMA IF NOT EXISTS {work_schema(cfg)}")
    os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")  # no calls home from a bank
    os.environ["JOURNEYLAKE_DBT_OUTPUT"] = "local" if local else "databricks"
    os.environ["JOURNEYLAKE_DBT_SCHEMA"] = dbt_vars(cfg)["gold_schema"]
    dbt_home = cfg.paths.home / "dbt"
    variables = {**dbt_vars(cfg), **(extra_vars or {})}
    command = [
        *arguments,
        "--project-dir",
        str(DBT_DIR),
        "--profiles-dir",
        str(DBT_DIR),
        "--target-path",
        str(dbt_home / "target"),
        "--log-path",
        str(dbt_home / "logs"),
        "--vars",
        json.dumps(variables),
    ]
    result = dbtRunner().invoke(command)
    if result.exception is not None:
        raise JourneylakeError(f"dbt {' '.join(arguments)} could not run: {result.exception}")
    if not result.success:
        failed = _failed_nodes(result)
        detail = f": {'; '.join(failed[:5])}" if failed else ""
        raise JourneylakeError(
            f"dbt {' '.join(arguments)} failed{detail} (full log: {dbt_home / 'logs' / 'dbt.log'})"
        )
    return result


def _failed_nodes(result: Any) -> list[str]:
    """'<node>: <message>' for each model or test that errored or failed."""
    nodes = getattr(result.result, "results", None) or []
    failed = []
    for node_result in nodes:
        status = str(getattr(node_result, "status", "")).lower()
        if status in ("error", "fail", "runtimeerr"):
            name = getattr(getattr(node_result, "node", None), "name", "?")
            message = (getattr(node_result, "message", "") or "").strip().splitlines()
            failed.append(f"{name}: {message[0] if message else status}")
    return failed
