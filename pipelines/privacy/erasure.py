"""``erase-customer``'s work: one request, every copy of the person, and a record that names nobody.

A request runs in steps, each safe to repeat:

1. **resolve** the asked ids to the people and all of their ids (:mod:`pipelines.privacy.people`),
   and the silver record keys of their rows; ids already erased by an earlier request are
   recognised by their keyed hash in the erasure records and reported as such;
2. write a **journal** (``<home>/privacy/erasures/<request>.json``, mode 0600): the only copy of the
   ids while the request runs, so a run that dies half-way is finished by the next one (which
   cannot resolve the ids again: the identity map's rows are among those erased);
3. every **Delta table** (:mod:`pipelines.privacy.erase_tables`), then the **files** around the
   lakehouse (:mod:`pipelines.privacy.erase_files`), then the **online store** when the home has
   one (started for the erasure if it is down, its files rewritten);
4. append the **erasure record** to ``gold.<privacy.records_table>``: request id, who asked, when,
   the rows removed per table and file kind, the store keys removed, and keyed hashes of the ids
   (never an id); then delete the journal.

What it does not reach is said in the record's ``notes``: a Kafka topic keeps a record until the
topic's retention removes it (see the README's "Erasure").
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from pipelines.config import Config
from pipelines.privacy.erase_files import FileErasure, erase_files
from pipelines.privacy.erase_tables import TableErasure, erasable_tables, erase_tables, record_ids
from pipelines.privacy.people import RECORD_KEYS, People, id_hash, resolve
from pipelines.serving.delivery import spool_dir
from pipelines.tables import Tables

RECORDS_DDL = (
    "request_id STRING, requested_by STRING, requested_at TIMESTAMP, completed_at TIMESTAMP, "
    "persons INT, id_hashes ARRAY<STRING>, rows_removed MAP<STRING, BIGINT>, "
    "files_rewritten MAP<STRING, BIGINT>, store_keys_removed MAP<STRING, BIGINT>, "
    "unknown_ids INT, notes ARRAY<STRING>"
)


@dataclass
class Erasure:
    """One request's outcome: what the record holds, plus the asked ids' fate for the caller."""

    request_id: str
    requested_by: str
    requested_at: float
    completed_at: float | None = None
    persons: int = 0
    id_hashes: list[str] = field(default_factory=list)
    rows_removed: dict[str, int] = field(default_factory=dict)
    files_rewritten: dict[str, int] = field(default_factory=dict)
    store_keys_removed: dict[str, int] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)  # asked ids nobody is known by (not recorded)
    already: dict[str, str] = field(default_factory=dict)  # asked id -> the request that erased it
    notes: list[str] = field(default_factory=list)

    def record_row(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "requested_by": self.requested_by,
            "requested_at": datetime.fromtimestamp(self.requested_at, UTC),
            "completed_at": datetime.fromtimestamp(self.completed_at or time.time(), UTC),
            "persons": self.persons,
            "id_hashes": self.id_hashes,
            "rows_removed": self.rows_removed,
            "files_rewritten": self.files_rewritten,
            "store_keys_removed": self.store_keys_removed,
            "unknown_ids": len(self.unknown),
            "notes": self.notes,
        }


def journal_dir(cfg: Config) -> Path:
    return cfg.paths.home / "privacy" / "erasures"


def records_table(cfg: Config, tables: Tables) -> str:
    return tables.gold(cfg.privacy.records_table)


def erased_before(spark: SparkSession, cfg: Config, tables: Tables, asked: Sequence[str]) -> dict[str, str]:
    """Asked ids an earlier request erased: id -> that request's id and date."""
    table = records_table(cfg, tables)
    if not spark.catalog.tableExists(table):
        return {}
    hashes = {id_hash(cfg, a): a for a in asked}
    found: dict[str, str] = {}
    for r in spark.sql(f"SELECT request_id, completed_at, id_hashes FROM {table}").collect():
        for h in r["id_hashes"] or []:
            if h in hashes:
                found[hashes[h]] = f"{r['request_id']} ({r['completed_at']:%Y-%m-%d %H:%M} UTC)"
    return found


def erase(
    spark: SparkSession,
    cfg: Config,
    asked: Sequence[str],
    requested_by: str,
    progress: Callable[[str], None] = print,
) -> list[Erasure]:
    """Finish any request a crash left, then this one; every request's outcome, this one last."""
    _refuse_beside_the_api(cfg)
    outcomes = [_finish(spark, cfg, path, progress, resumed=True) for path in pending_journals(cfg)]
    tables = Tables.from_config(cfg)
    already = erased_before(spark, cfg, tables, asked)
    fresh = [a for a in dict.fromkeys(asked) if a not in already]
    erasure = Erasure(uuid.uuid4().hex, requested_by, time.time(), already=already)
    people = resolve(spark, cfg, tables, fresh) if fresh else People()
    erasure.unknown = people.unknown
    if people.empty():
        outcomes.append(erasure)
        return outcomes
    keys = record_ids(spark, cfg, erasable_tables(spark, cfg), people)
    for column in RECORD_KEYS:
        if column in cfg.privacy.identifiers:
            people.add(column, keys)
    path = _write_journal(cfg, erasure, people, [a for a in fresh if a in people.resolved])
    outcomes.append(_finish(spark, cfg, path, progress))
    return outcomes


