"""Scheduled segment exports: the dated files marketing tools pull, one CSV and one Parquet per segment.

The audiences come from ``gold.segment_exports`` (the dbt mart built from conf/ ``segments``).
Consent is checked again here, against ``silver.consent_current`` at export time, so a customer
who revoked marketing consent after the last dbt build is still left out. Each run writes
``OUT/<date>/`` whole in a scratch folder and swaps it in, so re-running a date replaces that
date's files exactly (a segment dropped from conf/ loses its file too) and a failed run leaves
the previous files in place. Rows are sorted, so the same data gives byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines import __version__
from pipelines.config import Config, SegmentConfig
from pipelines.contracts import ANY_CHANNEL, CONSENT_CHANNELS, MARKETING_CHANNELS
from pipelines.errors import InputError, JourneylakeError
from pipelines.tables import Tables

if TYPE_CHECKING:  # pragma: no cover - Spark is imported when a command runs
    import pyarrow as pa
    from pyspark.sql import SparkSession

# What leaves the lakehouse: ids to contact through the channel system, and coarse attributes
# for personalisation. No balances, no scores, no PII (channel systems hold the contact details).
EXPORT_COLUMNS = (
    "export_date",
    "segment_name",
    "channel",
    "unified_customer_id",
    "customer_number",
    "region",
    "income_band",
    "customer_since",
)
MART = "segment_exports"
EXPORT_FORMATS = ("csv", "parquet")  # each segment's files, in this order in the manifest


@dataclass(frozen=True)
class SegmentResult:
    name: str
    matched: int
    exported: int
    excluded: dict[str, int]


def _consent_filter_text(consent_table: str) -> str:
    return (
        f"marketing consent granted for the segment's channel and for 'any' in {consent_table} at export time"
    )


def check_segments(spark: SparkSession, cfg: Config, names: list[str] | None) -> dict[str, SegmentConfig]:
    """The segments to export, each with a ``where`` that Spark can resolve on customer_360."""
    from pyspark.errors import AnalysisException

    if not cfg.segments:
        raise InputError("no segments are defined: add some under `segments:` in conf/base.yml")
    chosen = dict(cfg.segments)
    if names:
        unknown = sorted(set(names) - set(chosen))
        if unknown:
            raise InputError(
                f"unknown segment {', '.join(unknown)}; defined in conf/: {', '.join(sorted(chosen))}"
            )
        chosen = {name: chosen[name] for name in names}
    customer_360 = Tables.from_config(cfg).gold("customer_360")
    if not spark.catalog.tableExists(customer_360):
        raise JourneylakeError(f"{customer_360} does not exist yet: run `journeylake dbt build` first")
    columns = spark.table(customer_360)
    for name, segment in chosen.items():
        try:
            columns.where(segment.where).limit(0).collect()
        except AnalysisException as exc:
            first_line = str(exc).strip().splitlines()[0]
            raise InputError(
                f"segment {name} (conf/ segments.{name}.where = {segment.where!r}) is not a valid "
                f"condition on {customer_360}: {first_line}"
            ) from None
    return chosen


def export_segments(
    spark: SparkSession,
    cfg: Config,
    export_date: date,
    out: Path,
    names: list[str] | None = None,
) -> dict[str, Any]:
    """Write ``out/<export_date>/`` (files + manifest.json) and return the manifest."""
    from pyspark.sql import functions as F

    segments = check_segments(spark, cfg, names)
    tables = Tables.from_config(cfg)
    mart = tables.gold(MART)
    if not spark.catalog.tableExists(mart):
        raise JourneylakeError(f"{mart} does not exist yet: run `journeylake dbt build` first")
    rows = spark.table(mart).where(F.col("segment_name").isin(list(segments)))
    built = {r["segment_name"] for r in rows.select("segment_name").distinct().collect()}
    stale = [name for name in segments if name not in built and _matches_any(spark, cfg, segments[name])]
    if stale:
        raise JourneylakeError(
            f"{mart} has no rows for segment {', '.join(stale)} defined in conf/: rebuild it "
            "with `journeylake dbt build --select segment_exports` (or export with --build)"
        )

    consent = (
        spark.table(tables.consent_current)
        .where("purpose = 'marketing'")
        .groupBy("customer_number")
        .pivot("channel", list(CONSENT_CHANNELS))
        .agg(F.max("granted"))
    )
    channel_now = F.coalesce(
        *[F.when(F.col("channel") == c, F.col(f"consent_{c}")) for c in MARKETING_CHANNELS],
    )
    judged = (
        rows.join(
            consent.select("customer_number", *[F.col(c).alias(f"consent_{c}") for c in consent.columns[1:]]),
            "customer_number",
            "left",
        )
        .withColumn(
            "consent_now",
            F.coalesce(channel_now, F.lit(False)) & F.coalesce(f"consent_{ANY_CHANNEL}", F.lit(False)),
        )
        .withColumn(
            "excluded_now",
            F.when(F.col("customer_status") != "active", F.lit("customer_not_active")).when(
                ~F.col("consent_now"), F.concat(F.lit("no_marketing_consent_"), F.col("channel"))
            ),
        )
        .withColumn("export_date", F.lit(export_date))
    ).localCheckpoint(eager=True)

    counts: dict[str, dict[str, int]] = {name: {} for name in segments}
    for r in judged.groupBy("segment_name", "excluded_now").count().collect():
        counts[r["segment_name"]][r["excluded_now"] or ""] = r["count"]
    exported = (
        judged.where("excluded_now IS NULL")
        .select(*EXPORT_COLUMNS)
        .orderBy("segment_name", "customer_number")
        .toArrow()
    )

    results = []
    for name in segments:
        by_reason = counts[name]
        results.append(
            SegmentResult(
                name=name,
                matched=sum(by_reason.values()),
                exported=by_reason.get("", 0),
                excluded={reason: n for reason, n in sorted(by_reason.items()) if reason},
            )
        )
    manifest = {
        "export_date": export_date.isoformat(),
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "generated_by": f"journeylake {__version__} export-segments",
        "source": {"table": mart, "delta_version": _delta_version(spark, mart)},
        "consent_source": {
            "table": tables.consent_current,
            "delta_version": _delta_version(spark, tables.consent_current),
        },
        "filters_applied": ["customer_status = 'active'", _consent_filter_text(tables.consent_current)],
        "columns": list(EXPORT_COLUMNS),
        "segments": [],
    }
    _write_date_folder(out, export_date, segments, results, exported, manifest)
    return manifest


def _matches_any(spark: SparkSession, cfg: Config, segment: SegmentConfig) -> bool:
    """Whether a segment's condition selects anybody in customer_360 (an empty segment is fine)."""
    customer_360 = Tables.from_config(cfg).gold("customer_360")
    return bool(spark.table(customer_360).where(segment.where).limit(1).count())


