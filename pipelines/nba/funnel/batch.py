"""The funnel for a micro-batch of frames: what the streaming jobs call from ``foreachBatch``.

Frames in, :func:`pipelines.nba.funnel.core.decide_one` per customer, frames out.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from pipelines.config import DecisioningConfig
from pipelines.errors import InputError
from pipelines.nba.catalog import SCORE_COLUMNS, ActionCatalog
from pipelines.nba.funnel.arbitration import Chooser, greedy_chooser
from pipelines.nba.funnel.contact_policy import ACTIVE_COLUMNS, serving_by_customer
from pipelines.nba.funnel.core import decide_one
from pipelines.nba.funnel.history import CONTACT_COLUMNS, contacts_by_customer
from pipelines.nba.funnel.records import decisions_frame, log_frame
from pipelines.nba.funnel.requests import REQUEST_COLUMNS, merge_requests
from pipelines.nba.funnel.rules import CONSENT_COLUMNS, consent_index

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FunnelResult:
    """``decisions``: one row per customer and channel served; ``log``: every candidate once."""

    decisions: pd.DataFrame
    log: pd.DataFrame


def run_funnel(
    requests: pd.DataFrame,
    consent: pd.DataFrame,
    contacts: pd.DataFrame,
    active: pd.DataFrame,
    catalog: ActionCatalog,
    policy: DecisioningConfig,
    chooser: Chooser | None = None,
    channels: Sequence[str] | None = None,
) -> FunnelResult:
    """Decide for every customer in ``requests``: see :mod:`pipelines.nba.funnel` for the stages.

    ``requests``: trigger rows (REQUEST_COLUMNS, the columns the catalog's rules read, and any of
    CONTEXT_COLUMNS); several rows of one customer give one decision. ``consent``: current consent
    rows (CONSENT_COLUMNS). ``contacts``: contact history (CONTACT_COLUMNS, response one of
    decided, impression, click, accept, dismiss, complaint). ``active``: serving rows not yet
    expired (ACTIVE_COLUMNS, plus ``decision_id`` if known, so a replay ignores its own rows).
    Naive timestamps are taken as UTC. ``chooser`` defaults to
    :func:`~pipelines.nba.funnel.arbitration.greedy_chooser`; ``channels`` restricts the
    candidates to those channels (default: every channel).
    """
    rule_columns = [c for c in catalog.rule_columns() if c not in SCORE_COLUMNS]
    _require(requests, (*REQUEST_COLUMNS, *rule_columns), "decision requests")
    _require(consent, CONSENT_COLUMNS, "consent")
    _require(contacts, CONTACT_COLUMNS, "contact history")
    _require(active, ACTIVE_COLUMNS, "active serving rows")
    choose = chooser or greedy_chooser

    merged = merge_requests(requests, policy)
    granted = consent_index(consent)
    history = contacts_by_customer(contacts)
    serving = serving_by_customer(active)

    decisions: list[dict[str, Any]] = []
    log_rows: list[dict[str, Any]] = []
    inactive = 0
    for request in merged:
        outcome = decide_one(
            request,
            catalog,
            policy,
            granted,
            history.get(request.customer_number, []),
            serving.get(request.customer_number, []),
            choose,
            channels,
        )
        inactive += not outcome.active
        decisions.extend(outcome.decisions)
        log_rows.extend(outcome.log)
    if inactive:
        log.info("decision funnel: %d of %d customers not active, no decision", inactive, len(merged))
    return FunnelResult(decisions=decisions_frame(decisions), log=log_frame(log_rows))


def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    absent = [c for c in columns if c not in df.columns]
    if absent:
        raise InputError(f"{what}: missing column(s) {', '.join(absent)}")
