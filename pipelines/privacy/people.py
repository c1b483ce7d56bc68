"""Who an erasure is about: any known id resolved to the person and every id they have.

The identity map (``gold.identity_map``, built by dbt) links each source id (core-banking number,
login, device, cookie, CRM contact) to one unified customer; an asked id found there brings all
of that customer's ids. Before dbt has built the map, core-banking numbers and logins are
resolved through ``silver.customers``. A row then belongs to the person when its strongest
identifier (``privacy.identifiers``, in order) is one of theirs; the same rule reads the
identifiers inside raw JSON records (bronze, quarantine, landing files).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import SparkSession

from pipelines.config import Config
from pipelines.tables import Tables

IDENTITY_MAP = "identity_map"  # gold's, dbt's model of the same name
# identifier columns whose values silver makes (the keys of a person's rows, which name them in
# silver.duplicates), not ids a source sends: no landing line, raw record or spooled batch holds one
RECORD_KEYS = ("record_id", "duplicate_of")


@dataclass
class People:
    """The persons an erasure request resolved to, as one set of ids per identifier column."""

    ids: dict[str, set[str]] = field(default_factory=dict)  # identifier column -> values
    resolved: dict[str, str] = field(default_factory=dict)  # asked id -> unified id (or number)
    unknown: list[str] = field(default_factory=list)  # asked ids nobody is known by

    def add(self, column: str, values: Iterable[Any]) -> None:
        self.ids.setdefault(column, set()).update(str(v) for v in values if v is not None and str(v))

    @property
    def persons(self) -> int:
        return len(set(self.resolved.values()))

    def keys(self) -> list[tuple[str, str]]:
        """(identifier, value) pairs: what a row's owner key is compared with."""
        return sorted((column, value) for column, values in self.ids.items() for value in values)

    def values(self) -> list[str]:
        return sorted({v for values in self.ids.values() for v in values})

    def source_ids(self) -> list[str]:
        """Their ids as sources and channels send them (:data:`RECORD_KEYS` left out): what a file,
        or a raw record that is not JSON, can hold."""
        return sorted({v for column, values in self.ids.items() if column not in RECORD_KEYS for v in values})

    def record_keys(self) -> set[str]:
        return {v for column in RECORD_KEYS for v in self.ids.get(column, ())}

    def empty(self) -> bool:
        return not any(self.ids.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "ids": {k: sorted(v) for k, v in self.ids.items()},
            "resolved": self.resolved,
            "unknown": self.unknown,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> People:
        return cls({k: set(v) for k, v in doc["ids"].items()}, dict(doc["resolved"]), list(doc["unknown"]))


def owner_key(record: Mapping[str, Any], identifiers: Sequence[str]) -> tuple[str, str] | None:
    """(identifier, value) of a record's strongest non-null identifier; None when it has none."""
    for column in identifiers:
        value = record.get(column)
        if value is not None and value != "":
            return column, str(value)
    return None


def mentions(text: str, values: Sequence[str]) -> bool:
    """Whether ``text`` holds one of ``values`` as a whole token (not inside a longer id): how a
    line that is not a JSON record is judged."""
    return bool(values) and token_pattern(values).search(text) is not None


@functools.lru_cache(maxsize=8)
def _token_pattern(values: tuple[str, ...]) -> re.Pattern[str]:
    alternatives = "|".join(re.escape(v) for v in sorted(values, key=len, reverse=True))
    return re.compile(rf"(?<![0-9A-Za-z_])(?:{alternatives})(?![0-9A-Za-z_])")


def token_pattern(values: Sequence[str]) -> re.Pattern[str]:
    return _token_pattern(tuple(values))


def json_record(line: str | bytes) -> dict[str, Any] | None:
    """A JSON-lines line as a record, or None when it is not a JSON object: malformed, another JSON
    value, or nested deeper than Python's parser goes (a source may deliver any of these, and
    ingest quarantines them, so they stay in landing files that erasure and scans read)."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) else None


def owns_line(line: str, people: People, identifiers: Sequence[str]) -> bool:
    """Whether a JSON-lines record (a landing line) is one of the people's."""
    record = json_record(line)
    if record is not None:
        key = owner_key(record, identifiers)
        if key is not None:
            return value_in(key, people)
    return mentions(line, people.source_ids())


def value_in(key: tuple[str, str], people: People) -> bool:
    column, value = key
    return value in people.ids.get(column, ())


def id_hash(cfg: Config, value: str) -> str:
    """A keyed hash of an id for the erasure record: it proves which ids a request erased to whoever
    holds the pseudonymization key, and names nobody to anyone else (a plain hash of a short
    customer number is reversed by trying every number)."""
    from pipelines.lakehouse.pii import pii_key

    key = pii_key(cfg.ingest.pii_key_env, cfg.ingest.pii_key_default)
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def resolve(spark: SparkSession, cfg: Config, tables: Tables, asked: Sequence[str]) -> People:
    """Every id of the persons ``asked`` names (module docstring)."""
    from pyspark.sql import functions as F

    people = People()
    identifiers = cfg.privacy.identifiers
    found: dict[str, str] = {}
    map_table = tables.gold(IDENTITY_MAP)
    if spark.catalog.tableExists(map_table):
        identity = spark.table(map_table)
        hits = identity.where(
            F.col("id_value").isin(list(asked))
            | F.col("customer_number").isin(list(asked))
            | F.col("unified_customer_id").isin(list(asked))
        ).collect()
        for r in hits:
            for value in (r["id_value"], r["customer_number"], r["unified_customer_id"]):
                if value is not None and str(value) in asked:
                    found.setdefault(str(value), str(r["unified_customer_id"]))
        wanted = sorted(set(found.values()))
        for r in identity.where(F.col("unified_customer_id").isin(wanted)).collect():
            people.add("unified_customer_id", [r["unified_customer_id"]])
            people.add("customer_number", [r["customer_number"]])
            if r["id_type"] in identifiers:
                people.add(str(r["id_type"]), [r["id_value"]])
    customers = tables.silver("customers")
    if spark.catalog.tableExists(customers):
        # numbers and logins not in the map yet (dbt not run since), and logins the map lacks
        numbers = sorted(people.ids.get("customer_number", set()) | set(asked))
        for r in (
            spark.table(customers)
            .where(F.col("customer_number").isin(numbers) | F.col("login_id").isin(list(asked)))
            .select("customer_number", "login_id")
            .distinct()
            .collect()
        ):
            number, login = r["customer_number"], r["login_id"]
            for a in asked:
                if a not in found and a in (number, login):
                    found[a] = str(number)
            people.add("customer_number", [number])
            people.add("login_id", [login])
    people.resolved = found
    people.unknown = [a for a in asked if a not in found]
    return people
