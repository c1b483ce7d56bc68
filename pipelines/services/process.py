"""The one lifecycle the local services (metastore, Kafka broker, online store) share.

A :class:`ManagedService` is a server this home runs as a detached process on a loopback port:

- **start idempotently** (:meth:`ManagedService.up`): under a file lock, so two commands
  launched together start one server; this home's server already running (or still starting in
  another command) is awaited and reused; a server of the same kind answering on the port (e.g.
  another checkout's) is reused too; anything else on the port is refused by name;
- **wait until ready**: until the service's own readiness check passes (an open port is not
  always "ready for clients"); when the process exits or the deadline passes, the error quotes
  its log (its first error lines since the start) and names the log file;
- **pid and log under the home**: ``<folder>/server.json`` records the pid, host, port and the
  process's start time (so a recycled pid is never taken for the server); output goes to the
  service's log under ``<home>/logs``;
- **stop cleanly** (:meth:`ManagedService.down`): the service's own shutdown if it has one, then
  SIGTERM, then SIGKILL after a timeout; only a server this home started is ever stopped;
- **say clearly when already running**: ``up`` returns whether it started the server, and
  :class:`ServiceState` describes what runs where, started by whom.

Each service module keeps what is its own (the command line, its files, the readiness check, its
settings and messages) and hands the lifecycle to this module.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from pipelines.errors import SetupError

STATE_FILE = "server.json"  # in the service's folder: pid, host, port, process start time
LOCK_FILE = ".lock"


def port_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (field 3 onwards), if readable."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child (started by this very process) counts as gone
    fields = _proc_stat(pid)
    return fields is None or fields[0] != "Z"


def process_start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot; None without /proc): with the pid, it
    identifies one process, since the kernel recycles pids but not start times."""
    fields = _proc_stat(pid)
    try:
        return int(fields[19]) if fields else None  # field 22 of proc(5), "starttime"
    except (IndexError, ValueError):
        return None


def java_executable() -> str:
    """The ``java`` of JAVA_HOME, else the one on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home) / "bin" / "java" if java_home else None
    if candidate and candidate.is_file():
        return str(candidate)
    found = shutil.which("java")
    if not found:
        raise SetupError("Java is not installed or not on PATH (Spark and the metastore need Java 17)")
    return found


def terminate(pid: int, timeout: float = 20.0) -> str | None:
    """SIGTERM ``pid`` (every local service shuts down cleanly on it), SIGKILL if still alive after
    ``timeout`` s: "stopped", "killed (...)", or None if it was not running."""
    if not pid_alive(pid):
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    how = "stopped"
    if not _wait_gone(pid, timeout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        how = f"killed (no clean shutdown within {timeout:.0f}s)"
        _wait_gone(pid, 10.0)
    _reap(pid)
    return how


def _reap(pid: int) -> None:
    """Collect the exit status of ``pid`` if this process started it (else it stays a zombie)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def log_size(path: Path) -> int:
    """Where a log ends now: what a start logs after this offset is that start's."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def log_problems(path: Path, offset: int = 0, limit: int = 3) -> str:
    """The first ERROR/FATAL lines logged since ``offset`` (else the last lines), on one line."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            lines = [ln.strip() for ln in fh.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    problems = [ln for ln in lines if re.search(r"\b(ERROR|FATAL)\b|Exception:", ln)]
    chosen = problems[:limit] or lines[-limit:]
    return " | ".join(ln[:300] for ln in chosen)


@dataclass(frozen=True, kw_only=True)
class ServiceState:
    """What runs on a service's port, and whether this home started it."""

    running: bool  # something answers on the port
    host: str
    port: int
    pid: int | None  # of the server this home started, when that is what answers
    data: Path
    log: Path
    detail: str = ""  # appended as is ("; ..."): e.g. memory used, or why this home's does not answer

    # how a service's description names its address and its data
    address_words: ClassVar[str] = " on "
    data_words: ClassVar[str] = "data"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def describe(self) -> str:
        if not self.running:
            return f"stopped (would listen on {self.address}; {self.data_words} {self.data}){self.detail}"
        owner = f"pid {self.pid}" if self.pid else "started elsewhere, not from this home"
        return (
            f"running{self.address_words}{self.address} ({owner}); {self.data_words} {self.data}; "
            f"log {self.log}{self.detail}"
        )