def _delta_version(spark: SparkSession, table: str) -> int | None:
    from delta.tables import DeltaTable

    history = DeltaTable.forName(spark, table).history(1).select("version").collect()
    return int(history[0]["version"]) if history else None


def _write_date_folder(
    out: Path,
    export_date: date,
    segments: dict[str, SegmentConfig],
    results: list[SegmentResult],
    exported: pa.Table,
    manifest: dict[str, Any],
) -> None:
    """Write every file into a scratch folder, then swap it in for ``out/<date>``."""
    import pyarrow.compute as pc

    day = export_date.isoformat()
    out.mkdir(parents=True, exist_ok=True)
    for leftover in out.glob(f".{day}.*"):  # an earlier run that died mid-way
        shutil.rmtree(leftover, ignore_errors=True)
    scratch = out / f".{day}.partial-{uuid.uuid4().hex[:8]}"
    scratch.mkdir()
    try:
        for result in results:
            segment = segments[result.name]
            table = exported.filter(pc.equal(exported["segment_name"], result.name))
            if table.num_rows != result.exported:
                raise JourneylakeError(
                    f"segment {result.name}: {table.num_rows} rows to write but {result.exported} counted"
                )
            files = {}
            for kind in EXPORT_FORMATS:
                path = scratch / f"{result.name}_{day}.{kind}"
                path.write_bytes(file_bytes(table, kind))
                files[kind] = {"file": path.name, "bytes": path.stat().st_size, "sha256": _sha256(path)}
            manifest["segments"].append(
                {
                    "name": result.name,
                    "description": segment.description,
                    "definition": segment.where,
                    "channel": segment.channel,
                    "matched": result.matched,
                    "excluded": result.excluded,
                    "rows": result.exported,
                    "files": files,
                }
            )
        (scratch / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        target = out / day
        retired = out / f".{day}.old-{uuid.uuid4().hex[:8]}"
        if target.exists():
            target.rename(retired)
        scratch.rename(target)
        shutil.rmtree(retired, ignore_errors=True)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


def file_bytes(table: pa.Table, kind: str) -> bytes:
    """One segment file's bytes: ``kind`` is one of EXPORT_FORMATS (erasure rewrites files with it)."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    if kind == "csv":
        pa_csv.write_csv(table, sink)
    else:
        pq.write_table(table, sink)
    return bytes(sink.getvalue().to_pybytes())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
