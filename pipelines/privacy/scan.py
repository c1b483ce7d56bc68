"""A byte scan for personal data: every file under a folder, data files decompressed.

Proof that an erasure worked is not a query that returns nothing (a query does not see old
Delta versions, logs, spool files or the store's append-only file): it is the bytes. Each file is
searched as it lies on disk and, where its content is compressed, decompressed: Parquet files
(Delta's data files and checkpoints) are read column by column, values and footer statistics
both; gzip files are inflated. A compressed format the scan cannot open is reported as
unscanned, never silently passed.
"""

from __future__ import annotations

import functools
import gzip
import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pipelines.privacy.people import json_record

PARQUET_MAGIC = b"PAR1"
GZIP_MAGIC = b"\x1f\x8b"
UNSCANNABLE = {b"LZ4Block": "Spark LZ4 stream", b"\x28\xb5\x2f\xfd": "zstd"}


class Searcher(Protocol):
    """What a scan looks for: a compiled pattern, or any object that searches bytes like one."""

    def search(self, data: Any, /) -> object | None: ...


@dataclass(frozen=True)
class AnyOf:
    """Any of many known values (every customer's email, say), found by their shape: one pass of
    ``shape`` over the bytes, each match normalised and looked up, where an alternation of
    thousands of literals would be tried at every byte."""

    shape: re.Pattern[bytes]
    values: frozenset[bytes]
    normalise: Callable[[bytes], bytes] = bytes

    def search(self, data: Any, /) -> bytes | None:
        for match in self.shape.finditer(data):
            value = self.normalise(match.group(0))
            if value in self.values:
                return value
        return None


def digits(value: bytes) -> bytes:
    return bytes(c for c in value if 48 <= c <= 57)


@dataclass(frozen=True)
class Hit:
    path: Path
    label: str  # what was found (the pattern's label), or "unscanned"
    where: str  # bytes, a Parquet column, gzip


def scan(root: Path, patterns: Mapping[str, Searcher], skip: Sequence[Path] = ()) -> tuple[list[Hit], int]:
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


def _scan_file(path: Path, patterns: Mapping[str, Searcher]) -> Iterator[Hit]:
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


def _search(path: Path, data: Any, patterns: Mapping[str, Searcher], where: str) -> Iterator[Hit]:
    text = data if isinstance(data, bytes) else bytes(data)  # one copy of a buffer, not one per pattern
    for label, pattern in patterns.items():
        needle = _needle(pattern)
        if needle is not None and text.find(needle) < 0:
            continue  # the literal every match holds is absent: no regex pass over the file
        if pattern.search(text):
            yield Hit(path, label, where)


def _needle(pattern: Searcher) -> bytes | None:
    return _literal(pattern) if isinstance(pattern, re.Pattern) else None


@functools.cache
def _literal(pattern: re.Pattern[bytes]) -> bytes | None:
    """The longest run of literal bytes every match of ``pattern`` contains (None: none of 3+).
    A pattern that opens with a look-behind gets no literal-prefix search from ``re``; looking
    for its literal first with ``bytes.find`` is what keeps a scan of a whole home in seconds."""
    from re import _parser  # type: ignore[attr-defined]  # the parser re itself uses

    if pattern.flags & re.IGNORECASE:
        return None
    best, run = b"", bytearray()
    for op, arg in _parser.parse(pattern.pattern, pattern.flags):
        if op is _parser.LITERAL:
            run.append(arg)
            continue
        best, run = max(best, bytes(run), key=len), bytearray()
    best = max(best, bytes(run), key=len)
    return best if len(best) >= 3 else None


def _scan_parquet(path: Path, patterns: Mapping[str, Searcher]) -> Iterator[Hit]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception:  # a file being written, or not Parquet after all
        yield Hit(path, "unscanned", "Parquet that does not read")
        return
    for name in table.column_names:
        labels: set[str] = set()
        for chunk in table.column(name).chunks:
            for text in _value_bytes(chunk):
                labels.update(h.label for h in _search(path, text, patterns, f"column {name}"))
        yield from (Hit(path, label, f"column {name}") for label in sorted(labels))


def _value_bytes(array: Any) -> Iterator[Any]:
    """Every value of an Arrow array as bytes, without making a Python object per value: string
    values each followed by a newline (so that a value's edges are edges for a pattern), read from
    the array's data buffer; nested columns are walked to their leaves, other leaves cast to text."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = array.type
    if pa.types.is_struct(kind):
        for i in range(kind.num_fields):
            yield from _value_bytes(array.field(i))
    elif pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        yield from _value_bytes(array.flatten())
    elif pa.types.is_map(kind):
        yield from _value_bytes(array.keys)
        yield from _value_bytes(array.items)
    elif pa.types.is_dictionary(kind):
        yield from _value_bytes(array.dictionary)
    elif pa.types.is_null(kind) or len(array) == 0:
        return
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind):
        lines = pc.binary_join_element_wise(array, pa.scalar("\n", kind), pa.scalar("", kind))
        data = lines.buffers()[2]
        if data is not None:
            yield memoryview(data)
    else:
        try:
            text = pc.cast(array, pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            yield json.dumps(array.to_pylist(), default=str, ensure_ascii=False).encode()
            return
        yield from _value_bytes(text)


# the shapes raw PII takes in the sources: what a scan for anyone's values extracts and looks up
EMAIL_SHAPE = re.compile(rb"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
PHONE_SHAPE = re.compile(rb"\+?\d[\d ()-]{7,}\d")
NAME_SHAPE = re.compile(rb"[A-Z][\w'-]+(?: [A-Z][\w'-]+)+")
POSTCODE_SHAPE = re.compile(rb"[A-Z]{1,2}[0-9][A-Z0-9]? ?[0-9][A-Z]{2}")


def anyones_patterns(people: Sequence[Mapping[str, Any]]) -> dict[str, Searcher]:
    """Searchers for every given person's email, phone (by its digits), full name and postcode:
    what must not appear outside bronze for anyone."""

    def values(field: str, normalise: Callable[[bytes], bytes] = bytes) -> frozenset[bytes]:
        return frozenset(normalise(str(p[field]).encode()) for p in people if p.get(field))

    names = frozenset(
        f"{p['first_name']} {p['last_name']}".encode()
        for p in people
        if p.get("first_name") and p.get("last_name")
    )
    return {
        "email": AnyOf(EMAIL_SHAPE, values("email")),
        "phone": AnyOf(PHONE_SHAPE, values("phone", digits), digits),
        "name": AnyOf(NAME_SHAPE, names),
        "postcode": AnyOf(POSTCODE_SHAPE, values("postcode")),
    }


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
                for field in (*PII_FIELDS, "login_id", "postcode"):
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
