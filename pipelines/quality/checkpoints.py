"""Checkpoints: the suites run through Great Expectations itself, on Spark DataFrames of the tables.

``journeylake validate`` validates
- a silver table's rows ingested since its last validation (a watermark on ``_ingested_at``, kept
  as the ``rows_until`` of its last results), or all of them with ``full``;
- a gold table whole (a mart is rebuilt as a whole by ``dbt build``).

Each suite is one GX checkpoint (its validation definition reads the DataFrame passed at run
time) in a file-backed GX project under the home (``paths.gx``): suites, validation results and
the Data Docs site live there, rebuilt from ``conf/gx/expectations`` at every run, so the
repository's files stay the only source. Every expectation's result is also appended to
``gold.dq_results`` for analysts and for the gates (:mod:`pipelines.quality.gates`).

GX is imported here only (about six seconds): the stream never needs it.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipelines.config import Config, display_path
from pipelines.errors import ConfigError, InputError
from pipelines.quality.data_docs import localize_site
from pipelines.quality.suites import Rule, Suite, load_suites
from pipelines.services.spark import ensure_schemas, one_row
from pipelines.tables import Tables, schema_name

RESULTS_DDL = """
    run_id STRING, run_time TIMESTAMP, suite STRING, layer STRING, table_name STRING,
    expectation STRING, expectation_type STRING, column_name STRING, severity STRING,
    success BOOLEAN, observed_value STRING, unexpected_count BIGINT, unexpected_percent DOUBLE,
    element_count BIGINT, rows_validated BIGINT, rows_from TIMESTAMP, rows_until TIMESTAMP,
    error STRING
"""
DATASOURCE = "journeylake"
SITE = "local_site"
# the silver column a watermark follows: when each row was ingested
INGESTED_AT = "_ingested_at"


@dataclass(frozen=True)
class ExpectationOutcome:
    rule: Rule
    success: bool
    observed: str | None = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    element_count: int | None = None
    error: str | None = None

    def summary(self) -> str:
        """What failed, in one phrase: the count or observed value GX reported, or its error."""
        if self.error:
            return f"error: {self.error}"
        if self.unexpected_count is not None:
            share = f" ({self.unexpected_percent:.2f}%)" if self.unexpected_percent is not None else ""
            return f"{self.unexpected_count:,} unexpected of {self.element_count or 0:,}{share}"
        return f"observed {self.observed}"


@dataclass
class SuiteOutcome:
    suite: Suite
    rows: int = 0
    rows_from: datetime | None = None
    rows_until: datetime | None = None
    results: list[ExpectationOutcome] = field(default_factory=list)
    skipped: str | None = None  # why the suite was not run (no table, no new rows)
    seconds: float = 0.0

    @property
    def failed(self) -> list[ExpectationOutcome]:
        return [r for r in self.results if not r.success]

    @property
    def blocking(self) -> list[ExpectationOutcome]:
        """Failed critical expectations: these stop the gated commands."""
        return [r for r in self.failed if r.rule.severity == "critical"]


@dataclass
class ValidationRun:
    run_id: str
    run_time: datetime
    outcomes: list[SuiteOutcome]
    docs: Path

    @property
    def blocking(self) -> list[tuple[SuiteOutcome, ExpectationOutcome]]:
        return [(o, r) for o in self.outcomes for r in o.blocking]

    def summary(self, per_suite: bool = True) -> list[str]:
        """One screen: each suite's line (``per_suite``), then what failed or was skipped, then
        where to look."""
        ran = [o for o in self.outcomes if o.skipped is None]
        expectations = sum(len(o.results) for o in ran)
        failed = sum(len(o.failed) for o in ran)
        lines = [
            f"validated {len(ran)} suites, {expectations:,} expectations: "
            f"{expectations - failed:,} passed, {len(self.blocking)} critical and "
            f"{failed - len(self.blocking)} warnings failed (run {self.run_id})"
        ]
        lines += [f"  {_line(o)}" for o in ran] if per_suite else []
        for o in self.outcomes:
            if o.skipped is not None:
                lines.append(f"  {o.suite.name}: skipped, {o.skipped}")
            lines += [
                f"    {o.suite.name}: {r.rule.name} ({r.rule.severity}) failed: {r.summary()}"
                for r in o.failed
            ]
        lines.append(f"Data Docs: {self.docs}")
        return lines


def docs_index(cfg: Config) -> Path:
    """The Data Docs site's index page under the home."""
    return cfg.paths.gx / "uncommitted" / "data_docs" / SITE / "index.html"


