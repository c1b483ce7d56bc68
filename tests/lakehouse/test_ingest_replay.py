"""A source's ingest query writes each micro-batch to bronze and silver exactly once.

The crash window: a batch's rows are committed to one or both tables, but the checkpoint's
commit log has not recorded the batch. The restarted query runs the same batch again (same
files, same batch id); no table may get its rows twice, a table the crash left out must get
them, and the batches after it must be written. A home from the release with two queries per
source (landing -> bronze, bronze -> silver) is taken over by the one query without loss or
repetition.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from pipelines.lakehouse import bronze, ingest, silver
from pipelines.lakehouse.batch_writes import batch_tag
from pipelines.tables import Tables

SOURCE = "customers"  # checked against nothing else, so one source is a complete test


@pytest.fixture
def replay(spark, jl_config, world, tmp_path):
    """A config with its own landing and checkpoint folders, tables of its own, dropped after."""
    cfg = jl_config.model_copy(
        update={
            "paths": jl_config.paths.model_copy(
                update={"landing": tmp_path / "landing", "checkpoints": tmp_path / "checkpoints"}
            )
        }
    )
    (tmp_path / "landing" / SOURCE).mkdir(parents=True)
    tables = Tables(lambda layer, name: f"{layer}.replay_{name}")
    bronze.ensure_bronze_table(spark, tables.bronze(SOURCE))
    silver.ensure_silver_tables(spark, tables, [SOURCE])
    # the generated bank's deliveries, as three files to land one by one
    generated = sorted((Path(jl_config.paths.landing) / SOURCE).glob("*.jsonl"))
    lines = [line for path in generated for line in path.read_text().splitlines()]
    files = []
    for n in range(3):
        files.append(tmp_path / f"part-{n}.jsonl")
        files[-1].write_text("".join(f"{line}\n" for line in lines[n::3]))
    yield cfg, tables, files
    for name in (tables.bronze(SOURCE), tables.silver(SOURCE), tables.quarantine, tables.duplicates):
        spark.sql(f"DROP TABLE IF EXISTS {name}")
    spark.sql(f"DROP TABLE IF EXISTS {tables.consent_current}")


def _land(cfg, file: Path) -> int:
    shutil.copy(file, Path(cfg.paths.landing) / SOURCE / file.name)
    return len(file.read_text().splitlines())


def _ingest(spark, cfg, tables: Tables) -> None:
    checkpoint = Path(cfg.paths.checkpoints) / "ingest" / SOURCE
    ingest.await_queries(
        [ingest.start_source_stream(spark, cfg, SOURCE, tables, checkpoint, ingest.available_now)]
    )


def _counts(spark, tables: Tables) -> tuple[int, int]:
    """(bronze rows, rows silver accounted for: kept + quarantined + removed as duplicates)."""
    set_aside = (tables.quarantine, tables.duplicates)
    accounted = sum(spark.table(name).where(F.col("source") == SOURCE).count() for name in set_aside)
    return spark.table(tables.bronze(SOURCE)).count(), spark.table(tables.silver(SOURCE)).count() + accounted


def test_a_batch_replayed_after_a_crash_is_written_to_no_table_twice(spark, replay):
    cfg, tables, files = replay
    checkpoint = Path(cfg.paths.checkpoints) / "ingest" / SOURCE
    lines = _land(cfg, files[0])
    _ingest(spark, cfg, tables)
    assert _counts(spark, tables) == (lines, lines)

    # the crash: bronze has batch 0, silver lost it (its commits were cut short), and the
    # checkpoint forgets that it committed the batch
    tag = batch_tag(checkpoint, 0)
    spark.sql(f"DELETE FROM {tables.silver(SOURCE)} WHERE _silver_batch = '{tag}'")
    spark.sql(f"DELETE FROM {tables.quarantine} WHERE batch = '{tag}'")
    spark.sql(f"DELETE FROM {tables.duplicates} WHERE batch = '{tag}'")
    for name in ("0", ".0.crc"):  # the commit and its checksum, as if never written
        (checkpoint / "commits" / name).unlink(missing_ok=True)
    _ingest(spark, cfg, tables)
    assert _counts(spark, tables) == (lines, lines), "the replayed batch must fill silver, not bronze again"
    assert (checkpoint / "commits" / "0").exists(), "the replayed batch was not recorded"

    # the same crash with both tables written: the replay writes nothing
    for name in ("0", ".0.crc"):
        (checkpoint / "commits" / name).unlink(missing_ok=True)
    _ingest(spark, cfg, tables)
    assert _counts(spark, tables) == (lines, lines), "the replayed batch was written again"

    # a later batch after the restart is written, with its own tag
    lines += _land(cfg, files[1])
    _ingest(spark, cfg, tables)
    assert _counts(spark, tables) == (lines, lines)
    raw = spark.table(tables.bronze(SOURCE))
    assert raw.select(bronze.BATCH_COLUMN).distinct().count() == 2
    assert {r["_source_file"].rsplit("/", 1)[-1] for r in raw.collect()} == {files[0].name, files[1].name}


def test_a_home_with_two_queries_per_source_is_taken_over_without_loss(spark, replay):
    """Bronze holds a file silver has not taken, a third has only landed: each ends up once."""
    cfg, tables, files = replay
    checkpoints = Path(cfg.paths.checkpoints)
    old_bronze, old_silver = checkpoints / "bronze" / SOURCE, checkpoints / "silver" / SOURCE

    def old_bronze_query() -> None:  # what the earlier release ran: landing -> bronze only
        def append(batch, batch_id: int) -> None:
            tag = batch_tag(old_bronze, batch_id)
            bronze.append_batch(batch, tables.bronze(SOURCE), tag, maybe_replay=True)

        query = (
            bronze.read_landing(spark, cfg, SOURCE)
            .writeStream.option("checkpointLocation", str(old_bronze))
            .foreachBatch(append)
            .trigger(availableNow=True)
            .start()
        )
        query.awaitTermination()

    lines = _land(cfg, files[0])
    old_bronze_query()
    ingest.await_queries(
        [silver.start_silver_stream(spark, cfg, SOURCE, tables, str(old_silver), ingest.available_now)]
    )
    lines += _land(cfg, files[1])
    old_bronze_query()  # in bronze, not yet in silver
    lines += _land(cfg, files[2])  # landed only
    assert _counts(spark, tables)[1] < lines

    ingest.upgrade_checkpoints(spark, cfg, tables, [SOURCE], progress=lambda _m: None)
    assert not old_bronze.exists() and not old_silver.exists()
    assert (checkpoints / "ingest" / SOURCE).is_dir()
    ingest.upgrade_checkpoints(spark, cfg, tables, [SOURCE], progress=lambda _m: None)  # a no-op now
    _ingest(spark, cfg, tables)
    # a file taken twice would show in bronze, or in silver's accounts as removed duplicates
    assert _counts(spark, tables) == (lines, lines)
