"""Small, frequent appends to a Delta table: through delta-rs where it can write the table, else Spark.

Why: the decision jobs append a few hundred rows to ``gold.served_actions`` and the decision log
every micro-batch, and a decision is visible once its served rows commit. A Spark append of such
a batch is a Spark job plus a Delta commit: 0.22-0.27 s each on this 2-core machine, whichever
API (saveAsTable, a path, writeTo or insertInto), and beside ingest most of the live lane's
latency. delta-rs (the Rust implementation of the Delta protocol, as in kafka-delta-ingest)
writes the same Parquet file and commit from Arrow in the calling process: 6-9 ms for 130 served
rows, measured here. Spark and every other Delta reader read the result as any commit; the
table's statistics columns (``delta.dataSkippingStatsColumns``) and checkpoint interval are
honoured.

Where delta-rs is not used (the table stays on Spark, with the reason logged once):

* ``engine="spark"`` (``decisioning.serving.appends: spark``, the Databricks target: Unity
  Catalog tables are written through the platform);
* the table's location is not a local path (a cluster's object store needs the platform's
  credentials, which Spark has);
* the table uses a writer feature delta-rs was not checked with here (for example row tracking
  or in-commit timestamps, which it refuses): :data:`DELTA_RS_WRITER_FEATURES`.

The decision job's own compaction rewrites the table through Spark between micro-batches, so each
append first brings delta-rs's view of the table up to date. delta-rs checks its append against
commits made after that view (serializable: a concurrent DELETE or OPTIMIZE by someone else
conflicts, where Spark would let a blind append pass), so an append that conflicts is written
again on the table as it now is, up to :data:`COMMIT_ATTEMPTS` times.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import pandas as pd
import pyarrow as pa

from pipelines.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

ENGINES = ("delta-rs", "spark")
# writer features delta-rs appends to correctly (checked: tests/test_delta_appends.py and by hand
# with delta-spark 4.4 tables); a table with any other feature is appended to by Spark
DELTA_RS_WRITER_FEATURES = frozenset(
    {"appendOnly", "invariants", "checkConstraints", "columnMapping", "deletionVectors"}
)
# the same, for tables on a legacy protocol (no feature list): writer versions 2 and 3
DELTA_RS_LEGACY_WRITER_VERSION = 3
# an append that met another writer's commit is written again this many times in all
COMMIT_ATTEMPTS = 3


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
        if engine == "delta-rs":
            self._open_delta_rs()

    def _open_delta_rs(self) -> None:
        location = str(self.spark.sql(f"DESCRIBE DETAIL {self.table}").first()["location"])
        path = local_path(location)
        if path is None:
            self._use_spark(f"its location {location} is not a local path")
            return
        from deltalake import DeltaTable

        table = DeltaTable(path)
        protocol = table.protocol()
        features = set(protocol.writer_features or [])
        if protocol.writer_features is None and protocol.min_writer_version > DELTA_RS_LEGACY_WRITER_VERSION:
            self._use_spark(f"its writer version {protocol.min_writer_version} is not checked with delta-rs")
            return
        if unknown := sorted(features - DELTA_RS_WRITER_FEATURES):
            self._use_spark(f"its writer features {', '.join(unknown)} are not checked with delta-rs")
            return
        schema = pa.schema(table.schema().to_arrow())
        if schema.names != self.columns:  # an older table: Spark appends by name and says what differs
            self._use_spark(f"its columns {schema.names} are not the ones written, {self.columns}")
            return
        self._delta = table
        self._schema = schema
        self.engine = "delta-rs"

    def _use_spark(self, why: str) -> None:
        self.why_spark = why
        log.info("appends to %s go through Spark: %s", self.table, why)

    def append(self, rows: pd.DataFrame) -> None:
        """Append ``rows`` (every column of the table; extra columns are ignored) in one commit."""
        if self._delta is None:
            frame = self.spark.createDataFrame(rows[self.columns], schema=self.ddl)
            frame.write.format("delta").mode("append").saveAsTable(self.table)
            return
        from deltalake import write_deltalake
        from deltalake.exceptions import CommitFailedError

        assert self._schema is not None
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            self._delta.update_incremental()  # Spark may have committed since (the job's compaction)
            batch = to_arrow(rows, self._schema)
            try:
                write_deltalake(self._delta, batch, mode="append")
                return
            except CommitFailedError as exc:  # nothing was committed: the log entry was not written
                if attempt == COMMIT_ATTEMPTS:
                    raise
                first_line = (str(exc).strip().splitlines() or [repr(exc)])[0]
                log.info(
                    "append to %s met another writer's commit (%s); trying again", self.table, first_line
                )


def to_arrow(rows: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """``rows`` as an Arrow table of ``schema``, converted as Spark's Arrow path converts them:
    NaN and None are null, naive timestamps are UTC (the sessions' time zone), maps are dicts."""
    arrays = []
    for field in schema:
        values: Any = rows[field.name]
        if pa.types.is_timestamp(field.type):
            values = pd.to_datetime(values, utc=True).dt.floor("us")
        elif pa.types.is_map(field.type):
            values = [list(v.items()) if isinstance(v, dict) else v for v in values]
        arrays.append(pa.array(values, type=field.type, from_pandas=True))
    return pa.Table.from_arrays(arrays, schema=schema)


def local_path(location: str) -> str | None:
    """The local file-system path of a table location (``file:`` or no scheme), else None."""
    parsed = urlparse(location)
    if parsed.scheme in ("", "file"):
        return parsed.path
    return None
