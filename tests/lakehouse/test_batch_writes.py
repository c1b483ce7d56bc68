"""Appends of micro-batches from several threads: a replay check of a table and an append to it
never run at the same time; appends to one table still overlap.

The frames here are stand-ins that record when their check and their write run (no Spark): only
the order of the two is under test.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from pipelines.lakehouse import batch_writes
from pipelines.lakehouse.batch_writes import append_once

WAIT = 10.0  # seconds a test waits for a thread before it fails
TABLE = "silver.test_shared"


class _Query:
    """``spark.table(...).where(...).limit(1)``: its ``count`` calls the test's ``check``."""

    def __init__(self, check: Callable[[], None]) -> None:
        self._check = check

    def where(self, _condition: object) -> _Query:
        return self

    def limit(self, _n: int) -> _Query:
        return self

    def count(self) -> int:
        self._check()
        return 0  # the tag is not in the table yet


class _Session:
    def __init__(self, check: Callable[[], None]) -> None:
        self._check = check

    def table(self, _name: str) -> _Query:
        return _Query(self._check)


class _Write:
    """``df.write.format(...).mode(...)``: its ``saveAsTable`` calls the test's ``save``."""

    def __init__(self, save: Callable[[], None]) -> None:
        self._save = save

    def format(self, _name: str) -> _Write:
        return self

    def mode(self, _mode: str) -> _Write:
        return self

    def saveAsTable(self, _table: str) -> None:  # noqa: N802 - pyspark's name
        self._save()


class _Frame:
    def __init__(self, save: Callable[[], None], check: Callable[[], None] = lambda: None) -> None:
        self.write = _Write(save)
        self.sparkSession = _Session(check)


@pytest.fixture(autouse=True)
def _no_spark_columns(monkeypatch):
    """The check's column expression, without a Spark session to build it."""
    monkeypatch.setattr(batch_writes.F, "col", lambda name: name)


def _append(frame: _Frame, *, maybe_replay: bool) -> threading.Thread:
    thread = threading.Thread(
        target=append_once, args=(frame, TABLE, "batch", "run/0"), kwargs={"maybe_replay": maybe_replay}
    )
    thread.start()
    return thread


def _blocked() -> tuple[threading.Event, threading.Event, Callable[[], None]]:
    """(entered, release, step): ``step`` sets ``entered`` and waits for ``release``."""
    entered, release = threading.Event(), threading.Event()

    def step() -> None:
        entered.set()
        assert release.wait(WAIT)

    return entered, release, step


def test_a_replay_check_waits_while_another_thread_appends_to_the_table():
    writing, let_write_finish, write = _blocked()
    checked = threading.Event()
    one = _append(_Frame(write), maybe_replay=False)
    try:
        assert writing.wait(WAIT)
        two = _append(_Frame(lambda: None, check=checked.set), maybe_replay=True)
        assert not checked.wait(0.5), "the table was checked while another thread appended to it"
    finally:
        let_write_finish.set()
    for thread in (one, two):
        thread.join(WAIT)
    assert checked.is_set()


def test_an_append_waits_while_another_thread_checks_the_table():
    checking, let_check_finish, check = _blocked()
    wrote = threading.Event()
    one = _append(_Frame(lambda: None, check=check), maybe_replay=True)
    try:
        assert checking.wait(WAIT)
        two = _append(_Frame(wrote.set), maybe_replay=False)
        assert not wrote.wait(0.5), "the table was appended to while another thread checked it"
    finally:
        let_check_finish.set()
    for thread in (one, two):
        thread.join(WAIT)
    assert wrote.is_set()


def test_appends_to_one_table_from_two_threads_overlap():
    both_in = threading.Barrier(2, timeout=WAIT)  # broken (and the writes fail) unless both meet
    met: list[int] = []

    def save() -> None:
        met.append(both_in.wait())

    threads = [_append(_Frame(save), maybe_replay=False) for _ in range(2)]
    for thread in threads:
        thread.join(WAIT)
    assert sorted(met) == [0, 1]
