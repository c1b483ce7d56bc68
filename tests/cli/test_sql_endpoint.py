"""The SQL endpoint (`journeylake sql`) through a real JDBC/Thrift client: logins, every table,
and what each role may reach (an analyst never reaches bronze's raw PII, by any route)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def endpoint(jl_config, built) -> Iterator[int]:
    """The endpoint on the test bank's catalog (ingested and built by dbt); its port."""
    from pipelines.services import sql_endpoint

    port = _free_port()
    process = sql_endpoint.start(jl_config, port)
    try:
        yield port
    finally:
        sql_endpoint.stop(process)


@pytest.fixture(scope="module")
def login(jl_config) -> tuple[str, str]:
    """The endpoint's first user and password (made in the test home on its first start)."""
    from pipelines.services.sql_users import default_credentials, ensure_a_user

    ensure_a_user(jl_config)  # the endpoint's start adds them too, when nobody else is there
    return default_credentials(jl_config)


@pytest.fixture(scope="module")
def engineer(jl_config) -> tuple[str, str]:
    """A user with the engineer role (bronze too), added as a bank's administrator would."""
    from pipelines.services.sql_users import set_user

    login = ("data_engineer", "engineer-password-for-tests")
    set_user(jl_config, *login, role="engineer")
    return login


def _query(port: int, sql: str, login: tuple[str, str]) -> list[tuple]:
    """One query in a session of its own, as an analyst's tool opens and closes them."""
    from pyhive import hive

    user, password = login
    connection = hive.connect(host="127.0.0.1", port=port, username=user, password=password, auth="CUSTOM")
    try:
        cursor = connection.cursor()
        cursor.execute(sql)
        return cursor.fetchall()
    finally:
        connection.close()


def test_select_limit_works_on_every_table_in_sessions_opened_one_after_another(
    endpoint: int, engineer: tuple[str, str], spark, jl_config
) -> None:
    """Each table's first rows in a new session: a session that ends must not take with it the
    classes the next query needs (Delta's LIMIT path failed with NoClassDefFoundError once a
    client had disconnected, while count(*) worked)."""
    from pipelines.tables import LAYERS, schema_name

    tables = [
        f"{schema_name(jl_config, layer)}.{row.tableName}"
        for layer in LAYERS
        for row in spark.sql(f"SHOW TABLES IN {schema_name(jl_config, layer)}").collect()
        if not row.isTemporary
    ]
    assert len(tables) >= 20, tables
    assert _query(endpoint, "SELECT count(*) FROM bronze.customers", engineer)[0][0] > 0
    failures = {}
    for table in tables:
        try:
            _query(endpoint, f"SELECT * FROM {table} LIMIT 1", engineer)
        except Exception as exc:  # noqa: BLE001 - every table's outcome is reported at once
            failures[table] = str(exc)[:300]
    assert not failures, failures


def test_the_start_messages_example_returns_customer_360_rows(endpoint: int, login: tuple[str, str]) -> None:
    """The query `journeylake sql` prints for beeline users, through the same protocol."""
    from pipelines.services import sql_endpoint

    example = sql_endpoint.connection_help(endpoint, *login).split('-e "', 1)[1].split('"', 1)[0]
    assert example == sql_endpoint.EXAMPLE_QUERY
    rows = _query(endpoint, example, login)
    assert 0 < len(rows) <= 5


def test_a_login_needs_a_known_user_and_the_right_password(endpoint: int, login: tuple[str, str]) -> None:
    user, password = login
    for case, wrong in {
        "wrong password": (user, password + "x"),
        "unknown user": ("mallory", password),
        "no password": (user, ""),
    }.items():
        with pytest.raises(Exception) as refused:  # noqa: PT011 - the client raises the transport's error
            _query(endpoint, "SELECT 1", wrong)
        assert "Error validating the login" in str(refused.value), case
    assert _query(endpoint, "SELECT 1", login) == [(1,)]


