"""The funnel for one customer, without frames: the one implementation of the decision.

The streaming jobs run it per customer of a micro-batch (:func:`pipelines.nba.funnel.run_funnel`)
and the decision API per request (``pipelines/serving/decisions.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipelines.config import DecisioningConfig
from pipelines.nba.catalog import ActionCatalog
from pipelines.nba.funnel.arbitration import Chooser, arbitration_stage
from pipelines.nba.funnel.candidates import candidates_for
from pipelines.nba.funnel.contact_policy import contact_policy_stage
from pipelines.nba.funnel.history import ContactHistory, ContactRow
from pipelines.nba.funnel.records import decision_rows, log_rows
from pipelines.nba.funnel.requests import DecisionRequest
from pipelines.nba.funnel.rules import ConsentKey, consent_stage, customer_stage, rules_stages


@dataclass(frozen=True)
class CustomerDecision:
    """One customer's decision: the served rows (DECISION_COLUMNS) and every candidate's fate
    (LOG_COLUMNS), as dicts; what :func:`run_funnel` turns into frames."""

    decision_id: str
    policy: str
    active: bool
    decisions: list[dict[str, Any]]
    log: list[dict[str, Any]]


def decide_one(
    request: DecisionRequest,
    catalog: ActionCatalog,
    policy: DecisioningConfig,
    granted: Mapping[ConsentKey, bool],
    contacts: Sequence[ContactRow],
    serving: Sequence[Mapping[str, Any]],
    choose: Chooser,
    channels: Sequence[str] | None = None,
) -> CustomerDecision:
    """The funnel for one customer: customer, rules, consent, contact policy, arbitration.

    ``granted``: (customer, purpose, channel) -> granted (no key: not granted); ``contacts``: the
    customer's contact history; ``serving``: their serving rows not yet expired (ACTIVE_COLUMNS,
    plus decision_id, ``expires_at`` a UTC timestamp); ``channels``: only these channels'
    candidates (default: every channel).
    """
    candidates = candidates_for(catalog, channels)
    active = customer_stage(request, candidates)
    decisions: list[dict[str, Any]] = []
    if active:
        rules_stages(request, candidates)
        consent_stage(request, candidates, granted)
        history = ContactHistory(list(contacts), request.decision_id)
        contact_policy_stage(request, candidates, catalog, policy, history, serving)
        arbitration_stage(request, candidates, catalog, policy, choose)
        decisions = decision_rows(request, candidates)
    return CustomerDecision(
        decision_id=request.decision_id,
        policy=request.policy,
        active=active,
        decisions=decisions,
        log=log_rows(request, candidates),
    )
