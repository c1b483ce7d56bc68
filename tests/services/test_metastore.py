"""The shared catalog: separate OS processes see the same tables at the same time."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from pipelines.services import metastore

pytestmark = pytest.mark.slow


def test_second_process_sees_table_while_first_session_is_open(spark, jl_config) -> None:
    spark.sql("CREATE TABLE IF NOT EXISTS bronze.shared_probe (id INT, note STRING) USING delta")
    spark.sql("INSERT INTO bronze.shared_probe VALUES (1, 'from the test session')")

    script = textwrap.dedent(
        """
        from pipelines.config import load_config
        from pipelines.services.spark import get_spark
        spark = get_spark(load_config(overrides={"spark.driver_memory": "768m"}), "second-process")
        print("ROWS", spark.table("bronze.shared_probe").count())
        spark.sql("CREATE TABLE IF NOT EXISTS silver.from_second (id INT) USING delta")
        spark.sql("INSERT INTO silver.from_second VALUES (42)")
        spark.stop()
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ROWS 1" in result.stdout

    # ... and the test session, still open, sees what the other process created
    assert spark.table("silver.from_second").collect()[0].id == 42


def test_metastore_status_reports_the_running_server(spark, jl_config) -> None:
    state = metastore.status(jl_config)
    assert state.running
    assert state.pid is not None  # started from this (test) home
    assert state.port == jl_config.catalog.metastore.port
    assert str(jl_config.paths.metastore) in state.describe()


def test_ensure_running_reuses_a_running_server(spark, jl_config) -> None:
    before = metastore.status(jl_config).pid
    assert metastore.ensure_running(jl_config).pid == before


def test_cli_status_names_the_port(spark, jl_config) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "metastore", "status"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert f"running on 127.0.0.1:{jl_config.catalog.metastore.port}" in result.stdout
