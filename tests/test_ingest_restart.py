"""Restart safety and multi-process access, with the real CLI in separate processes.

An ingest process streams a generated bank in its own home (and its own metastore); while it
runs, a second process queries gold through `journeylake sql -e`, and a real JDBC/Thrift client
(PyHive) queries gold through the SQL endpoint (`journeylake sql`); then the ingest process is
killed with SIGKILL in the middle of new work, restarted, and every landing line must be
accounted for exactly once.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited early ({proc.returncode}) while waiting for {what}")
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli", *args]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _query_gold_over_jdbc(env: dict[str, str], tmp_path) -> None:
    """Start the SQL endpoint with the real CLI and read gold with a HiveServer2 client library."""
    from pyhive import hive

    port = _free_port()
    log = (tmp_path / "endpoint.log").open("w")
    endpoint = subprocess.Popen(
        _cli("sql", "--port", str(port)), env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        _wait_for(lambda: _listening(port), timeout=300, what="the SQL endpoint", proc=endpoint)
        connection = hive.connect(host="127.0.0.1", port=port, username="analyst")
        try:
            cursor = connection.cursor()
            cursor.execute("SELECT count(*) FROM gold.customer_features")
            assert cursor.fetchone()[0] > 0
            cursor.execute("SELECT count(*) FROM silver.transactions WHERE amount IS NOT NULL")
            assert cursor.fetchone()[0] > 0
        finally:
            connection.close()
    finally:
        endpoint.terminate()
        endpoint.wait(timeout=120)
        log.close()
    assert not _listening(port), "stopping `journeylake sql` must stop the endpoint"


def test_sigkill_mid_stream_loses_and_duplicates_nothing_while_sql_reads(spark, tmp_path):
    from pipelines.audit import reconcile
    from pipelines.sources.simulator import FaultRates, SimConfig, generate
    from pipelines.tables import Tables

    home = tmp_path / "home"
    generate(SimConfig(customers=60, days=2, seed=11, faults=FaultRates.preset("default")), home)
    env = {**os.environ, "JOURNEYLAKE_HOME": str(home), "JOURNEYLAKE_METASTORE_PORT": str(_free_port())}
    env["JOURNEYLAKE_TARGET"] = "local"

    # hold back the second day of events: they arrive while the stream is running
    landing = home / "landing"
    held = tmp_path / "held"
    for source_dir in landing.iterdir():
        for path in sorted(source_dir.glob("*.jsonl")):
            if "2026-01-02" in path.name:
                (held / source_dir.name).mkdir(parents=True, exist_ok=True)
                shutil.move(str(path), held / source_dir.name / path.name)
    checkpoints = home / "checkpoints"
    log = (tmp_path / "ingest.log").open("w")
    ingest = subprocess.Popen(_cli("ingest"), env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for(
            lambda: (checkpoints / "gold" / "customer_features" / "commits" / "0").exists(),
            timeout=900,
            what="the first pass to reach gold",
            proc=ingest,
        )
        # a second process reads silver and gold while the first keeps streaming
        query = subprocess.run(
            _cli("sql", "-e", "SELECT count(*) AS n FROM gold.customer_features", "--format", "csv"),
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert query.returncode == 0, query.stderr
        assert int(query.stdout.strip().splitlines()[-1]) > 0
        assert ingest.poll() is None, "ingest should still be running"
        _query_gold_over_jdbc(env, tmp_path)
        assert ingest.poll() is None, "ingest should still be running"

        for source_dir in held.iterdir():
            for path in sorted(source_dir.iterdir()):
                shutil.move(str(path), landing / source_dir.name / path.name)
        # kill as soon as the new files are being processed (bronze picked them up)
        _wait_for(
            lambda: (checkpoints / "bronze" / "transactions" / "offsets" / "1").exists(),
            timeout=300,
            what="the stream to pick up new files",
            proc=ingest,
        )
        ingest.send_signal(signal.SIGKILL)
        ingest.wait(timeout=30)
    finally:
        if ingest.poll() is None:
            ingest.kill()
        log.close()

    restart = subprocess.run(
        _cli("ingest", "--until-idle"), env=env, capture_output=True, text=True, timeout=900
    )
    assert restart.returncode == 0, restart.stdout[-2000:] + restart.stderr[-2000:]
    subprocess.run(_cli("metastore", "stop"), env=env, capture_output=True, timeout=120)

    warehouse = home / "warehouse"
    by_path = Tables(lambda layer, name: f"delta.`{warehouse / f'{layer}.db' / name}`")
    result = reconcile(spark, by_path, home / "truth")
    for row in result.to_dict("records"):
        assert row["ok"], row
        assert row["actual_silver"] + row["actual_quarantine"] + row["actual_duplicate"] == row["lines"]
    # bronze holds every landing line exactly once
    for row in result.to_dict("records"):
        bronze_rows = spark.read.format("delta").load(str(warehouse / "bronze.db" / row["source"])).count()
        assert bronze_rows == row["lines"], row["source"]
