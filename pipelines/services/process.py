"""What the local services (metastore, Kafka broker, online store) share: is a process alive,
does a port answer, which Java runs them, stopping one, the tail of its log."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

from pipelines.errors import SetupError


def port_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child (started by this very process) counts as gone
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


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


def terminate(pid: int, timeout: float = 20.0) -> bool:
    """SIGTERM ``pid``, wait up to ``timeout`` s, then SIGKILL; whether it had been running."""
    import signal
    import time

    if not pid_alive(pid):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return True


def log_tail(path: Path, lines: int = 15) -> str:
    """The last lines of a service's log, for an error message ('' when there is none)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def read_pid(path: Path) -> int | None:
    """The pid in a pid file, if the file holds one of a live process."""
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None
