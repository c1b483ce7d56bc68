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


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_another_home_s_server_on_the_port_is_refused_by_name_and_left_running(tmp_path, monkeypatch) -> None:
    from pipelines.config import load_config
    from pipelines.errors import SetupError

    monkeypatch.setenv("JOURNEYLAKE_METASTORE_PORT", str(_free_port()))
    monkeypatch.setenv("JOURNEYLAKE_HOME", str(tmp_path / "a"))
    home_a = load_config("local")
    monkeypatch.setenv("JOURNEYLAKE_HOME", str(tmp_path / "b"))
    home_b = load_config("local")
    try:
        assert metastore.ensure_running(home_a).pid is not None
        with pytest.raises(
            SetupError, match=rf"metastore server this home did not start \(home {tmp_path / 'a'}\)"
        ):
            metastore.ensure_running(home_b)
        assert not metastore.stop(home_b)  # home b cannot stop what it did not start ...
        assert metastore.status(home_a).pid is not None  # ... and home a's server still runs
    finally:
        metastore.stop(home_a)


def test_each_home_gets_a_port_of_its_own_unless_one_is_configured(tmp_path, monkeypatch) -> None:
    from pipelines.config import METASTORE_BASE_PORT, load_config

    monkeypatch.delenv("JOURNEYLAKE_METASTORE_PORT", raising=False)
    ports = set()
    for name in ("a", "b", "c"):
        monkeypatch.setenv("JOURNEYLAKE_HOME", str(tmp_path / name))
        port = load_config("local").catalog.metastore.port
        assert METASTORE_BASE_PORT <= port < METASTORE_BASE_PORT + 1000
        assert load_config("local").catalog.metastore.port == port  # stable across loads
        ports.add(port)
    assert len(ports) == 3
    assert load_config("local", overrides={"catalog.metastore.port": 16001}).catalog.metastore.port == 16001
