"""The lifecycle the local services share, on small stand-in servers (Python one-liners)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.errors import SetupError
from pipelines.services.process import ManagedService, pid_alive, port_answers, stop_under, terminate

# a server that listens on the port given as its argument, until SIGTERM
SERVE = (
    "import socket, sys, time; s = socket.socket(); "
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
    "s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); print('listening', flush=True); time.sleep(600)"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stand_in(tmp_path: Path, port: int | None = None) -> ManagedService:
    return ManagedService(
        name="the stand-in server",
        host="127.0.0.1",
        port=port or free_port(),
        folder=tmp_path / "stand_in",
        log=tmp_path / "logs" / "stand_in.log",
        stop_command="stand-in down",
        port_advice="choose another with stand_in.port",
    )


def serve(svc: ManagedService) -> list[str]:
    return [sys.executable, "-c", SERVE, str(svc.port)]


def always(_seconds: float) -> bool:
    return True


def never() -> bool:
    return False


def test_up_starts_once_records_the_pid_and_down_stops_it(tmp_path: Path) -> None:
    svc = stand_in(tmp_path)
    assert svc.up(lambda: serve(svc), ready=always, recognizes=never, timeout=30) is True
    pid = svc.owned_pid()
    assert pid is not None and pid_alive(pid) and port_answers(svc.host, svc.port)
    assert json.loads(svc.state_file.read_text())["port"] == svc.port
    assert svc.probe().pid == pid

    assert svc.up(lambda: pytest.fail("started twice"), ready=always, recognizes=never, timeout=30) is False
    assert svc.down(10) == f"stopped (pid {pid})"
    assert not pid_alive(pid) and not svc.state_file.exists()
    assert svc.down(10) is None


def test_a_recycled_pid_is_not_taken_for_the_server(tmp_path: Path) -> None:
    svc = stand_in(tmp_path)
    svc.folder.mkdir(parents=True)
    # the state file names a live process (this test's) that did not start when the recorded one did
    svc.state_file.write_text(
        json.dumps({"service": svc.name, "pid": os.getpid(), "start_ticks": 1, "port": svc.port})
    )
    assert svc.owned_pid() is None
    assert svc.down(1) is None
    assert stop_under(tmp_path, svc.name) == []
    assert pid_alive(os.getpid())


def test_something_else_on_the_port_is_refused_by_name(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        svc = stand_in(tmp_path, squatter.getsockname()[1])
        with pytest.raises(SetupError) as raised:
            svc.up(lambda: pytest.fail("started on a taken port"), ready=always, recognizes=never, timeout=5)
    assert str(raised.value) == (
        f"port {svc.port} on 127.0.0.1 is in use by another program (not the stand-in server): "
        "choose another with stand_in.port"
    )


def test_a_server_that_exits_at_start_is_reported_with_its_log(tmp_path: Path) -> None:
    svc = stand_in(tmp_path)
    crash = [sys.executable, "-c", "import sys; print('ERROR bad setting x.y'); sys.exit(3)"]
    with pytest.raises(SetupError) as raised:
        svc.up(lambda: crash, ready=always, recognizes=never, timeout=30)
    message = str(raised.value)
    assert message.startswith(f"the stand-in server on 127.0.0.1:{svc.port} exited at start (code 3): ")
    assert "ERROR bad setting x.y" in message and str(svc.log) in message
    assert not svc.state_file.exists()


def test_a_server_never_ready_is_stopped_after_the_timeout(tmp_path: Path) -> None:
    svc = stand_in(tmp_path)
    with pytest.raises(SetupError, match=r"did not accept clients on 127\.0\.0\.1:\d+ within 2s"):
        svc.up(lambda: serve(svc), ready=lambda _s: False, recognizes=never, timeout=2)
    assert not svc.state_file.exists()
    deadline = time.monotonic() + 10
    while port_answers(svc.host, svc.port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not port_answers(svc.host, svc.port)


def test_terminate_kills_a_process_that_ignores_sigterm() -> None:
    stubborn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
    )
    assert stubborn.stdout is not None and stubborn.stdout.readline() == b"ready\n"
    assert terminate(stubborn.pid, timeout=1.0) == "killed (no clean shutdown within 1s)"
    assert not pid_alive(stubborn.pid)
    assert terminate(stubborn.pid) is None


def test_this_homes_server_on_another_port_must_be_stopped_first(tmp_path: Path) -> None:
    svc = stand_in(tmp_path)
    svc.up(lambda: serve(svc), ready=always, recognizes=never, timeout=30)
    moved = stand_in(tmp_path)  # the same home, configured with another port
    try:
        with pytest.raises(SetupError, match=rf"runs on port {svc.port}, not on the configured {moved.port}"):
            moved.up(lambda: pytest.fail("started a second one"), ready=always, recognizes=never, timeout=5)
        assert f"runs on port {svc.port} instead" in moved.probe().detail
    finally:
        assert svc.down(10) is not None