def validate(
    spark: SparkSession,
    cfg: Config,
    *,
    layer: str | None = None,
    table: str | None = None,
    full: bool = False,
    progress: Callable[[str], None] = lambda _: None,
) -> ValidationRun:
    """Run the suites (all, one layer's, or one table's) and record their results.

    Raises InputError for a ``table`` with no suite, or one that does not exist.
    """
    every = load_suites(cfg)
    suites = _select(every, layer, table)
    tables = Tables.from_config(cfg)
    context = _context(cfg)
    # every suite goes into GX's store, so the Data Docs list them all, validated this time or not
    registered = {s.name: _register(context, cfg, s) for s in every.values()}
    for stale in {s.name for s in context.suites.all()} - set(every):  # its file was removed
        context.suites.delete(stale)
    run_id = uuid.uuid4().hex
    run_time = datetime.now(UTC).replace(tzinfo=None)
    since = _watermarks(spark, cfg, tables) if not full else {}
    outcomes: list[SuiteOutcome] = []
    for suite in suites:
        name = _table_name(tables, suite)
        if not spark.catalog.tableExists(name):
            if table is not None:
                raise InputError(f"{name} does not exist yet: {_how_to_build(suite)}")
            outcomes.append(
                SuiteOutcome(suite, skipped=f"{name} does not exist yet ({_how_to_build(suite)})")
            )
            continue
        outcome = _run_suite(spark, context, cfg, suite, registered[suite.name], name, since.get(suite.name))
        progress(_line(outcome))
        outcomes.append(outcome)
    context.build_data_docs(site_names=[SITE])
    note = localize_site(docs_index(cfg).parent)
    if note:
        progress(note)
    _append_results(spark, cfg, tables, run_id, run_time, outcomes)
    return ValidationRun(run_id, run_time, outcomes, docs_index(cfg))


def _select(suites: dict[str, Suite], layer: str | None, table: str | None) -> list[Suite]:
    if table is not None:
        wanted = table if "." in table else None
        matches = [s for s in suites.values() if s.name == wanted or (wanted is None and s.table == table)]
        matches = [s for s in matches if layer is None or s.layer == layer]
        if not matches:
            raise InputError(
                f"no suite for table {table!r}; suites: {', '.join(sorted(suites))} "
                "(conf/gx/expectations/<layer>.<table>.json)"
            )
        if len(matches) > 1:
            raise InputError(
                f"{table!r} is in several layers: name it as {' or '.join(s.name for s in matches)}"
            )
        return matches
    return [s for s in suites.values() if layer is None or s.layer == layer]


def _table_name(tables: Tables, suite: Suite) -> str:
    return tables.silver(suite.table) if suite.layer == "silver" else tables.gold(suite.table)


def _how_to_build(suite: Suite) -> str:
    if suite.layer == "silver":
        return "run `journeylake ingest` first"
    if suite.table in ("customer_scores", "propensity_explanations"):
        return "run `journeylake score` first"
    if suite.table == "customer_features":
        return "run `journeylake ingest` (gold features) first"
    return "run `journeylake dbt build` first"


def _context(cfg: Config) -> Any:
    """The file-backed GX project under the home (made on first use), analytics off."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # no calls out of a bank's network
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    root = cfg.paths.gx
    root.mkdir(parents=True, exist_ok=True)
    context = gx.get_context(mode="file", context_root_dir=str(root))
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    sites = context.variables.data_docs_sites or {}
    if sites.get(SITE, {}).get("show_how_to_buttons", True):
        sites[SITE]["show_how_to_buttons"] = False
        context.variables.data_docs_sites = sites
    context.variables.save()
    return context


def _watermarks(spark: SparkSession, cfg: Config, tables: Tables) -> dict[str, datetime]:
    """Each silver suite's last validated ``_ingested_at`` (from its results)."""
    results = tables.gold(cfg.quality.results_table)
    if not spark.catalog.tableExists(results):
        return {}
    rows = (
        spark.table(results)
        .where("layer = 'silver' AND rows_until IS NOT NULL")
        .groupBy("suite")
        .agg(F.max("rows_until").alias("until"))
        .collect()
    )
    return {r["suite"]: r["until"] for r in rows}


# Counts, percentages and observed values, but never a failing row's values: GX results and Data
# Docs are files under the home that auditors read, and a failing value is often a person's id
# (a duplicate customer_number). GX 1.x applies a checkpoint's result format to every expectation
# over any expectation's own, so the rule is per run, not per column; those allowed can query the
# table for the rows themselves.
RESULT_FORMAT = {"result_format": "BASIC", "partial_unexpected_count": 0}


def _register(context: Any, cfg: Config, suite: Suite) -> Any:
    """``suite`` as a GX ExpectationSuite in the project's store."""
    import great_expectations as gx

    schemas = {layer: schema_name(cfg, layer) for layer in ("silver", "gold")}
    try:
        gx_suite = gx.ExpectationSuite(**suite.to_gx(schemas))
    except Exception as exc:  # GX names the bad type or argument
        where = display_path(suite.path) if suite.path else suite.name
        raise ConfigError(f"{where}: Great Expectations refuses the suite: {exc}") from None
    return context.suites.add_or_update(gx_suite)


