"""One job of a kind per home: a second is refused by name, a killed one's lock is taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipelines.config import load_config
from pipelines.errors import SetupError
from pipelines.services.job_lock import holder, job_lock, last_run


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("JOURNEYLAKE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def hold(home: Path, *kinds: str) -> subprocess.Popen[str]:
    """Another process holding ``kinds`` on ``home`` until it is stopped; returns once it holds them."""
    code = textwrap.dedent(
        f"""
        import sys, time
        from pipelines.config import load_config
        from pipelines.services.job_lock import job_lock
        with job_lock(load_config("local"), *{kinds!r}):
            print("held", flush=True)
            time.sleep(600)
        """
    )
    env = {**os.environ, "JOURNEYLAKE_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_job_of_a_kind_is_refused_naming_the_first_one(home: Path) -> None:
    first = hold(home, "ingest")
    try:
        cfg = load_config("local")
        with pytest.raises(
            SetupError, match=rf"another ingest job runs on home .*pid {first.pid}, started 20"
        ):
            with job_lock(cfg, "ingest"):
                pass
        assert holder(cfg, "ingest") is not None
    finally:
        first.kill()
        first.wait()


def test_jobs_of_different_kinds_run_side_by_side(home: Path) -> None:
    ingest = hold(home, "ingest")
    try:
        with job_lock(load_config("local"), "decide", "dbt"):
            pass
    finally:
        ingest.kill()
        ingest.wait()


def test_the_lock_of_a_killed_job_is_taken_over_by_the_next(home: Path) -> None:
    killed = hold(home, "decide")
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    cfg = load_config("local")
    assert holder(cfg, "decide") is None
    with job_lock(cfg, "decide"):
        held = holder(cfg, "decide")
        assert held is not None and held["pid"] == os.getpid()
    assert last_run(cfg, "decide")["outcome"] == "ok"


def test_a_failed_job_is_recorded_with_its_cause(home: Path) -> None:
    cfg = load_config("local")
    with pytest.raises(OSError):
        with job_lock(cfg, "train"):
            raise OSError(28, "No space left on device")
    assert last_run(cfg, "train")["outcome"] == "failed: OSError: [Errno 28] No space left on device"


def test_the_cli_refuses_a_second_ingest_in_one_line_before_starting_anything(
    home: Path, tmp_path: Path
) -> None:
    first = hold(home, "ingest")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pipelines.cli", "ingest", "--until-idle"],
            capture_output=True,
            text=True,
            env={**os.environ, "JOURNEYLAKE_HOME": str(home)},
        )
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("journeylake ingest: error: another ingest job"), lines
        assert f"pid {first.pid}" in lines[0]
        assert not (home / "warehouse").exists()  # refused before anything started
    finally:
        first.kill()
        first.wait()
