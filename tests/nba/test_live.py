"""The live decision lane on the ingested test bank: raw landing lines -> decisions, with real
Spark and Delta. Consent changes in the stream take effect for the very next decision, sessions
are attributed through logins, a duplicated event decides nothing twice, a restart adds nothing,
and what the lane saw survives a re-read of the lakehouse.

The lane writes to its own serving table and log (schema ``live_test``), so the lakehouse
decision tests on the same bank keep theirs.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

pytestmark = pytest.mark.slow

MARKETING_CHANNELS = ("email", "sms", "push", "phone")
LIVE_TABLES = ("next_best_actions", "served_actions", "decision_log")


def _write(landing: Path, source: str, name: str, records: list[dict[str, Any] | str]) -> None:
    folder = landing / source
    folder.mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n")


def _event(event_id: str, at: pd.Timestamp, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_time": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "schema_version": 1,
        **fields,
    }


def _salary(event_id: str, customer: str, at: pd.Timestamp) -> dict[str, Any]:
    return _event(
        event_id,
        at,
        customer_number=customer,
        account_id=f"{customer}-CA",
        txn_type="salary",
        amount=2500.0,
        currency="EUR",
        balance_after=3100.0,
    )


def _revoke_marketing(event_id: str, customer: str, at: pd.Timestamp) -> dict[str, Any]:
    return _event(event_id, at, customer_number=customer, purpose="marketing", channel="any", granted=False)


@pytest.fixture(scope="module")
def live(spark, jl_config, ingested, tmp_path_factory):
    """Three customers who may be contacted on every channel, the lane's config and tables."""
    from pyspark.sql import functions as F

    from pipelines.tables import Tables

    tables = ingested
    consent = spark.table(tables.consent_current).toPandas()
    refused = set(consent.loc[~consent["granted"].astype(bool), "customer_number"])
    open_all = set(consent["customer_number"]) - refused
    customers = spark.table(tables.silver("customers"))
    active = (
        customers.where((F.col("status") == "active") & F.col("login_id").isNotNull())
        .select("customer_number", "login_id")
        .distinct()
        .toPandas()
    )
    chosen = active[active["customer_number"].isin(open_all)].sort_values("customer_number").head(3)
    assert len(chosen) == 3, "the test bank should have active customers with every consent granted"
    newest = spark.table(tables.silver("transactions")).agg(F.max("event_time")).collect()[0][0]
    landing = tmp_path_factory.mktemp("live-landing")
    for source in ("transactions", "digital", "contact_centre", "consent", "offer_responses"):
        (landing / source).mkdir()
    cfg = jl_config.model_copy(update={"paths": jl_config.paths.model_copy(update={"landing": landing})})
    own = Tables(
        lambda layer, name: f"live_test.{name}" if name in LIVE_TABLES else tables.resolve(layer, name)
    )
    return {
        "cfg": cfg,
        "tables": own,
        "landing": landing,
        "checkpoint": str(tmp_path_factory.mktemp("live") / "checkpoint"),
        "customers": list(chosen["customer_number"]),
        "logins": list(chosen["login_id"]),
        "t0": pd.Timestamp(newest, tz="UTC") + timedelta(hours=1),
    }


def _run(spark, live: dict[str, Any]) -> list[str]:
    from pipelines.lakehouse.ingest import available_now, await_queries
    from pipelines.nba.live import start_live_decisions

    messages: list[str] = []
    query = start_live_decisions(
        spark, live["cfg"], live["tables"], live["checkpoint"], available_now, messages.append
    )
    await_queries([query])
    return messages


@pytest.fixture(scope="module")
def first_run(spark, live):
    a, b, c = live["customers"]
    t0 = live["t0"]
    landing = live["landing"]
    _write(
        landing,
        "transactions",
        "live-001",
        [
            _salary("live-salary-a", a, t0),
            _salary("live-salary-b", b, t0 + timedelta(minutes=2)),
            _salary("live-salary-u", "NO-SUCH-CUSTOMER", t0),
            '{"event_id": "live-broken", "event_time": ',
        ],
    )
    _write(landing, "transactions", "live-002", [_salary("live-salary-a", a, t0)])  # delivered twice
    _write(
        landing,
        "consent",
        "live-001",
        [
            _revoke_marketing("live-revoke-b", b, t0 + timedelta(minutes=1)),
        ],
    )
    _write(
        landing,
        "digital",
        "live-001",
        [
            _event(
                "live-login-c",
                t0,
                channel="app",
                session_id="live-session-c",
                device_id="d1",
                login_id=live["logins"][2],
                event_type="login",
            ),
            _event(
                "live-view-c",
                t0 + timedelta(seconds=30),
                channel="app",
                session_id="live-session-c",
                device_id="d1",
                event_type="product_view",
                product="savings",
            ),
            _event(
                "live-view-anon",
                t0,
                channel="web",
                session_id="live-session-anon",
                device_id="d2",
                event_type="product_view",
                product="mortgage",
            ),
        ],
    )
    messages = _run(spark, live)
    tables = live["tables"]
    return {
        "messages": messages,
        "serving": spark.table(tables.gold("next_best_actions")).toPandas(),
        "log": spark.table(tables.gold("decision_log")).toPandas(),
    }


