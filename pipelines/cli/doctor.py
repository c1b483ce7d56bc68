"""``journeylake doctor``: what state a home is in, and what to fix, for the operator on Monday.

It checks, without changing anything: free disk space; the local services (metastore, Kafka
broker when ingest reads Kafka, online store); which jobs run now (the home's locks) and how each
kind's last run ended; the landing folders (files waiting in hidden folders, files that are not
``*.jsonl``); and with ``--tables`` (starts Spark) every table's presence, rows and last write.
Each finding is one line: ``ok``, ``warn`` or ``FAIL``, with what to do. Exit code 1 when any
line is ``FAIL``, so a scheduler or monitor can run it too.
"""

from __future__ import annotations

import argparse
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from pipelines.config import Config, add_config_arguments, config_from_args

Level = Literal["ok", "warn", "FAIL"]
GIB = 1024**3
DISK_FAIL_BYTES = 1 * GIB
DISK_WARN_BYTES = 5 * GIB


@dataclass(frozen=True)
class Finding:
    level: Level
    area: str
    text: str

    def line(self) -> str:
        return f"{self.level:<4}  {self.area:<20} {self.text}"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tables", action="store_true", help="also check every table (starts Spark: about 20 s more)"
    )
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    print(f"journeylake doctor: home {cfg.paths.home} (target {cfg.target})")
    findings = [*disk(cfg), *services(cfg), *jobs(cfg), *landing(cfg)]
    for finding in findings:
        print(finding.line(), flush=True)
    if args.tables:
        for finding in tables(cfg):
            findings.append(finding)
            print(finding.line(), flush=True)
    failed = [f for f in findings if f.level == "FAIL"]
    warned = [f for f in findings if f.level == "warn"]
    print(f"{len(failed)} to fix, {len(warned)} to look at, {len(findings) - len(failed) - len(warned)} fine")
    return 1 if failed else 0


def disk(cfg: Config) -> Iterator[Finding]:
    home = cfg.paths.home
    if not home.is_dir():
        yield Finding(
            "warn", "home", f"{home} does not exist yet: `journeylake generate` or `ingest` creates it"
        )
        return
    usage = shutil.disk_usage(home)
    free = f"{usage.free / GIB:.1f} GiB free of {usage.total / GIB:.0f} GiB"
    if usage.free < DISK_FAIL_BYTES:
        yield Finding("FAIL", "disk", f"{free}: jobs will fail to write; free space or move the home")
    elif usage.free < DISK_WARN_BYTES or usage.free < usage.total * 0.1:
        yield Finding("warn", "disk", f"{free}: running low")
    else:
        yield Finding("ok", "disk", free)


def services(cfg: Config) -> Iterator[Finding]:
    from pipelines.errors import JourneylakeError
    from pipelines.services import kafka_broker, metastore, redis_server

    if cfg.catalog.metastore.kind == "derby-server":
        state = metastore.status(cfg)
        if state.running and state.pid is None:
            other = metastore.server_home(cfg.catalog.metastore.port)
            yield Finding(
                "FAIL",
                "metastore",
                f"port {state.port} answers with a server this home did not start"
                f"{f' (home {other})' if other else ''}: stop it there, or give this home another port",
            )
        elif state.running:
            yield Finding("ok", "metastore", state.describe())
        else:
            yield Finding(
                "warn", "metastore", f"{state.describe()}; jobs start it, or `journeylake metastore start`"
            )
    if cfg.ingest.source == "kafka":
        broker = kafka_broker.status(cfg)
        level: Level = "ok" if broker.running else "FAIL"
        yield Finding(
            level, "kafka", broker.describe() + ("" if broker.running else "; `journeylake kafka up`")
        )
    try:
        store = redis_server.status(cfg)
    except JourneylakeError as exc:
        yield Finding("warn", "online store", str(exc))
        return
    if store.running:
        yield Finding("ok", "online store", store.describe())
    else:
        yield Finding(
            "warn",
            "online store",
            f"{store.describe()}; the decision API needs it: `journeylake online-store up`",
        )


