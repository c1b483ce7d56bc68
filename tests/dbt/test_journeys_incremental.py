"""Incremental journey models equal a full rebuild after late data.

On the shared ingested + dbt-built test bank (landed through ``land_known``, so the exact
reconciliations of test_ingest.py hold in any order): late touchpoints land for
one customer (before all their history, inside a session and just after one), are ingested, and
the journey models run incrementally; a --full-refresh of the same models must give the same rows.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

pytestmark = pytest.mark.slow

MODELS = "int_journey_events int_journey_events_sessionized"


def _rows(spark, table: str) -> set[tuple]:
    return {tuple(row) for row in spark.table(table).collect()}


def _last_operation(spark, table: str):
    return spark.sql(f"DESCRIBE HISTORY {table} LIMIT 1").first()


def test_incremental_run_after_late_events_equals_a_full_rebuild(
    spark, jl_config, built, ingested, land_known
):
    from pipelines.lakehouse import ingest
    from pipelines.services.dbt_runner import dbt_vars, run_dbt

    work = dbt_vars(jl_config)["work_schema"]
    events_table, sessions_table = f"{work}.int_journey_events", f"{work}.int_journey_events_sessionized"
    sessions = spark.table(sessions_table)
    customer_numbers = (
        spark.table(ingested.gold("identity_map"))
        .where("id_type = 'customer_number'")
        .selectExpr("unified_customer_id", "id_value AS customer_number")
    )
    chosen = (
        sessions.groupBy("unified_customer_id")
        .agg({"session_number": "max"})
        .where("`max(session_number)` >= 2")
        .join(customer_numbers, "unified_customer_id")  # visits are attributed by customer number
        .orderBy("unified_customer_id")
        .first()
    )
    assert chosen, "the test bank should have a core-banking customer with two sessions"
    unified, customer = chosen["unified_customer_id"], chosen["customer_number"]
    first = (
        sessions.where(f"unified_customer_id = '{unified}' AND session_number = 1")
        .agg({"event_time": "min"})
        .first()[0]
    )
    first_end = (
        sessions.where(f"unified_customer_id = '{unified}' AND session_number = 1")
        .agg({"event_time": "max"})
        .first()[0]
    )
    # before all their history, inside their first session, and just after it
    late_times = [
        first - timedelta(hours=3),
        first + timedelta(seconds=30),
        first_end + timedelta(minutes=20),
    ]
    records = [
        {
            "event_id": f"LATE-JOURNEY-{i}",
            "event_time": t.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "schema_version": 1,
            "customer_number": customer,
            "channel": "branch",
            "location_id": "BR-TEST",
            "visit_type": "balance_enquiry",
            "amount": None,
        }
        for i, t in enumerate(late_times)
    ]
    land_known("visits", "9999-late-journey-test.jsonl", records)
    ingest.run(spark, jl_config, until_idle=True, tables=ingested, progress=lambda _m: None)
    before = sessions.count()

    # the whole test bank arrived minutes ago, inside any lookback window: without one, the run
    # takes exactly what arrived since the build (the late visits)
    run_dbt(jl_config, ["run", "--select", MODELS], extra_vars={"incremental_lookback_hours": 0})
    merge = _last_operation(spark, events_table)
    assert merge["operation"] == "MERGE"
    assert int(merge["operationMetrics"]["numTargetRowsInserted"]) == 3  # only what arrived
    sessionized_merge = _last_operation(spark, sessions_table)
    assert sessionized_merge["operation"] == "MERGE"
    touched = int(sessionized_merge["operationMetrics"]["numSourceRows"])
    assert 3 <= touched < before / 10  # one customer's tail, not the whole table
    incremental = {name: _rows(spark, name) for name in (events_table, sessions_table)}
    late_rows = [r for r in spark.table(sessions_table).where("event_id LIKE 'LATE-JOURNEY-%'").collect()]
    assert len(late_rows) == 3 and all(r["unified_customer_id"] == unified for r in late_rows)

    run_dbt(jl_config, ["run", "--select", MODELS, "--full-refresh"])
    for name, rows in incremental.items():
        rebuilt = _rows(spark, name)
        assert rows == rebuilt, (name, sorted(rows - rebuilt)[:3], sorted(rebuilt - rows)[:3])
