"""Gates: a command stops before it reads a table whose last validation failed a critical expectation.

``quality.gates`` in ``conf/base.yml`` lists, per gated command (``export-segments``, ``train``,
``score``), the suites it depends on. The last results of each in ``gold.dq_results`` decide:
a failed critical expectation stops the command with one line naming the suite, the expectation
and what GX observed; ``--force`` runs it anyway, and the override is appended to
``gold.dq_overrides`` (who, where, when, which command, what had failed) for the auditors. A
suite never validated does not stop anything; the command says so.
"""

from __future__ import annotations

import getpass
import socket
from dataclasses import dataclass
from datetime import UTC, datetime

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipelines.config import Config
from pipelines.errors import JourneylakeError
from pipelines.quality.settings import GatedCommand
from pipelines.services.spark import ensure_schemas
from pipelines.tables import Tables

OVERRIDES_DDL = """
    overridden_at TIMESTAMP, command STRING, user STRING, host STRING, suite STRING,
    run_id STRING, validated_at TIMESTAMP, expectations ARRAY<STRING>, observed STRING
"""


class GateError(JourneylakeError):
    """A gated command met a failed critical expectation (and no ``--force``)."""


@dataclass(frozen=True)
class Failure:
    suite: str
    run_id: str
    validated_at: datetime
    expectations: tuple[tuple[str, str], ...]  # (expectation, what GX observed)

    def describe(self) -> str:
        failed = "; ".join(f"{name} ({observed})" for name, observed in self.expectations)
        return f"{self.suite} (validated {self.validated_at:%Y-%m-%d %H:%M} UTC) failed {failed}"


def check_gate(spark: SparkSession, cfg: Config, command: GatedCommand, *, force: bool = False) -> list[str]:
    """Raise GateError if a suite ``command`` depends on last failed a critical expectation;
    with ``force``, record the override instead. Returns notes to print (suites never
    validated, overrides recorded)."""
    suites = cfg.quality.gates.get(command, ())
    if not suites:
        return []
    tables = Tables.from_config(cfg)
    results = tables.gold(cfg.quality.results_table)
    if not spark.catalog.tableExists(results):
        return [
            f"data quality: nothing validated on this home yet (`journeylake validate`); {command} goes on"
        ]
    failures, unvalidated = last_failures(spark, results, suites)
    notes = []
    if unvalidated:
        notes.append(f"data quality: never validated: {', '.join(unvalidated)}")
    if not failures:
        return notes
    if not force:
        first = failures[0]
        more = f" (and {len(failures) - 1} more suites)" if len(failures) > 1 else ""
        raise GateError(
            f"{command} stopped: {first.describe()}{more}. Fix the data, then `journeylake validate "
            f"--table {first.suite}`; or run {command} with --force (recorded in "
            f"{tables.gold(cfg.quality.overrides_table)})"
        )
    _record_override(spark, cfg, tables, command, failures)
    notes += [f"data quality: --force past {f.describe()} (recorded)" for f in failures]
    return notes


def last_failures(
    spark: SparkSession, results: str, suites: tuple[str, ...]
) -> tuple[list[Failure], list[str]]:
    """Per suite, the failed critical expectations of its latest validation; and the suites
    with no validation at all."""
    rows = spark.table(results).where(F.col("suite").isin(list(suites)))
    latest = rows.groupBy("suite").agg(F.max("run_time").alias("run_time"))
    last = rows.join(latest, ["suite", "run_time"]).where("NOT success AND severity = 'critical'")
    found = {r["suite"] for r in latest.select("suite").collect()}
    failures: dict[str, Failure] = {}
    for r in last.orderBy("suite", "expectation").collect():
        observed = (
            f"{r['unexpected_count']:,} unexpected of {r['element_count'] or 0:,}"
            if r["unexpected_count"] is not None
            else (r["error"] or f"observed {r['observed_value']}")
        )
        old = failures.get(r["suite"])
        entry = (r["expectation"], observed)
        failures[r["suite"]] = Failure(
            r["suite"], r["run_id"], r["run_time"], (*(old.expectations if old else ()), entry)
        )
    ordered = [failures[s] for s in suites if s in failures]
    return ordered, [s for s in suites if s not in found]


def _record_override(
    spark: SparkSession, cfg: Config, tables: Tables, command: str, failures: list[Failure]
) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    user, host = getpass.getuser(), socket.gethostname()
    rows = [
        (
            now,
            command,
            user,
            host,
            f.suite,
            f.run_id,
            f.validated_at,
            [name for name, _ in f.expectations],
            "; ".join(f"{name}: {observed}" for name, observed in f.expectations),
        )
        for f in failures
    ]
    target = tables.gold(cfg.quality.overrides_table)
    if not spark.catalog.tableExists(target):
        ensure_schemas(spark, cfg)
        spark.sql(f"CREATE TABLE IF NOT EXISTS {target} ({OVERRIDES_DDL}) USING DELTA")
    spark.createDataFrame(rows, schema=OVERRIDES_DDL).write.format("delta").mode("append").saveAsTable(target)
