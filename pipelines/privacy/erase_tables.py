"""Erasing people from every Delta table of the lakehouse, their history included.

For each Delta table of the catalog (views are left: they hold no rows), the person's rows are
those whose owner key (the strongest identifier column, or the identifier read from a raw JSON
column) is one of theirs; a raw record that is not JSON at all is the person's when it holds one
of their ids as a whole token. Then:

1. **Delete** with a ``MERGE ... WHEN MATCHED THEN DELETE`` against a view of the ids: the commit
   records the join condition, never the ids (a ``DELETE ... WHERE id IN ('...')`` would write them
   into the table's history for as long as it is kept).
2. **Purge**: with deletion vectors on, the rows are only marked deleted; ``REORG ... APPLY
   (PURGE)`` rewrites the files without them.
3. **Vacuum** with ``privacy.vacuum_retain_hours`` (0 by default): the data files that held the
   rows are deleted from disk, so time travel to a version before the erasure cannot bring them
   back (and, for the files it deleted, fails instead). With 0 on a local disk, the files the
   current version does not reference are deleted directly (:func:`delete_unreferenced`, what
   ``VACUUM ... RETAIN 0 HOURS`` does, in milliseconds instead of seconds per table).
4. **Scrub the log's statistics**: every commit names its data files with their min/max values
   per column, and an erased id at a file's edge would stay in the log for as long as the log is
   kept (``delta.logRetentionDuration``, 30 days). The statistics of entries that name an erased
   id are dropped from the commit files and checkpoints (statistics only let readers skip files;
   an entry without them is read). A commit's own description (``commitInfo``: the predicate of
   an ``UPDATE ... WHERE customer_number = '...'`` someone ran, for one) has the ids replaced
   with ``<erased>``; ``DESCRIBE HISTORY`` shows that. Checksum files (``.crc``, a cache of the
   table's state) that name one are removed.

The streams that read these tables skip commits that change rows instead of adding them
(``skipChangeCommits``), so an erasure does not stop them, and does not bring the rows back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from pipelines.config import Config
from pipelines.privacy.people import People

IDS_VIEW = "journeylake_erasure_ids"  # the people's (identifier:value) keys, what MERGE joins with
PATTERN_VIEW = "journeylake_erasure_pattern"  # their ids as one regex, for raw records not JSON


@dataclass
class TableErasure:
    table: str
    rows: int  # removed
    files_vacuumed: int
    log_files_scrubbed: int


def erasable_tables(spark: SparkSession, cfg: Config) -> list[str]:
    """Every Delta table of every schema in the catalog (not views): the lakehouse's layers and
    dbt's work schema, and whatever else a team created beside them (a sandbox, a lane's own
    schema). A person's rows are wherever someone wrote them, not only where the layout says."""
    prefix = f"{cfg.catalog.name}." if cfg.catalog.name else ""
    listing = f"SHOW SCHEMAS IN {cfg.catalog.name}" if cfg.catalog.name else "SHOW SCHEMAS"
    schemas = [f"{prefix}{r[0]}" for r in spark.sql(listing).collect() if r[0] != "information_schema"]
    names = []
    for schema in schemas:
        # one listing per schema that says each table's type and format (SHOW TABLES, then a
        # DESCRIBE per table, took a query per table; spark.catalog.listTables fails to decode
        # some tables here)
        for r in spark.sql(f"SHOW TABLE EXTENDED IN {schema} LIKE '*'").collect():
            about = _information(r["information"])
            if r["isTemporary"] or about.get("Type", "").upper() == "VIEW":
                continue
            if about.get("Provider", "").lower() == "delta":
                names.append(f"{schema}.{r['tableName']}")
    return sorted(names)


def _information(text: str | None) -> dict[str, str]:
    """SHOW TABLE EXTENDED's ``information``: one ``Key: value`` per line."""
    pairs = (line.split(": ", 1) for line in (text or "").splitlines() if ": " in line)
    return {key.strip(): value.strip() for key, value in pairs}


def merge_conditions(cfg: Config, columns: list[str], people: People) -> list[tuple[str, str]]:
    """(view, ON condition) pairs, SQL over ``t`` and the view ``s``, naming no id; empty when the
    table names nobody. The owner key is matched by equality (a hash join); a raw record that is
    not JSON is matched by the people's ids as tokens, in a join of its own with the one-row
    pattern view (in one condition with the keys, the OR made every row meet every key)."""
    raws = [c for c in cfg.privacy.raw_columns if c in columns]
    candidates = []  # strongest identifier first, whether a column or a field of a raw record
    for c in cfg.privacy.identifiers:
        if c in columns:
            candidates.append((c, f"CAST(t.`{c}` AS STRING)"))
        candidates += [(c, f"get_json_object(t.`{raw}`, '$.{c}')") for raw in raws]
    if not candidates:
        return []
    owner = (
        "coalesce("
        + ", ".join(
            f"CASE WHEN {expr} IS NOT NULL AND {expr} != '' THEN concat('{name}:', {expr}) END"
            for name, expr in candidates
        )
        + ")"
    )
    conditions = [(IDS_VIEW, f"{owner} = s.key")]
    if raws and people.source_ids():
        unparsed = " OR ".join(f"t.`{raw}` RLIKE s.pattern" for raw in raws)
        conditions.append((PATTERN_VIEW, f"{owner} IS NULL AND ({unparsed})"))
    return conditions


