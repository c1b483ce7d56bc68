"""The API worker's spool and delivery process: batches read back as written, orphans are taken
over once, and a delivery process that dies is started again."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.serving.delivery import (
    CLAIMED,
    ORPHAN_AGE_S,
    Batch,
    Deliverer,
    Delivery,
    pending,
    spool_dir,
    write_spool,
)
from pipelines.serving.store import dumps


def test_a_spooled_batch_reads_back_equal_and_as_one_dumps_of_it_would(tmp_path: Path) -> None:
    batch = Batch(
        "journeylake-api-x",
        3,
        served=[
            {"action_id": "offer_savings", "priority": np.float64(0.25), "reason_codes": ["a", 'quote "b"']}
        ],
        log=[{"stage": "ranked", "priority": None, "decided_at": pd.Timestamp("2026-12-07T01:02:03Z")}] * 3,
        responses=[],
        decisions=[{"decision_id": "d-1", "actions": [{"action_id": "offer_savings"}]}],
    )
    path = write_spool(tmp_path, batch)
    assert pending(tmp_path, batch.app_id) == [path]
    doc = json.loads(path.read_text())
    assert doc == json.loads(dumps(batch.__dict__))
    assert Batch(**doc).log[0]["decided_at"] == 1_796_605_323_000  # timestamps as epoch ms


def _orphan(spool: Path, app_id: str, age_s: float) -> Path:
    path = write_spool(spool, Batch(app_id, 1, served=[{"action_id": "offer_savings"}]))
    old = time.time() - age_s
    os.utime(path, (old, old))
    return path


def test_an_orphan_claimed_again_carries_one_claim_and_a_fresh_claim_is_left_alone(jl_config) -> None:
    spool = spool_dir(jl_config)
    spool.mkdir(parents=True, exist_ok=True)
    _orphan(spool, "journeylake-api-gone", ORPHAN_AGE_S + 5)
    for claimer in ("journeylake-api-b", "journeylake-api-c"):
        Deliverer(jl_config, claimer)._claim_orphans()
        [path] = pending(spool, "journeylake-api-gone")
        assert path.name.count(CLAIMED) == 1 and path.name.endswith(f"{CLAIMED}{claimer}.json")
        os.utime(path, (time.time() - ORPHAN_AGE_S - 5,) * 2)  # its claimer died too
    Deliverer(jl_config, "journeylake-api-d")._claim_orphans()
    [path] = pending(spool, "journeylake-api-gone")
    Deliverer(jl_config, "journeylake-api-e")._claim_orphans()  # d's claim is fresh: d delivers it
    assert pending(spool, "journeylake-api-gone") == [path] and path.name.endswith("api-d.json")
    path.unlink()


def test_a_delivery_process_that_dies_is_started_again(jl_config) -> None:
    delivery = Delivery(jl_config)
    delivery.start()
    try:
        first = delivery._process
        assert first is not None
        first.kill()
        deadline = time.monotonic() + 20
        while delivery.restarts == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert delivery.restarts == 1 and delivery.stats.restarts == 1
        assert delivery._process is not first and delivery._process.poll() is None
    finally:
        delivery.close()


def _niceness(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[16])  # field 19 of stat: nice


def test_the_delivery_process_runs_nicer_than_its_worker_by_the_configured_step(jl_config) -> None:
    step = jl_config.decisioning.api.delivery_nice
    assert step > 0  # requests get the CPU before the appends nothing waits for
    delivery = Delivery(jl_config)
    delivery.start()
    try:
        process = delivery._process
        assert process is not None
        worker = _niceness(os.getpid())
        deadline = time.monotonic() + 30  # it renices itself once its config is loaded
        while _niceness(process.pid) == worker and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _niceness(process.pid) == min(19, worker + step)
    finally:
        delivery.close()
