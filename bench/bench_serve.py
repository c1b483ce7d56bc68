"""Benchmark: the decision API under an open-loop load, 100,000 customers in the online store.

1. **A store of 100,000 customers.** A generated bank (``--bank-customers`` x ``--days``, its last
   day held back) is ingested, scored and decided on by the same code as ``journeylake ingest``
   and ``journeylake decide --until-idle`` (one Spark session), the online store is started by
   the project's own service (``journeylake online-store up``) and loaded by the project's sync
   (``journeylake online-store sync``); the synced customers' store records (profile, consent,
   contacts, served actions, identity) are then cloned under new customer numbers (``CB...``)
   up to ``--customers``. No model is trained (training is not on the decision path): the
   scores are seeded random propensities written to ``gold.customer_scores`` before the sync, so
   decisions take the model policy (``--no-scores``: none, every decision falls back).
2. **The API**: ``journeylake serve --workers N`` as a real subprocess, on a port of its own.
3. **Meanwhile, ingest**: ``journeylake ingest`` (continuous, writing through to the store) at
   ``nice -n 19`` on one CPU (``taskset -c``), fed the held-back day at ``--ingest-rate`` lines/s
   (``--no-ingest``: none; ``--ingest-idle``: in the SCHED_IDLE class instead of at nice 19).
4. **Open-loop load**: requests are scheduled at ``t0 + i / rate`` whatever the answers, and each
   latency runs from its scheduled time, so queueing (in the generator, the kernel or the API)
   shows. ``POST /v1/decisions`` for random customers across the offer channels, over
   ``--connections`` keep-alive HTTP/1.1 connections (a minimal asyncio client, so that the
   generator takes as little CPU as it can from the API on 2 cores; its CPU is printed). At each of
   ``--rates`` for ``--seconds``: p50 / p99 / p99.9, errors (non-200, resets, timeouts),
   fallbacks; the generator's achieved send rate and lag; CPU of the API, store, generator and
   ingest. Then the highest rate with p99 <= 50 ms: doubling, then bisection, at most
   ``--search-steps`` probes of ``--search-seconds``.
5. **The reference, same run**: the current next-best-action of ``--sql-reads`` customers the load
   decided for, read through the SQL endpoint (Spark's Thrift server on ``gold.next_best_actions``)
   and through the API's ``GET /v1/customers/{id}/next-best-action``, one read at a time.
6. **Staleness**: silver (or gold) commit -> store, as the write-through recorded it
   (``jl:staleness``) during the run.

Every process it starts (store, metastore, API, ingest, SQL endpoint) is stopped at the end, also
on Ctrl-C or an error; the home (a temporary folder) is removed unless ``--keep``.

    .venv/bin/python bench/bench_serve.py [--workers 2] [--server uvicorn|granian]
        [--customers 100000] [--seconds 20] [--rates 250,500,1000] [--search-seconds 10]
        [--search-steps 5] [--no-ingest] [--ingest-rate 200] [--sql-reads 50]
        [--bank-customers 2000] [--days 6] [--api-cpu N] [--ingest-idle] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _common import free_port, own_home

if TYPE_CHECKING:  # the package is importable once main() has put the root on sys.path
    from pyspark.sql import SparkSession

    from pipelines.config import Config
    from pipelines.tables import Tables

P99_LIMIT_MS = 50.0  # the search's bound
TARGET_RATE, TARGET_P99_MS, TARGET_STALENESS_MS = 500, 10.0, 1000.0
CLONE_PREFIX = "CB"
REQUEST_TIMEOUT_S = 5.0
GENERATOR_LAG_MS = 10.0  # a step whose requests started later than this (p99) is the generator's limit
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------------ processes


class Started:
    """What this run started, stopped in reverse order whatever happens (error, Ctrl-C, SIGTERM)."""

    def __init__(self) -> None:
        self._stops: list[tuple[str, Callable[[], None]]] = []

    def add(self, what: str, stop: Callable[[], None]) -> None:
        self._stops.append((what, stop))

    def stop_all(self) -> None:
        while self._stops:
            what, stop = self._stops.pop()
            try:
                stop()
            except Exception as exc:  # noqa: BLE001 - every other one must still be stopped
                print(f"cleanup: stopping {what} failed: {type(exc).__name__}: {exc}", file=sys.stderr)


def stop_group(process: subprocess.Popen[bytes], first: int, grace_s: float) -> None:
    """Signal ``first`` to a process, then SIGKILL its process group after ``grace_s`` (its
    children: uvicorn's workers, Spark's JVM). The group is the one it was started in."""
    if process.poll() is None:
        process.send_signal(first)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # what is left of its group
    except (ProcessLookupError, PermissionError):
        pass
    if process.poll() is None:
        process.wait(timeout=10)


def group_cpu_by_pid(pgid: int | None) -> dict[int, float]:
    """CPU seconds (user + system) of each live process of a process group."""
    if pgid is None:
        return {}
    out: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields: state, ppid, pgrp, ..., utime (12th), stime (13th)
            out[int(entry.name)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def group_cpu_seconds(pgid: int | None) -> float:
    """CPU seconds (user + system) of the live processes of a process group."""
    return sum(group_cpu_by_pid(pgid).values())


def run_queue_seconds(pid: int) -> float:
    """Seconds the process's threads spent runnable but waiting for a CPU (/proc schedstat)."""
    total = 0
    try:
        for task in os.scandir(f"/proc/{pid}/task"):
            try:
                with open(f"{task.path}/schedstat") as fh:
                    total += int(fh.read().split()[1])
            except OSError:
                continue
    except OSError:
        return 0.0
    return total / 1e9


