"""Erasing people from the files around the lakehouse: landing files, marketing's exports, the
API's spool.

Each file that holds one of the person's records is rewritten without it: written aside, fsync'd
and renamed over the original, so a crash leaves either the old file or the new one, and a re-run
finishes the job. A landing file keeps its name, so ingest does not take it for a new delivery.
An export's manifest gets the new row counts, sizes and checksums, and says the files were
rewritten by an erasure (which one, not whom).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.privacy.people import People, owner_key, owns_line, value_in


@dataclass
class FileErasure:
    what: str  # landing, exports, spool
    files: int  # rewritten
    rows: int  # removed


def write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.erasure-tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _files(folder: Path, suffixes: Sequence[str]) -> Iterator[Path]:
    if folder.is_dir():
        yield from sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in suffixes)


def erase_jsonl(folders: Sequence[Path], people: People, identifiers: Sequence[str]) -> FileErasure:
    """Every JSON-lines file under ``folders`` (landing, held-back files) without the people's lines."""
    files = rows = 0
    needles = _needles(people)
    for folder in folders:
        for path in _files(folder, (".jsonl", ".json")):
            data = path.read_bytes()
            if not any(n in data for n in needles):
                continue
            kept, removed = [], 0
            for line in data.decode("utf-8", errors="surrogateescape").splitlines(keepends=True):
                if line.strip() and owns_line(line, people, identifiers):
                    removed += 1
                else:
                    kept.append(line)
            if removed:
                write_atomically(path, "".join(kept).encode("utf-8", errors="surrogateescape"))
                files += 1
                rows += removed
    return FileErasure("landing", files, rows)


def _needles(people: People) -> list[bytes]:
    """What a file must hold to hold one of the people's records: their ids as sources send them
    (silver's record keys, thousands for a long-standing customer, are in no file)."""
    return [v.encode() for v in people.source_ids()]


def _owned(row: dict[str, Any], people: People, identifiers: Sequence[str]) -> bool:
    key = owner_key(row, identifiers)
    return key is not None and value_in(key, people)


def erase_exports(folder: Path, people: People, identifiers: Sequence[str], request_id: str) -> FileErasure:
    """Segment exports without the people's rows, written as the export writes them (from the
    Parquet file, which keeps the types); each manifest updated."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.lakehouse.segment_export import EXPORT_FORMATS, file_bytes

    files = rows = 0
    for manifest_path in sorted(folder.rglob("manifest.json")) if folder.is_dir() else []:
        day = manifest_path.parent
        manifest = json.loads(manifest_path.read_text())
        changed = False
        for segment in manifest.get("segments", []):
            entries = segment.get("files") or {}
            source = day / entries.get("parquet", {}).get("file", "")
            if not source.is_file():
                continue
            table = pq.read_table(source)
            named = [c for c in identifiers if c in table.column_names]
            if not named:
                continue
            keep = [not _owned(r, people, identifiers) for r in table.select(named).to_pylist()]
            if all(keep):
                continue
            kept = table.filter(pa.array(keep))
            for kind in EXPORT_FORMATS:
                if kind in entries:
                    data = file_bytes(kept, kind)
                    write_atomically(day / entries[kind]["file"], data)
                    entries[kind]["bytes"] = len(data)
                    entries[kind]["sha256"] = hashlib.sha256(data).hexdigest()
                    files += 1
            segment["rows"] = kept.num_rows
            rows += keep.count(False)
            changed = True
        if changed:
            manifest.setdefault("rewritten_by_erasure", []).append(request_id)
            write_atomically(manifest_path, (json.dumps(manifest, indent=2) + "\n").encode())
    return FileErasure("exports", files, rows)


def erase_spool(folder: Path, people: People, identifiers: Sequence[str]) -> FileErasure:
    """The API's spooled batches (decisions and responses not yet delivered) without the people's."""
    files = rows = 0
    needles = _needles(people)
    for path in _files(folder, (".json",)):
        data = path.read_bytes()
        if not any(n in data for n in needles):
            continue
        doc = json.loads(data)
        removed = 0
        for part in ("served", "log", "responses", "decisions"):
            items = doc.get(part) or []
            kept = [r for r in items if not (isinstance(r, dict) and _owned(r, people, identifiers))]
            removed += len(items) - len(kept)
            doc[part] = kept
        if removed:
            write_atomically(path, json.dumps(doc, separators=(",", ":")).encode())
            files += 1
            rows += removed
    return FileErasure("spool", files, rows)


def erase_files(
    landing: Sequence[Path],
    exports: Path,
    spool: Path,
    people: People,
    identifiers: Sequence[str],
    request_id: str,
    progress: Callable[[str], None],
) -> list[FileErasure]:
    done = [
        erase_jsonl(landing, people, identifiers),
        erase_exports(exports, people, identifiers, request_id),
        erase_spool(spool, people, identifiers),
    ]
    for d in done:
        progress(f"{d.what}: {d.rows:,} record(s) removed from {d.files} file(s)")
    return done
