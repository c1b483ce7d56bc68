"""Failures nobody named in advance still end in one line: the innermost cause, where, and the
log file holding the full trace."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pipelines.errors import root_cause


def test_root_cause_reads_the_innermost_java_error_with_its_path(spark, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder"
    try:
        spark.read.text(str(missing)).count()
    except Exception as exc:  # what a Spark call raises through Py4J
        line = root_cause(exc)
    assert line.startswith("AnalysisException: ") and str(missing) in line, line
    assert "\n" not in line


def test_a_failing_file_system_write_is_one_line_naming_the_path_and_the_trace_file(
    spark, tmp_path: Path
) -> None:
    """A home whose checkpoint folder is a file: the streams cannot write their checkpoints."""
    from pipelines.sources.simulator import SimConfig, generate

    home = tmp_path / "home"
    generate(SimConfig(customers=20, days=1, seed=3), home, overwrite=True)
    (home / "checkpoints").write_text("not a folder")
    # a home of its own: its own metastore port too (the session's would be another home's server)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOURNEYLAKE_")}
    env.update(JOURNEYLAKE_HOME=str(home), PYSPARK_PYTHON=sys.executable)
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "ingest", "--until-idle"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    from pipelines.services import metastore

    metastore.stop_servers_under(tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if "journeylake ingest: error:" in line]
    assert len(errors) == 1, result.stderr[-3000:]
    line = errors[0]
    assert "checkpoints" in line, line
    log = home / "logs" / "journeylake.log"
    assert f"(full trace: {log})" in line, line
    assert "Traceback" in log.read_text()
