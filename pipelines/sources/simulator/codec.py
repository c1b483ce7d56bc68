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
    m = timestamp_matrix(np.asarray(ms, dtype=np.int64), quote=quote)
    if prefix:
        head = np.broadcast_to(np.frombuffer(prefix.encode(), dtype=np.uint8), (len(m), len(prefix.encode())))
        m = np.hstack([head, m])
    return _matrix_strings(m)


@functools.cache
def _digits2() -> np.ndarray:
    return np.frombuffer("".join(f"{i:02d}" for i in range(100)).encode(), dtype=np.uint8).reshape(-1, 2)


def date_matrix(days: np.ndarray, *, quote: bool = True) -> np.ndarray:
    """Day numbers as ``YYYY-MM-DD`` text (JSON-quoted if asked), one fixed-width uint8 row each."""
    d = np.asarray(days, dtype=np.int64).astype("datetime64[D]")
    years = d.astype("datetime64[Y]")
    months = d.astype("datetime64[M]")
    year = years.astype(np.int64) + 1970
    if len(year) and (int(year.min()) < 0 or int(year.max()) > 9999):
        raise ValueError("date_matrix: year out of range")
    month = (months - years).astype(np.int64) + 1
    day = (d - months).astype(np.int64) + 1
    q = 1 if quote else 0
    out = np.empty((len(d), 10 + 2 * q), dtype=np.uint8)
    if quote:
        out[:, 0] = out[:, -1] = ord('"')
    out[:, q : q + 4] = np.take(_digits4(), year, axis=0)
    out[:, q + 4] = out[:, q + 7] = ord("-")
    out[:, q + 5 : q + 7] = np.take(_digits2(), month, axis=0)
    out[:, q + 8 : q + 10] = np.take(_digits2(), day, axis=0)
    return out


def format_dates(days: np.ndarray) -> pa.Array:
    """Day numbers to ``YYYY-MM-DD`` strings."""
    return _matrix_strings(date_matrix(days, quote=False))


def categorical(values: Sequence[str], codes: np.ndarray) -> pa.Array:
    """Strings from category codes; negative codes become null."""
    codes = np.asarray(codes)
    idx = pa.array(codes.astype(np.int64), mask=codes < 0)
    return pa.array(list(values), pa.string()).take(idx)


def prefixed(prefix: str, numbers: np.ndarray, width: int, *, quote: bool = False) -> pa.Array:
    """``prefix`` + zero-padded number, e.g. ids like ``C00123456`` (JSON-quoted if asked)."""
    numbers = np.asarray(numbers, dtype=np.int64)
    if not len(numbers) or (int(numbers.min()) >= 0 and int(numbers.max()) < 10**width):
        return fixed_ids(prefix, numbers, width, quote=quote).strings()
    digits = pc.utf8_lpad(pc.cast(pa.array(numbers), pa.string()), width, "0")
    if quote:
        return pc.binary_join_element_wise('"' + prefix, digits, '"', "")
    return pc.binary_join_element_wise(prefix, digits, "")


def replace_rows(lines: pa.Array, idx: np.ndarray, new: Sequence[str]) -> pa.Array:
    """``lines`` with the rows at ``idx`` (ascending) replaced by ``new``: one pass over the bytes."""
    if not len(idx):
        return lines
    data, offsets = line_bytes(lines)
    lengths = np.diff(offsets)
    encoded = [x.encode() for x in new]
    lengths[idx] = [len(b) for b in encoded]
    pieces: list[Any] = []
    prev = 0
    for i, b in zip(np.asarray(idx).tolist(), encoded, strict=True):
        pieces.append(data[offsets[prev] : offsets[i]])
        pieces.append(b)
        prev = i + 1
    pieces.append(data[offsets[prev] : offsets[-1]])
    out = b"".join(pieces)
    new_offsets = np.zeros(len(lines) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_offsets[1:])
    if new_offsets[-1] >= 2**31:
        raise ValueError("replace_rows: lines too large for one string array")
    return pa.Array.from_buffers(
        pa.string(), len(lines), [None, pa.py_buffer(new_offsets.astype(np.int32)), pa.py_buffer(out)]
    )


