"""The serving path: decisions appended to ``gold.served_actions``, read through the
``gold.next_best_actions`` view (newest row per customer x channel), compacted now and then.

Real Spark and Delta, on tables of their own (schema ``serving_<n>``), with rows written by
:func:`pipelines.nba.decide.write_decisions` itself.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from pipelines.nba.funnel import FunnelResult
from pipelines.tables import Tables

_schemas = itertools.count()
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def tables(spark) -> Tables:
    """Decision tables in a schema of their own, created by ``ensure_decision_tables``."""
    from pipelines.nba.decide import ensure_decision_tables

    schema = f"serving_{next(_schemas)}"
    spark.sql(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    names = Tables(lambda _layer, name: f"{schema}.{name}")
    ensure_decision_tables(spark, names)
    return names


def _decision(customer: str, channel: str, action: str, decided_at: datetime, decision: str) -> dict:
    return {
        "customer_number": customer,
        "channel": channel,
        "action_id": action,
        "priority": 1.0,
        "propensity": 0.1,
        "choice_probability": 1.0,
        "policy": "model",
        "rule_trace": ["eligible", "chosen"],
        "decision_id": decision,
        "trigger_types": ["salary"],
        "trigger_event_ids": [f"E-{decision}"],
        "decided_at": pd.Timestamp(decided_at),
        "expires_at": pd.Timestamp(decided_at + timedelta(hours=72)),
    }


def _write(
    spark,
    jl_config,
    tables: Tables,
    rows: list[dict],
    *,
    maybe_replay: bool = False,
    engine: str | None = None,
) -> dict[str, float]:
    from pipelines.nba.catalog import load_catalog
    from pipelines.nba.decide import DecisionAppends, write_decisions

    decisions = pd.DataFrame(rows)
    log = decisions[["decision_id", "customer_number", "action_id", "channel", "decided_at"]].assign(
        stage="chosen",
        rule=None,
        detail=None,
        priority=1.0,
        choice_probability=1.0,
        propensity=0.1,
        policy="model",
    )
    requests = decisions[["customer_number"]].assign(ingested_at=pd.Timestamp(T0), model_versions=None)
    return write_decisions(
        spark,
        load_catalog(jl_config),
        FunnelResult(decisions=decisions, log=log),
        requests,
        {},
        DecisionAppends(spark, tables, engine or jl_config.decisioning.serving.appends),
        maybe_replay=maybe_replay,
    )


def _current(spark, tables: Tables) -> dict[tuple[str, str], str]:
    rows = spark.table(tables.gold("next_best_actions")).select("customer_number", "channel", "decision_id")
    return {(r[0], r[1]): r[2] for r in rows.collect()}


def test_the_served_actions_commit_before_the_decision_log(spark, jl_config, tables):
    # a decision is visible once its served row commits: that append must not wait on the log's
    from delta.tables import DeltaTable

    from pipelines.nba.decide import DecisionAppends

    took = _write(spark, jl_config, tables, [_decision("C7", "email", "offer_savings", T0, "D-order")])
    served, log = tables.gold("served_actions"), tables.gold("decision_log")
    # the job's tables as ensure_decision_tables makes them are appended by delta-rs (the default)
    assert DecisionAppends(spark, tables, "delta-rs").describe() == (
        f"{served} appended by delta-rs; {log} appended by delta-rs"
    )
    assert list(took) == [served, log] and all(seconds > 0 for seconds in took.values())

    def last_commit(table: str):
        return DeltaTable.forName(spark, table).history(1).select("timestamp").first()[0]

    assert last_commit(served) < last_commit(log)  # one after the other, not at once


def test_the_view_serves_the_newest_decision_per_customer_and_channel(spark, jl_config, tables):
    _write(spark, jl_config, tables, [_decision("C1", "email", "offer_savings", T0, "D1")])
    _write(
        spark,
        jl_config,
        tables,
        [
            _decision("C1", "email", "offer_credit_card", T0 + timedelta(minutes=5), "D2"),
            _decision("C1", "app", "offer_savings", T0 + timedelta(minutes=5), "D2"),
        ],
    )
    # a decision about an earlier moment, processed later (a late trigger), replaces nothing
    _write(
        spark,
        jl_config,
        tables,
        [_decision("C1", "email", "offer_mortgage", T0 + timedelta(minutes=1), "D3")],
    )
    assert _current(spark, tables) == {("C1", "email"): "D2", ("C1", "app"): "D2"}
    assert spark.table(tables.gold("served_actions")).count() == 4
    log = spark.table(tables.gold("decision_log")).toPandas()
    assert sorted(log["decision_id"]) == ["D1", "D2", "D2", "D3"]


def test_compaction_drops_superseded_rows_and_leaves_the_view_as_it_was(spark, jl_config, tables):
    from delta.tables import DeltaTable

    from pipelines.nba.decide import SERVED_PROPERTIES, compact_served_actions

    for minute, decision in enumerate(("D1", "D2", "D3")):
        _write(
            spark,
            jl_config,
            tables,
            [_decision("C1", "sms", "offer_personal_loan", T0 + timedelta(minutes=minute), decision)],
        )
    _write(spark, jl_config, tables, [_decision("C2", "sms", "offer_personal_loan", T0, "D4")])
    before = _current(spark, tables)
    assert compact_served_actions(spark, tables) == 2
    assert spark.table(tables.gold("served_actions")).count() == 2
    assert _current(spark, tables) == before == {("C1", "sms"): "D3", ("C2", "sms"): "D4"}
    assert compact_served_actions(spark, tables) == 0  # nothing left to drop: no new commit
    history = DeltaTable.forName(spark, tables.gold("served_actions")).history().toPandas()
    assert list(history["operation"]).count("WRITE") == 5  # four appends and one rewrite
    # the rewrite keeps the table's properties (statistics columns, checkpoint interval)
    properties = {
        r["key"]: r["value"]
        for r in spark.sql(f"SHOW TBLPROPERTIES {tables.gold('served_actions')}").collect()
    }
    assert all(properties.get(k) == v for k, v in SERVED_PROPERTIES.items())


@pytest.mark.parametrize("engine", ["delta-rs", "spark"])  # spark: the Databricks target's appends
def test_a_replayed_batch_adds_only_the_decisions_a_table_lacks(spark, jl_config, tables, engine):
    first = [_decision("C1", "email", "offer_savings", T0, "D1")]
    _write(spark, jl_config, tables, first, engine=engine)
    # the first batch after a restart repeats D1 (written before the crash) and brings D2
    again = [*first, _decision("C2", "email", "offer_savings", T0, "D2")]
    _write(spark, jl_config, tables, again, maybe_replay=True, engine=engine)
    served = spark.table(tables.gold("served_actions")).toPandas()
    log = spark.table(tables.gold("decision_log")).toPandas()
    assert sorted(served["decision_id"]) == ["D1", "D2"]
    assert sorted(log["decision_id"]) == ["D1", "D2"]
    _write(spark, jl_config, tables, again, maybe_replay=True, engine=engine)  # all written: nothing
    assert spark.table(tables.gold("served_actions")).count() == 2
    assert spark.table(tables.gold("decision_log")).count() == 2


def test_a_serving_table_from_an_earlier_release_becomes_the_view_with_its_rows(spark):
    from pipelines.nba.decide import NEXT_BEST_ACTIONS_DDL, ensure_decision_tables

    schema = f"serving_{next(_schemas)}"
    spark.sql(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    names = Tables(lambda _layer, name: f"{schema}.{name}")
    old = names.gold("next_best_actions")
    spark.sql(f"CREATE TABLE {old} ({NEXT_BEST_ACTIONS_DDL}) USING delta")
    row = _decision("C9", "push", "offer_savings", T0, "D9")
    frame = pd.DataFrame(
        [
            {
                **row,
                "reason_codes": [],
                "model_versions": {},
                "triggered_at": row["decided_at"],
                "processed_at": row["decided_at"],
            }
        ]
    )
    from pipelines.lakehouse.delta_appends import ddl_columns

    columns = ddl_columns(NEXT_BEST_ACTIONS_DDL)
    spark.createDataFrame(frame[columns], schema=NEXT_BEST_ACTIONS_DDL).write.format("delta").mode(
        "append"
    ).saveAsTable(old)
    ensure_decision_tables(spark, names)
    ensure_decision_tables(spark, names)  # again: the move happens once
    kind = spark.sql(f"DESCRIBE TABLE EXTENDED {old}").where("col_name = 'Type'").first()[1]
    assert kind.upper() == "VIEW"
    assert spark.table(names.gold("served_actions")).count() == 1
    assert _current(spark, names) == {("C9", "push"): "D9"}


def test_the_decision_log_is_merged_between_batches_not_by_auto_compaction(spark, jl_config, tables):
    from delta.tables import DeltaTable

    from pipelines.nba.decide import DECISION_LOG_PROPERTIES, DecisionTableCompaction, compact_decision_log

    log = tables.gold("decision_log")
    assert DECISION_LOG_PROPERTIES["delta.autoOptimize.autoCompact"] == "false"
    assert {r["key"]: r["value"] for r in spark.sql(f"SHOW TBLPROPERTIES {log}").collect()}[
        "delta.autoOptimize.autoCompact"
    ] == "false"
    for n in range(4):
        _write(spark, jl_config, tables, [_decision(f"C{n}", "sms", "offer_personal_loan", T0, f"D{n}")])
    rows = sorted(spark.table(log).toPandas()["decision_id"])
    files = DeltaTable.forName(spark, log).detail().first()["numFiles"]
    assert files >= 4  # one append each, nothing merged them
    assert compact_decision_log(spark, tables) == files
    assert DeltaTable.forName(spark, log).detail().first()["numFiles"] == 1
    assert sorted(spark.table(log).toPandas()["decision_id"]) == rows == ["D0", "D1", "D2", "D3"]
    assert compact_decision_log(spark, tables) == 0  # one file left: nothing to merge

    assert DecisionTableCompaction(spark, tables, every_minutes=0).when_due() is None  # 0: never
    due = DecisionTableCompaction(spark, tables, every_minutes=1e-9)
    _write(spark, jl_config, tables, [_decision("C9", "sms", "offer_personal_loan", T0, "D9")])
    done = due.when_due()
    assert done is not None and done.log_files_merged == 2 and done.superseded_rows_dropped == 0
