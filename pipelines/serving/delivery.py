"""What the decision API decides and learns, delivered off the request path, with nothing lost.

A request only queues its rows. In the API worker, a thread spools the queue every
``decisioning.api.flush_ms``: the batch goes to a file under ``<home>/api/spool/`` (fsync'd: from
here on a crash loses nothing). A **delivery process** of the worker's own (``python -m
pipelines.serving.delivery APP_ID``, started and stopped with the worker) then, for each of the
worker's spooled batches, oldest first:

1. appends the served actions to ``gold.served_actions`` and every candidate's fate to
   ``gold.decision_log`` with delta-rs (milliseconds, no Spark), each commit carrying the
   batch's transaction id, so a replayed batch is written once;
2. hands the responses channels posted to the lakehouse as ``offer_responses`` events: a landing
   file (written aside and renamed in, so ingest never reads half of one) or, when ingest reads
   Kafka, the source's topic; either way the event ids are stable, so silver drops a replay's
   copies as duplicates;
3. publishes the decisions to ``<topic_prefix>decisions`` for outbound channel systems (email,
   push, SMS senders) when ``decisioning.api.publish_decisions`` is on;
4. removes the spool file.

The delivery runs in a process, not a thread of the worker: building the frames and committing
them held the worker's interpreter lock for milliseconds at every flush, which every request
arriving meanwhile waited out (bench/README.md, "Decision API under load"). A step that fails
leaves the spool file for the next round; a delivery process that starts takes over the batches
a stopped worker left.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.config import Config
from pipelines.errors import first_line
from pipelines.lakehouse.delta_appends import PathAppender, ddl_columns
from pipelines.nba.decide import DECISION_LOG_DDL, NEXT_BEST_ACTIONS_DDL
from pipelines.serving.outbound import DECISIONS_TOPIC, kafka_writer
from pipelines.serving.store import dumps, from_ms

log = logging.getLogger(__name__)

RESPONSES_SOURCE = "offer_responses"
SCHEMA_VERSION = 1  # of the offer_responses contract the events are written with
ORPHAN_AGE_S = 60.0  # a spooled batch this old whose process is gone is taken over at start
CLAIMED = ".claimed-"  # in a spool file's name: the worker that took it over follows
RESTART_BACKOFF_MAX_S = 60.0  # a delivery process that keeps dying is started again at most this often


def response_event_id(decision_id: str, action_id: str, channel: str, response: str, at_ms: int) -> str:
    """Stable per response: a replayed delivery writes the same event, which silver de-duplicates."""
    key = f"api|{decision_id}|{action_id}|{channel}|{response}|{at_ms}"
    return "api-" + hashlib.sha256(key.encode()).hexdigest()[:32]


def iso(ms: int) -> str:
    stamp = from_ms(ms)
    assert stamp is not None
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


@dataclass
class Batch:
    app_id: str
    sequence: int
    served: list[dict[str, Any]] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)
    responses: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.served or self.log or self.responses or self.decisions)


@dataclass
class DeliveryStats:
    batches: int = 0
    served_rows: int = 0
    log_rows: int = 0
    responses: int = 0
    published: int = 0
    failures: int = 0
    last_error: str | None = None
    restarts: int = 0  # of the delivery process, by its worker


class Delivery:
    """The API worker's side: queue, spool, and the delivery process it runs (module docstring)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.flush_s = cfg.decisioning.api.flush_ms / 1000
        self.spool = spool_dir(cfg)
        self.spool.mkdir(parents=True, exist_ok=True)
        self.app_id = f"journeylake-api-{uuid.uuid4().hex}"
        self._queue: queue.SimpleQueue[tuple[str, dict[str, Any]]] = queue.SimpleQueue()
        self._sequence = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="journeylake-api-spool", daemon=True)
        self._process: subprocess.Popen[bytes] | None = None
        self.spool_failures = 0
        self.restarts = 0
        self._next_restart = 0.0

    # ---------------------------------------------------------------- called by requests
    def decision(
        self, served: list[dict[str, Any]], log_rows: list[dict[str, Any]], event: dict[str, Any]
    ) -> None:
        self._queue.put(("decision", {"served": served, "log": log_rows, "event": event}))

    def response(self, event: dict[str, Any]) -> None:
        self._queue.put(("response", event))

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self._process = self._spawn()
        self._thread.start()

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "pipelines.serving.delivery", self.app_id, str(os.getpid())],
            stdin=subprocess.DEVNULL,
            close_fds=True,
        )

    def _keep_delivering(self) -> None:
        """A delivery process that died (a bug, the kernel's OOM killer) is started again, backing
        off when it keeps dying: until one runs, the worker's batches wait in the spool."""
        process = self._process
        if process is None or process.poll() is None or self._stop.is_set():
            return
        now = time.monotonic()
        if now < self._next_restart:
            return
        # the new process is in place before the count says so: whoever reads the count (the
        # metrics, a test) sees the process it counts
        self._process = self._spawn()
        self.restarts += 1
        self._next_restart = now + min(RESTART_BACKOFF_MAX_S, 2.0**self.restarts)
        log.error(
            "API delivery process exited with code %s; started another (restart %d)",
            process.returncode,
            self.restarts,
        )

    def close(self, timeout: float = 30.0) -> None:
        """Spool what is queued, let the delivery process deliver it, then stop it (what cannot be
        delivered stays spooled for the next start)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._process is not None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    @property
    def stats(self) -> DeliveryStats:
        """What this worker's delivery process reports (its stats file; zeros before its first)."""
        try:
            stats = DeliveryStats(**json.loads(stats_file(self.spool, self.app_id).read_text()))
        except (OSError, ValueError, TypeError):
            stats = DeliveryStats(failures=self.spool_failures)
        stats.restarts = self.restarts
        return stats

    def pending_files(self) -> list[Path]:
        """This worker's spooled batches, oldest first (sibling workers share the folder: each
        worker's delivery process delivers its own, so no batch is appended twice at once)."""
        return pending(self.spool, self.app_id)

    # ---------------------------------------------------------------- the spooling thread
    def _run(self) -> None:
        unspooled: list[Batch] = []  # batches a failed write left in memory, tried again first
        while True:
            stopping = self._stop.wait(self.flush_s)
            batch = self._drain()
            if not batch.empty():
                unspooled.append(batch)
            while unspooled:
                try:
                    write_spool(self.spool, unspooled[0])
                except OSError as exc:
                    self.spool_failures += 1
                    log.warning("API spool write failed (kept in memory): %s", first_line(exc))
                    break
                unspooled.pop(0)
            if stopping:
                return
            self._keep_delivering()

    def _drain(self) -> Batch:
        self._sequence += 1
        batch = Batch(self.app_id, self._sequence)
        while True:
            try:
                kind, item = self._queue.get_nowait()
            except queue.Empty:
                break
            if kind == "decision":
                batch.served += item["served"]
                batch.log += item["log"]
                batch.decisions.append(item["event"])
            else:
                batch.responses.append(item)
        if batch.empty():
            self._sequence -= 1
        return batch


