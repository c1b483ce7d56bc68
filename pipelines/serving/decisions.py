"""One decision when a channel asks: the store's snapshot of the customer -> the funnel's
per-customer core (the same code the streaming jobs run) -> a reservation -> the answer.

Path of a request, with its fallbacks:

    resolve the id          unknown id                -> UnknownCustomer (the API answers 404)
    read the snapshot       store down / too slow     -> no contact at all (consent unknown)
    no model scores         (before train / score)    -> the catalog's default policy, flagged
    decide (the funnel)     past the deadline         -> the default policy on the same snapshot
    reserve (commit)        another request came first-> read again and decide again, up to
                                                         commit_attempts times, then no contact

Every fallback answers ``fallback: true`` with the reason, and is counted. The default policy is
the control group's (lowest ``default_rank`` among the candidates that survive every rule,
consent and contact policy): a fallback never contacts a customer without consent.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from pipelines.config import Config, DecisioningConfig
from pipelines.nba.bandit import ThompsonChooser, empty_state
from pipelines.nba.catalog import NO_ACTION, SCORE_COLUMNS, TRIGGER_INTENTS, ActionCatalog
from pipelines.nba.decide import model_of
from pipelines.nba.funnel import (
    Chooser,
    ContactRow,
    CustomerDecision,
    DecisionRequest,
    decide_one,
    decision_id_for,
    in_control_group,
)
from pipelines.serving.store import Contact, CustomerState, StoreReader, epoch_ms

log = logging.getLogger(__name__)

API_TRIGGER = "channel_request"  # the trigger type of a request without a product in its context
PRODUCT_TRIGGER = "product_view"  # ... and with one: weighed as the stream weighs a product view


class UnknownCustomer(LookupError):
    """No customer has this id in the store."""


@dataclass(frozen=True)
class Ask:
    """What a channel asks: who, where, in what context, how many actions at most."""

    customer_id: str
    channel: str
    context: Mapping[str, Any] = field(default_factory=dict)
    max_actions: int = 1


@dataclass
class Answer:
    decision_id: str | None
    request_id: str
    customer_number: str | None  # None when the id could not be resolved (store down, deadline)
    channel: str
    actions: list[dict[str, Any]]
    policy: str
    fallback: bool
    fallback_reason: str | None
    expires_at_ms: int | None
    decided_at_ms: int
    attempts: int = 1
    model_versions: dict[str, str] = field(default_factory=dict)  # of the scores decided with

    def to_json(self) -> dict[str, Any]:
        from pipelines.serving.delivery import iso

        return {
            "decision_id": self.decision_id,
            "request_id": self.request_id,
            "customer_number": self.customer_number,
            "channel": self.channel,
            "actions": self.actions,
            "policy": self.policy,
            "fallback": self.fallback,
            "fallback_reason": self.fallback_reason,
            "decided_at": iso(self.decided_at_ms),
            "expires_at": iso(self.expires_at_ms) if self.expires_at_ms is not None else None,
        }


@dataclass
class Counters:
    decisions: int = 0
    fallbacks: dict[str, int] = field(default_factory=dict)
    store_errors: int = 0
    conflicts: int = 0

    def fallback(self, reason: str) -> None:
        self.fallbacks[reason] = self.fallbacks.get(reason, 0) + 1


def contact_rows(contacts: list[Contact]) -> list[ContactRow]:
    return [
        ContactRow(
            c.action_id, c.channel, c.decision_id, pd.Timestamp(c.at_ms, unit="ms", tz="UTC"), c.response
        )
        for c in contacts
    ]


def active_rows(state: CustomerState, now_ms: int) -> list[dict[str, Any]]:
    """The actions being served (not expired), as the funnel's contact policy reads them."""
    rows = []
    for channel, row in state.serving.items():
        expires = row.get("expires_at")
        if expires is None or expires <= now_ms:
            continue
        rows.append(
            {
                "customer_number": state.customer_number,
                "channel": channel,
                "action_id": row.get("action_id"),
                "expires_at": pd.Timestamp(expires, unit="ms", tz="UTC"),
                "decision_id": row.get("decision_id"),
            }
        )
    return rows