@dataclass(frozen=True)
class Probe:
    running: bool  # something answers on the port
    pid: int | None  # this home's server, when that is what answers
    detail: str  # for ServiceState.detail: why this home's server does not answer, if it does not


@dataclass(frozen=True)
class ManagedService:
    """One local service of one home: where it listens, where its state and log live, how to
    stop and find it. The service module supplies its command line and readiness check."""

    name: str  # as messages name it: "the metastore server", "the Kafka broker", ...
    host: str
    port: int
    folder: Path  # under the home: the state file and the start lock
    log: Path
    stop_command: str  # what a person runs to stop it, e.g. "journeylake kafka down"
    port_advice: str  # how to choose another port, e.g. "choose another with kafka.broker.port ..."

    @property
    def state_file(self) -> Path:
        return self.folder / STATE_FILE

    # ------------------------------------------------------------------ what runs
    def record(self) -> dict[str, object] | None:
        """The state file of this home's server, if that process still runs."""
        return _live_record(self.state_file)

    def owned_pid(self) -> int | None:
        """The pid of this home's server, on whatever port it was started."""
        record = self.record()
        return record["pid"] if record and isinstance(record["pid"], int) else None

    def recorded_port(self) -> int | None:
        """The port this home's running server was started on."""
        record = self.record()
        port = record.get("port") if record else None
        return port if isinstance(port, int) else None

    def answers(self) -> bool:
        return port_answers(self.host, self.port)

    def probe(self) -> Probe:
        """Whether something answers on the port, and whether it is this home's server."""
        running = self.answers()
        pid = self.owned_pid()
        started_port = self.recorded_port()
        detail = ""
        if pid is not None and not running:
            if started_port is not None and started_port != self.port:
                detail = f"; this home's server (pid {pid}) runs on port {started_port} instead"
            else:
                detail = f"; pid {pid} from this home is starting or hung, see {self.log}"
        ours = running and pid is not None and started_port == self.port
        return Probe(running=running, pid=pid if ours else None, detail=detail)

    # ------------------------------------------------------------------ start
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Serialize up/down from processes sharing a home (e.g. two commands launched together)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / LOCK_FILE, "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def up(
        self,
        command: Callable[[], Sequence[str]],
        ready: Callable[[float], bool],
        recognizes: Callable[[], bool],
        timeout: float,
    ) -> bool:
        """Make sure this service answers, starting it if nothing does; whether this call started it.

        ``command`` prepares the service's files and returns its command line (called only when a
        server is to be started); ``ready(seconds)`` says within about that many seconds whether it
        serves clients; ``recognizes()`` says whether what answers on the port (not started by this
        home) is a server of this kind, which is then reused. Raises SetupError naming the port
        (taken by another program, or this home's server running on another one) or quoting the
        log (the server exited or did not get ready in ``timeout`` seconds).
        """
        with self.lock():
            pid = self.owned_pid()
            if pid is not None:  # this home's server: running, or still starting in another command
                started_port = self.recorded_port()
                if started_port != self.port:
                    raise SetupError(
                        f"this home's {_bare(self.name)} (pid {pid}) runs on port {started_port}, not on "
                        f"the configured {self.port}: stop it with `{self.stop_command}` first"
                    )
                try:
                    self.await_ready(pid, ready, timeout, log_size(self.log))
                except SetupError as exc:
                    raise SetupError(f"{exc}; stop it with `{self.stop_command}` and retry") from None
                return False
            if self.answers():
                if recognizes():  # e.g. another checkout's server: usable, and status says whose
                    return False
                raise SetupError(
                    f"port {self.port} on {self.host} is in use by another program "
                    f"(not {self.name}): {self.port_advice}"
                )
            self.start(command(), ready, timeout)
            return True

    def start(self, command: Sequence[str], ready: Callable[[float], bool], timeout: float) -> int:
        """Start ``command`` detached, record it, and wait until it is ready; its pid.

        On failure the process is stopped and forgotten, and SetupError quotes its log.
        """
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        offset = log_size(self.log)
        with open(self.log, "ab") as out:
            proc = subprocess.Popen(
                list(command),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # survives the command that started it
                close_fds=True,
            )
        record = {
            "service": self.name,
            "pid": proc.pid,
            "start_ticks": process_start_ticks(proc.pid),
            "host": self.host,
            "port": self.port,
            "started": time.time(),
        }
        self.state_file.write_text(json.dumps(record) + "\n")
        try:
            self.await_ready(proc.pid, ready, timeout, offset, proc)
        except SetupError:
            terminate(proc.pid, 10.0)
            self.forget()
            raise
        return proc.pid

    def await_ready(
        self,
        pid: int,
        ready: Callable[[float], bool],
        timeout: float,
        offset: int,
        proc: subprocess.Popen[bytes] | None = None,
    ) -> None:
        """Wait until ``ready`` passes; SetupError quoting the log (since ``offset``) if ``pid``
        exits first or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        while True:
            exited = proc.poll() is not None if proc is not None else not pid_alive(pid)
            if exited:
                code = f" (code {proc.returncode})" if proc is not None else ""
                raise SetupError(
                    f"{self.name} on {self.host}:{self.port} exited at start{code}: "
                    f"{log_problems(self.log, offset) or 'no output'} (log: {self.log})"
                )
            remaining = deadline - time.monotonic()
            if self.answers() and ready(max(1.0, min(5.0, remaining))):
                return
            if time.monotonic() > deadline:
                raise SetupError(
                    f"{self.name} (pid {pid}) did not accept clients on {self.host}:{self.port} within "
                    f"{timeout:.0f}s: {log_problems(self.log, offset) or 'nothing logged'} (log: {self.log})"
                )
            time.sleep(0.2)

    # ------------------------------------------------------------------ stop
    def down(self, timeout: float, shutdown: Callable[[], None] | None = None) -> str | None:
        """Stop this home's server: "stopped (pid N)", "killed (...) (pid N)", or None if none ran.

        ``shutdown`` is the service's own clean stop (e.g. a shutdown command), tried first; then
        SIGTERM, then SIGKILL after ``timeout`` seconds. A server started elsewhere is left alone.
        """
        with self.lock():
            pid = self.owned_pid()
            if pid is None:
                self.forget()  # stale: the process is gone
                return None
            if shutdown is not None:
                with contextlib.suppress(SetupError, OSError, subprocess.SubprocessError):
                    shutdown()
                _wait_gone(pid, timeout)
            how = terminate(pid, timeout) or "stopped"
            _reap(pid)
            self.forget()
            return f"{how} (pid {pid})"

    def forget(self) -> None:
        self.state_file.unlink(missing_ok=True)


def _bare(name: str) -> str:
    """Drop a leading "the" (for "this home's Kafka broker ...")."""
    return name.removeprefix("the ")


def _live_record(state_file: Path) -> dict[str, object] | None:
    """The record in a state file, if its process still runs and is the one recorded."""
    try:
        record = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return None
    pid = record.get("pid") if isinstance(record, dict) else None
    if not isinstance(pid, int) or not pid_alive(pid):
        return None
    # guard against a recycled pid: the process must have started when the recorded one did
    if record.get("start_ticks") != process_start_ticks(pid):
        return None
    return record


def stop_under(root: Path, name: str, timeout: float = 20.0) -> list[int]:
    """Stop every server of the service called ``name`` recorded under ``root`` (e.g. a test run's
    temp folder, where tests start servers in homes of their own); their pids."""
    stopped = []
    for state_file in root.rglob(STATE_FILE):
        record = _live_record(state_file)
        if record is None or record.get("service") != name:
            continue
        pid = record["pid"]
        if isinstance(pid, int) and terminate(pid, timeout):
            stopped.append(pid)
        state_file.unlink(missing_ok=True)
    return stopped
