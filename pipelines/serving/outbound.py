"""Decisions out to channel systems: the ``<kafka.topic_prefix>decisions`` topic.

Email, push and SMS senders subscribe to one topic, whoever decided: the decision API (its
delivery publishes each answer, ``source: "api"``) and the event-triggered decision jobs (the
:class:`DecisionPublisher` commit listener publishes what a micro-batch served, ``source:
"stream"``), both when ``decisioning.api.publish_decisions`` is on. A message is one decision:
its id, the customer, the channel, the actions in rank order, when it was decided and until
when it holds; it is keyed by customer so one customer's decisions stay in order.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pandas as pd

from pipelines.config import Config
from pipelines.errors import first_line

log = logging.getLogger(__name__)

DECISIONS_TOPIC = "decisions"  # after kafka.topic_prefix


def kafka_writer(cfg: Config) -> Any:
    """A producer for the configured cluster (the simulator's writer: idempotent, acks=all)."""
    from pipelines.lakehouse.bronze import kafka_options
    from pipelines.sources.simulator.kafka_writer import KafkaWriter

    kafka = cfg.kafka
    return KafkaWriter(
        kafka.bootstrap_servers,
        topic_prefix=kafka.topic_prefix,
        partitions=kafka.broker.partitions,
        retention_ms=kafka.retention_ms,
        options=kafka_options(cfg),
    )


def _iso(value: Any) -> str | None:
    """A timestamp as ISO-8601 UTC (Spark hands naive UTC datetimes to pandas)."""
    if value is None or pd.isna(value):
        return None
    stamp = pd.Timestamp(value)
    return (stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")).isoformat()


def _number(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def stream_messages(served: pd.DataFrame) -> list[dict[str, Any]]:
    """``gold.served_actions`` rows of a decision job as decision messages (one per decision)."""
    messages: list[dict[str, Any]] = []
    if served.empty:
        return messages
    ordered = served.sort_values(["decision_id", "priority"], ascending=[True, False], kind="stable")
    for decision_id, rows in ordered.groupby("decision_id", sort=True):
        first = rows.iloc[0]
        messages.append(
            {
                "decision_id": str(decision_id),
                "customer_number": str(first["customer_number"]),
                "channel": str(first["channel"]),
                "actions": [
                    {
                        "action_id": str(row["action_id"]),
                        "role": "chosen",
                        "priority": _number(row.get("priority")),
                        "propensity": _number(row.get("propensity")),
                    }
                    for _, row in rows.iterrows()
                ],
                "fallback": False,
                "decided_at": _iso(first.get("decided_at")),
                "expires_at": _iso(first.get("expires_at")),
                "source": "stream",
            }
        )
    return messages


def encode(messages: list[dict[str, Any]]) -> bytes:
    """JSON lines, the form every journeylake topic carries."""
    return "".join(json.dumps(m, separators=(",", ":"), default=str) + "\n" for m in messages).encode()


class DecisionPublisher:
    """A commit listener that publishes what a decision job served to the decisions topic.

    A replayed micro-batch publishes its decisions again with the same decision ids: consumers
    de-duplicate by ``decision_id`` (the topic is at-least-once, like every Kafka feed).
    """

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.published = 0
        self.failures = 0
        self._writer: Any = None
        self._batches = 0

    @classmethod
    def open(cls, cfg: Config) -> DecisionPublisher | None:
        """A publisher when ``decisioning.api.publish_decisions`` is on, else None."""
        return cls(cfg) if cfg.decisioning.api.publish_decisions else None

    # CommitListener
    def wants(self, source: str) -> bool:
        return False

    def silver_batch(self, source: str, rows: pd.DataFrame, committed_at: float) -> None:
        return None

    def features(self, rows: pd.DataFrame, committed_at: float) -> None:
        return None

    def served(self, rows: pd.DataFrame, committed_at: float) -> None:
        messages = stream_messages(rows)
        if not messages:
            return
        try:
            if self._writer is None:
                self._writer = kafka_writer(self.cfg)
            self._batches += 1
            self._writer.write_batch(DECISIONS_TOPIC, f"stream-{self._batches:08d}", encode(messages))
            self._writer.flush()
            self.published += len(messages)
        except Exception as exc:  # a listener must not fail the stream: the rows are in Delta already
            self.failures += 1
            log.warning("publishing %d decision(s) to Kafka failed: %s", len(messages), first_line(exc))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