def _quote(arr: pa.Array) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if _needs_escape(arr):
        arr = pc.replace_substring(arr, "\\", "\\\\")
        arr = pc.replace_substring(arr, '"', '\\"')
    out = pc.binary_join_element_wise('"', arr, '"', "")
    return pc.fill_null(out, "null") if out.null_count else out


def _needs_escape(arr: pa.Array) -> bool:
    """Whether any string holds a quote or a backslash (scans the data buffer once)."""
    if arr.type != pa.string() or not len(arr):
        return bool(len(arr)) and (
            pc.any(pc.match_substring(arr, '"')).as_py() or pc.any(pc.match_substring(arr, "\\")).as_py()
        )
    data = arr.buffers()[2]
    if data is None:
        return False
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset : arr.offset + len(arr) + 1]
    buf = np.frombuffer(data, dtype=np.uint8)[offsets[0] : offsets[-1]]
    return bool(np.any((buf == 34) | (buf == 92)))


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
            return _matrix_strings(timestamp_matrix(arr_np, quote=True))
        if ftype == "date":
            return _matrix_strings(date_matrix(arr_np, quote=True))
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


# adjacent categorical columns are merged into one lookup table while it stays this small
_MAX_MERGED_TABLE = 8192


class Fixed:
    """A fixed-width column: an ``n x width`` uint8 matrix of JSON text (e.g. quoted ids).

    Adjacent fixed-width pieces (ids, timestamps, constant text, equal-width categories) are
    laid side by side in one matrix, which numpy fills far faster than Arrow joins strings.
    """

    def __init__(self, matrix: np.ndarray) -> None:
        self.matrix = matrix

    def take(self, idx: np.ndarray) -> Fixed:
        return Fixed(self.matrix[idx])

    def strings(self, strip: int = 0) -> pa.Array:
        """The rows as an Arrow string array (``strip`` bytes cut from both ends, e.g. quotes)."""
        m = self.matrix[:, strip : self.matrix.shape[1] - strip] if strip else self.matrix
        return _matrix_strings(m)

    def __len__(self) -> int:
        return len(self.matrix)


