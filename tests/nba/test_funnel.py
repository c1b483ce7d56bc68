"""The decision funnel: one behaviour per test, on a small catalog of its own (pure pandas, no Spark)."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipelines.config import DecisioningConfig
from pipelines.errors import InputError
from pipelines.nba.catalog import ActionCatalog, catalog_from_data
from pipelines.nba.funnel import (
    CONTACT_COLUMNS,
    DECISION_COLUMNS,
    LOG_COLUMNS,
    STAGES,
    ContactRow,
    FunnelResult,
    decide_one,
    decision_id_for,
    in_control_group,
    request_decision_ids,
    request_for,
    run_funnel,
)

NOW = pd.Timestamp("2025-03-10 12:00", tz="UTC")
CREDIT = [
    {"max_feature": {"column": "failed_payments_7d", "value": 1}},
    {"max_feature": {"column": "card_utilisation", "value": 0.9, "if_missing": "pass"}},
    {"min_feature": {"column": "current_account_balance", "value": 0}},
]
CATALOG: dict[str, Any] = {
    "actions": {
        "help_finish_application": {
            "kind": "service",
            "value": 400,
            "channels": ["email", "app"],
            "eligibility": [{"open_application": True}],
            "default_rank": 1,
        },
        "retention_call": {
            "kind": "retention",
            "value": 1500,
            "channels": ["phone"],
            "eligibility": [{"min_score": {"column": "churn_risk", "value": 0.3}}],
            "excludes": ["offer_credit_card"],
            "default_rank": 2,
        },
        "offer_savings": {
            "kind": "offer",
            "product": "savings",
            "value": 80,
            "channels": ["email", "app"],
            "eligibility": [{"not_holding": "savings"}, {"open_application": False}],
            "default_rank": 3,
        },
        "offer_credit_card": {
            "kind": "offer",
            "product": "credit_card",
            "value": 180,
            "channels": ["email", "sms", "app"],
            "eligibility": [{"not_holding": "credit_card"}],
            "suitability": CREDIT,
            "excludes": ["offer_personal_loan"],
            "default_rank": 4,
        },
        "offer_personal_loan": {
            "kind": "offer",
            "product": "personal_loan",
            "value": 350,
            "channels": ["email", "app"],
            "eligibility": [{"not_holding": "personal_loan"}],
            "suitability": CREDIT,
            "default_rank": 5,
        },
        "offer_mortgage": {
            "kind": "offer",
            "product": "mortgage",
            "value": 2500,
            "channels": ["email", "phone", "branch"],
            "eligibility": [{"holding": "current_account"}, {"not_holding": "mortgage"}],
            "suitability": CREDIT,
            "default_rank": 6,
        },
        "no_action": {"kind": "none", "value": 0, "default_rank": 99},
    }
}
PRODUCTS = ("current_account", "savings", "credit_card", "mortgage", "personal_loan", "investments")


def _catalog(**changes: dict[str, Any]) -> ActionCatalog:
    """The test catalog with some actions' keys changed: _catalog(offer_savings={"valid_to": ...})."""
    data = copy.deepcopy(CATALOG)
    for action_id, update in changes.items():
        data["actions"][action_id].update(update)
    return catalog_from_data(data, "test catalog")


def _policy(**sections: dict[str, Any]) -> DecisioningConfig:
    """Explicit settings (not conf/base.yml, which a bank edits); no control group unless asked."""
    data: dict[str, Any] = {
        "contact_policy": {
            "channel_caps": {
                "email": {"max_contacts": 3, "period_days": 7},
                "sms": {"max_contacts": 2, "period_days": 7},
            },
            "cooldown_after_dismiss_days": 30,
            "cooldown_after_complaint_days": 90,
            "cooldown_after_ignore_days": 7,
            "repeat_days": 14,
            "decision_ttl_hours": 48,
        },
        "arbitration": {
            "context_weights": {"application_abandoned": 2.0, "product_view": 1.5, "complaint": 0.5},
            "service_propensity": 0.3,
            "service_match_boost": 2.0,
            "fallback_propensity": 0.02,
        },
        "exploration": {"control_share": 0.0},
    }
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    return DecisioningConfig.model_validate(data)


