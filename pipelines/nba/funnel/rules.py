"""The funnel's first stages: customer, validity, eligibility, suitability and consent.

Each removes a candidate with the first rule it fails and records what it passed in the
candidate's trace.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from pipelines.contracts import MARKETING_CHANNELS, OFFER_CHANNELS
from pipelines.nba.catalog import missing
from pipelines.nba.funnel.candidates import Candidate
from pipelines.nba.funnel.requests import DecisionRequest

CONSENT_COLUMNS: tuple[str, ...] = ("customer_number", "purpose", "channel", "granted")
ConsentKey = tuple[str, str, str]  # (customer_number, purpose, channel)


def customer_stage(request: DecisionRequest, candidates: list[Candidate]) -> bool:
    """Whether the customer is active; if not, every candidate leaves here (no decision at all)."""
    status = request.context.get("customer_status")
    if status == "active":
        return True
    shown = "unknown" if missing(status) else repr(status)
    for c in candidates:
        c.remove("customer", "customer_not_active", f"customer status is {shown}, not active")
    return False


def rules_stages(request: DecisionRequest, candidates: list[Candidate]) -> None:
    """validity, eligibility, suitability: per action (channel does not matter), first failure wins."""
    day = request.decided_at.date()
    by_action: dict[str, list[Candidate]] = {}
    for c in candidates:
        by_action.setdefault(c.action.action_id, []).append(c)
    for group in by_action.values():
        action = group[0].action
        if not action.contact:
            continue
        verdict = action.validity(day)
        outcome: tuple[str, str, str] | None = None
        passed = []
        if not verdict.passed:
            outcome = ("validity", "valid_window", verdict.detail)
        else:
            passed.append(f"validity: {verdict.detail}")
            for stage, rule in action.rules():
                verdict = rule.evaluate(request.context, action)
                if not verdict.passed:
                    outcome = (stage, rule.label, verdict.detail)
                    break
                passed.append(f"{stage}: {rule.label} passed ({verdict.detail})")
        for c in group:
            if outcome:
                c.remove(*outcome)
            else:
                c.trace.extend(passed)


def consent_stage(
    request: DecisionRequest, candidates: list[Candidate], granted: Mapping[ConsentKey, bool]
) -> None:
    """The simulator's rule, for every contacting action whatever its purpose.

    A marketing channel (email, sms, push, phone) needs marketing consent for that channel and for
    ``any``; the bank's own channels (web, app, branch) need profiling consent for ``any``. No row
    means not granted: consent is never assumed.
    """
    verdicts: dict[str, tuple[str | None, str]] = {}
    for channel in OFFER_CHANNELS:
        if channel in MARKETING_CHANNELS:
            needed = [("marketing", channel), ("marketing", "any")]
        else:
            needed = [("profiling", "any")]
        failed = None
        for purpose, scope in needed:
            state = granted.get((request.customer_number, purpose, scope))
            if not state:
                how = "no record" if state is None else "not granted"
                failed = (f"{purpose}_consent:{scope}", f"{purpose} consent for {scope}: {how}")
                break
        if failed:
            verdicts[channel] = failed
        else:
            granted_words = " and ".join(f"{p} consent for {s}" for p, s in needed)
            verdicts[channel] = (None, f"consent: {granted_words} granted")
    for c in candidates:
        if not c.alive or not c.action.contact:
            continue
        rule, detail = verdicts[c.channel]
        if rule:
            c.remove("consent", rule, f"{detail} ({c.channel} needs it)")
        else:
            c.trace.append(detail)


def consent_index(consent: pd.DataFrame) -> dict[ConsentKey, bool]:
    """(customer, purpose, channel) -> granted; several rows for one key: granted only if all are."""
    if consent.empty:
        return {}
    df = consent[list(CONSENT_COLUMNS)].copy()
    df["customer_number"] = df["customer_number"].astype(str)
    df["granted"] = df["granted"].map(lambda g: (not missing(g)) and bool(g))
    granted = df.groupby(["customer_number", "purpose", "channel"])["granted"].all()
    return {key: bool(value) for key, value in granted.items()}