def has_scores(context: Mapping[str, Any]) -> bool:
    return any(context.get(c) is not None for c in SCORE_COLUMNS)


class DecisionService:
    """Decides for one channel request at a time; safe to call concurrently from one event loop."""

    def __init__(self, cfg: Config, catalog: ActionCatalog, reader: StoreReader) -> None:
        self.cfg = cfg
        self.policy: DecisioningConfig = cfg.decisioning
        self.catalog = catalog
        self.reader = reader
        self.counters = Counters()
        exploration = self.policy.exploration
        self._chooser = self._thompson(empty_state())
        self._bandit_version: str | None = None
        self._bandit_read_at = 0.0
        self._locks: dict[str, asyncio.Lock] = {}
        self.ttl_ms = int(self.policy.contact_policy.decision_ttl_hours * 3_600_000)
        self.response_window_s = int(self.ttl_ms / 1000) + 30 * 86_400
        self.control_share = exploration.control_share

    def _thompson(self, state: pd.DataFrame) -> ThompsonChooser:
        e = self.policy.exploration
        return ThompsonChooser(state, e.prior_shape, e.prior_rate, draws=e.draws, seed=e.seed, lift=e.lift)

    async def refresh_bandit(self, force: bool = False) -> None:
        """The sampler's state as the last sync stored it (re-read every bandit_refresh_seconds)."""
        now = time.monotonic()
        if not force and now - self._bandit_read_at < self.policy.api.bandit_refresh_seconds:
            return
        self._bandit_read_at = now
        version, rows = await self.reader.bandit_state()
        if version is not None and version != self._bandit_version:
            state = pd.DataFrame(rows) if rows else empty_state()
            self._chooser = self._thompson(state)
            self._bandit_version = version

    # ------------------------------------------------------------------------------ deciding
    async def decide(self, ask: Ask) -> tuple[Answer, CustomerDecision | None]:
        """The answer, and the funnel's rows to deliver (None when nothing was decided)."""
        now_ms = int(time.time() * 1000)
        first = await self.reader.resolve_and_read(ask.customer_id, now_ms / 1000)
        if first is None:
            raise UnknownCustomer(ask.customer_id)
        cn = first.customer_number
        # requests of one customer take turns in this process: across processes the store's
        # version check keeps them apart, here a lock spares the losers a failed commit
        lock = self._locks.setdefault(cn, asyncio.Lock())
        # a free lock is taken without yielding, so the snapshot just read is still the latest
        # this process knows; after a wait for another request of the customer, it is read again
        snapshot = first if not lock.locked() else None
        try:
            async with lock:
                return await self._decide_locked(cn, ask, snapshot, now_ms)
        finally:
            if not lock.locked() and not lock._waiters:  # noqa: SLF001 - asyncio exposes no count
                self._locks.pop(cn, None)

    async def _decide_locked(
        self, cn: str, ask: Ask, snapshot: CustomerState | None, read_at_ms: int
    ) -> tuple[Answer, CustomerDecision | None]:
        await self.refresh_bandit()
        request_id = uuid.uuid4().hex
        attempts = 0
        while True:
            attempts += 1
            if snapshot is not None:
                state, now_ms, snapshot = snapshot, read_at_ms, None
            else:
                now_ms = int(time.time() * 1000)
                state = await self.reader.read(cn, now_ms / 1000)
            if not state.known:
                raise UnknownCustomer(ask.customer_id)
            control = in_control_group(cn, self.control_share)
            fallback_reason = None if has_scores(state.context) or control else "no_model_scores"
            use_default = control or fallback_reason is not None
            outcome = self.run_funnel_core(state, ask, request_id, now_ms, default_policy=use_default)
            answer, reservation = self.answer(state, ask, outcome, now_ms, fallback_reason, request_id)
            if reservation is None:
                answer.attempts = attempts
                return answer, outcome
            contacts, serving, record = reservation
            committed = await self.reader.commit(
                cn,
                state.version,
                contacts,
                serving,
                answer.decision_id or "",
                record,
                self.response_window_s,
                now_ms / 1000,
            )
            if committed:
                answer.attempts = attempts
                return answer, outcome
            self.counters.conflicts += 1
            if attempts >= self.policy.api.commit_attempts:
                return self.no_contact(cn, ask, "busy_customer", now_ms), None

    def run_funnel_core(
        self, state: CustomerState, ask: Ask, request_id: str, now_ms: int, *, default_policy: bool
    ) -> CustomerDecision:
        """The funnel's per-customer core on the store's snapshot (the streaming jobs' code)."""
        decided_at = pd.Timestamp(now_ms, unit="ms", tz="UTC")
        product = ask.context.get("product")
        trigger_type = PRODUCT_TRIGGER if product else API_TRIGGER
        trigger_id = f"api:{ask.channel}:{request_id}"
        weight = self.policy.context_weight(trigger_type)
        context = dict(state.context)
        context["trigger_product"] = product
        # what the channel says the customer came for: one of the text model's intents answers
        # the catalog's `intent:` rules as a note or chat message saying it would
        said = ask.context.get("intent")
        context[TRIGGER_INTENTS] = [str(said)] if said else []
        shown = f"{trigger_type} ({product})" if product else trigger_type
        request = DecisionRequest(
            decision_id=decision_id_for(state.customer_number, [trigger_id]),
            customer_number=state.customer_number,
            context=context,
            trigger_types=[trigger_type],
            trigger_event_ids=[trigger_id],
            trigger_products=[str(product)] if product else [],
            decided_at=decided_at,
            expires_at=decided_at + pd.Timedelta(milliseconds=self.ttl_ms),
            context_weight=weight,
            weight_note=f"triggers: {shown} on {ask.channel}; context weight {weight:g} ({trigger_type})",
            policy="control" if default_policy else "model",
        )
        consent = {(state.customer_number, p, ch): g for (p, ch), g in state.consent.items()}
        choose: Chooser = self._chooser
        return decide_one(
            request,
            self.catalog,
            self.policy,
            consent,
            contact_rows(state.contacts),
            active_rows(state, now_ms),
            choose,
            channels=(ask.channel,),
        )

    # ------------------------------------------------------------------------------ answers
    def answer(
        self,
        state: CustomerState,
        ask: Ask,
        outcome: CustomerDecision,
        now_ms: int,
        fallback_reason: str | None,
        request_id: str,
    ) -> tuple[Answer, tuple[list[Contact], dict[str, dict[str, Any]], dict[str, Any]] | None]:
        """The channel's answer and, when it contacts, what to reserve in the store."""
        cn = state.customer_number
        chosen = [
            {**r, "reason_codes": self.reason_codes(state, r["action_id"])}
            for r in outcome.decisions
            if r["channel"] == ask.channel
        ]
        ranked = sorted(
            (
                r
                for r in outcome.log
                if r["channel"] == ask.channel and r["stage"] == "ranked" and r["action_id"] != NO_ACTION
            ),
            key=lambda r: -(r["priority"] or 0.0),
        )
        decision_id = outcome.decision_id
        actions = [self._action_json(r, "chosen", state) for r in chosen]
        actions += [self._action_json(r, "alternative", state) for r in ranked[: max(0, ask.max_actions - 1)]]
        policy = outcome.policy
        expires_ms = now_ms + self.ttl_ms
        answer = Answer(
            decision_id=decision_id,
            request_id=request_id,
            customer_number=cn,
            channel=ask.channel,
            actions=actions,
            policy=policy,
            fallback=fallback_reason is not None,
            fallback_reason=fallback_reason,
            expires_at_ms=expires_ms if chosen else None,
            decided_at_ms=now_ms,
            model_versions=dict(state.context.get("model_versions") or {}),
        )
        self.counters.decisions += 1
        if fallback_reason:
            self.counters.fallback(fallback_reason)
        if not chosen:
            return answer, None
        contacts = [Contact(r["action_id"], r["channel"], decision_id, "decided", now_ms) for r in chosen]
        serving = {
            r["channel"]: {
                "action_id": r["action_id"],
                "decision_id": decision_id,
                "priority": r["priority"],
                "propensity": r["propensity"],
                "policy": policy,
                "reason_codes": r.get("reason_codes", []),
                "decided_at": now_ms,
                "expires_at": expires_ms,
                "source": "api",
            }
            for r in chosen
        }
        record = {
            "customer_number": cn,
            "decided_at": now_ms,
            "expires_at": expires_ms,
            "actions": [[r["action_id"], r["channel"]] for r in chosen]
            + [[r["action_id"], r["channel"]] for r in ranked[: max(0, ask.max_actions - 1)]],
        }
        return answer, (contacts, serving, record)

    def reason_codes(self, state: CustomerState, action_id: str) -> list[str]:
        """The action's model's reason codes for this customer (SHAP, from the latest scoring)."""
        model = model_of(action_id, self.catalog)
        return list(state.reasons.get(model, [])) if model else []

    def _action_json(self, row: Mapping[str, Any], role: str, state: CustomerState) -> dict[str, Any]:
        """One action of the answer, with its reasons in plain words: the model's reason codes,
        then the funnel's trace (a chosen action's rules passed, or why an alternative lost)."""
        action = self.catalog[row["action_id"]]
        trace = list(row.get("rule_trace") or ([row["detail"]] if row.get("detail") else []))
        return {
            "action_id": row["action_id"],
            "description": action.description,
            "role": role,
            "priority": row.get("priority"),
            "propensity": row.get("propensity"),
            "choice_probability": row.get("choice_probability"),
            "reasons": self.reason_codes(state, row["action_id"]) + trace,
        }

    def no_contact(self, cn: str | None, ask: Ask, reason: str, now_ms: int) -> Answer:
        """A fallback that contacts nobody: consent could not be read, or the customer is busy
        (``cn`` None: the asked id was not resolved to a customer number)."""
        self.counters.fallback(reason)
        self.counters.decisions += 1
        return Answer(
            decision_id=None,
            request_id=uuid.uuid4().hex,
            customer_number=cn,
            channel=ask.channel,
            actions=[],
            policy="fallback",
            fallback=True,
            fallback_reason=reason,
            expires_at_ms=None,
            decided_at_ms=now_ms,
        )

    async def default_on_snapshot(
        self, cn: str, ask: Ask, reason: str
    ) -> tuple[Answer, CustomerDecision | None]:
        """The default policy on a fresh snapshot (after a deadline breach)."""
        now_ms = int(time.time() * 1000)
        state = await self.reader.read(cn, now_ms / 1000)
        request_id = uuid.uuid4().hex
        outcome = self.run_funnel_core(state, ask, request_id, now_ms, default_policy=True)
        answer, reservation = self.answer(state, ask, outcome, now_ms, reason, request_id)
        if reservation is not None:
            contacts, serving, record = reservation
            ok = await self.reader.commit(
                cn, state.version, contacts, serving, answer.decision_id or "", record, self.response_window_s
            )
            if not ok:
                return self.no_contact(cn, ask, "busy_customer", now_ms), None
        return answer, outcome


def served_and_log_rows(
    outcome: CustomerDecision, answer: Answer, model_versions: Mapping[str, str] | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows for gold.served_actions and gold.decision_log, as the decision job writes them."""
    processed = int(time.time() * 1000)
    served = []
    for r in outcome.decisions:
        if r["channel"] != answer.channel:
            continue
        served.append(
            {
                **{k: _ms(v) for k, v in r.items()},
                "reason_codes": list(r.get("reason_codes") or []),
                "model_versions": dict(model_versions or {}),
                "triggered_at": answer.decided_at_ms,
                "processed_at": processed,
            }
        )
    log_rows = [{**{k: _ms(v) for k, v in r.items()}, "processed_at": processed} for r in outcome.log]
    return served, log_rows


def _ms(value: Any) -> Any:
    if isinstance(value, pd.Timestamp):
        return epoch_ms(value)
    return value