def _request(customer: str = "C1", trigger: str = "t1", **context: Any) -> dict[str, Any]:
    """A request for an active customer who holds a current account only, not credit-stressed."""
    row: dict[str, Any] = {
        "customer_number": customer,
        "trigger_event_id": trigger,
        "trigger_type": "salary",
        "trigger_product": None,
        "event_time": NOW - pd.Timedelta(minutes=5),
        "decided_at": NOW,
        "customer_status": "active",
        **{f"holds_{p}": p == "current_account" for p in PRODUCTS},
        "current_account_balance": 1500.0,
        "card_utilisation": None,
        "failed_payments_7d": 0,
        "complaints_7d": 0,
        "open_application_id": None,
        "open_application_product": None,
        "open_application_last_step": None,
        "salary_received_7d": True,
        "last_product_viewed": None,
        "propensity_savings": 0.10,  # 8.0 = 0.10 x 80
        "propensity_credit_card": 0.10,  # 18.0
        "propensity_mortgage": 0.01,  # 25.0
        "propensity_personal_loan": 0.02,  # 7.0
        "propensity_investments": 0.01,
        "churn_risk": 0.05,
        "segment_name": "everyday",
        "model_versions": {"propensity_savings": "4"},
    }
    row.update(context)
    return row


def _consent(
    *customers: str,
    marketing: tuple[str, ...] = ("email", "sms", "push", "phone", "any"),
    profiling: bool = True,
):
    rows = [
        {"customer_number": c, "purpose": "marketing", "channel": ch, "granted": True}
        for c in customers
        for ch in marketing
    ]
    rows += [
        {"customer_number": c, "purpose": "profiling", "channel": "any", "granted": profiling}
        for c in customers
    ]
    return pd.DataFrame(rows, columns=["customer_number", "purpose", "channel", "granted"])


def _contact(
    action: str,
    channel: str,
    days_ago: float,
    response: str,
    decision: str | None = "d0",
    customer: str = "C1",
):
    return {
        "customer_number": customer,
        "action_id": action,
        "channel": channel,
        "decision_id": decision,
        "contacted_at": NOW - pd.Timedelta(days=days_ago),
        "response": response,
    }


def _run(
    requests: list[dict[str, Any]] | None = None,
    consent: pd.DataFrame | None = None,
    contacts: list[dict[str, Any]] | None = None,
    active: list[dict[str, Any]] | None = None,
    catalog: ActionCatalog | None = None,
    policy: DecisioningConfig | None = None,
    chooser: Any = None,
) -> FunnelResult:
    requests = requests or [_request()]
    customers = sorted({r["customer_number"] for r in requests})
    return run_funnel(
        pd.DataFrame(requests),
        _consent(*customers) if consent is None else consent,
        pd.DataFrame(contacts or [], columns=list(CONTACT_COLUMNS)),
        pd.DataFrame(active or [], columns=["customer_number", "channel", "action_id", "expires_at"]),
        catalog or _catalog(),
        policy or _policy(),
        chooser,
    )


def _stage(result: FunnelResult, action: str, channel: str, customer: str = "C1") -> tuple[str, str]:
    row = result.log[
        (result.log.customer_number == customer)
        & (result.log.action_id == action)
        & (result.log.channel == channel)
    ]
    assert len(row) == 1, f"{action} on {channel}: {len(row)} log rows"
    return row.stage.iloc[0], row.rule.iloc[0]


def _chosen(result: FunnelResult, customer: str = "C1") -> list[tuple[str, str]]:
    rows = result.decisions[result.decisions.customer_number == customer]
    return list(zip(rows.action_id, rows.channel, strict=True))


# --- the log and the outputs --------------------------------------------------------------------


def test_every_candidate_appears_in_the_log_exactly_once_with_a_stage() -> None:
    catalog = _catalog()
    result = _run([_request("C1"), _request("C2", "t2", holds_savings=True)], catalog=catalog)
    expected = {(a.action_id, ch) for a in catalog.contacting for ch in a.channels}
    expected |= {("no_action", ch) for ch in catalog.channels}
    for customer in ("C1", "C2"):
        rows = result.log[result.log.customer_number == customer]
        assert sorted(zip(rows.action_id, rows.channel, strict=True)) == sorted(expected)
    assert result.log.stage.isin(STAGES).all()
    assert result.log.rule.notna().all() and result.log.detail.notna().all()
    assert list(result.log.columns) == list(LOG_COLUMNS)
    assert list(result.decisions.columns) == list(DECISION_COLUMNS)


