"""Where landing lines go: a ``Writer`` protocol (files here, Kafka topics in ``kafka_writer``) and delivery.

``Delivery`` keeps a source's lines that are not due yet (late events and duplicates spill into
later micro-batches), writes each due micro-batch through the writer in delivery order, and
records every written line in the truth ledger (``truth/records``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa

from .codec import line_bytes
from .faults import FATE_CODE, FATES, FAULT_LABELS


class Writer(Protocol):
    """Receives landing batches. ``lines`` are UTF-8 JSON lines, each ending in a newline."""

    def write_batch(self, source: str, batch_name: str, lines: bytes | memoryview) -> str:
        """Deliver one batch; return where it went (recorded as ``file`` in the truth ledger)."""
        ...


class FileWriter:
    """Writes ``<root>/landing/<source>/<prefix><batch_name>.jsonl``.

    A prefix keeps files written later into a landing folder (the closed loop's responses) from
    ever taking the name of a generated file still to be delivered.
    """

    def __init__(self, root: str | os.PathLike[str], prefix: str = "") -> None:
        self.root = Path(root)
        self.prefix = prefix
        self._root = os.fspath(self.root)
        self._made: set[str] = set()

    def write_batch(self, source: str, batch_name: str, lines: bytes | memoryview) -> str:
        rel = f"landing/{source}/{self.prefix}{batch_name}.jsonl"
        if source not in self._made:
            (self.root / "landing" / source).mkdir(parents=True, exist_ok=True)
            self._made.add(source)
        # plain file descriptor: no buffering layer or tty probe for a file written in one go
        fd = os.open(os.path.join(self._root, rel), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            view = memoryview(lines)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        return rel


class MemoryWriter:
    """Keeps batches in memory (tests)."""

    def __init__(self) -> None:
        self.batches: dict[str, bytes] = {}  # in delivery order

    def write_batch(self, source: str, batch_name: str, lines: bytes | memoryview) -> str:
        rel = f"landing/{source}/{batch_name}.jsonl"
        self.batches[rel] = bytes(lines)
        return rel


def batch_name(batch_ms: int, seq: int) -> str:
    """``2026-01-01T08-00_000123``: sortable in delivery order."""
    from .codec import iso_timestamp

    return f"{iso_timestamp(batch_ms)[:13]}-00_{seq:06d}"


LEDGER_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("file", pa.string()),
        ("line", pa.int32()),
        ("record_key", pa.string()),
        ("fault", pa.string()),
        ("expected_fate", pa.string()),
        ("drift", pa.bool_()),
    ]
)


def ledger_table(
    source: str, files: list[str], counts: list[int], keys: pa.Array, faults: np.ndarray, drift: np.ndarray
) -> pa.Table:
    """Truth rows for written lines: one per line, in file and line order."""
    total = int(sum(counts))
    file_idx = np.repeat(np.arange(len(files)), counts)
    line = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts) + 1
    labels = pa.array(list(FAULT_LABELS), pa.string())
    return pa.table(
        {
            "source": pa.array([source], pa.string()).take(pa.array(np.zeros(total, dtype=np.int64))),
            "file": pa.array(files, pa.string()).take(pa.array(file_idx)),
            "line": pa.array(line.astype(np.int32)),
            "record_key": keys,
            "fault": labels.take(pa.array(faults.astype(np.int64))),
            "expected_fate": pa.array(list(FATES), pa.string()).take(
                pa.array(FATE_CODE[faults].astype(np.int64))
            ),
            "drift": pa.array(drift),
        },
        schema=LEDGER_SCHEMA,
    )


class Delivery:
    """Time-ordered micro-batch delivery of one stream source.

    Rows arrive already sorted by (batch, position); they are kept as zero-copy slices per batch
    and only batches that received rows from more than one day (late events, duplicates,
    sessions past midnight) are merged and re-sorted when written.
    """

    def __init__(
        self, source: str, writer: Writer, ledger: Callable[[pa.Table], None], first_seq: int = 1
    ) -> None:
        self.source = source
        self.writer = writer
        self.ledger = ledger
        self.seq = first_seq
        self.lines_written = 0
        self.files_written = 0
        self._batches: dict[int, list[pa.Table]] = {}
        self._row = 0

    def add(
        self,
        lines: pa.Array,
        batch: np.ndarray,
        key: np.ndarray,
        record_key: pa.Array,
        fault: np.ndarray,
        drift: np.ndarray,
    ) -> None:
        """Queue rows sorted by (batch, key); each batch's rows stay a slice of these arrays."""
        n = len(lines)
        if n == 0:
            return
        tbl = pa.table(
            {
                "line": lines,
                "key": pa.array(key, pa.int64()),
                "seq": pa.array(np.arange(self._row, self._row + n)),
                "record_key": record_key,
                "fault": pa.array(fault.astype(np.int8)),
                "drift": pa.array(drift.astype(bool)),
            }
        )
        self._row += n
        starts = np.flatnonzero(np.r_[True, batch[1:] != batch[:-1]])
        ends = np.r_[starts[1:], n]
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            self._batches.setdefault(int(batch[s]), []).append(tbl.slice(s, e - s))

    def flush(self, before_ms: int | None) -> int:
        """Write every batch starting before ``before_ms`` (all if None); return lines written."""
        due = sorted(b for b in self._batches if before_ms is None or b < before_ms)
        if not due:
            return 0
        files: list[str] = []
        counts: list[int] = []
        keys: list[pa.Array] = []
        faults: list[np.ndarray] = []
        drifts: list[np.ndarray] = []
        for b in due:
            parts = self._batches.pop(b)
            tbl = parts[0] if len(parts) == 1 else pa.concat_tables(parts)
            if len(parts) > 1:
                order = np.lexsort((tbl["seq"].to_numpy(), tbl["key"].to_numpy()))
                tbl = tbl.take(pa.array(order))
            data, _ = line_bytes(tbl["line"].combine_chunks())
            name = batch_name(b, self.seq)
            self.seq += 1
            files.append(self.writer.write_batch(self.source, name, data))
            counts.append(tbl.num_rows)
            keys.append(tbl["record_key"].combine_chunks())
            faults.append(tbl["fault"].to_numpy())
            drifts.append(tbl["drift"].to_numpy())
        self.ledger(
            ledger_table(
                self.source,
                files,
                counts,
                pa.concat_arrays(keys),
                np.concatenate(faults),
                np.concatenate(drifts),
            )
        )
        written = int(sum(counts))
        self.lines_written += written
        self.files_written += len(files)
        return written
