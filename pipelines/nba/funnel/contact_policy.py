"""The contact-policy stage: channel caps, cool-downs after a dismissal / complaint / ignored
contact, no repeat within repeat_days, mutual exclusion with the actions being served."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import pandas as pd

from pipelines.config import ChannelCap, ContactPolicyConfig, DecisioningConfig
from pipelines.nba.catalog import Action, ActionCatalog, missing
from pipelines.nba.funnel.candidates import Candidate
from pipelines.nba.funnel.history import ContactHistory
from pipelines.nba.funnel.requests import DecisionRequest

# Serving rows not yet expired, plus ``decision_id`` when known (a replay ignores its own rows).
ACTIVE_COLUMNS: tuple[str, ...] = ("customer_number", "channel", "action_id", "expires_at")
Check = tuple[str, bool, str]  # (rule name, passed, plain words)


def contact_policy_stage(
    request: DecisionRequest,
    candidates: list[Candidate],
    catalog: ActionCatalog,
    policy: DecisioningConfig,
    history: ContactHistory,
    serving: Sequence[Mapping[str, Any]],
) -> None:
    """Caps, cool-downs, repeats and exclusions against what is being served; first failure wins."""
    checks = ContactPolicy(request, catalog, policy.contact_policy, history, serving)
    for c in candidates:
        if not c.alive or not c.action.contact:
            continue
        for check in checks.in_order():
            rule, ok, detail = check(c.action, c.channel)
            if not ok:
                c.remove("contact_policy", rule, detail)
                break
            c.trace.append(f"contact_policy: {rule} passed ({detail})")


class ContactPolicy:
    """The contact-policy checks of one decision; each returns (rule, passed, detail).

    Windows are ``(decided_at - N days, ...)``: whatever is already known from then on counts,
    even if timed after decided_at (see :class:`ContactHistory`); N = 0 switches a cool-down off.
    """

    def __init__(
        self,
        request: DecisionRequest,
        catalog: ActionCatalog,
        settings: ContactPolicyConfig,
        history: ContactHistory,
        serving: Sequence[Mapping[str, Any]],
    ) -> None:
        self.now = request.decided_at
        self.catalog = catalog
        self.settings = settings
        self.history = history
        # serving rows still live, except this decision's own (a replay)
        self.serving = sorted(
            (
                s
                for s in serving
                if (missing(s.get("expires_at")) or s["expires_at"] > self.now)
                and (missing(s.get("decision_id")) or s.get("decision_id") != request.decision_id)
            ),
            key=lambda s: (str(s["action_id"]), str(s["channel"])),
        )
        self._since: dict[int, pd.Timestamp] = {}

    def in_order(self) -> tuple[Callable[[Action, str], Check], ...]:
        return (
            self.channel_cap,
            self.cooldown_after_dismiss,
            self.cooldown_after_complaint,
            self.cooldown_after_ignore,
            self.repeat_days,
            self.exclusive_with_active,
        )

    def since(self, days: int) -> pd.Timestamp:
        """The window's start; N = 0 (switched off) starts it past anything already known."""
        if days not in self._since:
            self._since[days] = self.now + pd.Timedelta(days=36_500 if days == 0 else -days)
        return self._since[days]

    def channel_cap(self, action: Action, channel: str) -> Check:
        """At most max_contacts contacts on the channel in period_days (any action)."""
        # keyed by the known channels; a channel absent (or unknown) has no cap
        limit = cast(Mapping[str, ChannelCap], self.settings.channel_caps).get(channel)
        if limit is None:
            return "channel_cap", True, f"no cap on {channel}"
        n = len(self.history.contacts_on(channel, self.since(limit.period_days)))
        words = f"{channel} cap {limit.max_contacts} per {limit.period_days} days"
        if n >= limit.max_contacts:
            return "channel_cap", False, f"{words} reached ({n} contacts)"
        return "channel_cap", True, f"{words}: {n} contacts so far"

    def cooldown_after_dismiss(self, action: Action, channel: str) -> Check:
        """A dismissed action is not offered again, on any channel, for the cool-down."""
        days = self.settings.cooldown_after_dismiss_days
        hit = self.history.latest("dismiss", self.since(days), action.action_id)
        if hit:
            detail = f"dismissed {hit.action_id} on {hit.channel} on {hit.at.date()}; cool-down {days} days"
            return "cooldown_after_dismiss", False, detail
        return "cooldown_after_dismiss", True, f"no dismissal of {action.action_id} in {days} days"

    def cooldown_after_complaint(self, action: Action, channel: str) -> Check:
        """After a complaint about a contact, no contacting action at all for the cool-down."""
        days = self.settings.cooldown_after_complaint_days
        hit = self.history.latest("complaint", self.since(days))
        if hit:
            detail = (
                f"complaint about {hit.action_id} on {hit.channel} on {hit.at.date()}; "
                f"no contact for {days} days"
            )
            return "cooldown_after_complaint", False, detail
        return "cooldown_after_complaint", True, f"no complaint in {days} days"

    def cooldown_after_ignore(self, action: Action, channel: str) -> Check:
        """An impression not clicked (or otherwise answered) rests its channel for the cool-down."""
        days = self.settings.cooldown_after_ignore_days
        hit = self.history.unanswered_impression(channel, self.since(days))
        if hit:
            detail = (
                f"{hit.action_id} shown on {channel} on {hit.at.date()} without a click or answer; "
                f"{channel} rests {days} days"
            )
            return "cooldown_after_ignore", False, detail
        return "cooldown_after_ignore", True, f"no unanswered {channel} contact in {days} days"

    def repeat_days(self, action: Action, channel: str) -> Check:
        """The same action is not sent to the same customer again, on any channel, within N days."""
        days = self.settings.repeat_days
        hit = self.history.latest_contact(action.action_id, self.since(days))
        if hit:
            detail = (
                f"{action.action_id} already sent on {hit.channel} on {hit.at.date()}; "
                f"not repeated within {days} days"
            )
            return "repeat_days", False, detail
        return "repeat_days", True, f"{action.action_id} not sent in {days} days"

    def exclusive_with_active(self, action: Action, channel: str) -> Check:
        """Not while a mutually exclusive action is being served to the customer."""
        for s in self.serving:
            other = str(s["action_id"])
            if self.catalog.excluded(action.action_id, other):
                until = "" if missing(s.get("expires_at")) else f" until {s['expires_at']:%Y-%m-%d %H:%M}"
                detail = f"mutually exclusive with {other}, served on {s['channel']}{until}"
                return f"exclusive_with_active:{other}", False, detail
        return "exclusive_with_active", True, "no mutually exclusive action being served"


def serving_by_customer(active: pd.DataFrame) -> dict[str, list[dict[str, Any]]]:
    """Serving rows (ACTIVE_COLUMNS, plus decision_id if known) by customer number."""
    if active.empty:
        return {}
    df = active.copy()
    df["expires_at"] = pd.to_datetime(df["expires_at"], utc=True)
    out: dict[str, list[dict[str, Any]]] = {}
    for row in df.to_dict("records"):
        out.setdefault(str(row["customer_number"]), []).append(row)
    return out