def test_a_decision_names_its_triggers_trace_and_expiry() -> None:
    result = _run()
    assert _chosen(result) == [("offer_mortgage", "email")]  # 0.01 x 2500 beats 0.10 x 180
    row = result.decisions.iloc[0]
    assert row.trigger_event_ids == ["t1"] and row.trigger_types == ["salary"]
    assert row.policy == "model" and row.choice_probability == 1.0 and row.propensity == 0.01
    assert row.expires_at - row.decided_at == pd.Timedelta(hours=48)
    trace = "\n".join(row.rule_trace)
    for expected in (
        "eligibility: holding:current_account passed",
        "consent:",
        "contact_policy: channel_cap passed",
    ):
        assert expected in trace
    assert row.rule_trace[-1].startswith("arbitration: priority")


def test_no_action_is_logged_but_never_served() -> None:
    result = _run()
    assert "no_action" not in set(result.decisions.action_id)
    assert _stage(result, "no_action", "branch") == ("chosen", "model_policy")


def test_a_missing_request_column_is_an_input_error() -> None:
    request = _request()
    del request["holds_savings"]
    with pytest.raises(InputError, match="decision requests: missing column.*holds_savings"):
        _run([request])


# --- validity, eligibility, suitability ---------------------------------------------------------


def test_an_action_outside_its_validity_window_is_removed() -> None:
    ended = _catalog(offer_mortgage={"valid_to": "2025-03-09"})
    assert _stage(_run(catalog=ended), "offer_mortgage", "email") == ("validity", "valid_window")
    future = _catalog(offer_mortgage={"valid_from": "2025-03-11"})
    assert _stage(_run(catalog=future), "offer_mortgage", "email") == ("validity", "valid_window")
    current = _catalog(offer_mortgage={"valid_from": "2025-03-10", "valid_to": "2025-03-10"})
    assert _chosen(_run(catalog=current)) == [("offer_mortgage", "email")]


def test_an_offer_is_ineligible_when_the_customer_holds_the_product() -> None:
    result = _run([_request(holds_mortgage=True)])
    assert _stage(result, "offer_mortgage", "email") == ("eligibility", "not_holding:mortgage")
    assert _chosen(result) == [("offer_credit_card", "email")]


def test_a_holding_rule_needs_the_product_held() -> None:
    result = _run([_request(holds_current_account=False)])
    assert _stage(result, "offer_mortgage", "branch") == ("eligibility", "holding:current_account")


def test_help_finish_application_needs_an_open_application() -> None:
    assert _stage(_run(), "help_finish_application", "app") == ("eligibility", "open_application")
    result = _run([_request(open_application_id="A7", open_application_product="mortgage")])
    assert _stage(result, "help_finish_application", "app")[0] in {"chosen", "ranked", "arbitration"}


def test_an_open_application_for_the_offered_product_blocks_the_offer_only() -> None:
    savings_app = _run([_request(open_application_id="A7", open_application_product="savings")])
    assert _stage(savings_app, "offer_savings", "email") == ("eligibility", "no_open_application")
    mortgage_app = _run([_request(open_application_id="A8", open_application_product="mortgage")])
    assert _stage(mortgage_app, "offer_savings", "email")[0] != "eligibility"


def test_retention_call_needs_churn_risk_of_at_least_the_threshold() -> None:
    below = _run([_request(churn_risk=0.29)])
    assert _stage(below, "retention_call", "phone") == ("eligibility", "min_score:churn_risk")
    at = _run([_request(churn_risk=0.3)])
    assert _stage(at, "retention_call", "phone")[0] != "eligibility"


@pytest.mark.parametrize(
    ("stress", "rule"),
    [
        ({"failed_payments_7d": 1}, "max_feature:failed_payments_7d"),
        ({"card_utilisation": 0.95}, "max_feature:card_utilisation"),
        ({"current_account_balance": -20.0}, "min_feature:current_account_balance"),
    ],
)
def test_a_credit_stressed_customer_gets_no_credit_offer(stress: dict[str, Any], rule: str) -> None:
    result = _run([_request(**stress)])
    for action, channel in (
        ("offer_credit_card", "sms"),
        ("offer_personal_loan", "app"),
        ("offer_mortgage", "email"),
    ):
        assert _stage(result, action, channel) == ("suitability", rule)
    assert _chosen(result) == [("offer_savings", "email")]


def test_an_unknown_balance_fails_the_overdrawn_rule_but_no_card_passes_utilisation() -> None:
    result = _run([_request(current_account_balance=None, card_utilisation=None)])
    assert _stage(result, "offer_credit_card", "email") == (
        "suitability",
        "min_feature:current_account_balance",
    )


# --- consent --------------------------------------------------------------------------------------


