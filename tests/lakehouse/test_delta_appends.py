"""Small appends through delta-rs (:mod:`pipelines.lakehouse.delta_appends`), on tables Spark created.

Real Spark, real Delta and real delta-rs, on tables of their own (schema ``appends_<n>``): what
delta-rs appends must read back in Spark exactly as Spark's own append of the same rows, keep
the table's statistics columns, survive Spark rewriting the table between appends, and tables
delta-rs cannot write must still be appended to (by Spark).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.errors import InputError
from pipelines.lakehouse.delta_appends import DeltaAppender, local_path

_schemas = itertools.count()
DDL = (
    "decision_id STRING, score DOUBLE, reasons ARRAY<STRING>, versions MAP<STRING, STRING>, "
    "decided_at TIMESTAMP"
)
STATS = "'delta.dataSkippingStatsColumns' = 'decision_id,decided_at'"


@pytest.fixture
def schema(spark) -> str:
    name = f"appends_{next(_schemas)}"
    spark.sql(f"CREATE SCHEMA IF NOT EXISTS {name}")
    return name


def _table(spark, schema: str, name: str, properties: str = STATS) -> str:
    table = f"{schema}.{name}"
    spark.sql(f"CREATE TABLE {table} ({DDL}) USING delta TBLPROPERTIES ({properties})")
    return table


def _rows(first: int, count: int) -> pd.DataFrame:
    """Rows with what conversions trip on: NaN and None, empty and null lists, a dict map."""
    ids = [f"D{n:04d}" for n in range(first, first + count)]
    return pd.DataFrame(
        {
            "decision_id": ids,
            "score": [np.nan if n % 3 == 0 else n / 10 for n in range(count)],
            "reasons": [None if n % 4 == 0 else [f"r{n}", "r0"][: n % 3] for n in range(count)],
            "versions": [None if n % 5 == 0 else {"propensity_card": str(n)} for n in range(count)],
            "decided_at": [
                pd.Timestamp("2026-03-01 09:00:00.123456", tz="UTC") + pd.Timedelta(minutes=n)
                for n in range(count)
            ],
            "ignored_extra_column": range(count),
        }
    )


def _read(spark, table: str) -> list[tuple]:
    rows = spark.table(table).orderBy("decision_id").collect()
    return [
        (r.decision_id, r.score, r.reasons, dict(r.versions) if r.versions else r.versions, r.decided_at)
        for r in rows
    ]


def _log_actions(spark, table: str) -> list[dict]:
    location = local_path(spark.sql(f"DESCRIBE DETAIL {table}").first()["location"])
    commits = sorted(Path(location, "_delta_log").glob("*.json"))
    return [json.loads(line) for line in commits[-1].read_text().splitlines()]


def test_delta_rs_appends_read_back_in_spark_as_spark_appends_do(spark, schema):
    by_spark = DeltaAppender(spark, _table(spark, schema, "by_spark"), DDL, engine="spark")
    by_delta_rs = DeltaAppender(spark, _table(spark, schema, "by_delta_rs"), DDL)
    assert (by_spark.engine, by_spark.why_spark) == ("spark", "configured")
    assert (by_delta_rs.engine, by_delta_rs.why_spark) == ("delta-rs", None)
    naive = _rows(100, 3).assign(decided_at=lambda d: d["decided_at"].dt.tz_localize(None))
    for appender in (by_spark, by_delta_rs):
        appender.append(_rows(0, 12))
        appender.append(naive)  # naive timestamps are UTC, as in the sessions' time zone
    expected = _read(spark, by_spark.table)
    assert len(expected) == 15
    assert _read(spark, by_delta_rs.table) == expected
    (commit,) = [a["commitInfo"] for a in _log_actions(spark, by_delta_rs.table) if "commitInfo" in a]
    assert "delta-rs" in commit.get("engineInfo", ""), commit  # really written by delta-rs


def test_nanoseconds_are_cut_to_the_microseconds_spark_keeps(spark, schema):
    appender = DeltaAppender(spark, _table(spark, schema, "nanos"), DDL)
    reference = DeltaAppender(spark, _table(spark, schema, "micros"), DDL, engine="spark")
    appender.append(_rows(0, 1).assign(decided_at=pd.Timestamp("2026-03-01 09:00:00.123456789", tz="UTC")))
    reference.append(_rows(0, 1).assign(decided_at=pd.Timestamp("2026-03-01 09:00:00.123456", tz="UTC")))
    assert _read(spark, appender.table) == _read(spark, reference.table)


def test_delta_rs_keeps_the_statistics_columns_the_table_names(spark, schema):
    appender = DeltaAppender(spark, _table(spark, schema, "stats"), DDL)
    appender.append(_rows(0, 5))
    (add,) = [a["add"] for a in _log_actions(spark, appender.table) if "add" in a]
    stats = json.loads(add["stats"])
    assert stats["numRecords"] == 5
    assert set(stats["minValues"]) == {"decision_id", "decided_at"}
    assert (stats["minValues"]["decision_id"], stats["maxValues"]["decision_id"]) == ("D0000", "D0004")
    # and Spark skips the file by them
    files = spark.table(appender.table).where("decision_id = 'D9999'").inputFiles()
    assert files == []


def test_an_appender_keeps_appending_after_spark_rewrites_the_table(spark, schema):
    appender = DeltaAppender(spark, _table(spark, schema, "rewritten"), DDL)
    appender.append(_rows(0, 4))
    kept = spark.table(appender.table).where("decision_id >= 'D0002'").localCheckpoint(eager=True)
    kept.write.insertInto(appender.table, overwrite=True)  # as the decision job's compaction does
    appender.append(_rows(10, 3))
    ids = [r[0] for r in _read(spark, appender.table)]
    assert ids == ["D0002", "D0003", "D0010", "D0011", "D0012"]
    assert appender.engine == "delta-rs"  # a rewrite changes no feature or schema: no step aside


def test_an_append_that_meets_a_concurrent_commit_is_written_again(spark, schema):
    """Another writer commits between delta-rs's refresh and its commit (here Spark, rewriting
    the table, as an overwrite or DELETE elsewhere would): the append conflicts, nothing of it is
    committed, and it is written again on the table as it now is."""
    appender = DeltaAppender(spark, _table(spark, schema, "raced"), DDL)
    appender.append(_rows(0, 4))
    refresh = appender._delta.update_incremental
    refreshes = []

    def refresh_then_spark_commits() -> None:
        refresh()
        refreshes.append(1)
        if len(refreshes) == 1:
            kept = spark.table(appender.table).where("decision_id >= 'D0002'").localCheckpoint(eager=True)
            kept.write.insertInto(appender.table, overwrite=True)

    appender._delta.update_incremental = refresh_then_spark_commits
    appender.append(_rows(10, 3))
    assert len(refreshes) == 2  # the first attempt conflicted
    assert appender.engine == "delta-rs"
    assert [r[0] for r in _read(spark, appender.table)] == ["D0002", "D0003", "D0010", "D0011", "D0012"]


def test_a_commit_reported_as_failed_but_written_is_not_written_again(spark, schema, monkeypatch):
    """The appender's commits carry its transaction id and sequence number, so an attempt that
    raised after its commit went through (an I/O error after the log entry was written) is found
    in the table and not repeated."""
    import deltalake
    from deltalake.exceptions import CommitFailedError

    appender = DeltaAppender(spark, _table(spark, schema, "reported_failed"), DDL)
    write = deltalake.write_deltalake
    calls = []

    def write_then_report_a_failure(*args, **kwargs) -> None:
        calls.append(1)
        write(*args, **kwargs)
        if len(calls) == 1:
            raise CommitFailedError("the log entry was written, then the connection dropped")

    monkeypatch.setattr(deltalake, "write_deltalake", write_then_report_a_failure)
    appender.append(_rows(0, 3))
    appender.append(_rows(3, 2))
    assert len(calls) == 2  # the first append's one attempt, then the second append's
    assert [r[0] for r in _read(spark, appender.table)] == [f"D{n:04d}" for n in range(5)]


@pytest.mark.parametrize(
    "name, properties",
    [
        ("column_mapping", "'delta.columnMapping.mode' = 'name'"),
        ("deletion_vectors", "'delta.enableDeletionVectors' = 'true'"),
    ],
)
def test_tables_with_checked_writer_features_are_appended_by_delta_rs(spark, schema, name, properties):
    appender = DeltaAppender(spark, _table(spark, schema, name, f"{STATS}, {properties}"), DDL)
    reference = DeltaAppender(spark, _table(spark, schema, f"{name}_by_spark"), DDL, engine="spark")
    assert appender.engine == "delta-rs", appender.why_spark
    for each in (appender, reference):
        each.append(_rows(0, 6))
    assert _read(spark, appender.table) == _read(spark, reference.table)


@pytest.mark.parametrize(
    "name, properties, why",
    [
        ("row_tracking", "'delta.enableRowTracking' = 'true'", "writer features domainMetadata, rowTracking"),
        ("change_feed", "'delta.enableChangeDataFeed' = 'true'", "writer features changeDataFeed"),
        (
            "legacy_writer_4",
            "'delta.minReaderVersion' = '1', 'delta.minWriterVersion' = '4'",
            "writer version 4",
        ),
    ],
)
def test_tables_delta_rs_cannot_write_are_appended_by_spark(spark, schema, name, properties, why):
    table = _table(spark, schema, name, f"{STATS}, {properties}")
    appender = DeltaAppender(spark, table, DDL)
    assert appender.engine == "spark"
    assert why in (appender.why_spark or "")
    appender.append(_rows(0, 3))
    assert [r[0] for r in _read(spark, table)] == ["D0000", "D0001", "D0002"]


def test_a_table_that_gains_a_feature_later_is_appended_by_spark_from_then_on(spark, schema):
    appender = DeltaAppender(spark, _table(spark, schema, "altered"), DDL)
    appender.append(_rows(0, 2))
    spark.sql(f"ALTER TABLE {appender.table} SET TBLPROPERTIES ('delta.enableRowTracking' = 'true')")
    appender.append(_rows(2, 2))
    assert appender.engine == "spark" and "rowTracking" in (appender.why_spark or "")
    assert [r[0] for r in _read(spark, appender.table)] == ["D0000", "D0001", "D0002", "D0003"]


def test_a_table_with_other_columns_is_appended_by_spark_by_name(spark, schema):
    table = f"{schema}.older"
    spark.sql(f"CREATE TABLE {table} (decided_at TIMESTAMP, {DDL.rsplit(', decided_at', 1)[0]}) USING delta")
    appender = DeltaAppender(spark, table, DDL)
    assert appender.engine == "spark" and "schema" in (appender.why_spark or "")
    appender.append(_rows(0, 2))
    assert _read(spark, table) == [row for row in _read_expected(spark, schema) if row[0] < "D0002"]


def _read_expected(spark, schema: str) -> list[tuple]:
    reference = DeltaAppender(spark, _table(spark, schema, "reference"), DDL, engine="spark")
    reference.append(_rows(0, 2))
    return _read(spark, reference.table)


def test_an_unknown_engine_is_named():
    with pytest.raises(InputError, match=r"unknown append engine 'rust' for gold\.x"):
        DeltaAppender(None, "gold.x", DDL, engine="rust")  # type: ignore[arg-type]


def test_only_local_locations_are_written_by_delta_rs():
    assert local_path("file:/data/warehouse/gold.db/t") == "/data/warehouse/gold.db/t"
    assert local_path("file:///data/warehouse/gold.db/t") == "/data/warehouse/gold.db/t"
    assert local_path("dbfs:/user/hive/warehouse/gold.db/t") is None
    assert local_path("/data/warehouse/gold.db/t") == "/data/warehouse/gold.db/t"
    assert local_path("s3a://bank-lake/gold/t") is None
    assert local_path("abfss://lake@bank.dfs.core.windows.net/gold/t") is None