def spool_dir(cfg: Config) -> Path:
    return cfg.paths.home / "api" / "spool"


def stats_file(spool: Path, app_id: str) -> Path:
    return spool / f"{app_id}.stats"


def pending(spool: Path, app_id: str) -> list[Path]:
    return sorted(spool.glob(f"*{app_id}*.json"))


def encode(batch: Batch) -> str:
    """The batch as one JSON document (what ``Batch(**json.loads(doc))`` reads), encoded row by
    row: one ``json.dumps`` of a whole batch is one call that holds the interpreter lock until it
    returns, and the worker's requests stalled behind it for as long as it took (tens of
    milliseconds at hundreds of decisions a second); between rows the event loop takes its turn."""
    parts = []
    for f in fields(Batch):
        value = getattr(batch, f.name)
        if isinstance(value, list):
            parts.append(f'"{f.name}":[' + ",".join([dumps(row) for row in value]) + "]")
        else:
            parts.append(f'"{f.name}":{dumps(value)}')
    return "{" + ",".join(parts) + "}"


def write_spool(spool: Path, batch: Batch) -> Path:
    path = spool / f"{time.time_ns():020d}-{batch.app_id}-{batch.sequence:08d}.json"
    doc = encode(batch)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as fh:
        fh.write(doc)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