def test_a_marketing_channel_needs_marketing_consent_for_that_channel() -> None:
    result = _run(consent=_consent("C1", marketing=("sms", "phone", "any")))
    assert _stage(result, "offer_mortgage", "email") == ("consent", "marketing_consent:email")
    assert _stage(result, "offer_mortgage", "phone")[0] != "consent"


def test_a_marketing_channel_needs_marketing_consent_for_any() -> None:
    result = _run(consent=_consent("C1", marketing=("email", "sms", "phone")))
    assert _stage(result, "offer_mortgage", "email") == ("consent", "marketing_consent:any")
    assert _stage(result, "offer_savings", "app")[0] != "consent"  # owned channel: profiling only


def test_an_owned_channel_needs_profiling_consent() -> None:
    result = _run(consent=_consent("C1", profiling=False))
    assert _stage(result, "offer_savings", "app") == ("consent", "profiling_consent:any")
    assert _stage(result, "offer_mortgage", "branch") == ("consent", "profiling_consent:any")
    assert _stage(result, "offer_savings", "email")[0] != "consent"


def test_no_consent_row_means_not_granted() -> None:
    result = _run(consent=_consent("someone else"))
    assert result.decisions.empty
    assert set(result.log[result.log.action_id != "no_action"].stage) == {"eligibility", "consent"}
    assert result.log[result.log.stage == "consent"].detail.str.contains("no record").all()


def test_revoked_consent_removes_the_channel_on_the_very_next_decision() -> None:
    first = _run()
    assert _chosen(first) == [("offer_mortgage", "email")]
    revoked = _consent("C1")
    revoked.loc[(revoked.purpose == "marketing") & (revoked.channel == "email"), "granted"] = False
    second = _run([_request(trigger="t2")], consent=revoked)
    assert "email" not in set(second.decisions.channel)
    assert _stage(second, "offer_mortgage", "email") == ("consent", "marketing_consent:email")
    assert "not granted" in second.log[second.log.stage == "consent"].detail.iloc[0]


# --- contact policy -------------------------------------------------------------------------------


def test_channel_cap_removes_a_channel_once_reached() -> None:
    contacts = [_contact("offer_savings", "email", d, "impression", f"d{d}") for d in (1, 2, 3)]
    contacts += [_contact("offer_savings", "email", d, "click", f"d{d}") for d in (1, 2, 3)]  # answered
    result = _run(contacts=contacts)
    assert _stage(result, "offer_mortgage", "email") == ("contact_policy", "channel_cap")
    detail = result.log[(result.log.rule == "channel_cap")].detail.iloc[0]
    assert detail == "email cap 3 per 7 days reached (3 contacts)"


def test_channel_cap_counts_a_contact_once_and_only_within_its_period() -> None:
    contacts = [
        _contact("offer_savings", "email", 1, "decided", "dA"),
        _contact("offer_savings", "email", 1, "impression", "dA"),
        _contact("offer_savings", "email", 1, "click", "dA"),
        _contact("offer_savings", "email", 2, "impression", None),  # no decision id: from a campaign
        _contact("offer_savings", "email", 1.5, "click", None),
        _contact("offer_savings", "email", 8, "impression", "dC"),  # before the 7-day period
        _contact("offer_savings", "email", 8, "click", "dC"),
    ]
    result = _run(contacts=contacts)
    assert _chosen(result) == [("offer_mortgage", "email")]


def test_cooldown_after_dismiss_blocks_the_dismissed_action_on_every_channel() -> None:
    result = _run(contacts=[_contact("offer_mortgage", "branch", 20, "dismiss")])
    for channel in ("email", "phone", "branch"):
        assert _stage(result, "offer_mortgage", channel) == ("contact_policy", "cooldown_after_dismiss")
    assert _chosen(result) == [("offer_credit_card", "email")]
    assert _chosen(_run(contacts=[_contact("offer_mortgage", "branch", 31, "dismiss")])) == [
        ("offer_mortgage", "email")
    ]


def test_a_complaint_stops_every_contact_for_its_cool_down() -> None:
    result = _run(contacts=[_contact("offer_savings", "app", 60, "complaint")])
    assert result.decisions.empty
    assert set(result.log[result.log.stage == "contact_policy"].rule) == {"cooldown_after_complaint"}
    assert set(result.log[result.log.action_id != "no_action"].stage) == {"eligibility", "contact_policy"}