def _refuse_beside_the_api(cfg: Config) -> None:
    """The decision API's delivery appends to the decision tables while the erasure vacuums them:
    a file it writes before its commit would be deleted under it. The job locks do not cover the
    API (it runs for months), so its delivery processes are looked for: each has a stats file in
    the spool named by its worker's id, which its command line carries."""
    from pipelines.errors import SetupError

    folder = spool_dir(cfg)
    workers = {p.stem for p in folder.glob("*.stats")} if folder.is_dir() else set()
    for proc in Path("/proc").glob("[0-9]*/cmdline") if workers else []:
        try:
            command = proc.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        running = next((w for w in workers if w in command and "pipelines.serving.delivery" in command), None)
        if running:
            raise SetupError(
                f"the decision API of home {cfg.paths.home} is running (delivery process {proc.parent.name} "
                f"of worker {running}): stop `journeylake serve` during the erasure, then start it again"
            )


def pending_journals(cfg: Config) -> list[Path]:
    folder = journal_dir(cfg)
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def _write_journal(cfg: Config, erasure: Erasure, people: People, asked: Sequence[str]) -> Path:
    folder = journal_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    path = folder / f"{erasure.request_id}.json"
    doc = {
        "request_id": erasure.request_id,
        "requested_by": erasure.requested_by,
        "requested_at": erasure.requested_at,
        "asked": list(asked),
        "people": people.to_json(),
    }
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(path.with_suffix(".tmp"), path)
    return path


def _finish(
    spark: SparkSession, cfg: Config, journal: Path, progress: Callable[[str], None], resumed: bool = False
) -> Erasure:
    doc = json.loads(journal.read_text())
    people = People.from_json(doc["people"])
    erasure = Erasure(doc["request_id"], doc["requested_by"], doc["requested_at"], unknown=people.unknown)
    erasure.persons = people.persons
    progress(
        f"erasure {erasure.request_id}: {erasure.persons} person(s), "
        f"{sum(len(v) for v in people.ids.values())} id(s)"
    )
    identifiers = cfg.privacy.identifiers
    tables = erasable_tables(spark, cfg)
    done: list[TableErasure] = erase_tables(spark, cfg, tables, people, progress, resumed)
    erasure.rows_removed = {d.table: d.rows for d in done if d.rows}
    files: list[FileErasure] = erase_files(
        [cfg.paths.landing, cfg.paths.held],
        cfg.paths.exports,
        spool_dir(cfg),
        people,
        identifiers,
        erasure.request_id,
        progress,
    )
    erasure.rows_removed.update({f"files:{f.what}": f.rows for f in files if f.rows})
    erasure.files_rewritten = {f.what: f.files for f in files if f.files}
    erasure.store_keys_removed = _erase_store(cfg, people, progress)
    erasure.notes = _not_reached(cfg)
    if resumed:
        erasure.notes.append("resumed after an interrupted run: rows it removed before are not counted")
    record_keys = people.record_keys()
    people_ids = {v for column, values in people.ids.items() for v in values} - record_keys
    erasure.id_hashes = sorted(id_hash(cfg, v) for v in set(doc["asked"]) | people_ids)
    erasure.completed_at = time.time()
    _append_record(spark, cfg, erasure)
    journal.unlink()
    return erasure


def _erase_store(cfg: Config, people: People, progress: Callable[[str], None]) -> dict[str, int]:
    """The people out of the online store, when this home has one (started for it if down)."""
    from pipelines.services import redis_server
    from pipelines.serving.store import StoreWriter, connect

    if not redis_server.store_dir(cfg).is_dir():
        return {}
    state, started = redis_server.up(cfg)
    try:
        writer = StoreWriter(connect(cfg), cfg.online_store.contact_history_days)
        ids = people.source_ids()
        removed = writer.erase(people.ids.get("customer_number", set()), ids)
        writer.rewrite_persistence()
    finally:
        if started:
            redis_server.down(cfg)
    progress(
        f"online store: {removed['customer_keys']} key(s), {removed['identities']} id(s), "
        f"{removed['decision_records']} decision record(s) removed; its files rewritten"
    )
    return removed


def _not_reached(cfg: Config) -> list[str]:
    """What the erasure leaves to time: Kafka's topics. This home's own broker, when it holds
    topics and is down, is started to be asked (and stopped again), as the store is above."""
    from pipelines.services import kafka_broker
    from pipelines.services.kafka_topics import retention_note

    local = kafka_broker.data_dir(cfg).is_dir()
    if cfg.ingest.source != "kafka" and not local:
        return []
    from pipelines.errors import SetupError

    started = False
    if local and cfg.kafka.bootstrap_servers == kafka_broker.bootstrap(cfg):
        try:
            _state, started = kafka_broker.up(cfg)
        except SetupError as exc:  # the rows are gone already: the record says what is unknown
            return [f"kafka: this home's broker could not be started to read retention ({exc})"]
    try:
        return [retention_note(cfg, datetime.now(UTC))]
    finally:
        if started:
            kafka_broker.down(cfg)


def _append_record(spark: SparkSession, cfg: Config, erasure: Erasure) -> None:
    table = records_table(cfg, Tables.from_config(cfg))
    spark.sql(f"CREATE TABLE IF NOT EXISTS {table} ({RECORDS_DDL}) USING delta")
    if spark.table(table).where(f"request_id = '{erasure.request_id}'").limit(1).count():
        return  # recorded before a crash took the journal's removal
    spark.createDataFrame([erasure.record_row()], RECORDS_DDL).write.format("delta").mode(
        "append"
    ).saveAsTable(table)