def _matrix_strings(m: np.ndarray) -> pa.Array:
    n, w = m.shape
    if n * w >= 2**31:
        raise ValueError("fixed-width column too large for one string array")
    data = np.ascontiguousarray(m, dtype=np.uint8)
    offsets = np.arange(0, (n + 1) * w, w, dtype=np.int32) if w else np.zeros(n + 1, np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _text_matrix(values: Sequence[str]) -> np.ndarray | None:
    """Equal-length texts as a ``k x width`` uint8 matrix; None if their byte lengths differ."""
    raw = [v.encode() for v in values]
    if not raw or len({len(b) for b in raw}) != 1:
        return None
    return np.frombuffer(b"".join(raw), dtype=np.uint8).reshape(len(raw), len(raw[0]))


@functools.cache
def _digits4() -> np.ndarray:
    return np.frombuffer("".join(f"{i:04d}" for i in range(10_000)).encode(), dtype=np.uint8).reshape(-1, 4)


def fixed_ids(prefix: str, numbers: np.ndarray, width: int, *, quote: bool = True) -> Fixed:
    """``prefix`` + zero-padded number as a fixed-width column (JSON-quoted if asked)."""
    numbers = np.asarray(numbers, dtype=np.int64)
    if len(numbers) and (int(numbers.min()) < 0 or int(numbers.max()) >= 10**width):
        raise ValueError(f"fixed_ids: numbers do not fit {width} digits")
    head = ('"' if quote else "") + prefix
    tail = '"' if quote else ""
    groups = -(-width // 4)
    m = np.empty((len(numbers), len(head) + 4 * groups + len(tail)), dtype=np.uint8)
    m[:, : len(head)] = np.frombuffer(head.encode(), dtype=np.uint8)
    table, rest = _digits4(), numbers
    for g in range(groups - 1, -1, -1):
        rest, part = np.divmod(rest, 10_000)
        m[:, len(head) + 4 * g : len(head) + 4 * g + 4] = np.take(table, part, axis=0)
    if tail:
        m[:, -1] = ord(tail)
    cut = 4 * groups - width  # leading zero digits beyond ``width``
    if cut:
        m = np.delete(m, np.s_[len(head) : len(head) + cut], axis=1)
    return Fixed(m)


@functools.cache
def _hms_matrix() -> np.ndarray:
    sec = np.arange(86_400)
    out = np.empty((86_400, 9), dtype=np.uint8)
    out[:, 0:2] = _digits2()[sec // 3600]
    out[:, 3:5] = _digits2()[sec // 60 % 60]
    out[:, 6:8] = _digits2()[sec % 60]
    out[:, 2] = out[:, 5] = ord(":")
    out[:, 8] = ord(".")
    return out


@functools.cache
def _ms_matrix(quote: bool) -> np.ndarray:
    end = 'Z"' if quote else "Z"
    return np.frombuffer("".join(f"{i:03d}{end}" for i in range(1000)).encode(), dtype=np.uint8).reshape(
        1000, -1
    )


def timestamp_matrix(ms: np.ndarray, *, quote: bool = True) -> np.ndarray:
    """Epoch milliseconds as wire-format text, one fixed-width uint8 row each."""
    ms = np.asarray(ms, dtype=np.int64)
    lead = '"' if quote else ""
    width = len(lead) + 11 + 9 + (5 if quote else 4)
    out = np.empty((len(ms), width), dtype=np.uint8)
    if not len(ms):
        return out
    day, rest = np.divmod(ms, DAY_MS)
    d0 = int(day.min())
    dates = _text_matrix([lead + iso_date(d) + "T" for d in range(d0, int(day.max()) + 1)])
    assert dates is not None
    k = dates.shape[1]
    out[:, :k] = np.take(dates, day - d0, axis=0)
    sec, milli = np.divmod(rest, 1000)
    out[:, k : k + 9] = np.take(_hms_matrix(), sec, axis=0)
    out[:, k + 9 :] = np.take(_ms_matrix(quote), milli, axis=0)
    return out


@functools.lru_cache(maxsize=256)
def _merged_values(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(x + y for x in a for y in b)


@functools.lru_cache(maxsize=512)
def _values_array(values: tuple[str, ...]) -> pa.Array:
    return pa.array(values, pa.string())


class _CatPart:
    """Encoding part: codes into a tuple of complete JSON texts."""

    __slots__ = ("codes", "values")

    def __init__(self, values: tuple[str, ...], codes: np.ndarray) -> None:
        self.values = values
        self.codes = codes


class _WrapPart:
    """Encoding part: Arrow text per row (``quote``: raw strings still to be JSON-quoted, else
    codes into a table of JSON pieces), with constant text folded in before and after it."""

    __slots__ = ("codes", "prefix", "quote", "suffix", "values")

    def __init__(self, values: pa.Array, *, quote: bool, codes: np.ndarray | None = None) -> None:
        self.values = values
        self.quote = quote
        self.codes = codes
        self.prefix = ""
        self.suffix = ""

    def __len__(self) -> int:
        return len(self.values) if self.codes is None else len(self.codes)

    def materialise(self) -> pa.Array:
        if self.quote:
            arr = self.values
            if _needs_escape(arr):
                arr = pc.replace_substring(arr, "\\", "\\\\")
                arr = pc.replace_substring(arr, '"', '\\"')
            out = pc.binary_join_element_wise(self.prefix + '"', arr, '"' + self.suffix, "")
            if out.null_count:
                out = pc.fill_null(out, self.prefix + "null" + self.suffix)
            return out
        table = self.values
        if self.prefix or self.suffix:
            table = pc.binary_join_element_wise(self.prefix, table, self.suffix, "")
        return table.take(pa.array(self.codes, pa.int64()))


_SMALL_RANGE = 4096


def _small_numbers(arr: np.ndarray, ftype: FieldType) -> _CatPart | None:
    """Numbers with few distinct values (flags, counts, steps, rounded scores) as a lookup table.

    The table's texts come from the same Arrow cast as other numbers, so the bytes are the same.
    """
    if not len(arr):
        return None
    kind = arr.dtype.kind
    if kind == "b" and ftype == "boolean":
        return _CatPart(("false", "true"), arr.astype(np.int64))
    if kind in "iu" and ftype in ("int", "long"):
        lo, hi = int(arr.min()), int(arr.max())
        if hi - lo >= _SMALL_RANGE:
            return None
        return _CatPart(_int_texts(lo, hi), arr.astype(np.int64) - lo)
    if kind == "f" and ftype in ("int", "long", "double"):
        nan = np.isnan(arr)
        if nan.all():
            return _CatPart(("null",), np.zeros(len(arr), dtype=np.int64))
        scale = 1.0 if ftype != "double" else 100.0
        lo_v, hi_v = float(np.nanmin(arr)), float(np.nanmax(arr))
        if (hi_v - lo_v) * scale >= _SMALL_RANGE or not np.isfinite(lo_v) or not np.isfinite(hi_v):
            return None
        k = np.rint(np.where(nan, lo_v, arr) * scale)
        if ftype == "double":
            if not bool(((k / scale) == np.where(nan, k / scale, arr)).all()):
                return None  # not exactly 2 decimals: leave it to the general cast
            if bool((np.signbit(arr) & (arr == 0)).any()):
                return None  # -0.0 is written as -0
        elif not bool((k == np.where(nan, k, arr)).all()):
            return None
        lo = int(k.min())
        codes = k.astype(np.int64) - lo
        size = int(codes.max()) + 1
        if nan.any():
            codes[nan] = size
        return _CatPart(_scaled_texts(lo, size, scale, ftype != "double"), codes)
    return None


@functools.lru_cache(maxsize=256)
def _int_texts(lo: int, hi: int) -> tuple[str, ...]:
    return tuple(str(v) for v in range(lo, hi + 1))


@functools.lru_cache(maxsize=256)
def _scaled_texts(lo: int, size: int, scale: float, integer: bool) -> tuple[str, ...]:
    k = np.arange(lo, lo + size, dtype=np.float64)
    if integer:
        texts = pc.cast(pa.array(k.astype(np.int64)), pa.string()).to_pylist()
    else:
        texts = pc.cast(pa.array(k / scale), pa.string()).to_pylist()
    return (*texts, "null")


def _cat_texts(value: Cat) -> tuple[tuple[str, ...], np.ndarray]:
    texts = tuple(json.dumps(v) for v in value.values) + ("null",)
    codes = value.codes
    if len(codes) and int(codes.min()) < 0:
        codes = np.where(codes < 0, len(value.values), codes)
    return texts, codes


def _coded_part(value: Coded) -> Any:
    """A fixed-width matrix when every piece of the table has the same length, else an array."""
    table = value.table
    if isinstance(table, pa.ChunkedArray):
        table = table.combine_chunks()
    if table.type == pa.string() and table.null_count == 0 and len(table):
        start = table.offset
        offsets = np.frombuffer(table.buffers()[1], dtype=np.int32)[start : start + len(table) + 1]
        widths = np.diff(offsets)
        w = int(widths[0])
        if w > 0 and bool((widths == w).all()):
            data = np.frombuffer(table.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
            return np.take(data.reshape(len(table), w), value.codes, axis=0)
    return _WrapPart(table, quote=False, codes=value.codes)


def encode(
    contract: Contract,
    columns: Mapping[str, Any],
    extra: Sequence[tuple[str, FieldType]] = (),
    tail: pa.Array | None = None,
) -> pa.Array:
    """Encode columns as JSON lines following ``contract`` (plus ``extra`` fields at the end).

    A column may be a numpy array, an Arrow array, a ``Cat``, a ``Coded``, a ``Fixed``, a
    ``Raw`` array of JSON pieces, or a scalar (same value on every line). Absent fields are
    written as ``null``. Returns an Arrow string array of complete lines, each ending in a
    newline. ``tail`` (JSON text per row, may be empty) is inserted before the closing brace:
    extra fields that only some rows carry.
    """
    fields = [(f.name, f.type) for f in contract.fields] + list(extra)
    # Parts are constant text (str), fixed-width text (uint8 matrices), categorical codes into
    # small tables (_CatPart) or Arrow string arrays. Constant text is folded into a neighbouring
    # matrix or table, adjacent matrices are laid side by side and adjacent small tables are
    # merged, so one Arrow join over few arrays builds the lines.
    parts: list[Any] = []
    pending = ""

    def attach(text: str, nxt: Any) -> None:
        if not text:
            return
        last = parts[-1] if parts else None
        if isinstance(last, _CatPart):
            last.values = _merged_values(last.values, (text,))
        elif isinstance(last, list):
            last.append(text)
        elif isinstance(last, _WrapPart):
            last.suffix += text
        elif isinstance(nxt, _CatPart):
            nxt.values = _merged_values((text,), nxt.values)
        elif isinstance(nxt, _WrapPart):
            nxt.prefix = text + nxt.prefix
        else:
            parts.append([text])

    def push(part: Any) -> None:
        last = parts[-1] if parts else None
        if isinstance(part, np.ndarray):
            if isinstance(last, list):
                last.append(part)
            else:
                parts.append([part])
        elif (
            isinstance(part, _CatPart)
            and isinstance(last, _CatPart)
            and len(last.values) * len(part.values) <= _MAX_MERGED_TABLE
        ):
            last.codes = last.codes * len(part.values) + part.codes
            last.values = _merged_values(last.values, part.values)
        else:
            parts.append(part)

    for pos, (name, ftype) in enumerate(fields):
        pending += ("{" if pos == 0 else ",") + json.dumps(name) + ":"
        value = columns.get(name)
        if value is None or isinstance(value, (str, int, float, bool, np.integer, np.floating, np.bool_)):
            if isinstance(value, (np.integer, np.floating, np.bool_)):
                value = value.item()
            pending += _scalar_piece(value, ftype)
            continue
        if isinstance(value, Cat):
            texts, codes = _cat_texts(value)
            matrix = _text_matrix(texts)
            part: Any = _CatPart(texts, codes) if matrix is None else np.take(matrix, codes, axis=0)
        elif isinstance(value, Fixed):
            part = value.matrix
        elif isinstance(value, Coded):
            part = _coded_part(value)
        elif isinstance(value, Raw):
            part = value.pieces
        elif isinstance(value, (pa.Array, pa.ChunkedArray)):
            if ftype in ("string", "date", "timestamp"):
                arr = value.combine_chunks() if isinstance(value, pa.ChunkedArray) else value
                part = _WrapPart(arr if arr.type == pa.string() else pc.cast(arr, pa.string()), quote=True)
            else:
                part = _array_piece(value, ftype)
        elif ftype == "timestamp":
            part = timestamp_matrix(np.asarray(value), quote=True)
        elif ftype == "date":
            part = date_matrix(np.asarray(value), quote=True)
        else:
            arr_np = np.asarray(value)
            part = _small_numbers(arr_np, ftype) if arr_np.dtype.kind in "biuf" else None
            if part is None:
                if arr_np.dtype.kind in "OUT" and ftype == "string":
                    part = _WrapPart(pa.array(arr_np.tolist(), pa.string()), quote=True)
                else:
                    part = _array_piece(arr_np, ftype)
        attach(pending, part)
        pending = ""
        push(part)
    if tail is not None:
        attach(pending, tail)
        pending = ""
        push(tail)
    attach(pending + "}\n", None)

    lengths: set[int] = set()
    for p in parts:
        if isinstance(p, list):
            lengths.update(len(x) for x in p if not isinstance(x, str))
        else:
            lengths.add(len(p.codes) if isinstance(p, _CatPart) else len(p))
    if len(lengths) != 1:
        raise ValueError(
            f"encode {contract.source}: needs array columns of one length, got {sorted(lengths)}"
        )
    n = lengths.pop()
    args = [_materialise(p, n) for p in parts]
    return args[0] if len(args) == 1 else pc.binary_join_element_wise(*args, "")


def _materialise(part: Any, n: int) -> pa.Array:
    if isinstance(part, _CatPart):
        return _values_array(part.values).take(pa.array(part.codes, pa.int64()))
    if isinstance(part, _WrapPart):
        return part.materialise()
    if isinstance(part, list):
        pieces = [np.frombuffer(x.encode(), dtype=np.uint8) if isinstance(x, str) else x for x in part]
        width = sum(p.shape[-1] for p in pieces)
        m = np.empty((n, width), dtype=np.uint8)
        at = 0
        for p in pieces:
            w = p.shape[-1]
            m[:, at : at + w] = p
            at += w
        return _matrix_strings(m)
    return part


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
