"""Small, frequent appends to a Delta table: through delta-rs where it can write the table, else Spark.

Why: the decision jobs append a few hundred rows to ``gold.served_actions`` and the decision log
every micro-batch, and a decision is visible once its served rows commit. A Spark append of such
a batch is a Spark job plus a Delta commit: 0.22-0.27 s each on this 2-core machine, whichever
API (saveAsTable, a path, writeTo or insertInto), and beside ingest most of the live lane's
latency. delta-rs (the Rust implementation of the Delta protocol, as in kafka-delta-ingest)
writes the same Parquet file and commit from Arrow in the calling process: 6-9 ms for 130 served
rows, measured here. Spark and every other Delta reader read the result as any commit; the
table's statistics columns (``delta.dataSkippingStatsColumns``) and checkpoint interval are
honoured, and the commit says it is a blind append (as Spark's appends do), so a concurrent
Spark writer elsewhere does not conflict with it.

Where delta-rs is not used (Spark appends, and the reason is logged and kept in ``why_spark``):

* ``engine="spark"`` (``decisioning.serving.appends: spark``, the Databricks target: Unity
  Catalog tables are written through the platform);
* the table's location is not a local path (a cluster's object store needs the platform's
  credentials, which Spark has), or delta-rs cannot open it;
* the table uses a writer feature delta-rs was not checked with here (for example row tracking
  or in-commit timestamps, which it refuses, or change data feed): :data:`DELTA_RS_WRITER_FEATURES`;
* its schema is not the one written (an older table: Spark appends by name).

The table is checked again each time delta-rs refreshes its view of it, before every append (the
decision job's own compaction rewrites it through Spark between micro-batches).

Exactly once: every delta-rs commit carries the appender's transaction id and a sequence number
(Delta's ``txn`` action). An append whose commit fails (another writer's overwrite or DELETE in
between, which delta-rs checks serializably) is written again on the refreshed table, up to
:data:`COMMIT_ATTEMPTS` times, unless the table shows that commit went through after all.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa

from pipelines.errors import InputError, first_line
from pipelines.services.spark import one_row

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

ENGINES = ("delta-rs", "spark")
# writer features delta-rs appends to correctly (checked: tests/test_delta_appends.py, with
# delta-spark 4.4 tables); a table with any other feature is appended to by Spark
DELTA_RS_WRITER_FEATURES = frozenset(
    {"appendOnly", "invariants", "checkConstraints", "columnMapping", "deletionVectors"}
)
# the same, for tables on a legacy protocol (no feature list): writer versions 2 and 3
DELTA_RS_LEGACY_WRITER_VERSION = 3
# an append whose commit failed is written again this many times in all (short pauses between)
COMMIT_ATTEMPTS = 3
RETRY_PAUSE_SECONDS = 0.05


def ddl_columns(ddl: str) -> list[str]:
    """The column names of a DDL schema string, in order (nested types' commas skipped)."""
    names = []
    depth = 0
    token = ""
    for ch in ddl:
        depth += ch == "<"
        depth -= ch == ">"
        if ch == "," and depth == 0:
            names.append(token.split()[0])
            token = ""
        else:
            token += ch
    if token.strip():
        names.append(token.split()[0])
    return names


class DeltaAppender:
    """Appends pandas rows to one catalog table whose schema is ``ddl``.

    ``engine``: ``delta-rs`` (used when the table allows, see the module's docstring) or
    ``spark``. :attr:`engine` says which one appends; :attr:`why_spark` why not delta-rs.
    """

    def __init__(self, spark: SparkSession, table: str, ddl: str, engine: str = "delta-rs") -> None:
        if engine not in ENGINES:
            raise InputError(f"unknown append engine {engine!r} for {table}; expected one of {ENGINES}")
        self.spark = spark
        self.table = table
        self.ddl = ddl
        self.columns = ddl_columns(ddl)
        self.engine = "spark"
        self.why_spark: str | None = "configured" if engine == "spark" else None
        self._delta: Any = None  # deltalake.DeltaTable
        self._schema: pa.Schema | None = None
        self._app_id = f"journeylake-{uuid.uuid4().hex}"  # this appender's commits: Delta txn id
        self._sequence = 0
        self._naive_zone = "UTC"  # naive timestamps mean the session's time zone, as in Spark
        if engine == "delta-rs":
            try:
                self._open_delta_rs()
            except Exception as exc:  # Spark can still append; say why delta-rs does not
                self._use_spark(f"delta-rs could not open it: {first_line(exc)}")

    def _open_delta_rs(self) -> None:
        location = str(one_row(self.spark.sql(f"DESCRIBE DETAIL {self.table}"))["location"])
        path = local_path(location)
        if path is None:
            self._use_spark(f"its location {location} is not a local path")
            return
        from deltalake import DeltaTable

        table = DeltaTable(path)
        expected = self.spark.createDataFrame([], schema=self.ddl).schema  # no Spark job
        actual = self.spark.table(self.table).schema
        if [(f.name, f.dataType) for f in actual] != [(f.name, f.dataType) for f in expected]:
            self._use_spark(
                f"its schema {actual.simpleString()} is not the one written, {expected.simpleString()}"
            )
            return
        self._delta = table
        self._schema = pa.schema(table.schema().to_arrow())
        self._naive_zone = self.spark.conf.get("spark.sql.session.timeZone") or "UTC"
        self.engine = "delta-rs"
        if why := self._not_writable():
            self._use_spark(why)

    def _not_writable(self) -> str | None:
        """Why delta-rs should not append to the table as it now is (None: it may)."""
        protocol = self._delta.protocol()
        if protocol.writer_features is None:
            if protocol.min_writer_version > DELTA_RS_LEGACY_WRITER_VERSION:
                return f"its writer version {protocol.min_writer_version} is not checked with delta-rs"
        elif unknown := sorted(set(protocol.writer_features) - DELTA_RS_WRITER_FEATURES):
            return f"its writer features {', '.join(unknown)} are not checked with delta-rs"
        if pa.schema(self._delta.schema().to_arrow()) != self._schema:
            return "its schema changed since the job opened it"
        return None

    def _use_spark(self, why: str) -> None:
        self._delta = None
        self.engine = "spark"
        self.why_spark = why
        log.info("appends to %s go through Spark: %s", self.table, why)

    def append(self, rows: pd.DataFrame) -> None:
        """Append ``rows`` (every column of the table; extra columns are ignored) in one commit."""
        if self._delta is not None:
            self._append_delta_rs(rows)
        if self._delta is None:  # Spark's, or delta-rs found the table changed and stepped aside
            frame = self.spark.createDataFrame(rows[self.columns], schema=self.ddl)
            frame.write.format("delta").mode("append").saveAsTable(self.table)

    def _append_delta_rs(self, rows: pd.DataFrame) -> None:
        assert self._schema is not None
        batch = to_arrow(rows, self._schema, self._naive_zone)
        self._sequence += 1
        if not append_once(self._delta, batch, self._app_id, self._sequence, self.table, self._not_writable):
            self._use_spark(self._not_writable() or "the table changed")


def append_once(
    delta: Any,
    batch: pa.Table,
    app_id: str,
    sequence: int,
    table: str,
    not_writable: Callable[[], str | None] = lambda: None,
) -> bool:
    """Append ``batch`` to the deltalake table ``delta`` in one commit carrying the transaction
    (``app_id``, ``sequence``): written once however often it is tried. An append whose commit
    fails is tried again on the refreshed table, up to :data:`COMMIT_ATTEMPTS` times. False (and
    nothing written) when ``not_writable`` finds a reason the table must not be appended to."""
    from deltalake import CommitProperties, Transaction, write_deltalake
    from deltalake.exceptions import CommitFailedError

    commit = CommitProperties(
        custom_metadata={"isBlindAppend": True},
        app_transactions=[Transaction(app_id=app_id, version=sequence)],
    )
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        delta.update_incremental()  # Spark may have committed since (a job's compaction)
        if (delta.transaction_version(app_id) or 0) >= sequence:
            return True  # an attempt that reported a failure was committed after all, or a replay
        if not_writable():
            return False
        try:
            write_deltalake(delta, batch, mode="append", commit_properties=commit)
            return True
        except CommitFailedError as exc:  # the next attempt first checks whether it went through
            if attempt == COMMIT_ATTEMPTS:
                raise
            log.info("append to %s failed to commit (%s); trying again", table, first_line(exc))
            time.sleep(RETRY_PAUSE_SECONDS * attempt)
    return False


class PathAppender:
    """Appends to a local Delta table by path, without Spark (the decision API's process):
    delta-rs only, every append with a transaction id, so a replayed batch is written once."""

    def __init__(self, path: str, table: str, columns: list[str], app_id: str) -> None:
        from deltalake import DeltaTable

        self.table = table
        self.app_id = app_id
        self._delta = DeltaTable(path)
        self._schema = pa.schema(self._delta.schema().to_arrow())
        if self._schema.names != columns:
            raise InputError(
                f"{table} at {path}: columns {', '.join(self._schema.names)} are not the ones written, "
                f"{', '.join(columns)}"
            )

    def committed(self, sequence: int) -> bool:
        self._delta.update_incremental()
        return (self._delta.transaction_version(self.app_id) or 0) >= sequence

    def append(self, rows: pd.DataFrame, sequence: int) -> None:
        batch = to_arrow(rows, self._schema)
        append_once(self._delta, batch, self.app_id, sequence, self.table)


def to_arrow(rows: pd.DataFrame, schema: pa.Schema, naive_zone: str = "UTC") -> pa.Table:
    """``rows`` as an Arrow table of ``schema``, converted as Spark's Arrow path converts them:
    NaN and None are null, naive timestamps are in ``naive_zone`` (the session's time zone),
    nanoseconds are cut to microseconds, maps are dicts."""
    arrays = []
    for field in schema:
        values: Any = rows[field.name]
        if pa.types.is_timestamp(field.type):
            try:
                stamps = pd.to_datetime(values)
            except (TypeError, ValueError):  # stamps of several zones: one instant each, in UTC
                stamps = pd.to_datetime(values, utc=True)
            if getattr(stamps.dt, "tz", None) is None:
                stamps = stamps.dt.tz_localize(naive_zone)
            values = stamps.dt.tz_convert("UTC").dt.floor("us")
        elif pa.types.is_map(field.type):
            values = [list(v.items()) if isinstance(v, dict) else v for v in values]
        arrays.append(pa.array(values, type=field.type, from_pandas=True))
    return pa.Table.from_arrays(arrays, schema=schema)


def local_path(location: str) -> str | None:
    """The local file-system path of a table location (``file:`` or no scheme), else None."""
    if location.startswith("file://"):
        return location[len("file://") :] or None
    if location.startswith("file:"):
        return location[len("file:") :] or None
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", location):  # another scheme: s3a:, abfss:, dbfs:, ...
        return None
    return location or None
