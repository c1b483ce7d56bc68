"""The decision API's worker processes: one ASGI app, run by uvicorn or Granian.

Several workers of uvicorn's own supervisor share one listening socket, and whichever worker
wakes first accepts: a channel system's pool of keep-alive connections, opened in a burst, lands
mostly on one worker while the other idles (measured in bench/README.md: 58% against 7% of a
core at 500 decisions/s). Here each uvicorn worker binds its own socket with ``SO_REUSEPORT``,
so the kernel spreads new connections over the workers by their addresses. The supervisor
forwards SIGTERM/SIGINT to every worker (each delivers what it holds before it exits) and
restarts a worker that dies.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import socket
import sys
import time
from typing import Any

APP = "pipelines.serving.api:app_from_environment"
RESTART_DELAY_S = 1.0
QUICK_DEATH_S = 10.0  # a worker that dies this soon after its start is failing to start
QUICK_DEATHS_TO_GIVE_UP = 3  # in a row: the API stops, with the worker's exit code


def run_uvicorn(host: str, port: int, workers: int, log_level: str) -> int:
    """Run ``workers`` uvicorn processes on ``host:port`` until SIGTERM/SIGINT; the exit code."""
    _refuse_a_taken_port(host, port)  # SO_REUSEPORT would otherwise share it with another server
    if workers == 1:
        _uvicorn_worker(host, port, log_level)
        return 0
    context = multiprocessing.get_context("spawn")
    processes: list[Any] = []
    started_at: dict[int, float] = {}
    stopping = False
    quick_deaths = 0

    def start() -> Any:
        process = context.Process(target=_uvicorn_worker, args=(host, port, log_level), daemon=False)
        process.start()
        started_at[id(process)] = time.monotonic()
        return process

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for process in processes:
            if process.is_alive() and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    processes.extend(start() for _ in range(workers))
    while not stopping:
        time.sleep(0.5)
        for i, process in enumerate(processes):
            if process.is_alive() or stopping:
                continue
            quick = time.monotonic() - started_at.pop(id(process), 0.0) < QUICK_DEATH_S
            quick_deaths = quick_deaths + 1 if quick else 0
            if quick_deaths >= QUICK_DEATHS_TO_GIVE_UP:
                print(
                    f"decision API: workers keep exiting at start (last: {process.exitcode}); stopping",
                    file=sys.stderr,
                    flush=True,
                )
                stop(signal.SIGTERM, None)
                for other in processes:
                    other.join(timeout=60)
                return 1
            print(
                f"decision API: worker {process.pid} exited with {process.exitcode}; restarting it",
                file=sys.stderr,
                flush=True,
            )
            time.sleep(RESTART_DELAY_S)
            processes[i] = start()
    for process in processes:
        process.join(timeout=60)
    return 0


def _refuse_a_taken_port(host: str, port: int) -> None:
    from pipelines.errors import SetupError

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        if probe.connect_ex((host, port)) == 0:
            raise SetupError(f"port {port} on {host} is already in use; choose another with --port")


def _uvicorn_worker(host: str, port: int, log_level: str) -> None:
    import uvicorn

    _stop_with_the_supervisor()
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    config = uvicorn.Config(
        APP,
        factory=True,
        loop="uvloop",
        http="httptools",
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=30,
    )
    uvicorn.Server(config).run(sockets=[sock])


def _stop_with_the_supervisor() -> None:
    """SIGTERM this worker when its supervisor dies (SIGKILL gives it no chance to forward one),
    so no orphan keeps serving the port."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def run_granian(host: str, port: int, workers: int, log_level: str) -> int:
    """The same app in Granian: its HTTP/1.1 parsing and connection handling run in Rust, and each
    worker process runs the app on one event loop (uvloop), as uvicorn's do."""
    from granian.constants import Interfaces, Loops
    from granian.log import LogLevels
    from granian.server import Server

    Server(
        APP,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=workers,
        loop=Loops.uvloop,
        factory=True,
        log_level=LogLevels(log_level),
        log_access=False,
        workers_kill_timeout=30,
    ).serve()
    return 0