def test_cooldown_after_ignore_rests_the_channel_of_an_unanswered_impression() -> None:
    ignored = _run(contacts=[_contact("offer_savings", "email", 3, "impression")])
    for action in ("offer_mortgage", "offer_credit_card", "offer_personal_loan"):
        assert _stage(ignored, action, "email") == ("contact_policy", "cooldown_after_ignore")
    assert _stage(ignored, "offer_mortgage", "phone")[0] == "chosen"  # other channels are not rested
    clicked = _run(
        contacts=[
            _contact("offer_savings", "email", 3, "impression"),
            _contact("offer_savings", "email", 2, "click"),
        ]
    )
    assert _chosen(clicked) == [("offer_mortgage", "email")]
    long_ago = _run(contacts=[_contact("offer_savings", "email", 8, "impression")])
    assert _chosen(long_ago) == [("offer_mortgage", "email")]


def test_the_same_action_is_not_repeated_within_repeat_days() -> None:
    recent = _run(contacts=[_contact("offer_mortgage", "branch", 13, "decided")])
    for channel in ("email", "phone", "branch"):
        assert _stage(recent, "offer_mortgage", channel) == ("contact_policy", "repeat_days")
    older = _run(contacts=[_contact("offer_mortgage", "branch", 15, "decided")])
    assert _chosen(older) == [("offer_mortgage", "email")]


def test_contacts_already_made_count_even_when_timed_after_this_decision() -> None:
    # triggers arrive out of event-time order: a contact decided earlier in processing can carry a
    # later clock than the decision being made now, and the customer has received it all the same
    later = _run(contacts=[_contact("offer_mortgage", "branch", -0.1, "decided")])
    assert _stage(later, "offer_mortgage", "email") == ("contact_policy", "repeat_days")
    dismissed = _run(contacts=[_contact("offer_mortgage", "app", -0.1, "dismiss", decision="d9")])
    assert _stage(dismissed, "offer_mortgage", "email") == ("contact_policy", "cooldown_after_dismiss")


def test_an_action_mutually_exclusive_with_an_active_serving_row_is_removed() -> None:
    serving = {"customer_number": "C1", "channel": "app", "action_id": "offer_personal_loan"}
    live = _run(active=[{**serving, "expires_at": NOW + pd.Timedelta(hours=5)}])
    for channel in ("email", "sms", "app"):
        assert _stage(live, "offer_credit_card", channel) == (
            "contact_policy",
            "exclusive_with_active:offer_personal_loan",
        )
    expired = _run(active=[{**serving, "expires_at": NOW - pd.Timedelta(hours=1)}])
    assert _stage(expired, "offer_credit_card", "sms")[0] != "contact_policy"


# --- arbitration ----------------------------------------------------------------------------------


def test_priority_is_propensity_times_value_times_lever_times_context_weight() -> None:
    catalog = _catalog(offer_mortgage={"business_lever": 0.5})
    result = _run([_request(trigger_type="product_view")], catalog=catalog)
    mortgage = result.log[(result.log.action_id == "offer_mortgage") & (result.log.channel == "email")]
    assert mortgage.priority.iloc[0] == pytest.approx(0.01 * 2500 * 0.5 * 1.5)
    assert _chosen(result) == [("offer_credit_card", "email")]  # 0.10 x 180 x 1.5 = 27 > 18.75


def test_at_most_one_contacting_action_per_decision_by_default() -> None:
    result = _run()
    assert len(result.decisions) == 1
    assert _stage(result, "offer_credit_card", "sms") == ("arbitration", "max_actions_per_decision")


def test_one_decision_never_holds_the_same_action_on_two_channels() -> None:
    result = _run(policy=_policy(arbitration={"max_actions_per_decision": 3}))
    assert result.decisions.action_id.is_unique and len(result.decisions) == 3
    assert _stage(result, "offer_mortgage", "phone") == ("arbitration", "conflict:offer_mortgage")


def test_one_decision_never_holds_two_mutually_exclusive_actions() -> None:
    request = _request(propensity_personal_loan=0.2)  # 0.2 x 350 = 70: beats the mortgage's 25
    result = _run([request], policy=_policy(arbitration={"max_actions_per_decision": 3}))
    chosen = dict(_chosen(result))
    assert chosen.get("offer_personal_loan") == "email"
    assert "offer_credit_card" not in chosen
    assert _stage(result, "offer_credit_card", "app") == ("arbitration", "conflict:offer_personal_loan")


