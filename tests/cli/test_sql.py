"""`journeylake sql -e`: one query from another process against the shared catalog."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.errors import InputError

pytestmark = pytest.mark.slow


def _sql(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "sql", *args], capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def offers_table(spark) -> str:
    spark.sql(
        "CREATE OR REPLACE TABLE gold.sql_cmd_offers (offer STRING, takers INT, rate DOUBLE) USING delta"
    )
    spark.sql("INSERT INTO gold.sql_cmd_offers VALUES ('savings', 12, 0.25), ('mortgage', 3, NULL)")
    return "gold.sql_cmd_offers"


def test_query_prints_aligned_table_and_csv(offers_table: str) -> None:
    # one subprocess for both formats would need two queries; the table form is checked here
    result = _sql("-e", f"SELECT offer, takers, rate FROM {offers_table} ORDER BY offer")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["offer", "takers", "rate"]
    assert lines[2].split() == ["mortgage", "3", "NULL"]
    assert lines[3].split() == ["savings", "12", "0.25"]
    assert lines[-1] == "(2 rows)"


def test_csv_format_has_header_and_rows(offers_table: str) -> None:
    result = _sql("--format", "csv", "-e", f"SELECT offer, takers, rate FROM {offers_table} ORDER BY offer")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows == [["offer", "takers", "rate"], ["mortgage", "3", ""], ["savings", "12", "0.25"]]


def test_bad_query_gives_one_line_error_without_traceback(offers_table: str) -> None:
    result = _sql("-e", f"SELECT no_such_column FROM {offers_table}")
    assert result.returncode == 1
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("journeylake sql: error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert "no_such_column" in errors[0]
    assert "Traceback" not in result.stderr


def test_the_sql_endpoint_runs_sparks_thrift_server_on_loopback_with_the_shared_catalog(jl_config) -> None:
    from pipelines.services import sql_endpoint

    command = sql_endpoint.command(jl_config, 12345)
    assert sql_endpoint.THRIFT_SERVER_CLASS in command
    assert Path(command[0]).is_file()  # spark-submit from the installed pyspark
    assert "hive.server2.thrift.port=12345" in command
    assert f"hive.server2.thrift.bind.host={sql_endpoint.HOST}" in command
    conf = [command[i + 1] for i, arg in enumerate(command) if arg == "--conf"]
    # Delta's extension, then the role check that analyzes each statement as its session's user
    assert (
        f"spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension,{sql_endpoint.ACCESS_EXTENSION}"
        in conf
    )
    assert "hive.server2.enable.doAs=true" in command
    assert any(c.startswith("spark.hadoop.javax.jdo.option.ConnectionURL=jdbc:derby://") for c in conf), conf
    # logins are checked by our class; every jar is on the JVM's own class path (none in a loader
    # that a closing session can close)
    assert "hive.server2.authentication=CUSTOM" in command
    assert f"hive.server2.custom.authentication.class={sql_endpoint.AUTH_CLASS}" in command
    assert not any(c.startswith("spark.jars=") for c in conf), conf
    class_path = next(c for c in conf if c.startswith("spark.driver.extraClassPath="))
    assert "delta-spark" in class_path and "journeylake-sql-auth" in class_path


def test_roles_reach_the_endpoint_as_schemas_and_a_users_line_without_a_role_gets_the_default(
    jl_config, tmp_path
) -> None:
    from pipelines.services import sql_endpoint, sql_users

    cfg = jl_config.model_copy(update={"paths": jl_config.paths.model_copy(update={"home": tmp_path})})
    written = sql_endpoint.write_roles(cfg).read_text()
    assert "role.analyst.schemas=default,silver,gold\n" in written
    assert "role.analyst.path_queries=false\n" in written
    assert "role.engineer.schemas=default,bronze,silver,gold\n" in written
    assert sql_users.set_user(cfg, "ops", "a-long-enough-password", role="engineer")
    key = sql_users.read_users(cfg)["ops"].key
    users = sql_users.users_file(cfg)
    users.write_text(users.read_text() + f"old_style {key}\n")  # as written before roles existed
    roles = {name: u.role for name, u in sql_users.read_users(cfg).items()}
    assert roles == {"ops": "engineer", "old_style": cfg.sql_endpoint.default_role}
    with pytest.raises(InputError, match="role 'auditor'"):
        sql_users.set_role(cfg, "ops", "auditor")