def test_users_added_and_removed_with_sql_user_count_from_the_next_login(
    endpoint: int, jl_config, tmp_path
) -> None:
    def sql_user(*args: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "JOURNEYLAKE_HOME": str(jl_config.paths.home)}
        return subprocess.run(
            [sys.executable, "-m", "pipelines.cli", "sql-user", *args],
            input=password,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    added = sql_user("add", "marketing_ops", password="a-long-enough-password\n")
    assert added.returncode == 0, added.stderr
    assert "marketing_ops" in sql_user("list").stdout
    assert _query(endpoint, "SELECT 2", ("marketing_ops", "a-long-enough-password")) == [(2,)]
    short = sql_user("add", "intern", password="short\n")
    assert short.returncode == 1 and "12 or more" in short.stderr and "Traceback" not in short.stderr
    assert sql_user("remove", "marketing_ops").returncode == 0
    with pytest.raises(Exception):  # noqa: B017, PT011 - removed: refused at the next login, no restart
        _query(endpoint, "SELECT 2", ("marketing_ops", "a-long-enough-password"))
    users_file = jl_config.paths.home / jl_config.sql_endpoint.users_file
    assert (users_file.stat().st_mode & 0o777) == 0o600
    assert "a-long-enough-password" not in users_file.read_text()


def _refused(port: int, sql: str, login: tuple[str, str]) -> str:
    """The message a refused statement gets (the test fails if the statement runs)."""
    try:
        rows = _query(port, sql, login)
    except Exception as exc:  # noqa: BLE001 - the client raises the server's error as its own type
        return str(exc)
    raise AssertionError(f"{sql!r} ran for {login[0]} and returned {rows[:2]}")


def test_an_analyst_reads_silver_and_gold_and_reaches_bronze_by_no_route(
    endpoint: int, login: tuple[str, str], spark, jl_config
) -> None:
    warehouse = jl_config.paths.home / jl_config.paths.warehouse
    bronze = warehouse / "bronze.db" / "customers"
    data_file = next(p for p in bronze.rglob("*.parquet") if "_delta_log" not in p.parts)
    log_file = next((bronze / "_delta_log").glob("*.json"))
    allowed = {
        "SELECT count(*) FROM gold.customer_360": lambda rows: rows[0][0] > 0,
        "SELECT count(*) FROM silver.customers": lambda rows: rows[0][0] > 0,
        "SHOW TABLES IN gold": lambda rows: any("customer_360" in map(str, r) for r in rows),
        "SHOW DATABASES": lambda rows: len(rows) >= 3,
        "DESCRIBE gold.customer_360": lambda rows: len(rows) > 5,
        "EXPLAIN SELECT * FROM gold.customer_360": lambda rows: len(rows) == 1,
        "WITH c AS (SELECT customer_number FROM gold.customer_360) SELECT count(*) FROM c": lambda r: (
            r[0][0] > 0
        ),
        "SET spark.sql.session.timeZone=UTC": lambda rows: True,
    }
    for sql, ok in allowed.items():
        rows = _query(endpoint, sql, login)
        assert ok(rows), (sql, rows[:3])
    spark.sql("CREATE OR REPLACE VIEW silver.pii_peek AS SELECT * FROM bronze.customers")
    try:
        routes = [
            "SELECT * FROM bronze.customers LIMIT 1",
            "SELECT * FROM spark_catalog.bronze.customers LIMIT 1",
            "SELECT * FROM silver.pii_peek LIMIT 1",  # a view another user made over bronze
            "SELECT count(*) FROM gold.customer_360 "
            "WHERE customer_number IN (SELECT raw FROM bronze.customers)",
            "WITH b AS (SELECT * FROM bronze.customers) SELECT * FROM b LIMIT 1",
            f"SELECT * FROM delta.`{bronze}` LIMIT 1",
            f"SELECT * FROM parquet.`{data_file}` LIMIT 1",
            f"SELECT * FROM json.`{log_file}` LIMIT 1",  # file statistics hold min/max values
            "USE bronze",
            "SHOW TABLES IN bronze",
            "SHOW COLUMNS IN bronze.customers",
            "DESCRIBE bronze.customers",
            "DESCRIBE HISTORY bronze.customers",
            f"DESCRIBE HISTORY delta.`{bronze}`",
            "SHOW TBLPROPERTIES bronze.customers",
            "EXPLAIN SELECT * FROM bronze.customers",
            "CREATE TEMPORARY VIEW mine AS SELECT * FROM gold.customer_360",
            "CREATE TABLE gold.copied AS SELECT * FROM gold.customer_360",
            "CACHE TABLE gold.customer_360",
            "SET spark.sql.runSQLOnFiles=true",
            "SELECT reflect('java.lang.System', 'getProperty', 'user.home')",
        ]
        messages = {sql: _refused(endpoint, sql, login) for sql in routes}
    finally:
        spark.sql("DROP VIEW IF EXISTS silver.pii_peek")
    unclear = {sql: m[:300] for sql, m in messages.items() if "access denied" not in m}
    assert not unclear, unclear
    assert "bronze" in messages["SELECT * FROM silver.pii_peek LIMIT 1"]
    assert "the analyst role reads" in messages["SELECT * FROM bronze.customers LIMIT 1"]
    assert spark.catalog.tableExists("gold.copied") is False


def test_an_engineer_reads_bronze_and_a_role_change_counts_from_the_next_statement(
    endpoint: int, engineer: tuple[str, str], jl_config
) -> None:
    from pipelines.services.sql_users import set_role

    assert _query(endpoint, "SELECT count(*) FROM bronze.customers", engineer)[0][0] > 0
    set_role(jl_config, engineer[0], "analyst")
    try:
        assert "access denied" in _refused(endpoint, "SELECT count(*) FROM bronze.customers", engineer)
    finally:
        set_role(jl_config, engineer[0], "engineer")
    assert "access denied" in _refused(endpoint, "DROP TABLE gold.customer_360", engineer)  # read-only too
