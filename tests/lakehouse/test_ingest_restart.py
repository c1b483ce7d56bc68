"""Restart safety and multi-process access, with the real CLI in separate processes.

An ingest process streams a generated bank in its own home (and its own metastore); while it
runs, a second process queries gold through `journeylake sql -e`, and a real JDBC/Thrift client
(PyHive) queries gold through the SQL endpoint (`journeylake sql`); then new files land, the
ingest process (Python driver and its JVM) is killed with SIGKILL while a micro-batch of them is
in flight, restarted, and every landing line must be accounted for exactly once.

Only a few sources land, chosen so that every stage of the catch-up pass (customers, a snapshot,
events) and every data fault runs (duplicates, late and out-of-order events, malformed lines,
missing fields, wrong types, unknown customers, schema drift, a malformed snapshot): a source
costs two streaming queries in every process, and the guarantees are per query, the same for
each source.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipelines.contracts import FAULT_TYPES

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
# customers first (every record is checked against them), a snapshot, three event streams
# (consent too: without it the decision job may contact nobody)
LANDED = ("customers", "accounts", "transactions", "digital", "consent")
# higher than the "default" preset, so that a small bank has every fault in the landed sources
FAULTS = {
    "duplicate": 0.04,
    "late": 0.03,
    "out_of_order": 0.03,
    "malformed_json": 0.02,
    "missing_required": 0.02,
    "wrong_type": 0.02,
    "unknown_customer": 0.02,
    "snapshot_malformed_json": 0.03,
    "snapshot_missing_required": 0.03,
}
DAY_TWO = "2026-01-02"
SQL_PASSWORD = "restart-test-analyst-password"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(
    predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, poll: float = 0.5
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited early ({proc.returncode}) while waiting for {what}")
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli", *args]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


# Every process of the test handles a few thousand rows at most, so its time goes to fixed
# costs: JIT and code generation, per plan and per query. Measured on the catch-up pass of
# this test's bank (4 sources, 2 cores): 147 s wall / 262 s JVM CPU with the local target's
# settings, 147 s / 194 s with the quick JIT compiler only, 120 s / 147 s with Spark's code
# generation off as well. Neither changes what is computed.
SMALL_DATA_SPARK = {
    "shuffle_partitions": 2,
    "java_options": "-XX:ReservedCodeCacheSize=256m -XX:TieredStopAtLevel=1",
    "conf": {
        "spark.databricks.delta.snapshotPartitions": "2",
        "spark.sql.codegen.wholeStage": "false",
        "spark.sql.codegen.factoryMode": "NO_CODEGEN",
    },
}


def _test_conf(folder: Path) -> Path:
    """conf/ with a short trigger interval and small-data Spark settings, for every process."""
    shutil.copytree(ROOT / "conf", folder)
    local = folder / "targets" / "local.yml"
    target = yaml.safe_load(local.read_text()) or {}
    # compaction every 3 s: it runs beside the stream's appends, up to the kill
    target.setdefault("ingest", {}).update(
        trigger_interval="2 seconds", gold_trigger_interval="2 seconds", compact_every_minutes=0.05
    )
    spark = target.setdefault("spark", {})
    spark.update({k: v for k, v in SMALL_DATA_SPARK.items() if k != "conf"})
    spark.setdefault("conf", {}).update(SMALL_DATA_SPARK["conf"])
    local.write_text(yaml.safe_dump(target))
    return folder


def _land_only(home: Path, truth: Path, sources: tuple[str, ...]) -> None:
    """Keep ``sources`` in the landing folder and their lines in a truth of their own."""
    import pandas as pd

    for folder in (home / "landing").iterdir():
        if folder.name not in sources:
            shutil.rmtree(folder)
    records = pd.read_parquet(home / "truth" / "records")
    records = records[records["source"].isin(sources)]
    (truth / "records").mkdir(parents=True)
    records.to_parquet(truth / "records" / "part-00000.parquet", index=False)


def _commits(checkpoint: Path) -> set[int]:
    folder = checkpoint / "commits"
    return {int(p.name) for p in folder.iterdir() if p.name.isdigit()} if folder.is_dir() else set()


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the process and everything in its group (the Spark JVM too): no shutdown hook runs."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def test_sigkill_mid_stream_loses_and_duplicates_nothing_while_sql_reads(spark, tmp_path):
    from pyhive import hive

    from pipelines.lakehouse.audit import fault_findings, reconcile
    from pipelines.sources.simulator import FaultRates, SimConfig, generate
    from pipelines.tables import Tables

    home = tmp_path / "home"
    generate(SimConfig(customers=40, days=2, seed=11, faults=FaultRates(**FAULTS)), home)
    truth = tmp_path / "truth"
    _land_only(home, truth, LANDED)
    env = {
        **os.environ,
        "JOURNEYLAKE_HOME": str(home),
        "JOURNEYLAKE_METASTORE_PORT": str(_free_port()),
        "JOURNEYLAKE_CONF_DIR": str(_test_conf(tmp_path / "conf")),
        "JOURNEYLAKE_TARGET": "local",
        "JOURNEYLAKE_SQL_PASSWORD": SQL_PASSWORD,  # the endpoint's first user (analyst) gets it
    }

    # hold back the second day's deliveries (and any after it, so that delivery order stays as
    # generated): they arrive while the stream is running
    landing = home / "landing"
    held = tmp_path / "held"
    for path in sorted(p for p in landing.glob("*/*.jsonl") if p.name >= DAY_TWO):
        (held / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), held / path.parent.name / path.name)
    assert {p.name for p in held.iterdir()} >= {"transactions", "digital", "accounts"}
    checkpoints = home / "checkpoints"
    logs = {name: (tmp_path / f"{name}.log").open("w") for name in ("ingest", "endpoint", "restart")}
    ingest = subprocess.Popen(
        _cli("ingest"), env=env, stdout=logs["ingest"], stderr=subprocess.STDOUT, start_new_session=True
    )
    endpoint = query = restart = None
    try:
        # The SQL endpoint starts beside the catch-up pass, its clients query once gold has rows.
        # Not before the stream's first query: two processes creating a fresh metastore's schema
        # at once can deadlock in it.
        _wait_for(lambda: (checkpoints / "ingest").is_dir(), timeout=300, what="the stream", proc=ingest)
        port = _free_port()
        endpoint = subprocess.Popen(
            _cli("sql", "--port", str(port)), env=env, stdout=logs["endpoint"], stderr=subprocess.STDOUT
        )
        _wait_for(
            lambda: 0 in _commits(checkpoints / "gold" / "customer_features"),
            timeout=600,
            what="the first pass to reach gold",
            proc=ingest,
        )
        # A second process reads gold while an ingest process streams: it starts now and reads
        # while this one, or the restarted one, runs (checked below). A JDBC client reads now.
        query = subprocess.Popen(
            _cli("sql", "-e", "SELECT count(*) AS n FROM gold.customer_features", "--format", "csv"),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        _wait_for(lambda: _listening(port), timeout=300, what="the SQL endpoint", proc=endpoint)
        connection = hive.connect(
            host="127.0.0.1", port=port, username="analyst", password=SQL_PASSWORD, auth="CUSTOM"
        )
        try:
            cursor = connection.cursor()
            cursor.execute("SELECT count(*) FROM gold.customer_features")
            assert cursor.fetchone()[0] > 0
            cursor.execute("SELECT count(*) FROM silver.transactions WHERE amount IS NOT NULL")
            assert cursor.fetchone()[0] > 0
        finally:
            connection.close()
        endpoint.terminate()
        assert ingest.poll() is None, "ingest should still be running"

        # new files land; kill as soon as the ingest query has planned them as a micro-batch
        for source_dir in held.iterdir():
            for path in sorted(source_dir.iterdir()):
                shutil.move(str(path), landing / source_dir.name / path.name)
        _wait_for(
            lambda: (checkpoints / "ingest" / "transactions" / "offsets" / "1").exists(),
            timeout=300,
            what="the stream to pick up new files",
            proc=ingest,
            poll=0.05,
        )
        _kill(ingest)
        # the kill landed mid-work: the new files had not been through bronze and silver
        assert 1 not in _commits(checkpoints / "ingest" / "transactions")
        # the running stream's tables were compacted meanwhile, and nothing below may be lost or
        # repeated for it
        compacted = [
            log.parent.parent.name
            for log in (home / "warehouse").glob("*.db/*/_delta_log/*.json")
            if '"operation":"OPTIMIZE"' in log.read_text()
        ]
        assert compacted, "no table was compacted while the stream ran"

        # the restart resumes from the checkpoints and takes in everything landed
        restart = subprocess.Popen(
            _cli("ingest", "--until-idle"), env=env, stdout=logs["restart"], stderr=subprocess.STDOUT
        )
        out, err = query.communicate(timeout=300)
        assert query.returncode == 0, err
        assert int(out.strip().splitlines()[-1]) > 0
        assert restart.poll() is None, "`sql -e` should have read while an ingest process ran"
        endpoint.wait(timeout=120)
        assert not _listening(port), "stopping `journeylake sql` must stop the endpoint"
        restart.wait(timeout=600)
        assert restart.returncode == 0, (tmp_path / "restart.log").read_text()[-3000:]
        _kill_and_restart_decide(env, home, tmp_path)
    finally:
        if ingest.poll() is None:
            _kill(ingest)
        for proc in (endpoint, query, restart):
            if proc is not None and proc.poll() is None:
                proc.kill()
        for log in logs.values():
            log.close()
    subprocess.run(_cli("metastore", "stop"), env=env, capture_output=True, timeout=120)

    warehouse = home / "warehouse"
    by_path = Tables(lambda layer, name: f"delta.`{warehouse / f'{layer}.db' / name}`")
    result = reconcile(spark, by_path, truth)
    assert sorted(result["source"]) == sorted(LANDED)
    for row in result.to_dict("records"):
        assert row["ok"], row
        assert row["actual_silver"] + row["actual_quarantine"] + row["actual_duplicate"] == row["lines"]
    # bronze holds every landing line exactly once
    for row in result.to_dict("records"):
        bronze_rows = spark.read.format("delta").load(str(warehouse / "bronze.db" / row["source"])).count()
        assert bronze_rows == row["lines"], row["source"]
    # every labelled fault was found where it belongs (quarantined ones with their rule)
    findings = fault_findings(spark, by_path, truth)
    assert set(findings["fault"]) >= set(FAULT_TYPES)
    for row in findings.to_dict("records"):
        assert row["ok"], row
    _check_decisions_after_the_kill(spark, warehouse)


def _log_versions(table: Path) -> set[int]:
    folder = table / "_delta_log"
    return {int(p.stem) for p in folder.glob("*.json") if p.stem.isdigit()} if folder.is_dir() else set()


def _kill_and_restart_decide(env: dict[str, str], home: Path, tmp_path: Path) -> None:
    """`journeylake decide` is SIGKILLed right after its first decision-log commit, then restarted.

    That is the window where the log append is in Delta but the stream's checkpoint has not
    recorded the batch: the restart replays the batch, and the idempotent append must skip it.
    """
    log_table = home / "warehouse" / "gold.db" / "decision_log"
    with (tmp_path / "decide.log").open("w") as out:
        decide = subprocess.Popen(
            _cli("decide"), env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            _wait_for(
                lambda: any(v >= 1 for v in _log_versions(log_table)),
                timeout=600,
                what="the first decision-log commit",
                proc=decide,
                poll=0.05,
            )
        finally:
            _kill(decide)
    again = subprocess.run(
        _cli("decide", "--until-idle"), env=env, capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]


def _check_decisions_after_the_kill(spark, warehouse: Path) -> None:
    from pipelines.nba.decide import current_serving_sql

    log = spark.read.format("delta").load(str(warehouse / "gold.db" / "decision_log")).toPandas()
    served = spark.read.format("delta").load(str(warehouse / "gold.db" / "served_actions"))
    served.createOrReplaceTempView("served_after_kill")
    serving = spark.sql(current_serving_sql("served_after_kill")).toPandas()
    assert len(log) and len(serving), "the restarted decision job decided nothing"
    # no candidate of any decision is logged twice, whatever the kill interrupted
    assert not log.duplicated(["decision_id", "action_id", "channel"]).any()
    assert not served.toPandas().duplicated(["decision_id", "channel"]).any()
    assert not serving.duplicated(["customer_number", "channel"]).any()
    chosen = log[log["stage"] == "chosen"]
    served = set(zip(serving["decision_id"], serving["action_id"], serving["channel"], strict=True))
    assert served <= set(zip(chosen["decision_id"], chosen["action_id"], chosen["channel"], strict=True))