def test_a_null_score_falls_back_and_the_trace_says_so() -> None:
    result = _run([_request(propensity_mortgage=None, propensity_credit_card=None)])
    mortgage = result.log[(result.log.action_id == "offer_mortgage") & (result.log.channel == "email")]
    assert mortgage.priority.iloc[0] == pytest.approx(0.02 * 2500)
    row = result.decisions.iloc[0]
    assert row.action_id == "offer_mortgage" and row.propensity == 0.02
    assert any("propensity_mortgage is missing (no champion model): fallback" in t for t in row.rule_trace)


def test_help_finish_application_is_boosted_when_the_trigger_is_about_its_product() -> None:
    app = {
        "open_application_id": "A7",
        "open_application_product": "mortgage",
        "holds_current_account": False,
    }
    plain = _run([_request(**app)])
    boosted = _run([_request(**app, trigger_type="application_abandoned", trigger_product="mortgage")])
    assert plain.decisions.iloc[0].propensity == pytest.approx(0.3)
    assert boosted.decisions.iloc[0].propensity == pytest.approx(0.6)
    assert boosted.decisions.iloc[0].priority == pytest.approx(0.6 * 400 * 2.0)


def test_the_chooser_picks_and_its_probability_is_recorded() -> None:
    seen: list[list[str]] = []

    def last_but_likely(decision_id: str, channel: str, candidates: pd.DataFrame) -> tuple[int, np.ndarray]:
        seen.append(list(candidates.action_id))
        n = len(candidates)
        return n - 2, np.full(n, 1.0 / n)

    result = _run(chooser=last_but_likely)
    assert seen[0][0] == "offer_mortgage" and seen[0][-1] == "no_action"  # best first
    row = result.decisions.iloc[0]
    assert row.action_id == seen[0][-2] and row.choice_probability == pytest.approx(1 / len(seen[0]))
    ranked = result.log[(result.log.channel == row.channel) & (result.log.stage == "ranked")]
    assert len(ranked) == len(seen[0]) - 1 and np.allclose(ranked.choice_probability, 1 / len(seen[0]))


def test_channels_choose_in_order_of_priority_times_the_learnt_lift() -> None:
    """With no evidence email, the first channel with the best priority (mortgage, 25), chooses
    first; once the bandit has learnt that phone converts five times better, phone does."""
    from pipelines.nba.bandit import ThompsonChooser, empty_state

    plain = ThompsonChooser(empty_state(), 1.0, 1.0, draws=200)
    assert [channel for _, channel in _chosen(_run(chooser=plain))] == ["email"]
    learnt = pd.DataFrame(
        [
            ("offer_mortgage", "email", 2000, 20, 100.0),
            ("offer_mortgage", "phone", 2000, 100, 100.0),
            ("offer_credit_card", "email", 2000, 20, 100.0),
            ("offer_credit_card", "phone", 2000, 100, 100.0),
        ],
        columns=["action_id", "channel", "contacts", "accepts", "expected_accepts"],
    )
    result = _run(chooser=ThompsonChooser(learnt, 1.0, 1.0, draws=200))
    assert _chosen(result) == [("offer_mortgage", "phone")]
    assert _stage(result, "offer_mortgage", "email") == ("arbitration", "conflict:offer_mortgage")


def test_the_thompson_chooser_decides_the_same_without_a_candidates_frame() -> None:
    """The funnel calls ThompsonChooser.choose_arrays (no frame per decision and channel, for
    speed); a chooser seen only through its frame call must make the same choices with the same
    logged probabilities."""
    from pipelines.nba.bandit import ThompsonChooser

    state = pd.DataFrame(
        [("offer_mortgage", "email", 50, 8, 4.0), ("offer_credit_card", "email", 50, 6, 3.0)],
        columns=["action_id", "channel", "contacts", "accepts", "expected_accepts"],
    )
    chooser = ThompsonChooser(state, 1.0, 1.0, draws=50, seed=5)
    calls: list[str] = []

    class ThroughFrames:  # the chooser's frame call and channel order, not its array call
        expected_lift = staticmethod(chooser.expected_lift)

        def __call__(self, decision_id: str, channel: str, candidates: pd.DataFrame) -> tuple[int, Any]:
            calls.append(decision_id)
            return chooser(decision_id, channel, candidates)

    requests = [_request(customer=f"C{n}", trigger=f"t{n}") for n in range(12)]
    fast, framed = _run(requests, chooser=chooser), _run(requests, chooser=ThroughFrames())
    assert calls  # the frame path really ran
    pd.testing.assert_frame_equal(fast.decisions, framed.decisions)
    pd.testing.assert_frame_equal(fast.log, framed.log)
    email = fast.log[(fast.log.channel == "email") & fast.log.stage.isin(["chosen", "ranked"])]
    assert email["choice_probability"].between(0.01, 0.99).sum() >= 2  # real draws among several


