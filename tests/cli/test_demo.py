"""`journeylake demo` starts every run from the same empty state."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_a_demo_rerun_drops_dbt_work_tables_with_the_layers(
    spark, jl_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A table of dbt's work schema left in the catalog over a deleted folder made the next
    demo's incremental model fail (DELTA_TABLE_NOT_FOUND): the reset drops that schema too."""
    from pipelines.cli.demo import _reset
    from pipelines.config import load_config
    from pipelines.services.dbt_runner import work_schema

    with monkeypatch.context() as env:  # every folder the reset removes is this test's own
        env.setenv("JOURNEYLAKE_HOME", str(tmp_path / "home"))
        cfg = load_config(
            "local",
            overrides={
                "catalog.schemas": {"bronze": "rerun_bronze", "silver": "rerun_silver", "gold": "rerun_gold"}
            },
        )
    assert cfg.paths.warehouse.is_relative_to(tmp_path)
    work = work_schema(cfg)
    assert work == "rerun_gold_work"
    spark.sql(f"CREATE SCHEMA IF NOT EXISTS {work}")
    spark.sql(f"CREATE TABLE {work}.int_journey_events (id INT) USING delta")
    spark.sql("CREATE SCHEMA IF NOT EXISTS rerun_gold")
    spark.sql("CREATE TABLE rerun_gold.customer_360 (id INT) USING delta")

    _reset(spark, cfg)

    schemas = {row[0] for row in spark.sql("SHOW SCHEMAS").collect()}
    assert work not in schemas
    assert not spark.catalog.tableExists("rerun_gold.customer_360")
    assert {"rerun_bronze", "rerun_silver", "rerun_gold"} <= schemas  # recreated, empty
    spark.sql("DROP SCHEMA IF EXISTS rerun_bronze CASCADE")
    spark.sql("DROP SCHEMA IF EXISTS rerun_silver CASCADE")
    spark.sql("DROP SCHEMA IF EXISTS rerun_gold CASCADE")
