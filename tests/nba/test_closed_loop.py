"""The closed loop's parts: landing by day, valuing against the truth, answering, the policy audit.

The whole loop (ingest + decision stream + simulator, day by day) runs in `make demo`; here each
part is pinned on its own, the audit on hand-made Delta tables whose violations are known.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from pipelines.config import ChannelCap, ContactPolicyConfig
from pipelines.errors import InputError
from pipelines.nba import closed_loop as loop


def _touch(folder: Path, source: str, name: str) -> Path:
    path = folder / source / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}\n")
    return path


def test_hold_back_and_release_move_whole_days_and_never_overwrite(tmp_path):
    landing, held = tmp_path / "landing", tmp_path / "held"
    _touch(landing, "transactions", "2026-01-01T08-00_000001.jsonl")
    _touch(landing, "transactions", "2026-01-02T08-00_000002.jsonl")
    _touch(landing, "transactions", "2026-01-03T00-00_000003.jsonl")
    _touch(landing, "customers", "2026-01-02.jsonl")
    assert loop.hold_back(landing, held, "2026-01-02") == 3
    assert [p.name for p in (landing / "transactions").iterdir()] == ["2026-01-01T08-00_000001.jsonl"]
    assert loop.held_days(held) == ["2026-01-02", "2026-01-03"]
    assert loop.release(held, landing, "2026-01-02") == 2
    assert (landing / "customers" / "2026-01-02.jsonl").exists()
    assert loop.held_days(held) == ["2026-01-03"]
    _touch(landing, "transactions", "2026-01-03T00-00_000003.jsonl")  # a clash: refused, nothing moved
    with pytest.raises(InputError, match="already exists"):
        loop.release(held, landing, "2026-01-03")
    assert loop.held_days(held) == ["2026-01-03"]


@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    from pipelines.sources.simulator import FaultRates, SimConfig, generate
    from pipelines.sources.simulator.closed_loop import World

    out = tmp_path_factory.mktemp("loop_world")
    generate(SimConfig(customers=150, days=4, seed=5, faults=FaultRates.preset("none")), out)
    return World.load(out)


def test_reference_policies_are_valued_on_the_same_moments_and_the_oracle_is_best(small_world):
    from pipelines.sources.simulator.closed_loop import expected_value, oracle_policy

    at = pd.Timestamp("2026-01-04T10:00", tz="UTC")
    customers = list(small_world.customer_numbers[:120])
    decisions = pd.DataFrame(
        {
            "decision_id": [f"d{i}" for i in range(len(customers))],
            "customer_number": customers,
            "policy": "model",
            "decided_at": at,
        }
    )
    # the "learned" policy here is the oracle itself: its value must equal the oracle's
    contacts = oracle_policy(small_world, at=at, customers=customers)
    contacts = contacts[contacts["action_id"] != "no_action"]
    values = loop._policy_values(small_world, decisions, contacts, expected_value)
    assert set(values["scope"]) == {"no_rules"}  # no options given: nothing to compare within rules
    values = values.set_index("policy")
    assert set(values.index) == {"learned", "random", "static_rules", "oracle"}
    assert (values["decisions"] == len(customers)).all()
    assert values.loc["learned", "value"] == pytest.approx(values.loc["oracle", "value"])
    assert values.loc["oracle", "value"] > values.loc["static_rules", "value"]
    assert values.loc["oracle", "value"] > values.loc["random", "value"]
    assert values.loc["oracle", "consent_violations"] == 0
    assert values.loc["static_rules", "consent_violations"] == 0


def test_within_the_rules_every_policy_chooses_among_the_same_allowed_contacts(small_world):
    from pipelines.sources.simulator.closed_loop import expected_value, option_values, policies_within_rules

    at = pd.Timestamp("2026-01-04T10:00", tz="UTC")
    customers = list(small_world.customer_numbers[:80])
    allowed = [("offer_savings", "email"), ("offer_mortgage", "app"), ("help_finish_application", "web")]
    options = pd.DataFrame(
        [
            {"decision_id": f"d{i}", "customer_number": c, "action_id": a, "channel": ch, "decided_at": at}
            for i, c in enumerate(customers)
            for a, ch in allowed[: 1 + i % 3]  # one, two or three allowed contacts per decision
        ]
    )
    options["_value"] = option_values(small_world, options)
    best = options.sort_values("_value").groupby("decision_id").tail(1).set_index("decision_id")["_value"]
    learned = options.sort_values("_value").groupby("decision_id").head(1)  # the worst allowed option
    rank = {"help_finish_application": 1, "offer_savings": 3, "offer_mortgage": 7}
    values = loop._policy_values(
        small_world,
        learned[["decision_id", "customer_number"]].assign(decided_at=at),
        learned.assign(policy="model"),
        expected_value,
        options=options.drop(columns="_value"),
        default_rank=rank,
    )
    within = values[values["scope"] == "within_rules"].set_index("policy")
    assert set(within.index) == {"learned", "random", "static_rules", "default_rank", "oracle"}
    assert (within["decisions"] == len(customers)).all()
    assert within.loc["oracle", "value"] == pytest.approx(best.clip(lower=0).sum(), rel=0.05)
    assert within.loc["oracle", "value"] >= within.loc["random", "value"] >= within.loc["learned", "value"]
    picks = policies_within_rules(small_world, options.drop(columns="_value"), default_rank=rank)
    allowed_keys = set(zip(options["decision_id"], options["action_id"], options["channel"], strict=True))
    for name, frame in picks.items():
        assert frame["decision_id"].is_unique, name  # at most one contact per decision
        assert (
            set(zip(frame["decision_id"], frame["action_id"], frame["channel"], strict=True)) <= allowed_keys
        )
    # the default policy takes help_finish_application wherever it is allowed (rank 1)
    by_decision = picks["default_rank"].set_index("decision_id")["action_id"]
    assert (by_decision[[f"d{i}" for i in range(2, 80, 3)]] == "help_finish_application").all()
    # the static rules never make an offer they have no rule for, and keep their channel order
    assert "help_finish_application" not in set(picks["static_rules"]["action_id"])
    one = options.iloc[:1].drop(columns="_value")
    both = pd.concat([one.assign(channel="sms"), one.assign(channel="app")], ignore_index=True)
    assert policies_within_rules(small_world, both)["static_rules"]["channel"].tolist() == ["app"]


def test_answered_contacts_land_as_prefixed_response_files_in_the_truth_ledger(small_world):
    from pipelines.sources.simulator.writers import FileWriter

    at = pd.Timestamp("2026-01-04T12:00", tz="UTC")
    customers = list(small_world.customer_numbers[:40])
    contacts = pd.DataFrame(
        {
            "decision_id": [f"loop-test-{i}" for i in range(len(customers))],
            "customer_number": customers,
            "action_id": "offer_savings",
            "channel": "app",
            "policy": "model",
            "decided_at": at,
        }
    )
    answered = loop._respond(small_world, contacts, FileWriter(small_world.out, prefix=loop.RESPONSE_PREFIX))
    assert len(answered) == len(contacts)
    assert answered["accepted"].dtype == bool
    written = list((small_world.out / "landing" / "offer_responses").glob(f"{loop.RESPONSE_PREFIX}*.jsonl"))
    assert written
    ledger = pd.read_parquet(small_world.out / "truth" / "records")
    assert {f"landing/offer_responses/{p.name}" for p in written} <= set(ledger["file"])


def _delta(spark, path: Path, frame: pd.DataFrame) -> str:
    spark.createDataFrame(frame).write.format("delta").mode("overwrite").save(str(path))
    return f"delta.`{path}`"


def test_the_contact_policy_audit_finds_exactly_the_planted_violations(spark, tmp_path):
    from pipelines.tables import Tables

    t0 = pd.Timestamp("2026-02-01T09:00", tz="UTC")

    def at(hours: float) -> pd.Timestamp:
        return t0 + pd.Timedelta(hours=hours)

    processed = pd.Timestamp("2026-11-01T00:00", tz="UTC")
    rows = [
        # C1: email cap 2 per 7 days; the third email within the week breaks it
        ("d1", "C1", "offer_savings", "email", at(0)),
        ("d2", "C1", "offer_investments", "email", at(24)),
        ("d3", "C1", "offer_credit_card", "email", at(48)),
        # C2: the same action again within repeat_days on another channel
        ("d4", "C2", "offer_savings", "app", at(0)),
        ("d5", "C2", "offer_savings", "web", at(72)),
        # C3: contacted after a dismissal of the same action that was already ingested
        ("d6", "C3", "offer_mortgage", "app", at(0)),
        ("d7", "C3", "offer_mortgage", "email", at(50)),
        # C4: a dismissal that reached silver only after the decision: not known, no finding
        ("d8", "C4", "offer_mortgage", "app", at(0)),
        ("d9", "C4", "offer_mortgage", "email", at(50)),
        # C5: any contact after a known complaint
        ("d10", "C5", "offer_savings", "app", at(0)),
        ("d11", "C5", "retention_call", "phone", at(30)),
        # C7: decided in processing order d12 then d13, though d13's clock is earlier
        ("d12", "C7", "offer_investments", "app", at(10)),
        ("d13", "C7", "offer_investments", "email", at(5)),
        # before the loop started: not audited
        ("d0", "C6", "offer_savings", "email", at(-500)),
        ("d00", "C6", "offer_savings", "email", at(-499)),
    ]
    log = pd.DataFrame(rows, columns=["decision_id", "customer_number", "action_id", "channel", "decided_at"])
    log["stage"] = "chosen"
    log["processed_at"] = [d + pd.Timedelta(minutes=5) for d in log["decided_at"]]
    log.loc[log["decision_id"] == "d13", "processed_at"] = at(11)
    log = pd.concat(
        [log, log.assign(action_id="no_action", channel="sms")[log["customer_number"] == "C1"]],
        ignore_index=True,
    )
    responses = pd.DataFrame(
        [
            ("C3", "offer_mortgage", "app", "dismiss", at(2), at(3)),
            ("C4", "offer_mortgage", "app", "dismiss", at(2), processed),
            ("C5", "offer_savings", "app", "complaint", at(1), at(2)),
            ("C1", "offer_savings", "email", "impression", at(1), at(2)),
        ],
        columns=["customer_number", "action_id", "channel", "response", "event_time", "_ingested_at"],
    )
    names = {
        ("gold", "decision_log"): _delta(spark, tmp_path / "decision_log", log),
        ("silver", "offer_responses"): _delta(spark, tmp_path / "offer_responses", responses),
    }
    tables = Tables(lambda layer, name: names[(layer, name)])
    policy = ContactPolicyConfig(
        channel_caps={"email": ChannelCap(max_contacts=2, period_days=7)},
        repeat_days=14,
        cooldown_after_dismiss_days=30,
        cooldown_after_complaint_days=90,
    )
    found = loop.audit_contact_policy(spark, tables, policy, datetime(2026, 1, 15, tzinfo=UTC))
    got = sorted(zip(found["rule"], found["decision_id"], strict=True))
    assert got == [
        ("channel_cap", "d3"),
        ("cooldown_after_complaint", "d11"),
        ("cooldown_after_dismiss", "d7"),
        ("repeat_days", "d13"),
        ("repeat_days", "d5"),
        ("repeat_days", "d7"),
        ("repeat_days", "d9"),
    ]