def test_a_chooser_answer_that_is_not_a_distribution_is_an_error() -> None:
    with pytest.raises(ValueError, match="chooser for decision"):
        _run(chooser=lambda decision_id, channel, candidates: (0, np.full(len(candidates), 0.9)))


# --- triggers, ids, customers ---------------------------------------------------------------------


def test_two_triggers_for_one_customer_give_one_decision() -> None:
    requests = [
        _request(trigger="t2", trigger_type="product_view"),
        # the freshest row's context wins: the mortgage was opened in between
        _request(
            trigger="t1", trigger_type="salary", event_time=NOW - pd.Timedelta(minutes=1), holds_mortgage=True
        ),
    ]
    result = _run(requests)
    assert result.decisions.decision_id.nunique() == 1 and len(result.decisions) == 1
    row = result.decisions.iloc[0]
    assert row.trigger_event_ids == ["t1", "t2"] and row.trigger_types == ["salary", "product_view"]
    assert row.action_id == "offer_credit_card"
    assert row.priority == pytest.approx(0.10 * 180 * 1.5)  # the larger context weight
    assert not result.log.duplicated(["decision_id", "action_id", "channel"]).any()
    assert result.log.decision_id.nunique() == 1


def test_decision_ids_are_deterministic() -> None:
    requests = [_request("C1", "t1"), _request("C2", "t9"), _request("C1", "t3")]
    first = _run(requests)
    again = _run(list(reversed(requests)))
    assert list(first.decisions.decision_id) == list(again.decisions.decision_id)
    expected = hashlib.sha256(b"C1|t1|t3").hexdigest()[:32]
    assert decision_id_for("C1", ["t3", "t1"]) == expected
    assert first.decisions.set_index("customer_number").decision_id["C1"] == expected


def test_a_replay_ignores_its_own_delivery_and_decides_the_same() -> None:
    first = _run()
    row = first.decisions.iloc[0]
    delivered = [_contact(row.action_id, row.channel, 0, "decided", row.decision_id)]
    serving = [{"customer_number": "C1", "channel": row.channel, "action_id": row.action_id,
                "expires_at": row.expires_at, "decision_id": row.decision_id}]  # fmt: skip
    replay = run_funnel(
        pd.DataFrame([_request()]),
        _consent("C1"),
        pd.DataFrame(delivered),
        pd.DataFrame(serving),
        _catalog(),
        _policy(),
    )
    pd.testing.assert_frame_equal(replay.decisions, first.decisions)


def test_an_inactive_customer_gets_no_decision() -> None:
    result = _run([_request("C1", customer_status="closed"), _request("C2", "t2")])
    assert set(result.decisions.customer_number) == {"C2"}
    closed = result.log[result.log.customer_number == "C1"]
    assert (
        len(closed) > 0 and set(closed.stage) == {"customer"} and set(closed.rule) == {"customer_not_active"}
    )


# --- control group --------------------------------------------------------------------------------


def test_control_group_membership_is_stable_and_matches_the_share() -> None:
    numbers = [f"C{i:06d}" for i in range(5000)]
    members = [in_control_group(n, 0.1) for n in numbers]
    assert members == [in_control_group(n, 0.1) for n in numbers]
    assert 0.08 < sum(members) / len(numbers) < 0.12
    assert not any(in_control_group(n, 0.0) for n in numbers[:200])
    # a larger share keeps everyone already in the group
    assert all(in_control_group(n, 0.3) for n, m in zip(numbers, members, strict=True) if m)


def test_the_control_group_gets_the_default_policy_through_every_rule() -> None:
    policy = _policy(exploration={"control_share": 0.5})
    control = next(f"K{i}" for i in range(100) if in_control_group(f"K{i}", 0.5))
    model = next(f"K{i}" for i in range(100) if not in_control_group(f"K{i}", 0.5))
    result = _run([_request(control, "t1"), _request(model, "t2")], policy=policy)
    rows = result.decisions.set_index("customer_number")
    assert rows.loc[control, "policy"] == "control" and rows.loc[control, "choice_probability"] == 1.0
    assert rows.loc[control, "action_id"] == "offer_savings"  # lowest default rank that survives
    assert rows.loc[model, "policy"] == "model" and rows.loc[model, "action_id"] == "offer_mortgage"
    # the rules still apply: holding savings leaves the next rank, the credit card
    held = _run([_request(control, "t1", holds_savings=True)], policy=policy)
    assert _chosen(held, control) == [("offer_credit_card", "email")]
    # ... and the channel is the one of the lowest rank, not of the highest priority (phone: mortgage)
    no_email = _run([_request(control, "t1")], _consent(control, marketing=("phone", "any")), policy=policy)
    assert _chosen(no_email, control) == [("offer_savings", "app")]