def register_ids(spark: SparkSession, people: People) -> None:
    """The views the conditions join with: one row per (identifier, value) key, and one row with
    the people's ids as a pattern (Java's regex has no look-behind-free word boundary for ids, so
    the boundaries are spelt out)."""
    alternatives = "|".join(_java_quote(v) for v in people.source_ids())
    pattern = "(^|[^0-9A-Za-z_])(" + alternatives + ")([^0-9A-Za-z_]|$)"
    keys = [(f"{c}:{v}",) for c, v in people.keys()]
    spark.createDataFrame(keys, "key STRING").createOrReplaceTempView(IDS_VIEW)
    spark.createDataFrame([(pattern,)], "pattern STRING").createOrReplaceTempView(PATTERN_VIEW)


def _java_quote(value: str) -> str:
    return "\\Q" + value.replace("\\E", "\\E\\\\E\\Q") + "\\E"


def record_ids(spark: SparkSession, cfg: Config, tables: list[str], people: People) -> set[str]:
    """The silver record keys of the people's rows: what names them in silver.duplicates (read
    before any row goes)."""
    column = cfg.privacy.record_id_column
    register_ids(spark, people)
    found: set[str] = set()
    for table in tables:
        columns = spark.table(table).columns
        conditions = merge_conditions(cfg, columns, people)
        if column not in columns or not conditions:
            continue
        view, condition = conditions[0]
        rows = spark.sql(f"SELECT DISTINCT t.`{column}` FROM {table} t JOIN {view} s ON {condition}")
        found.update(str(r[0]) for r in rows.collect() if r[0] is not None)
    return found


RETENTION_CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"


def erase_tables(
    spark: SparkSession,
    cfg: Config,
    tables: list[str],
    people: People,
    progress: Callable[[str], None],
    resumed: bool = False,
) -> list[TableErasure]:
    """:func:`erase_table` on each of ``tables``, ``privacy.parallel_tables`` at a time: a small
    table's MERGE, vacuum and log reads are mostly the driver's bookkeeping and waits, which
    overlap. The views and the retention setting are shared by every thread, so they are set once
    here, not per table."""
    from concurrent.futures import ThreadPoolExecutor

    register_ids(spark, people)
    previous = spark.conf.get(RETENTION_CHECK, "true")
    spark.conf.set(RETENTION_CHECK, "false")  # a retention under the 7-day default is the point
    try:
        with ThreadPoolExecutor(cfg.privacy.parallel_tables, thread_name_prefix="erase") as pool:
            return list(pool.map(lambda t: erase_table(spark, cfg, t, people, progress, resumed), tables))
    finally:
        spark.conf.set(RETENTION_CHECK, previous or "true")


def erase_table(
    spark: SparkSession,
    cfg: Config,
    table: str,
    people: People,
    progress: Callable[[str], None],
    resumed: bool = False,
) -> TableErasure:
    """The people's rows out of ``table``, its files and its log (module docstring), with the views
    of :func:`register_ids` registered and VACUUM's retention check off (:func:`erase_tables`).
    ``resumed``: a run that died may have deleted the rows but not yet their files, so every
    table is vacuumed whether or not rows are found now."""
    columns = spark.table(table).columns
    conditions = merge_conditions(cfg, columns, people)
    if not conditions:
        return TableErasure(table, 0, 0, 0)
    location = Path(_location(spark, table))
    scrubbed = scrub_log(location, people.values())  # a re-run after a crash finishes what was left
    rows = 0
    for view, condition in conditions:
        # a MERGE that matches nothing commits nothing: no count is needed to skip a table
        merge = f"MERGE INTO {table} t USING {view} s ON {condition} WHEN MATCHED THEN DELETE"
        result = spark.sql(merge).collect()
        rows += int(result[0]["num_deleted_rows"]) if result else 0
    if not rows and not resumed:
        return TableErasure(table, 0, 0, scrubbed)
    properties = {r["key"]: r["value"] for r in spark.sql(f"SHOW TBLPROPERTIES {table}").collect()}
    if properties.get("delta.enableDeletionVectors", "false").lower() == "true":
        spark.sql(f"REORG TABLE {table} APPLY (PURGE)")
    hours = cfg.privacy.vacuum_retain_hours
    if hours == 0 and location.is_dir():
        vacuumed = delete_unreferenced(spark, location)
    else:
        before = _data_files(location)
        spark.sql(f"VACUUM {table} RETAIN {hours:g} HOURS")
        vacuumed = len(before - _data_files(location))
    scrubbed += scrub_log(location, people.values())
    if rows or vacuumed or scrubbed:
        progress(
            f"{table}: {rows:,} row(s) removed, {vacuumed} file(s) vacuumed, {scrubbed} log file(s) scrubbed"
        )
    return TableErasure(table, rows, vacuumed, scrubbed)


