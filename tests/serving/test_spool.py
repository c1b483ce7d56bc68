"""The API worker's spool: a batch written row by row reads back as the batch it was."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.serving.delivery import Batch, pending, write_spool
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