def test_a_batch_knows_its_decision_ids_before_deciding() -> None:
    """The decision job leaves these out of the bandit's evidence, so a replay decides the same."""
    requests = [_request("C1", "t1"), _request("C1", "t2"), _request("C2", "t9")]
    result = _run(requests)
    assert request_decision_ids(pd.DataFrame(requests)) == set(result.log["decision_id"])
    assert request_decision_ids(pd.DataFrame(requests[:1])) != {decision_id_for("C1", ["t1", "t2"])}


# --- the per-customer core ------------------------------------------------------------------------


def test_decide_one_per_customer_gives_exactly_the_rows_of_run_funnel() -> None:
    """The decision API runs decide_one on plain values; the streaming jobs run run_funnel on
    frames: one funnel, so the same inputs give the same decision and log rows."""
    from pipelines.nba.bandit import ThompsonChooser
    from pipelines.nba.funnel.records import decisions_frame, log_frame

    policy = _policy(exploration={"control_share": 0.3}, arbitration={"max_actions_per_decision": 2})
    catalog = _catalog()
    control = next(f"K{i}" for i in range(100) if in_control_group(f"K{i}", 0.3))
    requests = [
        _request("C1", "t1"),
        _request("C1", "t2", trigger_type="product_view", event_time=NOW - pd.Timedelta(minutes=1)),
        _request("C2", "t3", propensity_personal_loan=0.2, card_utilisation=0.5),
        _request("C3", "t4", customer_status="closed"),
        _request("C4", "t5", open_application_id="A7", open_application_product="mortgage"),
        _request("C5", "t6", failed_payments_7d=2),
        _request(control, "t7"),
    ]
    contacts = [
        _contact("offer_mortgage", "email", 3, "decided", "dA", customer="C2"),
        _contact("offer_savings", "app", 2, "impression", "dB", customer="C2"),
        _contact("offer_credit_card", "sms", 20, "dismiss", "dC", customer="C4"),
        _contact("offer_savings", "email", 1, "impression", None, customer="C5"),
    ]
    active = [
        {"customer_number": "C1", "channel": "app", "action_id": "offer_personal_loan",
         "expires_at": NOW + pd.Timedelta(hours=5), "decision_id": "dD"},
    ]  # fmt: skip
    customers = sorted({r["customer_number"] for r in requests})
    consent = _consent(*customers, marketing=("email", "phone", "any"))
    state = pd.DataFrame(
        [("offer_mortgage", "email", 50, 8, 4.0), ("offer_credit_card", "email", 50, 6, 3.0)],
        columns=["action_id", "channel", "contacts", "accepts", "expected_accepts"],
    )

    def chooser() -> ThompsonChooser:
        return ThompsonChooser(state, 1.0, 1.0, draws=50, seed=5)

    batch = run_funnel(
        pd.DataFrame(requests),
        consent,
        pd.DataFrame(contacts),
        pd.DataFrame(active),
        catalog,
        policy,
        chooser(),
    )

    granted = {(r.customer_number, r.purpose, r.channel): bool(r.granted) for r in consent.itertuples()}
    choose = chooser()
    decisions: list[dict[str, Any]] = []
    log: list[dict[str, Any]] = []
    for customer in customers:
        triggers = sorted(
            (r for r in requests if r["customer_number"] == customer),
            key=lambda r: (r["event_time"], r["trigger_event_id"]),
        )
        history = [
            ContactRow(c["action_id"], c["channel"], c["decision_id"], c["contacted_at"], c["response"])
            for c in contacts
            if c["customer_number"] == customer
        ]
        serving = [s for s in active if s["customer_number"] == customer]
        request = request_for(customer, triggers, policy)
        outcome = decide_one(request, catalog, policy, granted, history, serving, choose)
        decisions.extend(outcome.decisions)
        log.extend(outcome.log)

    assert len(batch.decisions) >= 5 and set(batch.log.policy) == {"model", "control"}  # a real mix
    pd.testing.assert_frame_equal(decisions_frame(decisions), batch.decisions)
    pd.testing.assert_frame_equal(log_frame(log), batch.log)
