"""Merging the small files streams leave in their tables, beside the writes, not inside them.

A stream adds a file or two to each table it appends to on every trigger (8,640 a day at a 10 s
trigger), and every read (the dedup window, gold, dbt, analysts) lists and opens them. Delta's
own remedy, auto compaction, runs inside the committing write, so the micro-batch waits for it;
and with delta-spark 4.4.1 here, once it had run in a process it ran again on every append,
rewriting the table's one compacted file each time (measured: a 4,000-row bronze append took
3.3 s instead of 0.35 s on a 31 MB table; on the decision lane p50 rose from 0.9 to 1.4 s).

So the jobs run Delta ``OPTIMIZE`` themselves every few minutes: ingest from its main thread
while the queries run (a compaction changes no data, and Delta lets it commit beside blind
appends), the decision job between its micro-batches. Only files smaller than
``OPTIMIZE_MIN_FILE_BYTES`` (pipelines/services/spark.py sets it) are merged, into files of up to
``OPTIMIZE_MAX_FILE_BYTES``, so a file
that has grown large is not rewritten again and again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pipelines.errors import first_line

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


def compact_table(spark: SparkSession, name: str, where: str | None = None) -> int:
    """Merge the small files of ``name`` (only those matching the partition filter ``where``);
    how many files were merged (0: nothing to do, and no commit)."""
    statement = f"OPTIMIZE {name}" + (f" WHERE {where}" if where else "")
    metrics = spark.sql(statement).first()
    return int(metrics["metrics"]["numFilesRemoved"]) if metrics is not None else 0


class PeriodicCompaction:
    """Compacts a set of tables every ``every_minutes`` (0: never), when :meth:`when_due` is called.

    ``targets`` maps each table to its partition filter (or None), and is asked anew each round,
    so tables created meanwhile are included. A failed compaction is reported and retried next
    round: it must never stop the job whose tables it tidies.
    """

    def __init__(
        self,
        spark: SparkSession,
        targets: Callable[[], dict[str, str | None]],
        every_minutes: float,
        progress: Callable[[str], None] = print,
    ) -> None:
        self.spark = spark
        self.targets = targets
        self.every_seconds = every_minutes * 60.0
        self.progress = progress
        self.last = time.monotonic()

    def when_due(self) -> int | None:
        """Compact every target if the interval has passed; files merged (None: not due)."""
        if not self.every_seconds or time.monotonic() - self.last < self.every_seconds:
            return None
        started = time.monotonic()
        merged = 0
        for name, where in self.targets().items():
            try:
                merged += compact_table(self.spark, name, where)
            except Exception as exc:  # noqa: BLE001 - reported; the streams go on
                self.progress(f"compaction of {name} failed, retried next round: {first_line(exc)}")
                log.debug("compaction of %s failed", name, exc_info=True)
        self.last = time.monotonic()
        if merged:
            self.progress(f"compacted: {merged:,} small files merged in {self.last - started:.1f} s")
        return merged
