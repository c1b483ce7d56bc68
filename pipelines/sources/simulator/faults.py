"""Data faults, each labelled, with one unambiguous expected fate per landing line.

Faults are mutually exclusive per event, so the fate of every line is known:

=================  ==========================================================  ============
fault              what the line looks like                                    fate
=================  ==========================================================  ============
(none)             a clean record                                              silver
duplicate          an exact copy of a clean record, delivered after it         duplicate
late               delivered in a later micro-batch than its event time, <=6h  silver
out_of_order       placed before earlier events inside its micro-batch         silver
malformed_json     the line is cut off (not valid JSON)                        quarantine
missing_required   one required field (never the key) is absent                quarantine
wrong_type         a typed field holds text (``"12,50"``, ``"05/01/2026 ..."``)  quarantine
unknown_customer   a well-formed customer number that no extract contains      quarantine
schema_drift       a clean ``digital`` record carrying the new drift field     silver
=================  ==========================================================  ============
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from pipelines.contracts import FAULT_TYPES, Contract

from .codec import replace_rows
from .config import HOUR_MS, MAX_LATE_MS

FAULT_LABELS: tuple[str | None, ...] = (None, *FAULT_TYPES)
CODE = {name: i for i, name in enumerate(FAULT_LABELS) if name is not None}
FATES: tuple[str, ...] = ("silver", "quarantine", "duplicate")
FATE_OF_FAULT = {
    None: "silver",
    "duplicate": "duplicate",
    "late": "silver",
    "out_of_order": "silver",
    "malformed_json": "quarantine",
    "missing_required": "quarantine",
    "wrong_type": "quarantine",
    "unknown_customer": "quarantine",
    "schema_drift": "silver",
}
FATE_CODE = np.array([FATES.index(FATE_OF_FAULT[label]) for label in FAULT_LABELS], dtype=np.int8)
# the field a wrong_type fault breaks, per source (a required field, so the fate is quarantine)
WRONG_TYPE_FIELD = {
    "transactions": "amount",
    "consent": "granted",
    "visits": "event_time",
    "contact_centre": "event_time",
    "digital": "event_time",
    "offer_responses": "event_time",
    "app_chat": "event_time",
}
LINE_FAULTS = ("malformed_json", "missing_required", "wrong_type")
# one encoder/decoder for every corrupted line (json.dumps with options builds a new one per call)
_ENCODER = json.JSONEncoder(separators=(",", ":"))
_DECODER = json.JSONDecoder()


def assign(u: np.ndarray, rates: dict[str, float], contract: Contract) -> np.ndarray:
    """Fault code per event from uniforms ``u`` (0 = none); at most one fault per event."""
    codes = np.zeros(len(u), dtype=np.int8)
    lo = 0.0
    for name, rate in rates.items():
        if name == "unknown_customer" and contract.customer_key is None:
            continue
        hi = lo + rate
        codes[(u >= lo) & (u < hi)] = CODE[name]
        lo = hi
    return codes


def _wrong_value(value: object, field: str) -> object:
    if field == "amount" and isinstance(value, (int, float)):
        return f"{value:.2f}".replace(".", ",")
    if field == "granted":
        return "yes" if value else "no"
    if isinstance(value, str) and len(value) >= 19:  # an ISO timestamp in a local format
        return f"{value[8:10]}/{value[5:7]}/{value[0:4]} {value[11:19]}"
    return "n/a"


def corrupt(lines: list[str], labels: list[str], contract: Contract, rng: np.random.Generator) -> list[str]:
    """Apply line-level faults (malformed, missing field, wrong type) to encoded lines."""
    out = []
    required = [f for f in contract.required_fields if f not in (contract.key, "schema_version")]
    for line, label in zip(lines, labels, strict=True):
        if label == "malformed_json":
            body = line.rstrip("\n")
            cut = int(rng.integers(len(body) // 3, len(body) - 1))
            out.append(body[:cut] + "\n")
            continue
        record = _DECODER.decode(line)
        if label == "missing_required":
            del record[required[int(rng.integers(len(required)))]]
        elif label == "wrong_type":
            field = WRONG_TYPE_FIELD.get(contract.source, contract.event_time)
            record[field] = _wrong_value(record[field], field)
        out.append(_ENCODER.encode(record) + "\n")
    return out


def apply_line_faults(
    lines: pa.Array, codes: np.ndarray, contract: Contract, rng: np.random.Generator
) -> pa.Array:
    """Replace the lines whose fault is a line-level fault; other lines are untouched."""
    mask = np.isin(codes, [CODE[f] for f in LINE_FAULTS])
    if not mask.any():
        return lines
    idx = np.flatnonzero(mask)
    new = corrupt(lines.take(pa.array(idx)).to_pylist(), [FAULT_LABELS[c] for c in codes[idx]], contract, rng)
    return replace_rows(lines, idx, new)


def schedule(t: np.ndarray, codes: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Delivery (batch start ms, position key ms) per event.

    Clean events land in the micro-batch of their event hour, in time order. Late events land in
    a later batch (5 minutes to 6 hours after they happened); out-of-order events are placed up
    to 30 minutes too early inside their own batch.
    """
    batch = t // HOUR_MS * HOUR_MS
    key = t.copy()
    late = np.flatnonzero(codes == CODE["late"])
    if len(late):
        tl = t[late]
        next_batch = (tl // HOUR_MS + 1) * HOUR_MS
        arrive = tl + rng.integers(5 * 60_000, MAX_LATE_MS, len(late))
        arrive = np.maximum(arrive, next_batch + rng.integers(0, 60_000, len(late)))
        arrive = np.minimum(arrive, tl + MAX_LATE_MS)
        batch[late] = arrive // HOUR_MS * HOUR_MS
        key[late] = arrive
    ooo = np.flatnonzero(codes == CODE["out_of_order"])
    key[ooo] = t[ooo] - rng.integers(60_000, 30 * 60_000, len(ooo))
    return batch, key


def duplicate_schedule(t: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Delivery of exact copies: a few milliseconds to 90 minutes after the original."""
    arrive = t + rng.integers(1, 90 * 60_000, len(t))
    return arrive // HOUR_MS * HOUR_MS, arrive
