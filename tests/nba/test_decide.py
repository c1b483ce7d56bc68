"""The streaming decision job on the ingested test bank: serving table, decision log, consent, replays.

Runs `pipelines.nba.decide` with real Spark and Delta on the session's `world` bank (no models
trained there: scores are null and the funnel's fallback propensity is used, which the trace says).
"""

from __future__ import annotations

import pandas as pd
import pytest

from pipelines.nba.funnel import STAGES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def decided(spark, jl_config, ingested, tmp_path_factory):
    from pipelines.lakehouse.ingest import available_now, await_queries
    from pipelines.nba.decide import start_decision_stream

    checkpoint = str(tmp_path_factory.mktemp("decide") / "checkpoint")
    messages: list[str] = []
    query = start_decision_stream(spark, jl_config, ingested, checkpoint, available_now, messages.append)
    await_queries([query])
    return ingested, messages


def _consent_ok(consent: pd.DataFrame, customer: str, channel: str) -> bool:
    granted = {
        (r.purpose, r.channel): bool(r.granted)
        for r in consent[consent["customer_number"] == customer].itertuples()
    }
    if channel in ("email", "sms", "push", "phone"):
        return granted.get(("marketing", channel), False) and granted.get(("marketing", "any"), False)
    return granted.get(("profiling", "any"), False)


def test_serving_table_has_one_row_per_customer_and_channel_and_respects_consent(spark, decided):
    tables, messages = decided
    serving = spark.table(tables.gold("next_best_actions")).toPandas()
    assert messages and len(serving) > 0
    assert not serving.duplicated(["customer_number", "channel"]).any()
    consent = spark.table(tables.consent_current).toPandas()
    violations = [
        (r.customer_number, r.channel)
        for r in serving.itertuples()
        if not _consent_ok(consent, r.customer_number, r.channel)
    ]
    assert violations == []
    assert (serving["action_id"] != "no_action").all()
    assert (serving["expires_at"] > serving["decided_at"]).all()
    assert serving["rule_trace"].map(len).gt(2).all()
    # one decision never holds the same action twice (on two channels)
    assert not serving.duplicated(["decision_id", "action_id"]).any()


def test_every_candidate_of_every_decision_is_logged_once_with_its_fate(spark, decided):
    tables, _ = decided
    log = spark.table(tables.gold("decision_log")).toPandas()
    serving = spark.table(tables.gold("next_best_actions")).toPandas()
    assert not log.duplicated(["decision_id", "action_id", "channel"]).any()
    assert set(log["stage"]) <= set(STAGES)
    assert log["rule"].notna().all() or log.loc[log["rule"].isna(), "stage"].isin(["ranked", "chosen"]).all()
    chosen = log[(log["stage"] == "chosen") & (log["action_id"] != "no_action")]
    served = serving.merge(chosen, on=["decision_id", "action_id", "channel"], how="left", indicator=True)
    assert (served["_merge"] == "both").all()
    # the model policy logs the probability it chose with (needed for off-policy evaluation)
    model_chosen = chosen[chosen["policy"] == "model"]
    assert len(model_chosen) and model_chosen["choice_probability"].between(0, 1, inclusive="right").all()


def test_replaying_a_batch_adds_no_log_rows_and_keeps_the_same_decisions(spark, jl_config, decided):
    from pipelines.nba.catalog import load_catalog
    from pipelines.nba.decide import decide_batch

    tables, _ = decided
    triggers = _triggers_of(spark, tables, 5)
    before = spark.table(tables.gold("decision_log")).count()
    first = decide_batch(spark, jl_config, tables, load_catalog(jl_config), triggers, maybe_replay=True)
    after_first = spark.table(tables.gold("decision_log")).count()
    again = decide_batch(spark, jl_config, tables, load_catalog(jl_config), triggers, maybe_replay=True)
    assert first is not None and again is not None
    assert after_first >= before
    assert spark.table(tables.gold("decision_log")).count() == after_first
    assert sorted(first.decisions["decision_id"]) == sorted(again.decisions["decision_id"])
    assert list(first.decisions.sort_values(["decision_id", "channel"])["action_id"]) == list(
        again.decisions.sort_values(["decision_id", "channel"])["action_id"]
    )


def test_revoking_consent_takes_effect_for_the_very_next_decision(spark, jl_config, decided):
    from delta.tables import DeltaTable

    from pipelines.nba.catalog import load_catalog
    from pipelines.nba.decide import decide_batch

    tables, _ = decided
    consent = DeltaTable.forName(spark, tables.consent_current)
    version = consent.history(1).collect()[0]["version"]
    triggers = _triggers_of(spark, tables, 40)
    customers = [r["customer_number"] for r in triggers.select("customer_number").distinct().collect()]
    try:
        who = ", ".join(repr(c) for c in customers)
        spark.sql(
            f"UPDATE {tables.consent_current} SET granted = false "
            f"WHERE purpose = 'marketing' AND channel = 'any' AND customer_number IN ({who})"
        )
        result = decide_batch(spark, jl_config, tables, load_catalog(jl_config), triggers, maybe_replay=True)
    finally:
        consent.restoreToVersion(version)
    assert result is not None and len(result.log)
    marketing = result.decisions[result.decisions["channel"].isin(["email", "sms", "push", "phone"])]
    assert marketing.empty
    log = result.log[result.log["action_id"] != "no_action"]  # doing nothing needs no consent
    removed = log[log["channel"].isin(["email", "sms", "push", "phone"])]
    assert (removed["stage"].isin(["customer", "validity", "eligibility", "suitability", "consent"])).all()
    assert (removed["stage"] == "consent").any()


def _triggers_of(spark, tables, customers: int):
    """Consent-change trigger rows (the stream's shape) of a few customers, read in batch."""
    from pyspark.sql import functions as F

    consent = spark.table(tables.silver("consent"))
    chosen = consent.select("customer_number").distinct().orderBy("customer_number").limit(customers)
    return consent.join(chosen, "customer_number", "left_semi").select(
        "customer_number",
        F.lit(None).cast("string").alias("session_id"),
        F.col("event_id").alias("trigger_event_id"),
        F.lit("consent_change").alias("trigger_type"),
        F.lit(None).cast("string").alias("trigger_product"),
        "event_time",
        F.col("_ingested_at").alias("ingested_at"),
    )


def test_explain_decision_shows_the_served_action_and_every_candidate(spark, decided):
    from pipelines.cli.explain_decision import explain

    tables, _ = decided
    row = spark.table(tables.gold("next_best_actions")).first()
    text = explain(spark, tables, row["decision_id"])
    candidates = (
        spark.table(tables.gold("decision_log")).where(f"decision_id = '{row['decision_id']}'").count()
    )
    assert f"served on {row['channel']}: {row['action_id']}" in text
    assert len(text.split("  candidates:")[1].strip().splitlines()) == candidates


def test_evaluate_policy_scores_the_logged_greedy_and_uniform_policies(spark, jl_config, decided):
    from pipelines.nba.catalog import load_catalog
    from pipelines.nba.evaluate import evaluate_policies, format_report

    tables, _ = decided
    report = evaluate_policies(spark, jl_config, tables, load_catalog(jl_config))
    assert report.rounds > 0
    assert set(report.estimates) == {"logged", "greedy", "uniform"}
    for by_estimator in report.estimates.values():
        assert set(by_estimator) == {"IPS", "SNIPS", "DR"}
    assert "A/B vs control" in format_report(report)
