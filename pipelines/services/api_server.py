"""The decision API as a child process: ``journeylake serve`` started, awaited and stopped.

The demo, the tests and the serving benchmark run the API exactly as an operator does (its own
processes, its own port, the home and target of the caller's environment), so what they measure
and check is the real server, uvicorn workers included.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pipelines.config import ENV_API_PORT

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


class ApiStartError(RuntimeError):
    """``journeylake serve`` exited or did not answer ``/health`` in time (its output attached)."""


@dataclass
class ApiProcess:
    """A running ``journeylake serve``: its base URL, the process to stop and its output's file."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.is_file() else ""

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM (the API delivers what it holds first), then SIGKILL after ``timeout``."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode

    def __enter__(self) -> ApiProcess:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1) as reply:  # noqa: S310 - our loopback URL
            return bool(reply.status == 200)
    except urllib.error.HTTPError as error:
        return error.code == 503  # up, but the store is not: still a server that answers
    except (urllib.error.URLError, OSError):
        return False


def start_api(
    port: int,
    *,
    workers: int = 1,
    env: Mapping[str, str] | None = None,
    host: str = "127.0.0.1",
    timeout: float = START_TIMEOUT_S,
    log: Path | None = None,
) -> ApiProcess:
    """Start ``journeylake serve`` on ``port`` with ``workers`` processes and wait until it answers.

    ``env`` is added to this process's environment (the bearer token, the home, the target); its
    output goes to ``log`` (a temporary file when None: a pipe nobody reads would block it).
    """
    child_env = {**os.environ, **(env or {}), ENV_API_PORT: str(port)}
    if log is None:
        handle, name = tempfile.mkstemp(prefix="journeylake-serve-", suffix=".log")
        os.close(handle)
        log = Path(name)
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli", "serve", "--workers", str(workers)],
            env=child_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    api = ApiProcess(f"http://{host}:{port}", process, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            text = api.output().strip()
            last = text.splitlines()[-1] if text else "no output"
            raise ApiStartError(f"journeylake serve exited with {process.returncode}: {last} (log: {log})")
        if _answers(api.url):
            return api
        time.sleep(0.2)
    api.stop(5)
    raise ApiStartError(
        f"journeylake serve did not answer {api.url}/health within {timeout:.0f} s (log: {log})"
    )
