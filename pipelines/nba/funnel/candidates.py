"""Candidates: an action on one of its channels, and how far it got through the funnel."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pipelines.contracts import OFFER_CHANNELS
from pipelines.nba.catalog import Action, ActionCatalog

# Where a candidate leaves the funnel (the log's ``stage``), in funnel order; what survives
# arbitration ends ``ranked`` or ``chosen``.
STAGES: tuple[str, ...] = (
    "customer",
    "validity",
    "eligibility",
    "suitability",
    "consent",
    "contact_policy",
    "arbitration",
    "ranked",
    "chosen",
)


@dataclass
class Candidate:
    """One action on one channel for one decision, and how far it got."""

    action: Action
    channel: str
    stage: str | None = None  # where it left the funnel, or "chosen" / "ranked"
    rule: str | None = None
    detail: str | None = None
    trace: list[str] = field(default_factory=list)  # the stages and rules it passed
    priority: float | None = None
    propensity: float | None = None
    propensity_note: str = ""
    choice_probability: float | None = None

    @property
    def alive(self) -> bool:
        return self.stage is None

    def remove(self, stage: str, rule: str, detail: str) -> None:
        self.stage, self.rule, self.detail = stage, rule, detail


def candidates_for(catalog: ActionCatalog, channels: Sequence[str] | None = None) -> list[Candidate]:
    """Every action on each of its channels, then no_action on every channel in use (only
    ``channels`` when given: a channel asking for itself)."""
    wanted = OFFER_CHANNELS if channels is None else tuple(ch for ch in OFFER_CHANNELS if ch in channels)
    out = [Candidate(a, ch) for a in catalog.contacting for ch in wanted if ch in a.channels]
    out += [Candidate(catalog.no_action, ch) for ch in catalog.channels if ch in wanted]
    return out