def test_triggers_become_decisions_served_and_logged(first_run, live):
    a, _, c = live["customers"]
    serving, log = first_run["serving"], first_run["log"]
    assert first_run["messages"]
    decided = set(log["customer_number"])
    assert {a, c} <= decided
    assert "NO-SUCH-CUSTOMER" not in decided  # a customer the lakehouse does not know decides nothing
    assert not serving.duplicated(["customer_number", "channel"]).any()
    chosen = log[(log["stage"] == "chosen") & (log["action_id"] != "no_action")]
    served = serving.merge(chosen, on=["decision_id", "action_id", "channel"], how="left", indicator=True)
    assert (served["_merge"] == "both").all()
    # the latency clock: the trigger's ingestion and the row's processing are both stamped
    assert (
        serving["triggered_at"].notna().all() and (serving["processed_at"] >= serving["triggered_at"]).all()
    )


def test_a_session_is_attributed_to_the_customer_who_logged_in(first_run, live):
    c = live["customers"][2]
    serving = first_run["serving"]
    rows = serving[serving["customer_number"] == c]
    assert len(rows), "the logged-in product view should have reached a decision"
    assert rows["trigger_event_ids"].map(lambda ids: "live-view-c" in list(ids)).all()
    # nobody logged in to the anonymous session: it belongs to no decision
    assert not serving["trigger_event_ids"].map(lambda ids: "live-view-anon" in list(ids)).any()


def test_a_consent_revoked_in_the_stream_holds_for_the_very_next_decision(first_run, live):
    b = live["customers"][1]
    log = first_run["log"]
    mine = log[log["customer_number"] == b]
    assert len(mine), "customer b's salary should have been decided"
    chosen = mine[(mine["stage"] == "chosen") & (mine["action_id"] != "no_action")]
    assert not chosen["channel"].isin(MARKETING_CHANNELS).any()
    removed = mine[mine["stage"] == "consent"]
    assert removed["channel"].isin(MARKETING_CHANNELS).any()


def test_an_event_delivered_twice_decides_once(first_run, live):
    a = live["customers"][0]
    log = first_run["log"]
    assert log.loc[log["customer_number"] == a, "decision_id"].nunique() == 1
    assert not log.duplicated(["decision_id", "action_id", "channel"]).any()


def test_a_restart_adds_nothing_and_then_decides_new_events(spark, live, first_run):
    tables = live["tables"]
    before = spark.table(tables.gold("decision_log")).count()
    assert before == len(first_run["log"])
    _run(spark, live)  # nothing new in the landing folder: the checkpoint says it was all decided
    assert spark.table(tables.gold("decision_log")).count() == before
    a = live["customers"][0]
    _write(
        live["landing"],
        "transactions",
        "live-003",
        [_salary("live-salary-a2", a, live["t0"] + timedelta(days=1))],
    )
    _run(spark, live)
    log = spark.table(tables.gold("decision_log")).toPandas()
    assert log.loc[log["customer_number"] == a, "decision_id"].nunique() == 2


def test_what_the_lane_saw_survives_a_fresh_read_of_the_lakehouse(spark, live, first_run):
    """A consent change seen in the stream, not yet in silver, is not undone by a context re-read."""
    from pipelines.nba.live import LiveContext, load_snapshot

    b = live["customers"][1]
    context = LiveContext(spark, live["tables"], refresh_seconds=3600, journal_seconds=600)
    assert context.current.consent[b][("marketing", "any")][0] is True  # silver has not seen it
    context.record(
        "consent",
        {
            "customer_number": b,
            "purpose": "marketing",
            "channel": "any",
            "granted": False,
            "event_time": live["t0"],
            "event_id": "live-revoke-again",
        },
    )
    context._fresh = load_snapshot(spark, live["tables"])  # a re-read finished in the background
    context.refresh_if_due()
    assert context.refreshes == 1
    assert context.current.consent[b][("marketing", "any")][0] is False
    assert context.consent_rows([b]).query("purpose == 'marketing' and channel == 'any'")[
        "granted"
    ].tolist() == [False]


