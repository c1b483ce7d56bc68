"""`journeylake doctor`: what the operator coming in on Monday needs to fix, one line each."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.config import load_config
from pipelines.services.job_lock import job_lock


def doctor(home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOURNEYLAKE_")}
    env["JOURNEYLAKE_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "doctor"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_doctor_names_a_failed_job_and_landing_files_that_will_not_be_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    landing = home / "landing" / "transactions"
    (landing / "_incoming").mkdir(parents=True)
    (landing / "_incoming" / "half-written.jsonl").write_text("{}\n")
    (landing / "retry").mkdir()
    (landing / "retry" / "ok.jsonl").write_text("{}\n")
    (landing / "export.csv").write_text("a,b\n")
    monkeypatch.setenv("JOURNEYLAKE_HOME", str(home))
    with pytest.raises(OSError), job_lock(load_config("local"), "train"):
        raise OSError(28, "No space left on device")

    result = doctor(home)

    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    failed = [line for line in lines if line.startswith("FAIL")]
    assert len(failed) == 1 and "job train" in failed[0], lines
    assert "No space left on device" in failed[0] and "journeylake.log" in failed[0]
    warned = " ".join(line for line in lines if "landing transactions" in line)
    assert "_incoming/half-written.jsonl" in warned and "export.csv" in warned, lines
    assert "ok.jsonl" not in warned
    assert lines[-1].startswith("1 to fix")
