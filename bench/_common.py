"""What the benchmarks share: a home and metastore port of their own, and a generated bank in it.

A benchmark must never touch a demo's or another run's state, so each one runs under its own
``JOURNEYLAKE_HOME`` with its own metastore port. Scripts run as ``python bench/<name>.py``, which
puts this folder on the import path.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # journeylake is imported once a benchmark's home and ports are set
    from pyspark.sql import DataFrame, SparkSession

    from pipelines.config import Config
    from pipelines.sources.simulator import SimConfig
    from pipelines.tables import Tables


def free_port() -> int:
    """A TCP port nothing listens on right now (loopback)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def own_home(home: str | None, prefix: str) -> Path:
    """Point journeylake at ``home`` (or a new temporary folder) and a free metastore port."""
    path = Path(home) if home else Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["JOURNEYLAKE_HOME"] = str(path)
    os.environ.setdefault("JOURNEYLAKE_METASTORE_PORT", str(free_port()))
    return path


def ensure_bank(spark: SparkSession, cfg: Config, tables: Tables, home: Path, sim: SimConfig) -> float | None:
    """Generate ``sim`` (a ``SimConfig``) into ``home`` and ingest it, unless a bank is there already.

    Returns the seconds it took, or None when the home already held a generated bank.
    """
    if (home / "truth").exists():
        return None
    from ml.registry import configure
    from ml.text import train_text_model
    from pipelines.lakehouse import ingest
    from pipelines.sources.simulator import generate

    started = time.perf_counter()
    generate(sim, home, overwrite=True)
    train_text_model(cfg, configure(cfg))  # silver reads what customers said with it
    ingest.run(spark, cfg, until_idle=True, tables=tables, progress=lambda _m: None)
    return time.perf_counter() - started


def landing_lines(spark: SparkSession, cfg: Config, source: str) -> DataFrame:
    """A source's landing lines as a bronze micro-batch presents them to silver (``raw``,
    ``_source_file``, ``_ingested_at``), read as one batch job: what the benchmarks parse and
    check outside the stream."""
    from pyspark.sql import functions as F

    from pipelines.lakehouse import bronze

    return (
        spark.read.format("text")
        .option("pathGlobFilter", "*.jsonl")
        .option("recursiveFileLookup", "true")
        .load(str(bronze.landing_dir(cfg, source)))
        .select(
            F.col("value").alias("raw"),
            F.col("_metadata.file_path").alias("_source_file"),
            F.current_timestamp().alias("_ingested_at"),
        )
    )
