"""Kafka as the event source, against a real local broker: the same nothing-lost identity as the
file source (generated = silver + quarantine + duplicates removed), after a SIGKILL of the
stream and across a broker restart while the stream runs. One scenario, since every ingest
process start and catch-up pass costs a minute or more on two cores.

The simulator's lines are published with the batch header the file sink would have used as
file name, so the truth-based reconciliation of the file tests applies unchanged. Only the
topics of a few sources are published (the ingest subscribes to the sources that have a topic),
chosen as in test_ingest_restart.py so that every catch-up stage and every data fault runs.
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

from pipelines.contracts import FAULT_TYPES

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

ROOT = Path(__file__).resolve().parents[2]
# customers first (every record is checked against them), a snapshot, two event streams
LANDED = ("customers", "accounts", "transactions", "digital")
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


# small-data Spark settings for the ingest processes (measured: see test_ingest_restart.py)
SMALL_DATA_SPARK = {
    "shuffle_partitions": 2,
    "java_options": "-XX:ReservedCodeCacheSize=256m -XX:TieredStopAtLevel=1",
    "conf": {
        "spark.databricks.delta.snapshotPartitions": "2",
        "spark.sql.codegen.wholeStage": "false",
        "spark.sql.codegen.factoryMode": "NO_CODEGEN",
    },
}


def _writer(bootstrap: str, prefix: str):
    from pipelines.sources.simulator.kafka_writer import KafkaWriter

    return KafkaWriter(bootstrap, topic_prefix=prefix, partitions=2)


def _publish(bootstrap: str, prefix: str, landing: Path, batches: list[Path]) -> None:
    """Publish landing files as the simulator's Kafka sink would have (one message per line)."""
    with _writer(bootstrap, prefix) as writer:
        for path in batches:
            writer.write_batch(path.parent.name, path.stem, path.read_bytes())


def _batches(landing: Path, *, since: str | None = None, before: str | None = None) -> list[Path]:
    """Landing files in delivery order (batch names start with their delivery time)."""
    files = sorted(landing.glob("*/*.jsonl"), key=lambda p: (p.name, p.parent.name))
    if since:
        files = [p for p in files if p.name >= since]
    if before:
        files = [p for p in files if p.name < before]
    return files


def _assert_nothing_lost(spark, tables, truth: Path, bronze_count) -> None:
    from pipelines.lakehouse.audit import reconcile

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


def _wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen, poll: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"ingest exited early ({proc.returncode}) while waiting for {what}")
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _commits(checkpoint: Path) -> int:
    commits = checkpoint / "commits"
    return len([p for p in commits.iterdir() if p.name.isdigit()]) if commits.is_dir() else 0


def _consumed(checkpoint: Path) -> int:
    """Messages a Kafka ingest query has committed: the end offsets of its last batch, summed."""
    import json

    batches = [int(p.name) for p in (checkpoint / "commits").iterdir() if p.name.isdigit()]
    if not batches:
        return 0
    ends = json.loads((checkpoint / "offsets" / str(max(batches))).read_text().splitlines()[-1])
    return sum(offset for partitions in ends.values() for offset in partitions.values())


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


