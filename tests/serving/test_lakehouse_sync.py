"""The online store and the lakehouse: bulk sync, write-through from the streams, and what the
API decides and learns reaching Delta (real Spark, real redis-server, real `journeylake serve`)."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from pyspark.sql import functions as F

pytestmark = pytest.mark.slow

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def synced(spark, jl_config, ingested, online_store) -> Any:
    from pipelines.serving.sync import sync

    return sync(spark, jl_config, full=True)


@pytest.fixture(scope="module")
def api(serve_api, synced) -> str:
    return serve_api(workers=1)


def _writer(cfg: Any) -> Any:
    from pipelines.serving.store import StoreWriter, connect

    return StoreWriter(connect(cfg), cfg.online_store.contact_history_days)


def test_sync_loads_every_customer_s_context_consent_and_ids(spark, jl_config, ingested, synced):
    from pipelines.serving.store import IDS, consent_key, profile_key

    client = _writer(jl_config).client
    customers = [
        r[0] for r in spark.table(ingested.silver("customers")).select("customer_number").distinct().collect()
    ]
    assert customers
    assert all(client.hget(IDS, cn) == cn.encode() for cn in customers)
    features = spark.table(ingested.customer_features).toPandas().set_index("customer_number")
    for cn in features.index[:20]:
        stored = json.loads(client.hget(profile_key(cn), "features"))
        assert stored["failed_payments_7d"] == features.loc[cn, "failed_payments_7d"]
        assert stored["current_account_balance"] == pytest.approx(features.loc[cn, "current_account_balance"])
    consent = spark.table(ingested.consent_current).toPandas()
    for row in consent.head(30).itertuples():
        held = client.hget(consent_key(row.customer_number), f"{row.purpose}|{row.channel}").decode()
        assert held.startswith("1:" if row.granted else "0:")
    assert {r.stage for r in synced} >= {"identities", "context", "consent", "contacts", "serving", "bandit"}


def test_a_second_sync_changes_nothing_and_an_unfinished_one_resumes(spark, jl_config, synced):
    from pipelines.serving.sync import SYNC_KEY, sync

    client = _writer(jl_config).client
    before = set(client.keys("*"))
    client.hset(SYNC_KEY, mapping={"identities": "1", "context": "1"})  # a run that stopped after two stages
    results = sync(spark, jl_config)
    assert [r.stage for r in results if r.skipped] == ["identities", "context"]
    assert set(client.keys("*")) == before
    assert not client.exists(SYNC_KEY)  # finished: the next run starts afresh


def _consent_line(cn: str, granted: bool) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "event_id": f"test-consent-{uuid.uuid4().hex}",
        "event_time": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
        "schema_version": 1,
        "customer_number": cn,
        "purpose": "marketing",
        "channel": "email",
        "granted": granted,
        "captured_via": "app",
    }


def _decide(api: str, cn: str, channel: str) -> dict[str, Any]:
    reply = httpx.post(f"{api}/v1/decisions", json={"customer_id": cn, "channel": channel}, headers=AUTH)
    assert reply.status_code == 200, reply.text
    return reply.json()


def _customer_with_email_actions(spark: Any, jl_config: Any, ingested: Any, api: str) -> tuple[str, dict]:
    """An active customer whose email decisions contact them twice in a row (consent granted)."""
    granted = (
        spark.table(ingested.consent_current)
        .where("purpose = 'marketing' and channel in ('email', 'any') and granted")
        .groupBy("customer_number")
        .count()
        .where("count = 2")
        .toPandas()["customer_number"]
    )
    for cn in granted:
        first = _decide(api, cn, "email")
        if first["actions"] and not first["fallback"]:
            second = _decide(api, cn, "email")
            if second["actions"]:
                return cn, first
    raise AssertionError("no customer of the test bank gets two email actions in a row")


def test_consent_revoked_on_the_stream_blocks_the_next_api_decision(spark, jl_config, ingested, api):
    from pipelines.lakehouse import ingest
    from pipelines.serving.write_through import StoreFeed

    cn, _ = _customer_with_email_actions(spark, jl_config, ingested, api)
    landing = Path(jl_config.paths.landing) / "consent"
    (landing / f"test-revoke-{cn}.jsonl").write_text(json.dumps(_consent_line(cn, False)) + "\n")
    feed = StoreFeed.open(jl_config)
    assert feed is not None
    ingest.run(spark, jl_config, until_idle=True, tables=ingested, progress=lambda _m: None, listener=feed)
    assert _decide(api, cn, "email")["actions"] == []
    assert feed.failures == 0
    delays = _writer(jl_config).staleness()
    assert delays and max(delays) < 60_000  # commit -> store, recorded per write-through batch


def test_a_response_posted_through_the_api_reaches_silver_offer_responses(spark, jl_config, ingested, api):
    from pipelines.lakehouse import ingest

    decided = None
    for cn in (
        spark.table(ingested.silver("customers"))
        .select("customer_number")
        .distinct()
        .toPandas()["customer_number"]
    ):
        answer = _decide(api, cn, "app")
        if answer["actions"]:
            decided = answer
            break
    assert decided is not None, "no customer got an app action"
    reply = httpx.post(
        f"{api}/v1/responses", json={"decision_id": decided["decision_id"], "response": "click"}, headers=AUTH
    )
    assert reply.status_code == 202, reply.text
    event_id = reply.json()["event_id"]
    folder = Path(jl_config.paths.landing) / "offer_responses"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(
        event_id in p.read_text() for p in folder.glob("api-*.jsonl")
    ):
        time.sleep(0.2)
    ingest.run(spark, jl_config, until_idle=True, tables=ingested, progress=lambda _m: None)
    rows = spark.table(ingested.silver("offer_responses")).where(F.col("event_id") == event_id).collect()
    assert len(rows) == 1
    assert (rows[0]["decision_id"], rows[0]["response"]) == (decided["decision_id"], "click")


def test_api_decisions_reach_gold_served_actions_and_the_decision_log(spark, jl_config, ingested, api):
    decided = None
    for cn in (
        spark.table(ingested.silver("customers"))
        .select("customer_number")
        .distinct()
        .toPandas()["customer_number"]
    ):
        answer = _decide(api, cn, "web")
        if answer["actions"]:
            decided = answer
            break
    assert decided is not None
    wanted = decided["decision_id"]
    deadline = time.monotonic() + 30
    served: list = []
    while time.monotonic() < deadline and not served:
        served = spark.table(ingested.gold("served_actions")).where(F.col("decision_id") == wanted).collect()
        time.sleep(0.3)
    assert [(r["channel"], r["action_id"]) for r in served] == [("web", decided["actions"][0]["action_id"])]
    logged = spark.table(ingested.gold("decision_log")).where(F.col("decision_id") == wanted).toPandas()
    assert (logged["stage"] == "chosen").sum() == 1
    assert set(logged["channel"]) == {"web"}


def test_served_actions_of_the_stream_jobs_are_written_through(jl_config, online_store):
    from pipelines.serving.store import Contact, connect, contacts_key, serving_key
    from pipelines.serving.write_through import StoreFeed

    feed = StoreFeed.open(jl_config)
    assert feed is not None
    now = pd.Timestamp(datetime.now(UTC))
    rows = pd.DataFrame(
        [
            {
                "customer_number": "WT0001",
                "channel": "email",
                "action_id": "offer_savings",
                "decision_id": "stream-d1",
                "priority": 10.0,
                "propensity": 0.3,
                "decided_at": now,
                "expires_at": now + pd.Timedelta(hours=72),
            },
            {  # expired before it reached the store: not served
                "customer_number": "WT0001",
                "channel": "push",
                "action_id": "offer_mortgage",
                "decision_id": "stream-d0",
                "priority": 1.0,
                "propensity": 0.1,
                "decided_at": now - pd.Timedelta(hours=100),
                "expires_at": now - pd.Timedelta(hours=28),
            },
        ]
    )
    feed.served(rows, time.time())
    client = connect(jl_config)
    assert {
        k.decode(): json.loads(v)["action_id"] for k, v in client.hgetall(serving_key("WT0001")).items()
    } == {"email": "offer_savings"}
    decided = [Contact.from_member(m) for m in client.zrange(contacts_key("WT0001"), 0, -1)]
    assert [(c.action_id, c.response) for c in decided if c.channel == "email"] == [
        ("offer_savings", "decided")
    ]


def test_the_demo_tour_asks_across_channels_and_holds_a_revocation_and_a_dismissal(
    spark, jl_config, ingested, online_store
):
    """`make demo`'s last act, on the test bank: it raises if a revoked consent or a fresh
    dismissal does not hold for the next decision, or a posted response does not reach silver."""
    from pipelines.cli.demo_api import run_tour

    said: list[str] = []
    run_tour(spark, jl_config, ingested, said.append, said.append)
    text = "\n".join(said)
    assert "revoked it in the app" in text and "dismisses it" in text
    assert "sequential decisions from this process: p50" in text
    assert "(1 row)" in text  # the dismissal posted through the API is in silver.offer_responses
