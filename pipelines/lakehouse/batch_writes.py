"""Exactly-once appends from ``foreachBatch``: each row carries its micro-batch's tag.

Structured Streaming replays a micro-batch whose commit was not recorded (a crash after the
table write, before the checkpoint's commit log). Delta's own remedy (``txnAppId`` /
``txnVersion``, also what its streaming sink does) looks the version up in the table's state,
which is rebuilt for every write: measured at about 2 s per batch per table on two cores, paid
by every query on every trigger. Here every row written carries ``<query id>/<batch id>``, and
only the first batch a query runs after a (re)start can be such a replay (a failed batch stops
the query), so only then is the table asked whether the tag is there already.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, Protocol

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F


def checkpoint_id(checkpoint: str | Path) -> str:
    """The persistent id of the streaming query that owns ``checkpoint`` (written at its first start)."""
    return json.loads((Path(checkpoint) / "metadata").read_text())["id"]


def batch_tag(checkpoint: str | Path, batch_id: int) -> str:
    """``<query id>/<batch id>``: unique even when a checkpoint is replaced and batch ids restart."""
    return f"{checkpoint_id(checkpoint)}/{batch_id}"


class _TableGate:
    """Replay checks of one table and appends to it never run at the same time in this process;
    checks overlap each other, and so do appends."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._running = {"check": 0, "append": 0}

    @contextmanager
    def entered(self, kind: Literal["check", "append"]) -> Iterator[None]:
        other = "append" if kind == "check" else "check"
        with self._changed:
            self._changed.wait_for(lambda: self._running[other] == 0)
            self._running[kind] += 1
        try:
            yield
        finally:
            with self._changed:
                self._running[kind] -= 1
                self._changed.notify_all()


_GATES: dict[str, _TableGate] = {}
_GATES_GUARD = threading.Lock()


def _table_gate(table: str) -> _TableGate:
    with _GATES_GUARD:
        return _GATES.setdefault(table, _TableGate())


def append_once(df: DataFrame, table: str, tag_column: str, tag: str, *, maybe_replay: bool) -> None:
    """Append a batch's rows unless an earlier attempt of the same batch already did.

    ``maybe_replay`` is true for the first batch after a (re)start only; the check reads the
    tag column, which the tables keep min/max statistics for, so it skips every other file.

    The check never runs while another thread of this process appends to the same table;
    appends still overlap each other, so the batches that do not check never wait. Every source's
    stream appends to the same quarantine and duplicates tables from its own thread, and a Delta
    commit frees the cached state of the table's previous snapshot (``Snapshot.uncache``, without
    waiting) while a check may still be reading it. The check then recomputes the state, so its
    answer is right, but a block it was storing at that moment stays listed by Spark's block
    master after it is gone, and the next read of it logs ``BlockNotFoundException`` as ERROR
    (three lines) before recomputing it.
    """
    gate = _table_gate(table)
    if maybe_replay:
        with gate.entered("check"):
            if df.sparkSession.table(table).where(F.col(tag_column) == tag).limit(1).count():
                return
    with gate.entered("append"):
        df.write.format("delta").mode("append").saveAsTable(table)


def run_together(writes: list[Callable[[], None]], name: str = "batch-write") -> None:
    """Run a micro-batch's writes to different tables at once; the first failure fails the batch.

    A Delta write of a micro-batch is mostly the driver's bookkeeping (the table's snapshot, the
    commit, the metastore) rather than CPU-bound tasks, so two or three of them overlap well
    even on two cores. Every write is waited for before an error is raised, so a failed batch
    never leaves a write running into the next one.
    """
    if len(writes) <= 1:
        for write in writes:
            write()
        return
    with ThreadPoolExecutor(max_workers=len(writes), thread_name_prefix=name) as pool:
        done = [pool.submit(write) for write in writes]
    for future in done:
        future.result()


class CommitListener(Protocol):
    """Told what a micro-batch committed, right after its commit (e.g. the online store's
    write-through, pipelines/serving/write_through.py). Called again when a batch is replayed,
    so what it does must be idempotent; it must not raise for its own failures.

    The rows arrive as pandas frames the stream collected *before* its commit (from the frame
    it was about to write), so telling a listener after the commit costs no Spark job: the
    commit -> store delay is the listener's own writes."""

    def wants(self, source: str) -> bool:
        """Whether it wants ``source``'s silver rows (the stream skips the work otherwise)."""
        ...

    def silver_batch(self, source: str, rows: pd.DataFrame, committed_at: float) -> None:
        """``source``'s valid, de-duplicated rows of a silver micro-batch."""
        ...

    def features(self, rows: pd.DataFrame, committed_at: float) -> None:
        """gold.customer_features rows just merged (the touched customers')."""
        ...

    def served(self, rows: pd.DataFrame, committed_at: float) -> None:
        """gold.served_actions rows a decision job just appended."""
        ...


class Listeners:
    """Several commit listeners told in turn (the store's write-through, the decisions topic)."""

    def __init__(self, *listeners: CommitListener | None) -> None:
        self.listeners = [listener for listener in listeners if listener is not None]

    def __bool__(self) -> bool:
        return bool(self.listeners)

    def wants(self, source: str) -> bool:
        return any(listener.wants(source) for listener in self.listeners)

    def silver_batch(self, source: str, rows: pd.DataFrame, committed_at: float) -> None:
        for listener in self.listeners:
            if listener.wants(source):
                listener.silver_batch(source, rows, committed_at)

    def features(self, rows: pd.DataFrame, committed_at: float) -> None:
        for listener in self.listeners:
            listener.features(rows, committed_at)

    def served(self, rows: pd.DataFrame, committed_at: float) -> None:
        for listener in self.listeners:
            listener.served(rows, committed_at)
