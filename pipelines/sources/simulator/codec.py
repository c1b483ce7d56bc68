"""JSON-lines encoding of column arrays in bulk (pyarrow compute, no per-record json.dumps).

Records are built as Arrow string arrays of complete lines ("{...}\\n") so a micro-batch file is
one slice of one buffer. Keys follow the contract's field order; timestamps are ISO-8601 UTC with
milliseconds and ``Z``; nulls are written as ``null``. Categorical columns (``Cat``) and
pre-quoted columns (``Raw``) skip per-row quoting, which is where most of the time would go.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.contracts import Contract, FieldType

from .config import DAY_MS


class Raw:
    """A column that is already JSON text (one piece per row, quotes included), written as is."""

    def __init__(self, pieces: pa.Array) -> None:
        self.pieces = pieces

    def take(self, idx: np.ndarray) -> Raw:
        return Raw(self.pieces.take(pa.array(np.asarray(idx, dtype=np.int64))))

    def __len__(self) -> int:
        return len(self.pieces)


class Cat:
    """A categorical column: codes into a small table of values (negative code = null).

    Encoding quotes the small table once and takes from it, which is much faster than quoting
    every row; ``strings()`` gives the plain values for truth tables.
    """

    def __init__(self, values: Sequence[str], codes: np.ndarray) -> None:
        self.values = tuple(values)
        self.codes = np.asarray(codes, dtype=np.int64)

    def strings(self) -> pa.Array:
        return categorical(self.values, self.codes)

    def is_(self, value: str) -> np.ndarray:
        return self.codes == self.values.index(value)

    def take(self, idx: np.ndarray) -> Cat:
        return Cat(self.values, self.codes[idx])

    def pieces(self, prefix: str = "") -> pa.Array:
        """JSON text per row, each preceded by ``prefix`` (folded into the small table for free)."""
        table = _quoted_table(self.values, prefix)
        return table.take(pa.array(np.where(self.codes < 0, len(self.values), self.codes)))

    def __len__(self) -> int:
        return len(self.codes)


class Coded:
    """Codes into a table of JSON pieces (e.g. quoted ids): rows are reordered as integers and the
    strings are taken once, at encoding, with the field's key folded into the table."""

    def __init__(self, table: pa.Array, codes: np.ndarray) -> None:
        self.table = table
        self.codes = np.asarray(codes, dtype=np.int64)

    def take(self, idx: np.ndarray) -> Coded:
        return Coded(self.table, self.codes[idx])

    def pieces(self, prefix: str = "") -> pa.Array:
        table = pc.binary_join_element_wise(prefix, self.table, "") if prefix else self.table
        return table.take(pa.array(self.codes))

    def __len__(self) -> int:
        return len(self.codes)


@functools.lru_cache(maxsize=512)
def _quoted_table(values: tuple[str, ...], prefix: str = "") -> pa.Array:
    return pa.array([prefix + json.dumps(v) for v in values] + [prefix + "null"], pa.string())


def quoted(strings: Sequence[str | None] | pa.Array) -> pa.Array:
    """JSON pieces for strings (None becomes null)."""
    arr = strings if isinstance(strings, pa.Array) else pa.array(list(strings), pa.string())
    return _quote(arr)


@functools.cache
def _hms_table() -> pa.Array:
    return pa.array([f"{h:02d}:{m:02d}:{s:02d}." for h in range(24) for m in range(60) for s in range(60)])


@functools.cache
def _ms_table(quote: bool) -> pa.Array:
    end = 'Z"' if quote else "Z"
    return pa.array([f"{i:03d}{end}" for i in range(1000)])


def iso_date(day: int) -> str:
    """``YYYY-MM-DD`` of a day number (days since 1970-01-01)."""
    return (dt.date(1970, 1, 1) + dt.timedelta(days=int(day))).isoformat()


def iso_timestamp(ms: int) -> str:
    """One epoch-millisecond time as the wire format (``2026-01-05T08:15:30.123Z``)."""
    day, rest = divmod(int(ms), DAY_MS)
    sec, milli = divmod(rest, 1000)
    return f"{iso_date(day)}T{sec // 3600:02d}:{sec % 3600 // 60:02d}:{sec % 60:02d}.{milli:03d}Z"


