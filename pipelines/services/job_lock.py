"""One job of a kind per home: the lock ``ingest``, ``decide``, ``dbt`` ... take before they start.

Two ingests on one home race for the same checkpoints and tables (a Derby deadlock, a Delta
"table location not empty", a stream log update conflict minutes later): the second is refused
at once instead, with the first one's pid and start time.

The lock is an advisory ``flock`` on ``<home>/locks/<kind>.lock``. The kernel releases it when
its holder dies, SIGKILL included, so a lock left behind by a killed job is taken over by the
next one without guessing from pids; the file's text (pid, start, command) only informs the
message. Jobs of different kinds may run side by side: each writes its own tables and reads the
others' through Delta snapshots (see the README's "Jobs side by side").

``flock`` holds between processes of one machine on a local disk; on a cluster, a job
scheduler's "one run at a time" does this job (``max_concurrent_runs: 1`` in
``resources/*.yml``).
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

from pipelines.config import Config
from pipelines.errors import SetupError, root_cause

# the kinds of jobs that must not run twice on one home (a verb may take several: the demo)
JOB_KINDS = (
    "ingest",
    "decide",
    "dbt",
    "train",
    "score",
    "online-store-sync",
    "export-segments",
    "erasure",
    "validate",
)


# verbs whose arguments name people: their lock files record the verb alone (an erasure's ids
# must not outlive it in a lock file)
PERSONAL_ARGUMENTS = frozenset({"erase-customer"})


def command_line() -> str:
    """The running command as lock files record it."""
    args = sys.argv[1:]
    if args and args[0] in PERSONAL_ARGUMENTS:
        return f"journeylake {args[0]} (arguments not recorded)"
    return " ".join(["journeylake", *args])


def lock_dir(cfg: Config) -> Path:
    return cfg.paths.home / "locks"


def holder(cfg: Config, kind: str) -> dict[str, object] | None:
    """Who holds ``kind`` on this home now (pid, started, command), or None when nobody does."""
    path = lock_dir(cfg) / f"{kind}.lock"
    if not path.is_file():
        return None
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(handle)
        fcntl.flock(handle, fcntl.LOCK_UN)
        return None


@contextmanager
def job_lock(cfg: Config, *kinds: str) -> Iterator[None]:
    """Hold the home's lock of each of ``kinds`` for the duration, or raise SetupError naming the
    job that holds one."""
    with ExitStack() as stack:
        for kind in kinds:
            stack.enter_context(_one(cfg, kind))
        yield


@contextmanager
def _one(cfg: Config, kind: str) -> Iterator[None]:
    if kind not in JOB_KINDS:
        raise ValueError(f"unknown job kind {kind!r} (known: {', '.join(JOB_KINDS)})")
    folder = lock_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{kind}.lock"
    # "a+": opening must not truncate the holder's text before we know we hold the lock
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = _read(handle)
            who = (
                f"pid {other.get('pid')}, started {other.get('started')}, `{other.get('command')}`"
                if other
                else "a process that has not written its name yet"
            )
            raise SetupError(
                f"another {kind} job runs on home {cfg.paths.home} ({who}); one {kind} job per "
                f"home: wait for it, stop it, or use another home (JOURNEYLAKE_HOME)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "command": command_line(),
                }
            )
        )
        handle.flush()
        started = time.time()
        outcome = "failed"
        try:
            yield
            outcome = "ok"
        except KeyboardInterrupt:
            outcome = "interrupted"
            raise
        except BaseException as exc:
            outcome = f"failed: {root_cause(exc)}"
            raise
        finally:
            _write_last(folder / f"{kind}.last.json", started, outcome)
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def last_run(cfg: Config, kind: str) -> dict[str, object] | None:
    """How the last job of ``kind`` on this home ended: started, ended (epoch s), outcome
    ("ok", "interrupted", "failed: <cause>"), pid, command; None if none ran (or a SIGKILL
    ended it, which leaves the run before)."""
    try:
        value = json.loads((lock_dir(cfg) / f"{kind}.last.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _write_last(path: Path, started: float, outcome: str) -> None:
    record = {
        "started": started,
        "ended": time.time(),
        "outcome": outcome,
        "pid": os.getpid(),
        "command": command_line(),
    }
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps(record))
        tmp.replace(path)
    except OSError:  # e.g. a full disk: the job's own error is the one to report, not this
        tmp.unlink(missing_ok=True)


def _read(handle: IO[str]) -> dict[str, object]:
    handle.seek(0)
    try:
        value = json.loads(handle.read() or "{}")
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
