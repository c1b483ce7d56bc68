"""Decision requests: trigger rows merged into one request per customer, with its decision id and
policy (model or control group).

A micro-batch may hold several triggers of one customer; they give one decision, whose id is a
hash of the customer and the trigger ids, so a replay after a crash gets the same id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipelines.config import DecisioningConfig
from pipelines.contracts import PRODUCTS
from pipelines.errors import InputError
from pipelines.nba.catalog import SCORE_COLUMNS, TRIGGER_INTENTS, missing
from pipelines.nba.catalog import plain_number as num

REQUEST_COLUMNS: tuple[str, ...] = (
    "customer_number",
    "trigger_event_id",
    "trigger_type",
    "event_time",
    "decided_at",
    "customer_status",
)
# The columns of gold.customer_features a decision reads.
FEATURE_COLUMNS: tuple[str, ...] = (
    "current_account_balance",
    "card_utilisation",
    "failed_payments_7d",
    "complaints_7d",
    "open_application_id",
    "open_application_product",
    "open_application_last_step",
    "salary_received_7d",
    "last_product_viewed",
)
# Read when present (null when absent): the trigger's product and intent, holdings, gold features,
# scores. A request's context gathers its triggers' intents into TRIGGER_INTENTS (a list).
CONTEXT_COLUMNS: tuple[str, ...] = (
    "trigger_product",
    "trigger_intent",
    *(f"holds_{p}" for p in PRODUCTS),
    *FEATURE_COLUMNS,
    *SCORE_COLUMNS,
    "segment_name",
    "model_versions",
)


@dataclass(frozen=True)
class DecisionRequest:
    """The triggers of one customer in one micro-batch, merged into one decision."""

    decision_id: str
    customer_number: str
    context: Mapping[str, Any]  # the freshest trigger row: holdings, features, scores, status
    trigger_types: list[str]
    trigger_event_ids: list[str]
    trigger_products: list[str]
    decided_at: pd.Timestamp
    expires_at: pd.Timestamp
    context_weight: float
    weight_note: str
    policy: str  # "model" or "control"


def in_control_group(customer_number: str, share: float) -> bool:
    """Whether the customer is in the control group: sha256 of the number mapped to [0, 1) < share.

    A hash, not a random draw, so a customer stays in the same group across micro-batches,
    restarts and machines, and the groups do not depend on who else is in the batch.
    """
    digest = hashlib.sha256(str(customer_number).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < share


def decision_id_for(customer_number: str, trigger_event_ids: list[str]) -> str:
    """sha256 of the customer and the sorted trigger event ids (hex[:32]): a replay gets the same id."""
    key = "|".join([str(customer_number), *sorted(str(t) for t in trigger_event_ids)])
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def request_decision_ids(requests: pd.DataFrame) -> set[str]:
    """The decision ids a batch of requests will get (one per customer), before deciding.

    The decision job leaves these out of the evidence it decides with: when a micro-batch is
    replayed after a crash whose log append had already committed, the replay must see the bandit
    and contact history as the first attempt did, or it could choose differently under the same
    decision id.
    """
    if requests.empty:
        return set()
    ids: dict[str, set[str]] = {}
    for customer, trigger in zip(
        requests["customer_number"].astype(str), requests["trigger_event_id"].astype(str), strict=True
    ):
        ids.setdefault(customer, set()).add(trigger)
    return {decision_id_for(customer, sorted(triggers)) for customer, triggers in ids.items()}


def request_for(
    customer_number: str, triggers: Iterable[Mapping[str, Any]], policy: DecisioningConfig
) -> DecisionRequest:
    """One customer's trigger rows merged into one request, without frames.

    Each row holds REQUEST_COLUMNS (``event_time`` and ``decided_at`` as UTC timestamps, ids as
    strings) and its context; rows come in event order, and a repeated trigger id keeps its
    latest row. The context is the freshest row's, the context weight the largest trigger's, the
    decision time the latest.
    """
    by_event: dict[str, Mapping[str, Any]] = {}
    for row in triggers:
        by_event[str(row["trigger_event_id"])] = row
    if not by_event:
        raise InputError(f"decision requests: no trigger row for customer {customer_number}")
    freshest = max(by_event.values(), key=lambda r: (r["event_time"], str(r["trigger_event_id"])))
    ids = sorted(by_event)
    types = [str(by_event[i]["trigger_type"]) for i in ids]
    products = [by_event[i].get("trigger_product") for i in ids]
    weights = [policy.context_weight(t) for t in types]
    best = int(np.argmax(weights))
    decided_at = max(r["decided_at"] for r in by_event.values())
    ttl = pd.Timedelta(hours=policy.contact_policy.decision_ttl_hours)
    about = [by_event[i].get("trigger_product") for i in ids]
    about = [
        p if not missing(p) else by_event[i].get("trigger_intent") for p, i in zip(about, ids, strict=True)
    ]
    triggers_words = ", ".join(t if missing(a) else f"{t} ({a})" for t, a in zip(types, about, strict=True))
    control = in_control_group(customer_number, policy.exploration.control_share)
    said = [by_event[i].get("trigger_intent") for i in ids]
    return DecisionRequest(
        decision_id=decision_id_for(customer_number, ids),
        customer_number=customer_number,
        context={**freshest, TRIGGER_INTENTS: [str(i) for i in said if not missing(i)]},
        trigger_types=types,
        trigger_event_ids=ids,
        trigger_products=[str(p) for p in products if not missing(p)],
        decided_at=decided_at,
        expires_at=decided_at + ttl,
        context_weight=weights[best],
        weight_note=f"triggers: {triggers_words}; context weight {num(weights[best])} ({types[best]})",
        policy="control" if control else "model",
    )


def merge_requests(requests: pd.DataFrame, policy: DecisioningConfig) -> list[DecisionRequest]:
    """One request per customer (see :func:`request_for`), in customer-number order."""
    if requests.empty:
        return []
    df = requests.copy()
    df["event_time"] = pd.to_datetime(df["event_time"], utc=True)
    df["decided_at"] = pd.to_datetime(df["decided_at"], utc=True)
    if df["decided_at"].isna().any():
        raise InputError("decision requests: decided_at is null in some rows")
    df["customer_number"] = df["customer_number"].astype(str)
    df["trigger_event_id"] = df["trigger_event_id"].astype(str)
    if "trigger_product" not in df.columns:
        df["trigger_product"] = None
    df = df.sort_values(["customer_number", "event_time", "trigger_event_id"], kind="stable")
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in df.to_dict("records"):  # in event order
        groups.setdefault(row["customer_number"], []).append(row)
    return [request_for(customer, groups[customer], policy) for customer in sorted(groups)]