def format_timestamps(ms: np.ndarray, *, quote: bool = False, prefix: str = "") -> pa.Array:
    """Epoch milliseconds to wire-format strings (JSON-quoted if asked), via lookup tables."""
    ms = np.asarray(ms, dtype=np.int64)
    if len(ms) == 0:
        return pa.array([], pa.string())
    day = ms // DAY_MS
    d0 = int(day.min())
    lead = prefix + ('"' if quote else "")
    dates = pa.array([lead + iso_date(d) + "T" for d in range(d0, int(day.max()) + 1)])
    rest = ms - day * DAY_MS
    return pc.binary_join_element_wise(
        dates.take(pa.array(day - d0)),
        _hms_table().take(pa.array(rest // 1000)),
        _ms_table(quote).take(pa.array(rest % 1000)),
        "",
    )


def format_dates(days: np.ndarray) -> pa.Array:
    """Day numbers to ``YYYY-MM-DD`` strings."""
    days = np.asarray(days, dtype=np.int64)
    return pa.array(np.datetime_as_string(days.astype("datetime64[D]"), unit="D").astype(object), pa.string())


def categorical(values: Sequence[str], codes: np.ndarray) -> pa.Array:
    """Strings from category codes; negative codes become null."""
    codes = np.asarray(codes)
    idx = pa.array(codes.astype(np.int64), mask=codes < 0)
    return pa.array(list(values), pa.string()).take(idx)


def prefixed(prefix: str, numbers: np.ndarray, width: int, *, quote: bool = False) -> pa.Array:
    """``prefix`` + zero-padded number, e.g. ids like ``C00123456`` (JSON-quoted if asked)."""
    digits = pc.utf8_lpad(pc.cast(pa.array(np.asarray(numbers, dtype=np.int64)), pa.string()), width, "0")
    if quote:
        return pc.binary_join_element_wise('"' + prefix, digits, '"', "")
    return pc.binary_join_element_wise(prefix, digits, "")


def _quote(arr: pa.Array) -> pa.Array:
    if pc.any(pc.match_substring(arr, '"')).as_py() or pc.any(pc.match_substring(arr, "\\")).as_py():
        arr = pc.replace_substring(arr, "\\", "\\\\")
        arr = pc.replace_substring(arr, '"', '\\"')
    return pc.fill_null(pc.binary_join_element_wise('"', arr, '"', ""), "null")


def _scalar_piece(value: Any, ftype: FieldType) -> str:
    if value is None:
        return "null"
    if ftype == "timestamp" and not isinstance(value, str):
        value = iso_timestamp(int(value))
    if ftype == "date" and not isinstance(value, str):
        value = iso_date(int(value))
    return json.dumps(value)


def _array_piece(value: Any, ftype: FieldType) -> pa.Array:
    if isinstance(value, Raw):
        return value.pieces
    if isinstance(value, (Cat, Coded)):
        return value.pieces()
    if isinstance(value, (pa.Array, pa.ChunkedArray)):
        arr = value
    else:
        arr_np = np.asarray(value)
        if ftype == "timestamp":
            return format_timestamps(arr_np, quote=True)
        if ftype == "date":
            return _quote(format_dates(arr_np))
        if ftype in ("double",) and arr_np.dtype.kind == "f":
            arr = pa.array(arr_np, mask=np.isnan(arr_np))
        elif ftype in ("int", "long") and arr_np.dtype.kind == "f":
            nan = np.isnan(arr_np)
            arr = pa.array(np.where(nan, 0, arr_np).astype(np.int64), mask=nan)
        elif arr_np.dtype.kind in "OUT":
            arr = pa.array(arr_np.tolist(), pa.string())
        else:
            arr = pa.array(arr_np)
    if ftype in ("string", "date", "timestamp"):
        return _quote(pc.cast(arr, pa.string()))
    return pc.fill_null(pc.cast(arr, pa.string()), "null")


def encode(
    contract: Contract,
    columns: Mapping[str, Any],
    extra: Sequence[tuple[str, FieldType]] = (),
    tail: pa.Array | None = None,
) -> pa.Array:
    """Encode columns as JSON lines following ``contract`` (plus ``extra`` fields at the end).

    A column may be a numpy array, an Arrow array, a ``Cat``, a ``Raw`` array of JSON pieces, or
    a scalar (same value on every line). Absent fields are written as ``null``. Returns an Arrow
    string array of complete lines, each ending in a newline. ``tail`` (JSON text per row, may
    be empty) is inserted before the closing brace: extra fields that only some rows carry.
    """
    fields = [(f.name, f.type) for f in contract.fields] + list(extra)
    # Arrow joins arrays much faster than arrays mixed with scalars, so constant text (keys,
    # scalar values) is folded into the lookup tables of the next categorical or timestamp
    # column where possible, and otherwise passed as a repeated array.
    args: list[Any] = []
    pending = ""
    for pos, (name, ftype) in enumerate(fields):
        pending += ("{" if pos == 0 else ",") + json.dumps(name) + ":"
        value = columns.get(name)
        if value is None or isinstance(value, (str, int, float, bool, np.integer, np.floating, np.bool_)):
            if isinstance(value, (np.integer, np.floating, np.bool_)):
                value = value.item()
            pending += _scalar_piece(value, ftype)
            continue
        if isinstance(value, (Cat, Coded)):
            args.append(value.pieces(prefix=pending))
        elif ftype == "timestamp" and not isinstance(value, (Raw, pa.Array, pa.ChunkedArray)):
            args.append(format_timestamps(np.asarray(value), quote=True, prefix=pending))
        else:
            if pending:
                args.append(pending)
            args.append(_array_piece(value, ftype))
        pending = ""
    if tail is not None:
        if pending:
            args.append(pending)
        args.append(tail)
        pending = ""
    args.append(pending + "}\n")
    lengths = {len(a) for a in args if not isinstance(a, str)}
    if len(lengths) != 1:
        raise ValueError(
            f"encode {contract.source}: needs array columns of one length, got {sorted(lengths)}"
        )
    n = lengths.pop()
    args = [
        pa.array([a], pa.string()).take(pa.array(np.zeros(n, dtype=np.int64))) if isinstance(a, str) else a
        for a in args
    ]
    return pc.binary_join_element_wise(*args, "")


def line_bytes(lines: pa.Array) -> tuple[memoryview, np.ndarray]:
    """The concatenated bytes of a string array (zero-copy) and its offsets, for slicing files."""
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks()
    if lines.type != pa.string():
        lines = lines.cast(pa.string())
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[lines.offset : lines.offset + len(lines) + 1]
    data = lines.buffers()[2]
    if data is None:
        return memoryview(b""), np.zeros(len(lines) + 1, dtype=np.int64)
    start, stop = int(offsets[0]), int(offsets[-1])
    return memoryview(data)[start:stop], (offsets - start).astype(np.int64)
