"""BANKING77's training split (vendored here, CC BY 4.0: see README.md) and its one held-out part.

The simulator draws customers' words from it and the intent model learns from it, so the queries
kept for evaluation must be kept from both: :func:`split` decides once, by a keyed hash of each
query's text, which queries are held out (a fixed share of each intent). The split depends on no
row order or random state, so a model trained today and a bank generated next month agree on it.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

FOLDER = Path(__file__).resolve().parent
HELD_OUT_SHARE = 0.2  # of each intent's queries, for evaluation only
_SPLIT_KEY = b"journeylake-banking77-split-v1"  # changing it changes which queries are held out


@dataclass(frozen=True)
class Query:
    text: str
    intent: str


@cache
def intents() -> tuple[str, ...]:
    """The 77 intents, in the data set's own order."""
    return tuple(json.loads((FOLDER / "categories.json").read_text()))


@cache
def queries() -> tuple[Query, ...]:
    """Every query of the training split, in file order."""
    with (FOLDER / "train.csv").open(newline="", encoding="utf-8") as fh:
        return tuple(Query(row["text"], row["category"]) for row in csv.DictReader(fh))


def _rank(query: Query) -> bytes:
    return hashlib.blake2b(query.text.encode(), key=_SPLIT_KEY, digest_size=8).digest()


@cache
def split() -> tuple[tuple[Query, ...], tuple[Query, ...]]:
    """(for training and simulation, held out for evaluation): of each intent's queries, the
    ``HELD_OUT_SHARE`` with the lowest keyed hash are held out (stratified, so every intent is
    evaluated on its share)."""
    by_intent: dict[str, list[Query]] = {}
    for q in queries():
        by_intent.setdefault(q.intent, []).append(q)
    kept: set[Query] = set()
    for rows in by_intent.values():
        kept.update(sorted(rows, key=_rank)[: round(len(rows) * HELD_OUT_SHARE)])
    return tuple(q for q in queries() if q not in kept), tuple(q for q in queries() if q in kept)
