"""The online store's local server, against a real redis-server (no mocks).

The module runs its own store in a home and on a port of its own (not the session's, which the
decision API tests use), through the same `journeylake online-store` commands a person runs.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pipelines.config import Config, load_config
from pipelines.services import redis_server
from pipelines.services.process import pid_alive, port_answers

PASSWORD_ENV = "JOURNEYLAKE_STORE_PASSWORD"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "online-store", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@dataclass(frozen=True)
class Home:
    path: Path
    port: int

    @property
    def env(self) -> dict[str, str]:
        env = {**os.environ, "JOURNEYLAKE_HOME": str(self.path), "JOURNEYLAKE_STORE_PORT": str(self.port)}
        env.pop(PASSWORD_ENV, None)
        return env

    def config(self) -> Config:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("JOURNEYLAKE_HOME", str(self.path))
            mp.setenv("JOURNEYLAKE_STORE_PORT", str(self.port))
            mp.delenv(PASSWORD_ENV, raising=False)
            return load_config("local")


def new_home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    return Home(tmp_path_factory.mktemp("store-home"), free_port())


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    """This module's home, its store started with `journeylake online-store up`."""
    home = new_home(tmp_path_factory)
    started = cli("up", env=home.env)
    assert started.returncode == 0, started.stderr
    assert started.stdout.startswith("online store: started, running on"), started.stdout
    yield home
    cli("down", env=home.env)


@pytest.fixture(scope="module")
def cfg(home: Home) -> Config:
    return home.config()


def client(cfg: Config, password: str | None) -> redis.Redis:
    st = cfg.online_store
    # one try: redis-py retries a refused AUTH (a ConnectionError) with backoff, for seconds
    return redis.Redis(
        host=st.host, port=st.port, password=password, socket_timeout=5, retry=Retry(NoBackoff(), 0)
    )