class Deliverer:
    """The delivery process's side: a worker's spooled batches -> the lakehouse (and Kafka)."""

    def __init__(self, cfg: Config, app_id: str) -> None:
        self.cfg = cfg
        self.spool = spool_dir(cfg)
        self.app_id = app_id
        self.stats = DeliveryStats()
        self._appenders: dict[tuple[str, str], PathAppender] = {}
        self._paths: dict[str, str] = {}
        self._kafka: Any = None

    def run(self, parent_pid: int, stop: threading.Event) -> None:
        """Deliver every ``flush_ms`` until ``stop`` is set or the worker is gone, then once more."""
        flush_s = self.cfg.decisioning.api.flush_ms / 1000
        self._claim_orphans()
        while True:
            stopping = stop.wait(flush_s) or os.getppid() != parent_pid
            self.deliver_pending()
            if stopping:
                break
        if self._kafka is not None:
            self._kafka.close()

    def deliver_pending(self) -> None:
        for path in pending(self.spool, self.app_id):
            try:
                self._deliver(path)
            except Exception as exc:  # the spool keeps the batch; say why and try again later
                self.stats.failures += 1
                self.stats.last_error = first_line(exc)
                log.warning("API delivery failed, kept in %s: %s", self.spool, first_line(exc))
                break  # oldest first: a later batch waits for the one before it
        self._write_stats()

    def _write_stats(self) -> None:
        path = stats_file(self.spool, self.app_id)
        tmp = path.with_suffix(".stats-tmp")
        try:
            tmp.write_text(json.dumps(self.stats.__dict__))
            tmp.replace(path)
        except OSError:
            pass  # stats are for /metrics; the delivery itself went on

    def _claim_orphans(self) -> None:
        """Take over batches a stopped worker left: renamed to carry this worker's id (one rename
        wins when several workers start together). A batch keeps its own app id inside, so the
        tables' transaction ids still tell whether its append went through."""
        cutoff = time.time() - ORPHAN_AGE_S  # a live sibling delivers its batches within flush_ms
        for path in sorted(self.spool.glob("*.json")):
            if self.app_id in path.name:
                continue
            try:
                if path.stat().st_mtime > cutoff:
                    continue
                # one claim suffix, whoever claimed it before (a name growing with every restart
                # ends up too long to rename); touched, so no sibling claims it while it is delivered
                original = path.stem.split(CLAIMED)[0]
                claimed = path.with_name(f"{original}{CLAIMED}{self.app_id}.json")
                path.rename(claimed)
                os.utime(claimed)
            except FileNotFoundError:
                continue  # another worker claimed or delivered it
        for stale in self.spool.glob("*.stats"):
            with contextlib.suppress(OSError):
                if stale.stat().st_mtime < cutoff:
                    stale.unlink()

    def table_paths(self) -> dict[str, str]:
        """Where the decision tables are, as the last sync recorded them in the store."""
        from pipelines.serving.store import StoreWriter, connect

        meta = StoreWriter(connect(self.cfg), self.cfg.online_store.contact_history_days).meta()
        return dict(meta.get("tables") or {})

    def _deliver(self, path: Path) -> None:
        doc = json.loads(path.read_text())
        batch = Batch(**doc)
        self._append("served_actions", NEXT_BEST_ACTIONS_DDL, batch, batch.served)
        self._append("decision_log", DECISION_LOG_DDL, batch, batch.log)
        if batch.responses:
            self._write_responses(batch)
        if batch.decisions and self.cfg.decisioning.api.publish_decisions:
            self._publish(batch)
        path.unlink()
        self.stats.batches += 1
        self.stats.served_rows += len(batch.served)
        self.stats.log_rows += len(batch.log)
        self.stats.responses += len(batch.responses)

    def _append(self, table: str, ddl: str, batch: Batch, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        if table not in self._paths:
            self._paths.update(self.table_paths())
        where = self._paths.get(table)
        if where is None:
            raise RuntimeError(
                f"gold.{table} has no local path in the store's metadata; "
                "run `journeylake online-store sync` once the decision tables exist"
            )
        key = (table, batch.app_id)
        if key not in self._appenders:
            self._appenders[key] = PathAppender(where, f"gold.{table}", ddl_columns(ddl), batch.app_id)
        appender = self._appenders[key]
        if appender.committed(batch.sequence):
            return  # a replay of a batch whose append went through
        frame = pd.DataFrame(rows)
        for column in ("decided_at", "expires_at", "triggered_at", "processed_at"):
            if column in frame.columns:
                frame[column] = pd.to_datetime(frame[column], unit="ms", utc=True)
        appender.append(frame, batch.sequence)

    def _write_responses(self, batch: Batch) -> None:
        lines = "".join(
            json.dumps(
                {
                    "event_id": e["event_id"],
                    "event_time": iso(e["at_ms"]),
                    "schema_version": SCHEMA_VERSION,
                    "customer_number": e["customer_number"],
                    "decision_id": e["decision_id"],
                    "action_id": e["action_id"],
                    "channel": e["channel"],
                    "response": e["response"],
                },
                separators=(",", ":"),
            )
            + "\n"
            for e in batch.responses
        ).encode()
        name = f"api-{batch.app_id}-{batch.sequence:08d}"
        if self.cfg.ingest.source == "kafka":
            writer = self._kafka_writer()
            writer.write_batch(RESPONSES_SOURCE, name, lines)
            writer.flush()
            return
        folder = self.cfg.paths.landing / RESPONSES_SOURCE
        folder.mkdir(parents=True, exist_ok=True)
        aside = folder / f".{name}.jsonl.tmp"  # hidden: the file source skips it until renamed
        with open(aside, "wb") as fh:
            fh.write(lines)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(aside, folder / f"{name}.jsonl")

    def _publish(self, batch: Batch) -> None:
        lines = "".join(dumps(d) + "\n" for d in batch.decisions).encode()
        writer = self._kafka_writer()
        writer.write_batch(DECISIONS_TOPIC, f"api-{batch.app_id}-{batch.sequence:08d}", lines)
        writer.flush()
        self.stats.published += len(batch.decisions)

    def _kafka_writer(self) -> Any:
        if self._kafka is None:
            self._kafka = kafka_writer(self.cfg)
        return self._kafka


def main(argv: list[str] | None = None) -> int:
    """``python -m pipelines.serving.delivery APP_ID PARENT_PID``: a worker's delivery process
    (config from the environment, as the worker's); SIGTERM delivers what is spooled, then exits."""
    from pipelines.config import ENV_TARGET, load_config

    app_id, parent_pid = (argv if argv is not None else sys.argv[1:])[:2]
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())  # Ctrl-C reaches the whole group: finish first
    cfg = load_config(os.environ.get(ENV_TARGET) or None)
    # Each append is a burst of CPU (frames, Parquet, a commit) that nothing waits for: at the
    # workers' niceness it took cores from requests mid-flight (bench/README.md, "Decision API
    # under load"); nicer, it runs when they do not need them, which the spool absorbs.
    os.nice(cfg.decisioning.api.delivery_nice)
    Deliverer(cfg, app_id).run(int(parent_pid), stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