def _start(env: dict[str, str], log) -> subprocess.Popen:
    """`journeylake ingest` in a process group of its own, so that a kill takes its JVM too."""
    return subprocess.Popen(
        _cli("ingest"), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the process and everything in its group (the Spark JVM too): no shutdown hook runs."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def test_sigkill_and_a_broker_restart_lose_and_duplicate_nothing(spark, jl_config, kafka_broker, tmp_path):
    """Day 1 is streamed; half of day 2 arrives and the stream is SIGKILLed while on it; the stream
    restarts, the broker restarts under it, the rest arrives; the same stream must take it all in
    and every source then reconciles exactly."""
    import pandas as pd

    from pipelines.lakehouse.audit import fault_findings
    from pipelines.services import kafka_broker as broker
    from pipelines.sources.simulator import FaultRates, SimConfig, generate
    from pipelines.tables import Tables

    home = tmp_path / "home"
    generate(SimConfig(customers=40, days=2, seed=13, faults=FaultRates(**FAULTS)), home)
    truth = tmp_path / "truth"
    _land_only(home, truth, LANDED)
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
    base["ingest"]["gold_trigger_interval"] = "2 seconds"
    (conf / "base.yml").write_text(yaml.safe_dump(base))
    local = yaml.safe_load((conf / "targets" / "local.yml").read_text())
    local["spark"].update({k: v for k, v in SMALL_DATA_SPARK.items() if k != "conf"})
    local["spark"]["conf"].update(SMALL_DATA_SPARK["conf"])
    (conf / "targets" / "local.yml").write_text(yaml.safe_dump(local))
    env = {
        **os.environ,
        "JOURNEYLAKE_HOME": str(home),
        "JOURNEYLAKE_METASTORE_PORT": str(_free_port()),
        "JOURNEYLAKE_CONF_DIR": str(conf),
        "JOURNEYLAKE_TARGET": "local",
    }
    # day 2 and whatever is delivered after it, so that messages keep the generated order
    day_two = _batches(published, since="2026-01-02")
    _publish(kafka_broker, prefix, published, _batches(published, before="2026-01-02"))
    lines = pd.read_parquet(truth / "records")["source"].value_counts().to_dict()  # messages per topic
    checkpoints = home / "checkpoints"
    warehouse = home / "warehouse"
    by_path = Tables(lambda layer, name: f"delta.`{warehouse / f'{layer}.db' / name}`")
    log_path = tmp_path / "ingest.log"
    log = log_path.open("w")
    ingest = _start(env, log)
    try:
        _wait_for(
            lambda: _commits(checkpoints / "gold" / "customer_features") >= 1,
            timeout=600,
            what="the first pass to reach gold",
            proc=ingest,
        )
        assert sorted(p.name for p in (checkpoints / "ingest").iterdir()) == sorted(LANDED)
        transactions = checkpoints / "ingest" / "transactions"
        seen = _commits(transactions)
        _publish(kafka_broker, prefix, published, day_two[: len(day_two) // 2])
        _wait_for(
            lambda: (transactions / "offsets" / str(seen)).exists(),
            timeout=300,
            what="new offsets",
            proc=ingest,
            poll=0.05,
        )
        _kill(ingest)  # mid-batch: offsets planned, not yet through bronze and silver
        assert _commits(transactions) == seen

        ingest = _start(env, log)
        _wait_for(
            lambda: _commits(checkpoints / "gold" / "customer_features") >= 2,
            timeout=600,
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
        # the same stream (no final batch run) takes everything in. A batch's commit is written
        # after both its bronze append and its silver write (one query per source), so once the
        # commits cover every published message, silver, quarantine and duplicates hold all of
        # it: the stream is stopped then, and the reconciliation below must hold as it is, with
        # no later batch to fill a gap (polling one here as well only repeated it)
        _wait_for(
            lambda: all(_consumed(checkpoints / "ingest" / s) >= n for s, n in lines.items()),
            timeout=300,
            what="every published message to reach bronze and silver",
            proc=ingest,
        )
        ingest.send_signal(signal.SIGINT)
        ingest.wait(timeout=120)
    finally:
        if ingest.poll() is None:
            _kill(ingest)
        log.close()
    subprocess.run(_cli("metastore", "stop"), env=env, capture_output=True, timeout=120)

    _assert_nothing_lost(
        spark,
        by_path,
        truth,
        lambda s: spark.read.format("delta").load(str(warehouse / "bronze.db" / s)).count(),
    )
    # every bronze row says which message it was; no message was written twice
    bronze = spark.read.format("delta").load(str(warehouse / "bronze.db" / "transactions"))
    assert bronze.where("_kafka_offset IS NULL OR _kafka_timestamp IS NULL").count() == 0
    assert bronze.select("_kafka_partition", "_kafka_offset").distinct().count() == bronze.count()
    assert {r[0] for r in bronze.select("_kafka_topic").distinct().collect()} == {f"{prefix}transactions"}
    # every labelled fault was found where it belongs (quarantined ones with their rule)
    findings = fault_findings(spark, by_path, truth)
    assert set(findings["fault"]) >= set(FAULT_TYPES)
    for row in findings.to_dict("records"):
        assert row["ok"], row
    quarantine = spark.read.format("delta").load(str(warehouse / "silver.db" / "quarantine"))
    assert quarantine.where("rule = 'malformed_json'").count() > 0  # not-JSON messages, like bad lines
