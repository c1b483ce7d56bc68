"""The store clients against a bank's kind of Redis: TLS with the bank's CA and an ACL user.

A real redis-server (built with TLS on Debian) listens on a TLS port only, with a certificate
signed by a CA made here with openssl, and knows one ACL user; the sync and asyncio clients
(sync, write-through and the API) reach it with the settings of ``online_store``.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.config import Config
from pipelines.errors import SetupError

PASSWORD = "tls-store-password-0123456789"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def tls_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """(port, CA file) of a TLS-only redis-server with the ACL user ``decisions``."""
    if not shutil.which("openssl") or not shutil.which("redis-server"):
        pytest.fail("openssl and redis-server are needed (make test installs redis-server)")
    work = tmp_path_factory.mktemp("tls-store")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=work)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
             "-keyout", "server.key", "-out", "server.csr", cwd=work)  # fmt: skip
    (work / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", "san.ext", "-out", "server.pem", cwd=work)  # fmt: skip
    port = _free_port()
    files = {"cert": work / "server.pem", "key": work / "server.key", "ca": work / "ca.pem"}
    args = f"--port 0 --tls-port {port} --bind 127.0.0.1 --tls-auth-clients no --appendonly no".split()
    args += ["--tls-cert-file", str(files["cert"]), "--tls-key-file", str(files["key"])]
    args += ["--tls-ca-cert-file", str(files["ca"]), "--save", "", "--dir", str(work)]
    args += ["--user", "default", "off", "--user", "decisions", "on", f">{PASSWORD}", "~*", "&*", "+@all"]
    server = subprocess.Popen(["redis-server", *args], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        assert server.poll() is None, "redis-server with TLS did not start"
        yield port, files["ca"]
    finally:
        server.terminate()
        server.wait(10)


def _config(jl_config: Config, port: int, **store: object) -> Config:
    settings = {"host": "127.0.0.1", "port": port, "password_env": "JL_TLS_STORE_PASSWORD", **store}
    settings.setdefault("socket_timeout_ms", 5000.0)  # a TLS handshake on a busy test machine
    return jl_config.model_copy(update={"online_store": jl_config.online_store.model_copy(update=settings)})


def test_both_clients_reach_a_tls_store_as_its_acl_user(
    tls_store: tuple[int, Path], jl_config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.serving.store import connect, connect_async

    port, ca = tls_store
    monkeypatch.setenv("JL_TLS_STORE_PASSWORD", PASSWORD)
    cfg = _config(jl_config, port, tls=True, tls_ca_file=ca, username="decisions")
    client = connect(cfg)
    assert client.acl_whoami() == "decisions"
    client.set("jl:tls-check", "1")

    async def read() -> bytes | None:
        aclient = connect_async(cfg)
        try:
            return await aclient.get("jl:tls-check")
        finally:
            await aclient.aclose()

    assert asyncio.run(read()) == b"1"


def test_a_tls_store_refuses_plain_text_and_an_unknown_ca(
    tls_store: tuple[int, Path], jl_config: Config, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from pipelines.serving.store import connect

    port, ca = tls_store
    monkeypatch.setenv("JL_TLS_STORE_PASSWORD", PASSWORD)
    with pytest.raises(SetupError, match="does not answer"):
        connect(_config(jl_config, port, username="decisions"))  # no TLS
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=other",
             "-keyout", "other.key", "-out", "other.pem", cwd=tmp_path)  # fmt: skip
    with pytest.raises(SetupError, match="does not answer"):
        connect(_config(jl_config, port, tls=True, tls_ca_file=tmp_path / "other.pem", username="decisions"))