def _location(spark: SparkSession, table: str) -> str:
    location = str(spark.sql(f"DESCRIBE DETAIL {table}").collect()[0]["location"])
    return location.removeprefix("file:")


def _data_files(location: Path) -> set[Path]:
    return {p for p in location.rglob("*.parquet") if "_delta_log" not in p.parts}


def delete_unreferenced(spark: SparkSession, location: Path) -> int:
    """``VACUUM ... RETAIN 0 HOURS`` for a table on a local disk, without its cost: every data file
    the current version does not reference is deleted (the erased rows' old files among them);
    files deleted. VACUUM lists and plans in Spark jobs, measured at 3.5-5.8 s per table on a
    small bank; the current version's files are one read of the log. Deletion-vector files are
    left: they hold row positions, not rows. Only safe with no writer committing meanwhile, as
    VACUUM with no retention: erasure holds the job locks and refuses to run beside the API."""
    from urllib.parse import unquote, urlparse

    files = spark.read.format("delta").load(str(location)).inputFiles()
    live = {Path(unquote(urlparse(f).path)) for f in files}
    gone = 0
    for path in sorted(_data_files(location) - live):
        path.unlink(missing_ok=True)
        gone += 1
    return gone


# ------------------------------------------------------------------------------------ the log


def scrub_log(location: Path, values: list[str]) -> int:
    """Statistics naming any of ``values`` dropped from the table's log (module docstring, 4)."""
    log = location / "_delta_log"
    if not log.is_dir() or not values:
        return 0
    needles = [v.encode() for v in values]
    changed = 0
    for path in sorted(log.iterdir()):
        if not path.is_file():
            continue
        if path.suffix == ".json":
            data = path.read_bytes()
            if any(n in data for n in needles):
                _replace(path, _scrub_commit(data.decode(), values).encode())
                changed += 1
        elif path.suffix == ".parquet" and ".checkpoint" in path.name:
            if _scrub_checkpoint(path, values):
                changed += 1
        elif path.suffix == ".crc":
            data = path.read_bytes()
            if any(n in data for n in needles):
                path.unlink()  # a cache of the table's state: readers recompute it
                changed += 1
    return changed


def _names_any(text: str | None, values: list[str]) -> bool:
    return text is not None and any(v in text for v in values)


ERASED = "<erased>"  # what an id becomes in a commit's description


def _scrub_action(action: dict[str, Any], values: list[str]) -> None:
    for kind in ("add", "remove"):
        entry = action.get(kind)
        if isinstance(entry, dict) and _names_any(entry.get("stats"), values):
            entry.pop("stats", None)
    if "commitInfo" in action:
        action["commitInfo"] = _redact(action["commitInfo"], values)


def _redact(value: Any, values: list[str]) -> Any:
    """``value`` with every id in its strings replaced, longest first (an id may hold another)."""
    if isinstance(value, str):
        for v in sorted(values, key=len, reverse=True):
            value = value.replace(v, ERASED)
        return value
    if isinstance(value, dict):
        return {k: _redact(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, values) for v in value]
    return value


def _scrub_commit(text: str, values: list[str]) -> str:
    out = []
    for line in text.splitlines():
        if line.strip() and _names_any(line, values):
            action = json.loads(line)
            _scrub_action(action, values)
            line = json.dumps(action, separators=(",", ":"))
        out.append(line)
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def _scrub_checkpoint(path: Path, values: list[str]) -> bool:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    changed = False
    columns = {}
    for name in table.column_names:
        column = table.column(name)
        if name in ("add", "remove") and pa.types.is_struct(column.type):
            rows = column.to_pylist()
            for row in rows:
                if row is None:
                    continue
                if _names_any(row.get("stats"), values):
                    row["stats"] = None
                    changed = True
                parsed = row.get("stats_parsed")
                if parsed is not None and _names_any(json.dumps(parsed, default=str), values):
                    row["stats_parsed"] = None
                    changed = True
            columns[name] = pa.array(rows, type=column.type)
        else:
            columns[name] = column
    if changed:
        tmp = path.with_name(path.name + ".scrub-tmp")
        pq.write_table(pa.table(columns, schema=table.schema), tmp)
        os.replace(tmp, path)
    return changed


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".scrub-tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