def _run_suite(
    spark: SparkSession,
    context: Any,
    cfg: Config,
    suite: Suite,
    gx_suite: Any,
    name: str,
    since: datetime | None,
) -> SuiteOutcome:
    import great_expectations as gx

    started = time.perf_counter()
    frame = spark.table(name)
    outcome = SuiteOutcome(suite)
    if suite.layer == "silver":
        bounds = one_row(frame.agg(F.max(INGESTED_AT)))
        until = bounds[0]
        if until is None or (since is not None and until <= since):
            outcome.skipped = f"no rows ingested since {since:%Y-%m-%d %H:%M:%S}" if since else "no rows"
            return outcome
        frame = frame.where(F.col(INGESTED_AT) <= F.lit(until))
        if since is not None:
            frame = frame.where(F.col(INGESTED_AT) > F.lit(since))
        outcome.rows_from, outcome.rows_until = since, until
    outcome.rows = frame.count()
    # GX's Spark engine caches the frame itself while it computes the metrics
    source = context.data_sources.add_or_update_spark(name=DATASOURCE)
    asset = next((a for a in source.assets if a.name == suite.name), None) or source.add_dataframe_asset(
        name=suite.name
    )
    batch = next((b for b in asset.batch_definitions if b.name == "rows"), None)
    batch = batch or asset.add_batch_definition_whole_dataframe("rows")
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=suite.name, data=batch, suite=gx_suite)
    )
    checkpoint = context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=suite.name,
            validation_definitions=[definition],
            actions=[],  # the Data Docs are built once, after every suite of the run
            result_format=RESULT_FORMAT,
        )
    )
    try:
        result = checkpoint.run(batch_parameters={"dataframe": frame})
    finally:
        # GX persists the frame and leaves it cached: the next validation in this session would
        # be answered from the cache (a Delta table read again matches the cached plan)
        frame.unpersist()
    by_name = {r.name: r for r in suite.rules}
    for validation in result.run_results.values():
        for er in validation.results:
            rule = by_name[str(er.expectation_config.meta.get("name"))]
            outcome.results.append(_outcome(rule, er))
    order = {r.name: i for i, r in enumerate(suite.rules)}
    outcome.results.sort(key=lambda o: order[o.rule.name])
    outcome.seconds = time.perf_counter() - started
    return outcome


def _outcome(rule: Rule, er: Any) -> ExpectationOutcome:
    result = er.result or {}
    error = None
    info = er.exception_info or {}
    if info.get("raised_exception"):
        error = str(info.get("exception_message") or "raised an exception").splitlines()[0][:300]
    observed = result.get("observed_value")
    return ExpectationOutcome(
        rule,
        bool(er.success),
        None if observed is None else _text(observed),
        _int(result.get("unexpected_count")),
        _float(result.get("unexpected_percent")),
        _int(result.get("element_count")),
        error,
    )


def _text(value: Any) -> str:
    try:
        return value if isinstance(value, str) else json.dumps(value, default=str)[:500]
    except (TypeError, ValueError):
        return str(value)[:500]


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) else None


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _line(outcome: SuiteOutcome) -> str:
    passed = len(outcome.results) - len(outcome.failed)
    mark = "FAILED" if outcome.blocking else ("warnings" if outcome.failed else "ok")
    return (
        f"{outcome.suite.name:<36} {passed}/{len(outcome.results)} passed  {outcome.rows:>10,} rows  "
        f"{outcome.seconds:5.1f} s  {mark}"
    )


def _append_results(
    spark: SparkSession,
    cfg: Config,
    tables: Tables,
    run_id: str,
    run_time: datetime,
    outcomes: Iterable[SuiteOutcome],
) -> None:
    rows = [
        (
            run_id,
            run_time,
            o.suite.name,
            o.suite.layer,
            _table_name(tables, o.suite),
            r.rule.name,
            r.rule.type,
            r.rule.column,
            r.rule.severity,
            r.success,
            r.observed,
            r.unexpected_count,
            r.unexpected_percent,
            r.element_count,
            o.rows,
            o.rows_from,
            o.rows_until,
            r.error,
        )
        for o in outcomes
        for r in o.results
    ]
    target = tables.gold(cfg.quality.results_table)
    if not spark.catalog.tableExists(target):
        ensure_schemas(spark, cfg)
        spark.sql(f"CREATE TABLE IF NOT EXISTS {target} ({RESULTS_DDL}) USING DELTA")
    if rows:
        spark.createDataFrame(rows, schema=RESULTS_DDL).write.format("delta").mode("append").saveAsTable(
            target
        )
