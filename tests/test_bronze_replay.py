"""Bronze appends exactly once when a micro-batch is replayed after a crash.

The crash window: the batch's rows are committed to Delta, but the checkpoint's commit log has
not recorded the batch. The restarted query runs the same batch again (same files, same batch
id); its rows must not be appended twice, and the batches after it must be.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipelines import bronze, ingest


def _land(folder: Path, name: str, lines: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("".join(json.dumps(line) + "\n" for line in lines))


def _run(spark, cfg, table: str, checkpoint: Path) -> None:
    query = bronze.start_bronze_stream(spark, cfg, "transactions", table, checkpoint, ingest.available_now)
    query.awaitTermination()


def test_a_batch_replayed_after_a_crash_is_not_appended_twice(spark, jl_config, tmp_path):
    cfg = jl_config.model_copy(update={"paths": jl_config.paths.model_copy(update={"landing": tmp_path})})
    landing = tmp_path / "transactions"
    table = "bronze.replay_test_transactions"
    checkpoint = tmp_path / "_checkpoints" / "bronze_transactions"
    spark.sql(f"DROP TABLE IF EXISTS {table}")
    try:
        _land(landing, "part-1.jsonl", [{"event_id": f"e{i}"} for i in range(5)])
        _run(spark, cfg, table, checkpoint)
        assert spark.table(table).count() == 5

        # the crash: the table has batch 0, the checkpoint forgets that it committed it
        for name in ("0", ".0.crc"):  # the commit and its checksum, as if never written
            (checkpoint / "commits" / name).unlink(missing_ok=True)
        _run(spark, cfg, table, checkpoint)
        rows = spark.table(table)
        assert rows.count() == 5, "the replayed batch was appended again"
        assert rows.select(bronze.BATCH_COLUMN).distinct().count() == 1
        assert (checkpoint / "commits" / "0").exists(), "the replayed batch was not recorded"

        # a later batch after the restart is appended, with its own tag
        _land(landing, "part-2.jsonl", [{"event_id": f"f{i}"} for i in range(3)])
        _run(spark, cfg, table, checkpoint)
        rows = spark.table(table)
        assert rows.count() == 8
        assert rows.select(bronze.BATCH_COLUMN).distinct().count() == 2
        assert {r["_source_file"].rsplit("/", 1)[-1] for r in rows.collect()} == {
            "part-1.jsonl",
            "part-2.jsonl",
        }
    finally:
        spark.sql(f"DROP TABLE IF EXISTS {table}")
