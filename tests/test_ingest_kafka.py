"""Kafka as the event source, against a real local broker: the same nothing-lost identity as the
file source (generated = silver + quarantine + duplicates removed), after a SIGKILL of the
stream and across a broker restart while the stream runs. One scenario, since every ingest
process start and catch-up pass costs minutes on two cores.

The simulator's lines are published with the batch header the file sink would have used as
file name, so the truth-based reconciliation of the file tests applies unchanged.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

ROOT = Path(__file__).resolve().parents[1]


def _writer(bootstrap: str, prefix: str):
    from pipelines.sources.simulator.kafka_writer import KafkaWriter

    return KafkaWriter(bootstrap, topic_prefix=prefix, partitions=2)


def _publish(bootstrap: str, prefix: str, landing: Path, batches: list[Path]) -> None:
    """Publish landing files as the simulator's Kafka sink would have (one message per line)."""
    with _writer(bootstrap, prefix) as writer:
        for path in batches:
            writer.write_batch(path.parent.name, path.stem, path.read_bytes())


def _batches(landing: Path, day: str | None = None, *, not_day: str | None = None) -> list[Path]:
    files = sorted(landing.glob("*/*.jsonl"), key=lambda p: (p.name, p.parent.name))
    if day:
        files = [p for p in files if p.name.startswith(day)]
    if not_day:
        files = [p for p in files if not p.name.startswith(not_day)]
    return files


def _assert_nothing_lost(spark, tables, truth: Path, bronze_count) -> None:
    from pipelines.audit import reconcile

    result = reconcile(spark, tables, truth)
    for row in result.to_dict("records"):
        assert row["ok"], row
        assert row["actual_silver"] + row["actual_quarantine"] + row["actual_duplicate"] == row["lines"]
        assert bronze_count(row["source"]) == row["lines"], row["source"]  # each message once


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli", *args]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"ingest exited early ({proc.returncode}) while waiting for {what}")
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _reconciled(spark, tables, truth: Path) -> bool:
    """Whether every source's lines are in silver, quarantine or duplicates, exactly (no more)."""
    from pipelines.audit import reconcile

    try:
        return bool(reconcile(spark, tables, truth)["ok"].all())
    except Exception:  # a table the stream has not created yet  # noqa: BLE001
        return False


def _commits(checkpoint: Path) -> int:
    commits = checkpoint / "commits"
    return len([p for p in commits.iterdir() if p.name.isdigit()]) if commits.is_dir() else 0


def test_sigkill_and_a_broker_restart_lose_and_duplicate_nothing(spark, jl_config, kafka_broker, tmp_path):
    """Day 1 is streamed; half of day 2 arrives and the stream is SIGKILLed while on it; the stream
    restarts, the broker restarts under it, the rest arrives; the same stream must take it all in
    and every source then reconciles exactly."""
    from pipelines import kafka_broker as broker
    from pipelines.sources.simulator import FaultRates, SimConfig, generate
    from pipelines.tables import Tables

    home = tmp_path / "home"
    generate(SimConfig(customers=40, days=2, seed=13, faults=FaultRates.preset("default")), home)
    landing = home / "landing"
    prefix = "restart."
    # the ingest processes read topics, not files: move the files out of their way
    published = tmp_path / "published"
    shutil.move(str(landing), published)
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    base = yaml.safe_load((conf / "base.yml").read_text())
    base["kafka"]["topic_prefix"] = prefix
    base["ingest"]["source"] = "kafka"
    base["ingest"]["trigger_interval"] = "2 seconds"
    (conf / "base.yml").write_text(yaml.safe_dump(base))
    env = {
        **os.environ,
        "JOURNEYLAKE_HOME": str(home),
        "JOURNEYLAKE_METASTORE_PORT": str(_free_port()),
        "JOURNEYLAKE_CONF_DIR": str(conf),
        "JOURNEYLAKE_TARGET": "local",
    }
    day_two = _batches(published, "2026-01-02")
    _publish(kafka_broker, prefix, published, _batches(published, not_day="2026-01-02"))
    checkpoints = home / "checkpoints"
    warehouse = home / "warehouse"
    by_path = Tables(lambda layer, name: f"delta.`{warehouse / f'{layer}.db' / name}`")
    log_path = tmp_path / "ingest.log"
    log = log_path.open("w")
    ingest = subprocess.Popen(_cli("ingest"), env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for(
            lambda: _commits(checkpoints / "gold" / "customer_features") >= 1,
            timeout=900,
            what="the first pass to reach gold",
            proc=ingest,
        )
        transactions = checkpoints / "bronze" / "transactions"
        seen = _commits(transactions)
        _publish(kafka_broker, prefix, published, day_two[: len(day_two) // 2])
        _wait_for(
            lambda: (transactions / "offsets" / str(seen)).exists(),
            timeout=300,
            what="new offsets",
            proc=ingest,
        )
        ingest.send_signal(signal.SIGKILL)  # mid-batch: offsets planned, maybe not committed
        ingest.wait(timeout=30)

        ingest = subprocess.Popen(_cli("ingest"), env=env, stdout=log, stderr=subprocess.STDOUT)
        _wait_for(
            lambda: _commits(checkpoints / "gold" / "customer_features") >= 2,
            timeout=900,
            what="the restarted stream to catch up",
            proc=ingest,
        )
        broker.down(jl_config)  # the session's broker, under the running stream
        time.sleep(3)
        broker.up(jl_config)
        committed = _commits(transactions)
        _publish(kafka_broker, prefix, published, day_two[len(day_two) // 2 :])
        _wait_for(
            lambda: _commits(transactions) > committed,
            timeout=300,
            what="the stream to go on after the broker restart",
            proc=ingest,
        )
        assert ingest.poll() is None, "the stream must survive a broker restart"
        # the same stream (no final batch run) takes everything in: poll until silver reconciles
        _wait_for(
            lambda: _reconciled(spark, by_path, home / "truth"),
            timeout=900,
            what="every published message to reach silver, quarantine or duplicates",
            proc=ingest,
        )
        ingest.send_signal(signal.SIGINT)
        ingest.wait(timeout=120)
    finally:
        if ingest.poll() is None:
            ingest.kill()
        log.close()
    subprocess.run(_cli("metastore", "stop"), env=env, capture_output=True, timeout=120)

    _assert_nothing_lost(
        spark,
        by_path,
        home / "truth",
        lambda s: spark.read.format("delta").load(str(warehouse / "bronze.db" / s)).count(),
    )
    # every bronze row says which message it was; no message was written twice
    bronze = spark.read.format("delta").load(str(warehouse / "bronze.db" / "transactions"))
    assert bronze.where("_kafka_offset IS NULL OR _kafka_timestamp IS NULL").count() == 0
    assert bronze.select("_kafka_partition", "_kafka_offset").distinct().count() == bronze.count()
    assert {r[0] for r in bronze.select("_kafka_topic").distinct().collect()} == {f"{prefix}transactions"}
    quarantine = spark.read.format("delta").load(str(warehouse / "silver.db" / "quarantine"))
    assert quarantine.where("rule = 'malformed_json'").count() > 0  # not-JSON messages, like bad lines
