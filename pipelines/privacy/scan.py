"""A byte scan for personal data: every file under a folder, data files decompressed.

Proof that an erasure worked is not a query that returns nothing (a query does not see old
Delta versions, logs, spool files or the store's append-only file): it is the bytes. Each file is
searched as it lies on disk and, where its content is compressed, decompressed: Parquet files
(Delta's data files and checkpoints) are read column by column, values and footer statistics
both; gzip files are inflated. A compressed format the scan cannot open is reported as
unscanned, never silently passed.
"""

from __future__ import annotations

import gzip
import json
import re
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.privacy.people import json_record

PARQUET_MAGIC = b"PAR1"
GZIP_MAGIC = b"\x1f\x8b"
UNSCANNABLE = {b"LZ4Block": "Spark LZ4 stream", b"\x28\xb5\x2f\xfd": "zstd"}


@dataclass(frozen=True)
class Hit:
    path: Path
    label: str  # what was found (the pattern's label), or "unscanned"
    where: str  # bytes, a Parquet column, gzip


def scan(
    root: Path, patterns: Mapping[str, re.Pattern[bytes]], skip: Sequence[Path] = ()
) -> tuple[list[Hit], int]:
    """(hits, files scanned) for ``patterns`` (label -> pattern) under ``root``, except ``skip``."""
    hits: list[Hit] = []
    files = 0
    skipped = [p.resolve() for p in skip]
    for path in _files(root, skipped):
        files += 1
        hits += list(_scan_file(path, patterns))
    return hits, files


def _files(root: Path, skipped: list[Path]) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        resolved = path.resolve()
        if any(resolved == s or s in resolved.parents for s in skipped):
            continue
        if path.is_file() and not path.is_symlink():
            yield path


def _scan_file(path: Path, patterns: Mapping[str, re.Pattern[bytes]]) -> Iterator[Hit]:
    try:
        data = path.read_bytes()
    except OSError:
        return  # gone meanwhile (a service's temporary file)
    yield from _search(path, data, patterns, "bytes")
    if data[:4] == PARQUET_MAGIC and data[-4:] == PARQUET_MAGIC:
        yield from _scan_parquet(path, patterns)
    elif data[:2] == GZIP_MAGIC:
        try:
            yield from _search(path, gzip.decompress(data), patterns, "gzip")
        except (OSError, EOFError):
            yield Hit(path, "unscanned", "gzip that does not inflate")
    else:
        for magic, name in UNSCANNABLE.items():
            if data.startswith(magic):
                yield Hit(path, "unscanned", name)


def _search(path: Path, data: bytes, patterns: Mapping[str, re.Pattern[bytes]], where: str) -> Iterator[Hit]:
    for label, pattern in patterns.items():
        if pattern.search(data):
            yield Hit(path, label, where)


def _scan_parquet(path: Path, patterns: Mapping[str, re.Pattern[bytes]]) -> Iterator[Hit]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception:  # a file being written, or not Parquet after all
        yield Hit(path, "unscanned", "Parquet that does not read")
        return
    for name in table.column_names:
        text = json.dumps(table.column(name).to_pylist(), default=str, ensure_ascii=False).encode()
        yield from _search(path, text, patterns, f"column {name}")


def person_patterns(person: Mapping[str, str | None]) -> dict[str, re.Pattern[bytes]]:
    """The patterns of one person's raw PII: email, phone, customer number as they were written,
    and the first name followed closely by the last (as a record's fields or a sentence hold them)."""
    out: dict[str, re.Pattern[bytes]] = {}
    for field in ("email", "phone", "customer_number"):
        value = person.get(field)
        if value:
            out[field] = re.compile(rb"(?<![0-9A-Za-z])" + re.escape(value.encode()) + rb"(?![0-9A-Za-z])")
    first, last = person.get("first_name"), person.get("last_name")
    if first and last:
        out["name"] = re.compile(re.escape(first.encode()) + rb".{0,40}?" + re.escape(last.encode()), re.S)
    return out


PII_FIELDS = ("email", "phone", "first_name", "last_name")


def landed_people(
    landing: Path, source: str = "customers"
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Each customer's PII as ``source``'s records delivered it (their first values), and every
    record landed in any source: what a scan for a person looks for, and where it may also be."""
    people: dict[str, dict[str, Any]] = {}
    records: list[dict[str, Any]] = []
    for path in sorted(landing.rglob("*.jsonl")):
        for line in path.read_text(errors="replace").splitlines():
            record = json_record(line)
            if record is None:
                continue
            records.append(record)
            cn = record.get("customer_number")
            if path.parent.name == source and cn:
                person = people.setdefault(str(cn), {"customer_number": str(cn)})
                for field in (*PII_FIELDS, "login_id"):
                    if record.get(field):
                        person.setdefault(field, record[field])
    return people, records


def unshared(people: Mapping[str, dict[str, Any]], records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """People with every PII field whose email, phone and name no record of anyone else holds: an
    erased person's shared household email in another customer's CRM record is that customer's."""
    holders: dict[str, set[Any]] = defaultdict(set)
    for record in records:
        for field in ("email", "phone"):
            if record.get(field):
                holders[str(record[field])].add(record.get("customer_number"))
        if record.get("first_name") and record.get("last_name"):
            holders[f"{record['first_name']} {record['last_name']}"].add(record.get("customer_number"))
    chosen = []
    for cn, person in sorted(people.items()):
        if not all(person.get(f) for f in (*PII_FIELDS, "login_id")):
            continue
        values = [person["email"], person["phone"], f"{person['first_name']} {person['last_name']}"]
        if all(holders[str(v)] == {cn} for v in values):
            chosen.append(person)
    return chosen