def listening_addresses(port: int) -> set[str]:
    """The local addresses (hex, as /proc/net/tcp* writes them) of sockets listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            next(fh)
            for row in fh:
                local, state = row.split()[1], row.split()[3]
                address, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    found.add(address)
    return found


def test_up_is_idempotent_and_says_already_running(home: Home, cfg: Config) -> None:
    pid = redis_server.status(cfg).pid
    assert pid is not None and pid_alive(pid)
    again = cli("up", env=home.env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"online store: already running on 127.0.0.1:{home.port} (pid {pid})")
    assert redis_server.status(cfg).pid == pid


def test_two_ups_launched_together_start_one_server(tmp_path_factory: pytest.TempPathFactory) -> None:
    other = new_home(tmp_path_factory)
    try:
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "pipelines.cli", "online-store", "up"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=other.env,
            )
            for _ in range(2)
        ]
        outputs = [proc.communicate(timeout=120) for proc in procs]
        assert [proc.returncode for proc in procs] == [0, 0], outputs
        said = sorted(out.split(",")[0].split(" running")[0] for out, _err in outputs)
        assert said == ["online store: already", "online store: started"]
    finally:
        cli("down", env=other.env)


def test_status_reports_port_pid_data_and_memory(home: Home, cfg: Config) -> None:
    result = cli("status", env=home.env)
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    pid = redis_server.status(cfg).pid
    assert first.startswith(f"online store: running on 127.0.0.1:{home.port} (pid {pid}); ")
    assert f"data {home.path / 'online_store'}" in first
    assert f"used of {cfg.online_store.maxmemory}" in first


def test_a_client_without_the_password_is_refused(cfg: Config) -> None:
    with pytest.raises(redis.AuthenticationError):
        client(cfg, None).ping()
    with pytest.raises(redis.AuthenticationError):
        client(cfg, "not-the-password").ping()
    assert client(cfg, redis_server.store_password(cfg)).ping()


def test_the_generated_password_and_the_conf_holding_it_are_private(home: Home, cfg: Config) -> None:
    password_file = redis_server.password_file(cfg)
    assert password_file.read_text().strip() == redis_server.store_password(cfg)
    assert (password_file.stat().st_mode & 0o777) == 0o600
    assert ((home.path / "online_store" / "redis.conf").stat().st_mode & 0o777) == 0o600


def test_it_listens_on_loopback_only_in_protected_mode(cfg: Config) -> None:
    assert listening_addresses(cfg.online_store.port) == {"0100007F"}  # 127.0.0.1, and no IPv6
    server = client(cfg, redis_server.store_password(cfg))
    assert server.config_get("bind") == {"bind": "127.0.0.1"}
    assert server.config_get("protected-mode") == {"protected-mode": "yes"}


def test_it_persists_every_second_without_snapshot_forks_and_never_evicts(cfg: Config) -> None:
    server = client(cfg, redis_server.store_password(cfg))
    assert server.config_get("appendonly") == {"appendonly": "yes"}
    assert server.config_get("appendfsync") == {"appendfsync": "everysec"}
    assert server.config_get("save") == {"save": ""}
    assert server.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    assert server.config_get("dir") == {"dir": str(redis_server.store_dir(cfg))}


def test_data_persists_across_down_and_up(home: Home, cfg: Config) -> None:
    client(cfg, redis_server.store_password(cfg)).set("journeylake:probe", "kept")
    before = redis_server.status(cfg).pid
    down = cli("down", env=home.env)
    assert down.returncode == 0, down.stderr
    assert down.stdout.strip() == f"online store: stopped (pid {before})"
    assert before is not None and not pid_alive(before)
    assert not port_answers("127.0.0.1", home.port)

    up = cli("up", env=home.env)
    assert up.returncode == 0, up.stderr
    assert up.stdout.startswith("online store: started")
    assert redis_server.status(cfg).pid != before
    assert client(cfg, redis_server.store_password(cfg)).get("journeylake:probe") == b"kept"


def test_down_stops_it_and_a_second_down_says_nothing_ran(home: Home, cfg: Config) -> None:
    try:
        assert cli("down", env=home.env).returncode == 0
        again = cli("down", env=home.env)
        assert again.returncode == 0, again.stderr
        assert "not running" in again.stdout
        state = cli("status", env=home.env)
        assert state.returncode == 3
        assert state.stdout.startswith(f"online store: stopped (would listen on 127.0.0.1:{home.port}")
        assert not (home.path / "online_store" / "server.json").exists()
    finally:
        assert cli("up", env=home.env).returncode == 0  # for the tests after this one


def test_the_password_comes_from_the_environment_when_set(tmp_path_factory: pytest.TempPathFactory) -> None:
    other = new_home(tmp_path_factory)
    env = {**other.env, PASSWORD_ENV: "from-the-environment"}
    try:
        assert cli("up", env=env).returncode == 0
        cfg = other.config()
        assert client(cfg, "from-the-environment").ping()
        assert not redis_server.password_file(cfg).exists()  # nothing written when the env gives it
    finally:
        cli("down", env=env)


def test_a_port_taken_by_another_program_is_a_one_line_error(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    other = new_home(tmp_path_factory)
    with socket.socket() as squatter:  # a program that accepts connections and never answers
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", other.port))
        squatter.listen()
        result = cli("up", env=other.env)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(
        f"journeylake online-store: error: port {other.port} on 127.0.0.1 is in use by another program"
    )
    assert "JOURNEYLAKE_STORE_PORT" in result.stderr
    assert not (other.path / "online_store" / "server.json").exists()


def test_a_missing_redis_server_names_the_package(tmp_path_factory: pytest.TempPathFactory) -> None:
    other = new_home(tmp_path_factory)
    result = cli("up", env={**other.env, "PATH": str(other.path)})  # nothing on PATH
    assert result.returncode == 1
    assert "redis-server is not installed" in result.stderr
    assert "apt-get install redis-server" in result.stderr
    assert "Traceback" not in result.stderr


def test_stop_servers_under_stops_a_server_started_in_a_test_home(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    other = new_home(tmp_path_factory)
    cfg = other.config()
    state, started = redis_server.up(cfg)
    assert started and state.pid is not None
    assert redis_server.stop_servers_under(other.path) == [state.pid]
    assert not pid_alive(state.pid)