def jobs(cfg: Config) -> Iterator[Finding]:
    from pipelines.services.job_lock import JOB_KINDS, holder, last_run

    for kind in JOB_KINDS:
        area = f"job {kind}"
        running = holder(cfg, kind)
        last = last_run(cfg, kind)
        if running is not None:
            yield Finding("ok", area, f"running: pid {running.get('pid')} since {running.get('started')}")
            continue
        if last is None:
            yield Finding("ok", area, "never run on this home (or its last run was killed)")
            continue
        ended = last.get("ended")
        ago = _ago(ended) if isinstance(ended, (int, float)) else "at an unknown time"
        outcome = str(last.get("outcome"))
        if outcome == "ok":
            yield Finding("ok", area, f"last run ended well {ago}")
        elif outcome == "interrupted":
            yield Finding("ok", area, f"last run stopped by Ctrl-C {ago}")
        else:
            yield Finding(
                "FAIL",
                area,
                f"last run {outcome} ({ago}; `{last.get('command')}`); trace in "
                f"{cfg.paths.logs / 'journeylake.log'}",
            )


def landing(cfg: Config) -> Iterator[Finding]:
    from pipelines.contracts import CONTRACTS

    root = cfg.paths.landing
    if cfg.ingest.source != "files":
        return
    if not root.is_dir():
        yield Finding("warn", "landing", f"{root} does not exist: nothing to ingest yet")
        return
    for source in CONTRACTS:
        folder = root / source
        if not folder.is_dir():
            continue
        files = [p for p in folder.rglob("*") if p.is_file()]
        relative = [p.relative_to(folder) for p in files]
        hidden = [r for r in relative if any(part.startswith(("_", ".")) for part in r.parts)]
        other = [r for r in relative if r not in hidden and r.suffix != ".jsonl"]
        readable = len(files) - len(hidden) - len(other)
        if hidden:
            yield Finding(
                "warn",
                f"landing {source}",
                f"{len(hidden)} file(s) in hidden paths, not read until moved out (e.g. {hidden[0]})",
            )
        if other:
            yield Finding(
                "warn",
                f"landing {source}",
                f"{len(other)} file(s) not named *.jsonl, never read (e.g. {other[0]}): "
                "rename them if they are records",
            )
        if not hidden and not other:
            yield Finding("ok", f"landing {source}", f"{readable:,} file(s)")


def tables(cfg: Config) -> Iterator[Finding]:
    from pipelines.contracts import CONTRACTS
    from pipelines.errors import first_line
    from pipelines.services.spark import get_spark
    from pipelines.tables import Tables

    spark = get_spark(cfg, "journeylake-doctor")
    t = Tables.from_config(cfg)
    names = [
        *(t.bronze(s) for s in CONTRACTS),
        *(t.silver(s) for s in CONTRACTS),
        t.quarantine,
        t.duplicates,
        t.customer_features,
        t.gold("customer_scores"),
        t.gold("decision_log"),
        t.gold("next_best_actions"),
    ]
    for name in names:
        if not spark.catalog.tableExists(name):
            yield Finding("warn", name, "missing: the job that writes it has not run on this home")
            continue
        try:
            detail = spark.sql(f"DESCRIBE DETAIL {name}").first()
            rows = spark.table(name).count()
        except Exception as exc:  # a table that cannot be read is the finding
            yield Finding("FAIL", name, f"cannot be read: {first_line(exc)}")
            continue
        modified = detail["lastModified"] if detail is not None else None
        when = _ago(modified.timestamp()) if modified is not None else "never"
        files = detail["numFiles"] if detail is not None else 0
        yield Finding("ok", name, f"{rows:,} rows in {files:,} files, last written {when}")


def _ago(epoch: float) -> str:
    seconds = max(0.0, time.time() - epoch)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"
