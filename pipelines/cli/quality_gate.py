"""The data-quality gate of the commands that read validated tables (export-segments, train, score):
their ``--force`` option and the check they run once Spark is up (:mod:`pipelines.quality.gates`)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from pipelines.quality.settings import GatedCommand

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

    from pipelines.config import Config


def add_force_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--force",
        action="store_true",
        help="run even if a table it reads failed a critical expectation at its last validation "
        "(the override is recorded in gold.dq_overrides)",
    )


def pass_quality_gate(spark: SparkSession, cfg: Config, command: GatedCommand, force: bool) -> None:
    """Stop (GateError, one line) or go on, printing what the gate noticed."""
    from pipelines.quality.gates import check_gate

    for note in check_gate(spark, cfg, command, force=force):
        print(note)