def test_a_background_re_read_runs_in_the_background_pool(spark, live, first_run, monkeypatch):
    """The context re-read's Spark jobs (seconds of them) yield the task slots to the decisions."""
    import threading

    from pipelines.nba import live as live_lane
    from pipelines.services.spark import BACKGROUND_POOL, POOL_PROPERTY

    pools: list[str | None] = []
    read = live_lane.load_snapshot

    def load_and_note_the_pool(spark_session, tables):
        pools.append(spark_session.sparkContext.getLocalProperty(POOL_PROPERTY))
        return read(spark_session, tables)

    monkeypatch.setattr(live_lane, "load_snapshot", load_and_note_the_pool)
    context = live_lane.LiveContext(spark, live["tables"], refresh_seconds=0.01, journal_seconds=600)
    context.refresh_if_due()  # due: starts the re-read in its own thread
    for thread in threading.enumerate():
        if thread.name == live_lane.REFRESH_THREAD:
            thread.join(timeout=300)
    context.refresh_seconds = float("inf")  # no further re-read, in this test or after it
    context.refresh_if_due()  # swaps the fresh snapshot in
    assert context.refreshes == 1
    assert pools == [None, BACKGROUND_POOL]  # the first read (at start) runs in the caller's pool
    assert spark.sparkContext.getLocalProperty(POOL_PROPERTY) is None


@pytest.mark.kafka
def test_the_live_lane_decides_from_kafka_topics(spark, live, kafka_broker, tmp_path):
    """The production source: the same lane on a real broker's topics (one per trigger source)."""
    from pipelines.lakehouse.ingest import available_now, await_queries
    from pipelines.nba.live import start_live_decisions
    from pipelines.sources.simulator.kafka_writer import KafkaWriter
    from pipelines.tables import Tables

    a, b, c = live["customers"]
    t0 = live["t0"] + timedelta(days=3)
    prefix = "livetest."
    records = {
        "transactions": [
            _salary("kafka-salary-a", a, t0),
            _salary("kafka-salary-b", b, t0 + timedelta(minutes=2)),
        ],
        "consent": [_revoke_marketing("kafka-revoke-b", b, t0 + timedelta(minutes=1))],
        "digital": [
            _event(
                "kafka-page", t0, channel="web", session_id="kafka-s", device_id="d", event_type="page_view"
            )
        ],
        "contact_centre": [
            _event("kafka-call-c", t0, customer_number=c, interaction_type="call", topic="balance"),
            '{"event_id": "kafka-broken", ',
        ],
        "offer_responses": [
            _event(
                "kafka-impression-c",
                t0,
                customer_number=c,
                action_id="offer_savings",
                channel="app",
                response="impression",
            ),
        ],
    }
    with KafkaWriter(kafka_broker, topic_prefix=prefix, partitions=1) as writer:
        for source, rows in records.items():
            lines = "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n"
            writer.write_batch(source, "kafka-live-001", lines.encode())
    cfg = live["cfg"].model_copy(
        update={
            "ingest": live["cfg"].ingest.model_copy(update={"source": "kafka"}),
            "kafka": live["cfg"].kafka.model_copy(
                update={
                    "bootstrap_servers": kafka_broker,
                    "topic_prefix": prefix,
                    "starting_offsets": "earliest",
                }
            ),
        }
    )
    base = live["tables"]
    tables = Tables(
        lambda layer, name: f"live_kafka_test.{name}" if name in LIVE_TABLES else base.resolve(layer, name)
    )
    query = start_live_decisions(
        spark, cfg, tables, str(tmp_path / "checkpoint"), available_now, lambda _m: None
    )
    await_queries([query])
    log = spark.table(tables.gold("decision_log")).toPandas()
    serving = spark.table(tables.gold("next_best_actions")).toPandas()
    assert {a, b, c} <= set(log["customer_number"])
    mine = log[(log["customer_number"] == b) & (log["stage"] == "chosen") & (log["action_id"] != "no_action")]
    assert not mine["channel"].isin(MARKETING_CHANNELS).any()
    # the latency clock starts at the producer's timestamp: before the lane processed the row
    assert (serving["triggered_at"] <= serving["processed_at"]).all()
    assert serving["trigger_event_ids"].map(lambda ids: "kafka-salary-a" in list(ids)).any()
