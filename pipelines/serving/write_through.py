"""Write-through: what the streams commit reaches the online store right after the commit.

Called from the streams' micro-batches, after their Delta commits, with the rows they wrote:

    silver consent           -> the customer's consent (a revocation holds for the next decision)
    silver offer_responses   -> contact history (cool-downs and caps hold for the next decision)
    gold customer_features   -> the context's features part
    decisions (served rows)  -> the actions being served, and "decided" contacts

Every write is idempotent (a replayed micro-batch writes the same values), so the hook runs each
time a batch function runs, replays included. The store is a copy of the lakehouse: a write that
fails is logged and counted, never fails the stream; `journeylake online-store sync` repairs it.
Each batch records its delay from the commit to the store (``jl:staleness``), which
``online-store status`` and the serving benchmark print as p50 / p99.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pandas as pd
import redis

from pipelines.config import Config
from pipelines.errors import JourneylakeError, first_line
from pipelines.serving.store import StoreWriter, connect

log = logging.getLogger(__name__)

FED_SOURCES = ("consent", "offer_responses")


class StoreFeed:
    """One stream job's writer to the store."""

    def __init__(self, cfg: Config) -> None:
        self.writer = StoreWriter(connect(cfg), cfg.online_store.contact_history_days)
        self.failures = 0

    @classmethod
    def open(cls, cfg: Config) -> StoreFeed | None:
        """The feed when ``online_store.write_through`` is on and the store answers, else None
        (said once: the jobs run as well without a store)."""
        if not cfg.online_store.write_through:
            return None
        try:
            return cls(cfg)
        except JourneylakeError as exc:
            log.warning("online store write-through off: %s", first_line(exc))
            return None

    def _guard(self, what: str, committed_at: float, body: Any) -> None:
        try:
            if body():
                self.writer.record_staleness([(time.time() - committed_at) * 1000])
        except (redis.RedisError, OSError) as exc:
            self.failures += 1
            log.warning(
                "online store write-through of %s failed (%s); `journeylake online-store sync` repairs it",
                what,
                first_line(exc),
            )

    def silver_batch(self, source: str, rows: pd.DataFrame, committed_at: float) -> None:
        """A silver micro-batch of ``source`` (its valid, de-duplicated rows) just committed."""
        if source == "consent":
            columns = ["customer_number", "purpose", "channel", "granted", "event_time", "event_id"]
            self._guard(
                "consent",
                committed_at,
                lambda: self.writer.put_consent(rows[columns].to_dict("records")),
            )
        elif source == "offer_responses":
            columns = ["customer_number", "action_id", "channel", "decision_id", "event_time", "response"]
            picked = rows[columns].rename(columns={"event_time": "contacted_at"})
            self._guard(
                "offer responses",
                committed_at,
                lambda: self.writer.add_contacts(picked.to_dict("records")),
            )

    def wants(self, source: str) -> bool:
        return source in FED_SOURCES

    def features(self, rows: pd.DataFrame, committed_at: float) -> None:
        """gold.customer_features rows just merged (the touched customers')."""
        from pipelines.nba.funnel import FEATURE_COLUMNS

        present = ["customer_number", *[c for c in FEATURE_COLUMNS if c in rows.columns]]
        self._guard(
            "features",
            committed_at,
            lambda: self.writer.put_context(
                "features", rows[present].to_dict("records"), int(committed_at * 1000)
            ),
        )

    def served(self, decisions: pd.DataFrame, committed_at: float) -> None:
        """Served rows a decision job just appended: the serving hash and "decided" contacts."""
        if decisions.empty:
            return
        contacts = decisions[decisions["action_id"] != "no_action"].assign(
            contacted_at=decisions["decided_at"], response="decided"
        )

        def write() -> int:
            served = self.writer.put_serving(decisions.to_dict("records"))
            self.writer.add_contacts(contacts.to_dict("records"))
            return served + len(contacts)

        self._guard("served actions", committed_at, write)