def pid_cpu_seconds(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


# ------------------------------------------------------------------------------------ the bank


def write_synthetic_scores(spark: SparkSession, tables: Tables, seed: int) -> int:
    """Seeded random scores for every customer, in ``gold.customer_scores``' columns."""
    from pyspark.sql import functions as F

    from pipelines.contracts import SCORED_PRODUCTS

    latest = (
        spark.table(tables.silver("customers"))
        .groupBy("customer_number")
        .agg(F.max_by("status", "snapshot_time").alias("customer_status"))
    )
    segments = F.array(*(F.lit(s) for s in ("steady_savers", "young_digital", "borrowers", "affluent")))
    scores = latest.select(
        "customer_number",
        "customer_status",
        *(
            (F.rand(seed + i) * 0.45 + 0.02).alias(f"propensity_{product}")
            for i, product in enumerate(SCORED_PRODUCTS)
        ),
        (F.rand(seed + 50) * 0.2).alias("churn_risk"),
        F.element_at(segments, (F.rand(seed + 51) * 4).cast("int") + 1).alias("segment_name"),
        F.current_timestamp().alias("features_as_of"),
        F.current_timestamp().alias("scored_at"),
        F.create_map(F.lit("bench"), F.lit("synthetic")).alias("model_versions"),
    )
    (
        scores.write.format("delta")
        .mode("overwrite")
        .option("overwriteSchema", "true")
        .saveAsTable(tables.gold("customer_scores"))
    )
    return int(spark.table(tables.gold("customer_scores")).count())


def prepare_lakehouse(cfg: Config, args: argparse.Namespace, held: Path) -> None:
    """Generate, hold back the last day, ingest, score, decide and sync the store: one Spark session."""
    from pipelines.contracts import SNAPSHOT_SOURCES
    from pipelines.lakehouse import ingest
    from pipelines.nba.closed_loop import hold_back
    from pipelines.nba.decide import start_decision_stream
    from pipelines.services.spark import get_spark
    from pipelines.serving.sync import sync
    from pipelines.sources.simulator import FaultRates, SimConfig, generate
    from pipelines.tables import Tables

    started = time.monotonic()
    today = datetime.now(UTC).date()
    first = today - timedelta(days=args.days)  # the held-back last day is yesterday: nothing in the future
    sim = SimConfig(
        customers=args.bank_customers,
        days=args.days,
        seed=5,
        start=first,
        faults=FaultRates.preset("default"),
    )
    generate(sim, cfg.paths.home, overwrite=True)
    live = (first + timedelta(days=args.days - 1)).isoformat()
    hold_back(cfg.paths.landing, held, live)
    for source in SNAPSHOT_SOURCES:  # a snapshot is state, delivered whole: only events are fed
        for path in (held / source).glob("*.jsonl"):
            path.rename(cfg.paths.landing / source / path.name)
    print(
        f"bank: {args.bank_customers:,} generated customers x {args.days} days from {first}; "
        f"day {live} held back for the ingest during the load"
    )
    sigint = signal.getsignal(signal.SIGINT)
    spark = get_spark(cfg, "journeylake-bench-serve")
    try:
        tables = Tables.from_config(cfg)
        ingest.run(spark, cfg, until_idle=True, tables=tables, progress=lambda _m: None)
        if not args.no_scores:
            scored = write_synthetic_scores(spark, tables, seed=5)
            print(
                f"scores: {scored:,} customers, seeded random propensities in "
                f"{tables.gold('customer_scores')} (no model trained: scoring is not on the decision path)"
            )
        since = datetime.combine(today - timedelta(days=4), datetime.min.time(), UTC)
        checkpoint = str(cfg.paths.checkpoints / "gold" / "next_best_actions")
        query = start_decision_stream(
            spark, cfg, tables, checkpoint, ingest.available_now, lambda _m: None, since=since
        )
        ingest.await_queries([query])
        served = spark.table(tables.gold("served_actions")).count()
        print(f"lakehouse: ingested and decided (since {since.date()}: {served:,} served rows)")
        results = sync(spark, cfg)
        print(
            "online store sync: "
            + ", ".join(f"{r.stage} {r.rows:,}" for r in results)
            + f" rows in {sum(r.seconds for r in results):.1f} s"
        )
    finally:
        spark.stop()  # the load runs without this JVM; the metastore server stays up
        if sigint is not None:  # pyspark's handler would cancel the jobs of a stopped context
            signal.signal(signal.SIGINT, sigint)
    print(f"prepared in {time.monotonic() - started:.0f} s")


def clone_customers(cfg: Config, total: int) -> list[str]:
    """Copy the synced customers' store records under new numbers up to ``total``; every number."""
    from pipelines.serving.store import (
        IDS,
        StoreWriter,
        connect,
        consent_key,
        contacts_key,
        profile_key,
        serving_key,
    )

    client = connect(cfg)
    writer = StoreWriter(client, cfg.online_store.contact_history_days)
    started = time.monotonic()
    numbers = sorted({v.decode() if isinstance(v, bytes) else str(v) for v in client.hvals(IDS)})
    pipe = client.pipeline(transaction=False)
    for cn in numbers:
        pipe.hexists(profile_key(cn), "core")
    sources = [cn for cn, known in zip(numbers, pipe.execute(), strict=True) if known]
    if not sources:
        raise SystemExit("the sync left no customer with a profile in the store: nothing to clone")
    records: list[
        tuple[dict[bytes, bytes], dict[bytes, bytes], list[tuple[bytes, float]], dict[bytes, bytes]]
    ]
    records = []
    for start in range(0, len(sources), 1000):
        pipe = client.pipeline(transaction=False)
        for cn in sources[start : start + 1000]:
            pipe.hgetall(profile_key(cn))
            pipe.hgetall(consent_key(cn))
            pipe.zrange(contacts_key(cn), 0, -1, withscores=True)
            pipe.hgetall(serving_key(cn))
        raw = pipe.execute()
        records += [(raw[i], raw[i + 1], raw[i + 2], raw[i + 3]) for i in range(0, len(raw), 4)]
    clones = [f"{CLONE_PREFIX}{n:07d}" for n in range(1, max(0, total - len(sources)) + 1)]
    for start in range(0, len(clones), 1000):
        pipe = client.pipeline(transaction=False)
        for offset, cn in enumerate(clones[start : start + 1000]):
            profile, consent, contacts, serving = records[(start + offset) % len(records)]
            pipe.hset(profile_key(cn), mapping=profile)  # type: ignore[arg-type]
            if consent:
                pipe.hset(consent_key(cn), mapping=consent)  # type: ignore[arg-type]
            if contacts:
                pipe.zadd(contacts_key(cn), {member: score for member, score in contacts})
            if serving:
                rows = {ch: json.loads(row) | {"customer_number": cn} for ch, row in serving.items()}
                pipe.hset(serving_key(cn), mapping={ch: json.dumps(row) for ch, row in rows.items()})
        pipe.execute()
        writer.put_identities((cn, cn) for cn in clones[start : start + 1000])
    used = client.info("memory").get("used_memory_human", "?")
    print(
        f"store: {len(sources):,} customers synced from the lakehouse + {len(clones):,} clones of their "
        f"store records (profile, consent, contacts, serving, identity) under new numbers "
        f"{CLONE_PREFIX}0000001.. = {len(sources) + len(clones):,} customers, {used} used "
        f"(cloned in {time.monotonic() - started:.1f} s)"
    )
    return sources + clones


# ------------------------------------------------------------------------------------ services


def wait_for_api(url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"journeylake serve exited with {process.returncode}; see {log}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"journeylake serve did not answer /health within {timeout_s:.0f} s; see {log}")


def ingest_command(cpu: int | None, idle: bool = False) -> tuple[list[str], str]:
    """``journeylake ingest`` at nice 19 (or, ``idle``, in the SCHED_IDLE class, which yields to
    any other task at once), on one CPU when the machine has several."""
    base = [sys.executable, "-m", "pipelines.cli", "ingest"]
    nice, how = (["chrt", "--idle", "0"], "SCHED_IDLE") if idle else (["nice", "-n", "19"], "nice 19")
    if cpu is None:
        return nice + base, f"{how}, any CPU (one CPU only)"
    if shutil.which("taskset"):
        return nice + ["taskset", "-c", str(cpu)] + base, f"{how}, taskset -c {cpu}"
    return nice + base, f"{how}, CPU {cpu} (sched_setaffinity)"


def wait_for_line(log: Path, text: str, process: subprocess.Popen[bytes], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"journeylake ingest exited with {process.returncode}; see {log}")
        if log.exists() and text in log.read_text(errors="replace"):
            return True
        time.sleep(1)
    return False


class Feeder(threading.Thread):
    """Lands the held-back day's lines at ``rate`` lines/s, one file per source per second."""

    def __init__(self, held: Path, landing: Path, rate: int) -> None:
        super().__init__(name="bench-feeder", daemon=True)
        self.lines: list[tuple[str, bytes]] = [
            (path.parent.name, line)
            for path in sorted(held.glob("*/*.jsonl"), key=lambda p: (p.name, p.parent.name))
            for line in path.read_bytes().splitlines()
        ]
        self.landing = landing
        self.rate = rate
        self.written = 0
        self.halt = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        tick = 0
        while self.written < len(self.lines) and not self.halt.is_set():
            chunk = self.lines[self.written : self.written + self.rate]
            by_source: dict[str, list[bytes]] = {}
            for source, line in chunk:
                by_source.setdefault(source, []).append(line)
            for source, lines in by_source.items():
                folder = self.landing / source
                folder.mkdir(parents=True, exist_ok=True)
                tmp = folder / f".bench-serve-{tick:06d}.tmp"
                tmp.write_bytes(b"\n".join(lines) + b"\n")
                tmp.rename(folder / f"bench-serve-{tick:06d}.jsonl")  # appears whole to the file source
            self.written += len(chunk)
            tick += 1
            self.halt.wait(max(0.0, started + tick - time.monotonic()))


# ------------------------------------------------------------------------------------ the load


@dataclass
class StepResult:
    rate: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    lags_ms: list[float] = field(default_factory=list)  # the generator's own lateness: start - scheduled
    waits_ms: list[float] = field(default_factory=list)  # waits for a free connection (client-side queue)
    errors: Counter[str] = field(default_factory=Counter)
    fallbacks: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    send_span_s: float = 0.0  # first scheduled -> last written to a connection
    cpu: dict[str, float] = field(default_factory=dict)  # % of one core over the step
    decided: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # customer -> (channel, action)
    app_ms: list[float] = field(default_factory=list)  # the app's own time (its Server-Timing header)
    due_s: list[float] = field(default_factory=list)  # each answered request's schedule, s from the start

    def pct(self, q: float) -> float:
        import numpy as np

        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    @property
    def send_rate(self) -> float:
        return self.sent / self.send_span_s if self.send_span_s else 0.0

    @property
    def generator_kept_up(self) -> bool:
        """The generator started each request on time (p99 within GENERATOR_LAG_MS of its schedule).
        A request then waiting for a free connection is the API's queue, not the generator's."""
        return self.lag(99) <= GENERATOR_LAG_MS

    def lag(self, q: float) -> float:
        import numpy as np

        return float(np.percentile(self.lags_ms, q)) if self.lags_ms else 0.0

    def tail_line(self, slow_ms: float = TARGET_P99_MS, gap_s: float = 0.02) -> str:
        """Where the slow answers came from: the app's own time against the rest (server queue,
        kernel, generator), and whether they come in bursts (a stalled process: every request
        scheduled during the stall is late) or one by one (per-request work)."""
        import numpy as np

        if not self.app_ms:
            return "        tail: the API sent no Server-Timing"
        app50, app99 = np.percentile(self.app_ms, [50, 99])
        slow = sorted(d for d, ms in zip(self.due_s, self.latencies_ms, strict=True) if ms > slow_ms)
        bursts: list[float] = []  # each burst's span, s
        start = prev = None
        for d in slow:
            if prev is None or d - prev > gap_s:
                if start is not None and prev is not None:
                    bursts.append(prev - start)
                start = d
            prev = d
        if start is not None and prev is not None:
            bursts.append(prev - start)
        spans = f", longest {1000 * max(bursts):.0f} ms" if bursts else ""
        return (
            f"        tail: app's own time (Server-Timing) p50 {app50:.1f} ms, p99 {app99:.1f} ms; "
            f"{len(slow):,} answers over {slow_ms:g} ms in {len(bursts):,} burst(s) "
            f"(requests scheduled within {1000 * gap_s:.0f} ms of each other){spans}"
        )

    @property
    def passes(self) -> bool:
        return self.pct(99) <= P99_LIMIT_MS and not self.errors


class Connection:
    """One keep-alive HTTP/1.1 connection (one request in flight)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def post(self, request: bytes) -> tuple[int, bytes, bool, float | None]:
        """(status, body, whether the connection stays open, the app's own ms from Server-Timing)."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length, keep, app_ms = None, True, None
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                keep = False
            elif name == b"server-timing" and b"app;dur=" in value:
                app_ms = float(value.split(b"app;dur=", 1)[1].split(b",", 1)[0])
        if length is None:
            raise ValueError("response without Content-Length")
        return status, await self.reader.readexactly(length), keep, app_ms

    def close(self) -> None:
        self.writer.close()


class LoadGenerator:
    """Open loop: request i is sent at t0 + i / rate whether or not earlier ones were answered."""

    def __init__(
        self, host: str, port: int, token: str, customers: list[str], connections: int, seed: int
    ) -> None:
        from pipelines.contracts import OFFER_CHANNELS, PRODUCTS

        self.host, self.port = host, port
        self.head = (
            f"POST /v1/decisions HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode()
        self.customers = customers
        self.channels = list(OFFER_CHANNELS)
        self.products = [None, None, *PRODUCTS]  # half the requests without a product in context
        self.connections = connections
        self.rng = random.Random(seed)

    def request(self) -> tuple[str, bytes]:
        cn = self.rng.choice(self.customers)
        product = self.rng.choice(self.products)
        context: dict[str, str] = {"page": "products/" + (product or "home"), "placement": "hero"}
        if product:
            context["product"] = product
        body = json.dumps(
            {"customer_id": cn, "channel": self.rng.choice(self.channels), "context": context}
        ).encode()
        return cn, self.head + str(len(body)).encode() + b"\r\n\r\n" + body

    def run(self, rate: int, seconds: float) -> StepResult:
        try:
            import uvloop

            runner: Callable[[Any], StepResult] = uvloop.run
        except ImportError:
            runner = asyncio.run
        gc.collect()
        gc.freeze()  # what exists now is never scanned again: no collector pause among the requests
        try:
            return runner(self._run(rate, seconds))
        finally:
            gc.unfreeze()

    async def _run(self, rate: int, seconds: float) -> StepResult:
        loop = asyncio.get_running_loop()
        clock = time.perf_counter  # uvloop's loop.time() is in whole ms, cached per iteration
        result = StepResult(rate, seconds)
        idle: asyncio.Queue[Connection] = asyncio.Queue()
        for _ in range(self.connections):
            idle.put_nowait(await Connection.open(self.host, self.port))
        total = int(rate * seconds)
        requests = [self.request() for _ in range(total)]  # built before the clock starts
        pending: set[asyncio.Task[None]] = set()
        last_sent = 0.0

        async def one(due: float, cn: str, request: bytes) -> None:
            nonlocal last_sent
            result.lags_ms.append((clock() - due) * 1000)
            conn = await idle.get()  # waiting for a free connection is queueing: it counts
            sent = clock()
            last_sent = max(last_sent, sent)
            result.waits_ms.append((sent - due) * 1000)
            keep = False
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    status, body, keep, app_ms = await conn.post(request)
            except TimeoutError:
                result.errors["timeout"] += 1
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
                result.errors[type(exc).__name__] += 1
            else:
                if app_ms is not None:
                    result.app_ms.append(app_ms)
                if status != 200:
                    result.errors[f"HTTP {status}"] += 1
                else:
                    answer = json.loads(body)
                    if answer.get("fallback"):
                        result.fallbacks[str(answer.get("fallback_reason"))] += 1
                    chosen = [a["action_id"] for a in answer.get("actions", []) if a.get("role") == "chosen"]
                    if chosen:
                        result.decided.setdefault(cn, []).append((answer["channel"], chosen[0]))
            result.latencies_ms.append((clock() - due) * 1000)
            result.due_s.append(due - t0)
            if not keep:
                conn.close()
                try:
                    conn = await Connection.open(self.host, self.port)
                except OSError:
                    result.errors["connect"] += 1
                    return  # one connection fewer
            idle.put_nowait(conn)

        t0 = clock() + 0.05
        i = 0
        while i < total:
            now = clock()
            due = t0 + i / rate
            if due > now:
                await asyncio.sleep(due - now)
                continue
            while i < total and t0 + i / rate <= now:  # everything due by now, behind or not
                task = loop.create_task(one(t0 + i / rate, *requests[i]))
                pending.add(task)
                task.add_done_callback(pending.discard)
                i += 1
        await asyncio.gather(*pending)
        result.sent = total
        result.send_span_s = max(1e-9, last_sent - t0)
        while not idle.empty():
            idle.get_nowait().close()
        return result


# ------------------------------------------------------------------------------------ reference


def pct_line(values_ms: list[float]) -> str:
    import numpy as np

    if not values_ms:
        return "no samples"
    p50, p99 = np.percentile(values_ms, [50, 99])
    return f"p50 {p50:,.1f} ms, p99 {p99:,.1f} ms, max {max(values_ms):,.1f} ms over {len(values_ms):,}"


def nba_reference(
    cfg: Config,
    api_url: str,
    token: str,
    decided: dict[str, list[tuple[str, str]]],
    reads: int,
    started: Started,
) -> list[str]:
    """The same customers' current next-best-action through the SQL endpoint, then through the API."""
    import httpx
    from pyhive import hive

    from pipelines.services import sql_endpoint

    # the bank's own customers first: a clone's served rows copied from the sync exist only in the store
    customers = sorted(decided, key=lambda cn: (cn.startswith(CLONE_PREFIX), cn))[:reads]
    if not customers:
        return ["reference: no decision of the load chose an action; nothing to read"]
    time.sleep(2 * cfg.decisioning.api.flush_ms / 1000 + 1)  # the API delivers to gold every flush_ms
    t0 = time.monotonic()
    port = free_port()
    endpoint = sql_endpoint.start(cfg, port, timeout_s=600)
    started.add("the SQL endpoint", lambda: sql_endpoint.stop(endpoint))
    boot = time.monotonic() - t0
    query = (
        "SELECT channel, action_id FROM gold.next_best_actions "
        "WHERE customer_number = '{cn}' AND expires_at > current_timestamp()"
    )
    from pipelines.services.sql_users import default_credentials

    user, password = default_credentials(cfg)
    connection = hive.connect(
        host=sql_endpoint.HOST, port=port, username=user, password=password, auth="CUSTOM"
    )
    sql_ms: list[float] = []
    sql_rows: dict[str, set[tuple[str, str]]] = {}
    try:
        cursor = connection.cursor()
        cursor.execute(query.format(cn=customers[0]))  # the first query plans and warms the JVM
        cursor.fetchall()
        for cn in customers:
            t = time.perf_counter()
            cursor.execute(query.format(cn=cn))
            rows = cursor.fetchall()
            sql_ms.append((time.perf_counter() - t) * 1000)
            sql_rows[cn] = {(str(r[0]), str(r[1])) for r in rows}
    finally:
        connection.close()
    sql_endpoint.stop(endpoint)
    api_ms: list[float] = []
    api_rows: dict[str, set[tuple[str, str]]] = {}
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=10) as client:
        client.get(f"{api_url}/v1/customers/{customers[0]}/next-best-action")
        for cn in customers:
            t = time.perf_counter()
            answer = client.get(f"{api_url}/v1/customers/{cn}/next-best-action")
            api_ms.append((time.perf_counter() - t) * 1000)
            api_rows[cn] = {(a["channel"], a["action_id"]) for a in answer.json().get("actions", [])}
    differ = [cn for cn in customers if sql_rows.get(cn) != api_rows.get(cn)]
    found = sum(1 for cn in customers if sql_rows.get(cn))
    example = ""
    if differ:
        cn = differ[0]
        example = (
            f" (e.g. {cn}: SQL {sorted(sql_rows.get(cn, set()))}, API {sorted(api_rows.get(cn, set()))})"
        )
    return [
        f"reference, {len(customers)} customers the load decided for, their current next-best-action "
        "read one at a time (after one warm-up read):",
        f"  SQL endpoint (Thrift, gold.next_best_actions): {pct_line(sql_ms)} "
        f"({found} with a current action; endpoint up in {boot:.0f} s)",
        f"  API GET /v1/customers/{{id}}/next-best-action: {pct_line(api_ms)}",
        f"  same (channel, action) set through both: {len(customers) - len(differ)} of {len(customers)}"
        + example,
    ]


# ------------------------------------------------------------------------------------ main


def rate_list(text: str) -> list[int]:
    try:
        rates = [int(r) for r in text.split(",") if r.strip()]
    except ValueError:
        raise SystemExit(f"--rates {text!r}: expected decisions/s like 250,500,1000") from None
    if not rates or min(rates) < 1:
        raise SystemExit(f"--rates {text!r}: expected positive decisions/s")
    return rates


def table_lines(results: list[StepResult]) -> Iterator[str]:
    yield (
        f"{'rate/s':>7} {'s':>4} {'sent':>7} {'sent/s':>7} {'gen lag':>7} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'p99.9 ms':>9} {'errors':>7} {'fallbk':>7}   cpu % of a core: api store gen ingest"
    )
    for r in results:
        cpu = r.cpu
        flag = "" if r.generator_kept_up else "  (generator fell behind)"
        yield (
            f"{r.rate:>7,} {r.seconds:>4.0f} {r.sent:>7,} {r.send_rate:>7,.0f} {r.lag(99):>7.1f} "
            f"{r.pct(50):>8.1f} {r.pct(99):>8.1f} {r.pct(99.9):>9.1f} {sum(r.errors.values()):>7,} "
            f"{sum(r.fallbacks.values()):>7,}   {cpu.get('api', 0):>5.0f} {cpu.get('store', 0):>5.0f} "
            f"{cpu.get('gen', 0):>4.0f} {cpu.get('ingest', 0):>5.0f}{flag}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="API worker processes (journeylake serve)")
    parser.add_argument("--server", choices=("uvicorn", "granian"), default="granian", help="serve --server")
    parser.add_argument("--customers", type=int, default=100_000, help="customers in the store")
    parser.add_argument("--bank-customers", type=int, default=2000, help="customers generated and synced")
    parser.add_argument("--days", type=int, default=6, help="days generated (the last one is held back)")
    parser.add_argument("--rates", default="250,500,1000", help="decisions/s measured, comma-separated")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each rate's run")
    parser.add_argument("--warmup-seconds", type=float, default=5.0, help="100/s before the first step")
    parser.add_argument("--search-seconds", type=float, default=10.0, help="length of each search probe")
    parser.add_argument("--search-steps", type=int, default=5, help="most probes of the p99 <= 50 ms search")
    parser.add_argument("--max-rate", type=int, default=16_000, help="the search goes no higher")
    parser.add_argument("--connections", type=int, default=128, help="the generator's keep-alive connections")
    parser.add_argument("--no-ingest", action="store_true", help="no ingest during the load (quick runs)")
    parser.add_argument("--ingest-rate", type=int, default=200, help="held-back lines landed per second")
    parser.add_argument(
        "--ingest-idle",
        action="store_true",
        help="ingest in the SCHED_IDLE class (chrt --idle 0) instead of at nice 19",
    )
    parser.add_argument(
        "--ingest-cpu", type=int, default=None, help="the CPU ingest runs on (default: the last)"
    )
    parser.add_argument(
        "--api-cpu",
        type=int,
        default=None,
        help="pin the API (workers, delivery) to this CPU and keep the generator off it (default: none)",
    )
    parser.add_argument(
        "--staleness-wait",
        type=float,
        default=180.0,
        help="seconds to wait after the load for a first write-through batch if there was none",
    )
    parser.add_argument(
        "--sql-reads", type=int, default=50, help="reads of the SQL endpoint reference (0: none)"
    )
    parser.add_argument(
        "--no-scores", action="store_true", help="no synthetic scores: every decision falls back"
    )
    parser.add_argument("--keep", action="store_true", help="keep the home (printed) instead of removing it")
    args = parser.parse_args()
    rates = rate_list(args.rates)
    run_started = time.monotonic()

    home = own_home(None, "journeylake-bench-serve-")
    os.environ["JOURNEYLAKE_STORE_PORT"] = str(free_port())
    api_port = free_port()
    os.environ["JOURNEYLAKE_API_PORT"] = str(api_port)
    token = secrets.token_urlsafe(24)
    os.environ["JOURNEYLAKE_API_TOKEN"] = token
    os.environ.pop("JOURNEYLAKE_TARGET", None)
    os.environ.pop("JOURNEYLAKE_STORE_PASSWORD", None)  # the bench home's own password

    def terminated(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C

    signal.signal(signal.SIGTERM, terminated)

    from pipelines.config import load_config
    from pipelines.services import metastore, redis_server
    from pipelines.serving.store import STALENESS, StoreWriter, connect

    cfg = load_config("local")
    started = Started()
    logs = home / "bench-logs"
    logs.mkdir(parents=True, exist_ok=True)
    held = home / "held-back"
    lines: list[str] = []
    try:
        started.add("the metastore", lambda: print(f"metastore: stopped {metastore.stop(cfg)}"))
        state, _ = redis_server.up(cfg)
        started.add("the online store", lambda: print(f"online store: {redis_server.down(cfg)}"))
        print(f"online store: {state.describe()}")
        prepare_lakehouse(cfg, args, held)
        customers = clone_customers(cfg, args.customers)
        client = connect(cfg)
        client.delete(STALENESS)  # only this run's write-through counts

        api_log = logs / "serve.log"
        api_cpu = args.api_cpu
        with api_log.open("wb") as out:
            api = subprocess.Popen(
                [
                    *(sys.executable, "-m", "pipelines.cli", "serve"),
                    *("--workers", str(args.workers), "--server", args.server),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                process_group=0,  # its own group (uvicorn and its workers), in this session
                preexec_fn=None if api_cpu is None else (lambda: os.sched_setaffinity(0, {api_cpu})),
            )
        if api_cpu is not None:  # the generator (this process) and ingest keep off the API's CPU
            os.sched_setaffinity(0, (set(os.sched_getaffinity(0)) - {api_cpu}) or {api_cpu})
        started.add("the API", lambda: stop_group(api, signal.SIGTERM, 45))
        api_url = f"http://127.0.0.1:{api_port}"
        wait_for_api(api_url, api, api_log)
        print(
            f"API: journeylake serve --workers {args.workers} --server {args.server} on {api_url} "
            f"(log {api_log})"
        )

        ingest: subprocess.Popen[bytes] | None = None
        feeder: Feeder | None = None
        if not args.no_ingest:
            cpus = sorted(os.sched_getaffinity(0))
            cpu = args.ingest_cpu if args.ingest_cpu is not None else (cpus[-1] if len(cpus) > 1 else None)
            command, where = ingest_command(cpu, idle=args.ingest_idle)
            ingest_log = logs / "ingest.log"
            with ingest_log.open("wb") as out:
                ingest = subprocess.Popen(
                    command,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    process_group=0,  # same session on purpose: niceness counts within a session's autogroup
                    preexec_fn=(lambda: os.sched_setaffinity(0, {cpu}))
                    if cpu is not None and "taskset" not in command
                    else None,
                )
            running_ingest = ingest
            started.add("ingest", lambda: stop_group(running_ingest, signal.SIGINT, 60))
            print(
                f"ingest: journeylake ingest, continuous, {where} (log {ingest_log}); "
                "waiting until it streams"
            )
            t = time.monotonic()
            if wait_for_line(ingest_log, "streaming continuously", ingest, 600):
                print(f"ingest: streaming after {time.monotonic() - t:.0f} s")
            else:
                print("ingest: not streaming after 600 s; the load starts anyway")
            feeder = Feeder(held, cfg.paths.landing, args.ingest_rate)
            feeder.start()
            started.add("the feeder", feeder.halt.set)
            print(f"ingest: landing {len(feeder.lines):,} held-back lines at {args.ingest_rate:,}/s")

        store_pid = redis_server.status(cfg).pid
        generator = LoadGenerator("127.0.0.1", api_port, token, customers, args.connections, seed=11)
        generator.run(100, args.warmup_seconds)  # warm-up: connections, first decisions and deliveries

        def store_events() -> dict[str, int]:
            """The store's forks (snapshots, AOF rewrites) and AOF writes delayed by a slow fsync:
            pauses of the store that a decision waits out."""
            info = {**client.info("stats"), **client.info("persistence")}
            return {k: int(info.get(k, 0)) for k in ("total_forks", "latest_fork_usec", "aof_delayed_fsync")}

        def step(rate: int, seconds: float) -> StepResult:
            events = store_events()
            per_pid = group_cpu_by_pid(api.pid)
            waited = {pid: run_queue_seconds(pid) for pid in per_pid}
            before = (
                group_cpu_seconds(api.pid),
                pid_cpu_seconds(store_pid),
                time.process_time(),
                group_cpu_seconds(ingest.pid if ingest else None),
            )
            t = time.monotonic()
            result = generator.run(rate, seconds)
            wall = time.monotonic() - t
            after = (
                group_cpu_seconds(api.pid),
                pid_cpu_seconds(store_pid),
                time.process_time(),
                group_cpu_seconds(ingest.pid if ingest else None),
            )
            result.cpu = {
                name: 100 * (a - b) / wall
                for name, a, b in zip(("api", "store", "gen", "ingest"), after, before, strict=True)
            }
            print(list(table_lines([result]))[1], flush=True)
            now_pid = group_cpu_by_pid(api.pid)
            print(  # how the workers shared the load (and their delivery processes their batches)
                "        api processes, cpu % of a core (run-queue wait, ms per s): "
                + ", ".join(
                    f"{pid}: {100 * (now_pid[pid] - per_pid.get(pid, 0.0)) / wall:.0f} "
                    f"({1000 * (run_queue_seconds(pid) - waited.get(pid, 0.0)) / wall:.0f})"
                    for pid in sorted(now_pid)
                ),
                flush=True,
            )
            print(result.tail_line(), flush=True)
            now_events = store_events()
            forks = now_events["total_forks"] - events["total_forks"]
            delayed = now_events["aof_delayed_fsync"] - events["aof_delayed_fsync"]
            if forks or delayed:
                latest = f" (the last took {now_events['latest_fork_usec'] / 1000:.1f} ms)" if forks else ""
                print(f"        store: {forks} fork(s){latest}, {delayed} AOF write(s) delayed by fsync")
            if result.errors or result.fallbacks:
                print(f"        errors {dict(result.errors)}; fallbacks {dict(result.fallbacks)}", flush=True)
            time.sleep(3)  # the API's queues drain before the next step
            return result

        print(
            f"open-loop load, {args.connections} connections, POST /v1/decisions, random customer x channel"
        )
        print(next(iter(table_lines([]))), flush=True)
        results = [step(rate, args.seconds) for rate in rates]
        search = search_highest(results, args, step)
        decided: dict[str, list[tuple[str, str]]] = {}
        for r in results:
            decided.update(r.decided)

        if args.sql_reads > 0:
            reference = nba_reference(cfg, api_url, token, decided, args.sql_reads, started)
        else:
            reference = ["reference: skipped (--sql-reads 0)"]

        writer = StoreWriter(client, cfg.online_store.contact_history_days)
        if ingest is not None and not writer.staleness():  # ingest at nice 19 may not have committed yet
            t = time.monotonic()
            while not writer.staleness() and time.monotonic() - t < args.staleness_wait:
                time.sleep(2)
            print(f"staleness: waited {time.monotonic() - t:.0f} s for the first write-through batch")
        if feeder is not None:
            feeder.halt.set()
        delays = sorted(writer.staleness())

        import numpy as np

        lines += ["", f"== decision API, {len(customers):,} customers in the store, {args.workers} worker(s)"]
        lines += [
            "ingest: none (--no-ingest)"
            if ingest is None
            else f"ingest: running throughout, {'SCHED_IDLE' if args.ingest_idle else 'nice 19'} on one CPU; "
            f"{feeder.written if feeder else 0:,} "
            "held-back lines landed"
        ]
        lines += list(table_lines(results + search.probes))
        lines += [
            "  latency from each request's scheduled time to its answer; sent/s: requests written to a "
            f"connection per second (below the rate when all {args.connections} wait on the API); gen lag: "
            "p99 ms the generator started a request late; fallbk: answers marked fallback"
        ]
        lines += [search.line]
        lines += reference
        if delays:
            s50, s99 = np.percentile(delays, [50, 99])
            lines += [
                f"staleness, silver/gold commit -> store (write-through, jl:staleness): p50 {s50:,.0f} ms, "
                f"p99 {s99:,.0f} ms, max {delays[-1]:,.0f} ms over {len(delays):,} batches"
            ]
        else:
            s99 = float("nan")
            lines += [
                "staleness: no write-through batch during the run"
                + (" (--no-ingest)" if ingest is None else "")
            ]
        at_target = [r for r in results if r.rate == TARGET_RATE]
        if at_target:
            r = at_target[0]
            ok = r.pct(99) <= TARGET_P99_MS and not r.errors
            latency = f"p99 {r.pct(99):.1f} ms, {sum(r.errors.values())} errors at {TARGET_RATE}/s"
        else:
            ok, latency = False, f"{TARGET_RATE}/s not measured"
        stale = f"staleness p99 {s99:,.0f} ms" if delays else "staleness not measured"
        verdict = "PASS" if ok and delays and s99 <= TARGET_STALENESS_MS else "MISS"
        lines += [
            f"target: p99 <= {TARGET_P99_MS:g} ms at {TARGET_RATE}/s, no errors; staleness p99 <= 1 s "
            f"-> {verdict} ({latency}; {stale})"
        ]
    finally:
        started.stop_all()
        if args.keep:
            print(f"home kept: {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
    print("\n".join(lines))
    print(f"runtime: {time.monotonic() - run_started:,.0f} s")
    return 0


@dataclass
class Search:
    probes: list[StepResult]
    line: str


def search_highest(
    results: list[StepResult], args: argparse.Namespace, step: Callable[[int, float], StepResult]
) -> Search:
    """The highest rate with p99 <= 50 ms and no errors: doubling past the highest passing rate,
    then bisection, at most ``--search-steps`` probes; a probe the generator could not send on
    time ends the search (the figure is then a lower bound)."""
    passing = [r.rate for r in results if r.passes and r.generator_kept_up]
    failing = [r.rate for r in results if not r.passes]
    lo = max(passing) if passing else 0
    above = [f for f in failing if f > lo]
    hi: int | None = min(above) if above else None
    probes: list[StepResult] = []
    note = ""
    while len(probes) < args.search_steps:
        if hi is None:
            rate = min(args.max_rate, lo * 2)
            if rate <= lo:
                note = f" (--max-rate {args.max_rate:,} reached)"
                break
        else:
            if hi - lo <= max(25, lo // 10):
                break
            rate = (lo + hi) // 2 // 25 * 25 or (lo + hi) // 2
        r = step(rate, args.search_seconds)
        probes.append(r)
        if not r.generator_kept_up:
            note = f" (the generator could not keep up at {rate:,}/s: a lower bound)"
            if r.passes:
                lo = rate
            break
        if r.passes:
            lo = rate
        else:
            hi = rate
    bound = f", below {hi:,}/s" if hi is not None else ""
    if lo == 0:
        line = f"highest rate with p99 <= {P99_LIMIT_MS:g} ms: none measured passes{bound}{note}"
    else:
        line = f"highest rate with p99 <= {P99_LIMIT_MS:g} ms and no errors: {lo:,}/s{bound}{note}"
    return Search(probes, line)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: every process this run started is stopped", file=sys.stderr)
        sys.exit(130)
