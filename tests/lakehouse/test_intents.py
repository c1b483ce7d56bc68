"""What customers say, read in silver's stream: intent and sentiment from the raw words (then
redacted), the registered model's version on every row, and an intent that triggers its action.

Runs on the session's `world` bank, ingested with the champion text model (`text_model`).
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

pytestmark = pytest.mark.slow

STOLEN = (
    "cust called, Sarah said: I think someone has stolen my card details and used my card, pls block it"
    " - cb on 07700 900123"
)
GIBBERISH = "zxqv blorp wibble frandle"


@pytest.fixture(scope="module")
def said(spark, jl_config, ingested, land_known, text_model):
    """Two contact-centre notes landed after the bank's own and ingested: a compromised card, and
    words that are no intent at all."""
    from pyspark.sql import functions as F

    from pipelines.lakehouse import ingest

    calls = spark.table(ingested.silver("contact_centre"))
    newest = calls.agg(F.max("event_time")).first()[0]
    customer = calls.orderBy("customer_number").first()["customer_number"]
    when = (newest + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    records = [
        {
            "event_id": event_id,
            "event_time": when,
            "schema_version": 2,
            "customer_number": customer,
            "interaction_type": "call",
            "topic": "cards",
            "note": note,
            "agent_id": "AG001",
        }
        for event_id, note in (("SAID-STOLEN-1", STOLEN), ("SAID-NOTHING-1", GIBBERISH))
    ]
    land_known("contact_centre", "9999-said.jsonl", records)
    ingest.run(spark, jl_config, until_idle=True, tables=ingested, progress=lambda _m: None)
    rows = calls.sparkSession.table(ingested.silver("contact_centre")).where(
        F.col("event_id").isin("SAID-STOLEN-1", "SAID-NOTHING-1")
    )
    return {r["event_id"]: r.asDict() for r in rows.collect()}, customer


def test_silver_reads_intent_and_sentiment_from_the_raw_note_and_keeps_only_the_redacted_text(said) -> None:
    rows, _ = said
    stolen = rows["SAID-STOLEN-1"]
    assert stolen["intent"] in ("compromised_card", "lost_or_stolen_card"), stolen
    assert 0 < stolen["intent_confidence"] <= 1 and -1 <= stolen["sentiment"] <= 1
    assert "someone has stolen my card" in stolen["note"]  # the words stay, redacted
    assert "Sarah" not in stolen["note"] and "900123" not in stolen["note"], stolen["note"]


def test_a_note_with_no_recognisable_intent_is_kept_and_labelled_as_such(said, jl_config) -> None:
    rows, _ = said
    nothing = rows["SAID-NOTHING-1"]  # kept in silver, not quarantined or dropped
    assert nothing["intent"] == jl_config.ml.text.unrecognised_label


def test_every_scored_row_names_the_registered_version_the_stream_used(spark, ingested, text_model) -> None:
    for source in ("contact_centre", "app_chat"):
        versions = {
            r["intent_model_version"]
            for r in spark.table(ingested.silver(source)).select("intent_model_version").distinct().collect()
        }
        if source == "app_chat":
            versions.discard(None)  # the bot's replies are nobody's words
        assert versions == {text_model}, f"{source}: {versions}"


def test_chat_messages_reach_silver_redacted_with_the_customers_intents_only(spark, ingested) -> None:
    chat = spark.table(ingested.silver("app_chat")).toPandas()
    assert len(chat) > 0
    bot = chat[chat["direction"] == "bot"]
    assert bot["intent"].isna().all()
    customer = chat[chat["direction"] == "customer"]
    assert customer["intent"].notna().all()
    for text in chat["message"]:
        assert not re.search(r"[\w.+-]+@[\w-]+\.\w+", text), text  # emails are masked
        assert not re.search(r"\d{8,}", text.replace(" ", "")), text  # phone and card numbers too


def test_an_intent_in_a_note_triggers_its_service_action(spark, jl_config, ingested, said) -> None:
    """The note's intent becomes an `intent` trigger; the card-security call-back, whose rule
    answers that intent, passes eligibility with the customer's words as its reason."""
    from pyspark.sql import functions as F

    from pipelines.nba.catalog import load_catalog
    from pipelines.nba.decide import as_triggers, decide_batch, ensure_decision_tables, trigger_rows

    _, customer = said
    events = spark.table(ingested.silver("contact_centre")).where(F.col("event_id") == "SAID-STOLEN-1")
    triggers = as_triggers(trigger_rows("contact_centre", events, jl_config, "_ingested_at"))
    assert [r["trigger_type"] for r in triggers.collect()] == ["intent"]
    ensure_decision_tables(spark, ingested)
    result = decide_batch(spark, jl_config, ingested, load_catalog(jl_config), triggers, maybe_replay=True)
    assert result is not None
    log = result.log[result.log["action_id"] == "card_security_callback"]
    assert len(log) > 0 and (log["customer_number"] == customer).all()
    assert not (log["stage"] == "eligibility").any(), log[["stage", "rule", "detail"]]
    served = result.decisions[result.decisions["action_id"] == "card_security_callback"]
    for trace in served["rule_trace"]:
        assert any("the customer said" in line for line in trace)
