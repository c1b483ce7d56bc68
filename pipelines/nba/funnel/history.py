"""A customer's contact history as a decision sees it: contacts made and the answers to them."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from pipelines.nba.catalog import missing

CONTACT_COLUMNS: tuple[str, ...] = (
    "customer_number",
    "action_id",
    "channel",
    "decision_id",
    "contacted_at",
    "response",
)
# Contact history responses: "decided" is a delivered decision; a contact starts with it or with
# an impression; the others are the customer's answers to a contact.
CONTACT_STARTS = ("decided", "impression")
ANSWERS = ("click", "accept", "dismiss", "complaint")


@dataclass(frozen=True)
class ContactRow:
    """One row of contact history: a contact made (decided, impression) or an answer to one."""

    action_id: str
    channel: str
    decision_id: str | None
    at: pd.Timestamp
    response: str


class ContactHistory:
    """One customer's contact history as the decision sees it.

    Everything already known counts, including rows timed after this decision's clock: triggers
    reach the job out of event-time order (sources land and stage separately, events arrive
    late), so a contact decided earlier in processing may carry a later decided_at, and it has
    been made all the same. Rows of this very decision (a replay after a crash may find its first
    attempt's delivery) are ignored. A contact is a delivered decision or an impression, counted
    once per (decision, action, channel) at its first time; clicks, accepts, dismissals and
    complaints are answers to it.
    """

    def __init__(self, rows: list[ContactRow], decision_id: str) -> None:
        self.rows = [r for r in rows if r.decision_id != decision_id]
        first: dict[tuple, ContactRow] = {}
        for r in self.rows:
            if r.response in CONTACT_STARTS:
                key = (
                    (r.decision_id, r.action_id, r.channel)
                    if r.decision_id
                    else (r.action_id, r.channel, r.at)
                )
                if key not in first or r.at < first[key].at:
                    first[key] = r
        self.contacts = sorted(first.values(), key=lambda r: (r.at, r.action_id, r.channel))

    def contacts_on(self, channel: str, since: pd.Timestamp) -> list[ContactRow]:
        return [r for r in self.contacts if r.channel == channel and r.at > since]

    def latest(self, response: str, since: pd.Timestamp, action_id: str | None = None) -> ContactRow | None:
        found = [
            r
            for r in self.rows
            if r.response == response and r.at > since and (action_id is None or r.action_id == action_id)
        ]
        return max(found, key=lambda r: r.at) if found else None

    def latest_contact(self, action_id: str, since: pd.Timestamp) -> ContactRow | None:
        found = [r for r in self.contacts if r.action_id == action_id and r.at > since]
        return found[-1] if found else None

    def unanswered_impression(self, channel: str, since: pd.Timestamp) -> ContactRow | None:
        """The latest impression on ``channel`` since ``since`` that got no answer (yet)."""
        for shown in sorted(self.rows, key=lambda r: r.at, reverse=True):
            if shown.response != "impression" or shown.channel != channel or shown.at <= since:
                continue
            answered = any(
                r.response in ANSWERS
                and r.at >= shown.at
                and r.action_id == shown.action_id
                and r.channel == shown.channel
                and (shown.decision_id is None or r.decision_id == shown.decision_id)
                for r in self.rows
            )
            if not answered:
                return shown
        return None


def contacts_by_customer(contacts: pd.DataFrame) -> dict[str, list[ContactRow]]:
    """Contact history rows (CONTACT_COLUMNS) by customer number; rows without a time are dropped."""
    if contacts.empty:
        return {}
    df = contacts[list(CONTACT_COLUMNS)].copy()
    df["contacted_at"] = pd.to_datetime(df["contacted_at"], utc=True)
    out: dict[str, list[ContactRow]] = {}
    for row in df.itertuples(index=False):
        if missing(row.contacted_at):
            continue
        decision_id = None if missing(row.decision_id) else str(row.decision_id)
        out.setdefault(str(row.customer_number), []).append(
            ContactRow(str(row.action_id), str(row.channel), decision_id, row.contacted_at, str(row.response))
        )
    return out
