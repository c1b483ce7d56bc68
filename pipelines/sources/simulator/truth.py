"""The hidden truth beside the landing files: only tests, benchmarks and evaluation read it.

Every table is Parquet under ``<out>/truth/``; tables that grow day by day are streamed as one
row group per day so memory stays bounded. ``records`` is a folder (one part per writer) because
the closed loop appends the lines it delivers later. See ``pipelines/sources/README.md``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .writers import LEDGER_SCHEMA

TS = pa.timestamp("ms", tz="UTC")

SCHEMAS: dict[str, pa.Schema] = {
    "records": LEDGER_SCHEMA,
    "propensity": pa.schema(
        [
            ("date", pa.date32()),
            ("person_id", pa.string()),
            ("customer_number", pa.string()),
            ("product", pa.string()),
            ("held", pa.bool_()),
            ("p_apply", pa.float32()),
            ("p_open", pa.float32()),  # through an application: intent x completion x approval
            ("p_open_campaign", pa.float32()),  # through an accepted offer of the bank's own campaigns
            ("p_accept", pa.float32()),
        ]
    ),
    "daily_state": pa.schema(
        [
            ("date", pa.date32()),
            ("person_id", pa.string()),
            ("customer_number", pa.string()),
            ("active", pa.bool_()),
            ("churn_hazard", pa.float32()),
            ("home_buying", pa.float32()),
            ("cash_stress", pa.float32()),
            ("credit_stressed", pa.bool_()),
            ("abandoned_application", pa.bool_()),
            ("contacts_7d", pa.int32()),
            ("p_accept_retention_call", pa.float32()),
            ("p_accept_help_finish_application", pa.float32()),
        ]
    ),
    "contacts": pa.schema(
        [
            ("decision_id", pa.string()),
            ("person_id", pa.string()),
            ("customer_number", pa.string()),
            ("decided_at", TS),
            ("action_id", pa.string()),
            ("channel", pa.string()),
            ("origin", pa.string()),
            ("consent_ok", pa.bool_()),
            ("contacts_7d", pa.int32()),
            ("p_accept", pa.float32()),
            ("p_click", pa.float64()),
            ("p_complaint", pa.float64()),
            ("accepted", pa.bool_()),
            ("complained", pa.bool_()),
        ]
    ),
    "consent": pa.schema(
        [
            ("person_id", pa.string()),
            ("customer_number", pa.string()),
            ("event_time", TS),
            ("purpose", pa.string()),
            ("channel", pa.string()),
            ("granted", pa.bool_()),
        ]
    ),
    "applications": pa.schema(
        [
            ("application_id", pa.string()),
            ("person_id", pa.string()),
            ("customer_number", pa.string()),
            ("product", pa.string()),
            ("channel", pa.string()),
            ("date", pa.date32()),
            ("last_step", pa.string()),
            ("submitted", pa.bool_()),
            ("approved", pa.bool_()),
        ]
    ),
    "utterances": pa.schema(
        [
            ("event_id", pa.string()),
            ("source", pa.string()),  # contact_centre or app_chat
            ("person_id", pa.string()),
            ("customer_number", pa.string()),
            ("event_time", TS),
            ("situation", pa.string()),  # what gave the customer something to say (texts.SITUATIONS)
            ("true_intent", pa.string()),  # a BANKING77 intent
            ("true_topic", pa.string()),  # the coarse topic of the intent (contracts.CONTACT_TOPICS)
            ("true_sentiment", pa.float32()),  # -1 angry .. 1 delighted
            ("states_intent", pa.bool_()),  # the words are a query of the intent (not a chat follow-up)
            ("topic_correct", pa.bool_()),  # the agent's topic is the true one (null for app_chat)
        ]
    ),
    "life_events": pa.schema(
        [
            ("person_id", pa.string()),
            ("customer_number", pa.string()),
            ("event", pa.string()),
            ("date", pa.date32()),
            ("fitting_action", pa.string()),
        ]
    ),
}


# dictionary-encode only low-cardinality columns: hashing millions of ids costs more than it saves
_DICTIONARY_COLUMNS = {
    "source",
    "file",
    "fault",
    "expected_fate",
    "product",
    "date",
    "channel",
    "action_id",
    "origin",
    "purpose",
    "event",
    "fitting_action",
    "last_step",
    "situation",
    "true_intent",
    "true_topic",
}


# Tables streamed day by day (the line-by-line records ledger, propensity, ...) are large and
# written while generating, so they use a cheap codec; whole tables written once stay zstd.
STREAM_COMPRESSION = "snappy"


def _statistics_columns(schema: pa.Schema) -> list[str]:
    """Min/max statistics only where they are cheap and useful for pruning (not on strings)."""
    return [f.name for f in schema if not pa.types.is_string(f.type)]


class TruthWriter:
    """Streams truth tables to Parquet; ``close()`` finishes every file."""

    def __init__(self, out: str | os.PathLike[str]) -> None:
        self.root = Path(out) / "truth"
        self.root.mkdir(parents=True, exist_ok=True)
        self._writers: dict[str, pq.ParquetWriter] = {}
        self.rows: dict[str, int] = {}

    def path(self, name: str) -> Path:
        if name == "records":
            (self.root / "records").mkdir(exist_ok=True)
            return self.root / "records" / "part-00000.parquet"
        return self.root / f"{name}.parquet"

    def append(self, name: str, table: pa.Table) -> None:
        """Add rows to a streamed table (schema from ``SCHEMAS``)."""
        schema = SCHEMAS[name]
        table = table.select(schema.names).cast(schema)
        if name not in self._writers:
            low_cardinality = [f.name for f in schema if f.name in _DICTIONARY_COLUMNS]
            self._writers[name] = pq.ParquetWriter(
                self.path(name),
                schema,
                compression=STREAM_COMPRESSION,
                use_dictionary=low_cardinality,
                write_statistics=_statistics_columns(schema),
            )
        if table.num_rows:
            self._writers[name].write_table(table)
        self.rows[name] = self.rows.get(name, 0) + table.num_rows

    def write(self, name: str, table: pa.Table) -> None:
        """Write a whole table at once."""
        pq.write_table(table, self.path(name), compression="zstd")
        self.rows[name] = table.num_rows

    def write_json(self, name: str, payload: dict[str, Any]) -> None:
        (self.root / f"{name}.json").write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")

    def close(self) -> None:
        for name in list(self._writers):
            self._writers.pop(name).close()
        for name in SCHEMAS:  # every streamed table exists, even when empty
            if name not in self.rows:
                pq.write_table(SCHEMAS[name].empty_table(), self.path(name))
                self.rows[name] = 0
