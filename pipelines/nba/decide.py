"""Decide (streaming): trigger events -> the decision funnel -> ``gold.next_best_actions``.

One Structured Streaming query follows the silver event tables whose rows can call for an action
(a product viewed, an application step left unfinished, a salary, a low balance, a failed payment,
a complaint, a consent change, an offer response). For each micro-batch (``foreachBatch``):

1. the batch's trigger rows are attributed to customers (digital sessions belong to whoever logged
   in during them, as in gold);
2. the touched customers' context is read at decision time: ``gold.customer_features``, the
   latest ``gold.customer_scores`` (null scores before the first ``journeylake score``), open
   holdings and status from silver, current consent (``silver.consent_current``), contact history
   (earlier decisions and offer responses) and the actions still being served;
3. :func:`pipelines.nba.funnel.run_funnel` decides, with Thompson sampling over the arms'
   calibration lift (:class:`pipelines.nba.bandit.ThompsonChooser`) whose state is rebuilt from
   the decision log and the responses;
4. the chosen actions are appended to ``gold.served_actions`` and every candidate's fate to
   ``gold.decision_log``. ``gold.next_best_actions``, what channels read, is a view of the
   newest served row per customer x channel (see :func:`ensure_decision_tables`).

Restarts neither lose nor duplicate: decision ids are a hash of the customer and the trigger
event ids, and the first batch a job runs after a (re)start (the only one that can replay a
written batch) leaves out the decisions the tables hold already.

A decision's clock is its latest trigger's event time (``decided_at``): policies (caps,
cool-downs, expiry) then mean the same thing whether events arrive live or are replayed from a
simulated history. ``processed_at`` is the wall-clock time the row was written; the difference
between it and the trigger's ingestion is the pipeline's decision latency.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from pipelines.config import Config
from pipelines.contracts import PRODUCTS, SCORED_PRODUCTS
from pipelines.lakehouse.batch_writes import CommitListener
from pipelines.lakehouse.compaction import compact_table
from pipelines.lakehouse.delta_appends import DeltaAppender, ddl_columns
from pipelines.lakehouse.intents import SPOKEN
from pipelines.nba.bandit import ThompsonChooser, state_from_history
from pipelines.nba.catalog import ActionCatalog, load_catalog
from pipelines.nba.funnel import FEATURE_COLUMNS, FunnelResult, request_decision_ids, run_funnel
from pipelines.services.spark import one_row
from pipelines.tables import STREAMED_TABLE_PROPERTIES, Tables, ensure_properties, properties_sql

log = logging.getLogger(__name__)

TRIGGER_SOURCES = ("transactions", "digital", "contact_centre", "app_chat", "consent", "offer_responses")
# sources whose rows carry what the customer said, scored into an intent (pipelines/lakehouse/intents.py)
SPOKEN_SOURCES: tuple[str, ...] = tuple(SPOKEN)
BROWSE_EVENTS = ("product_view", "compare", "calculator")

NEXT_BEST_ACTIONS_DDL = """
    customer_number STRING, channel STRING, action_id STRING, priority DOUBLE, propensity DOUBLE,
    choice_probability DOUBLE, policy STRING, reason_codes ARRAY<STRING>, rule_trace ARRAY<STRING>,
    model_versions MAP<STRING, STRING>, decision_id STRING, trigger_types ARRAY<STRING>,
    trigger_event_ids ARRAY<STRING>, decided_at TIMESTAMP, expires_at TIMESTAMP,
    triggered_at TIMESTAMP, processed_at TIMESTAMP
"""
DECISION_LOG_DDL = """
    decision_id STRING, customer_number STRING, action_id STRING, channel STRING, stage STRING,
    rule STRING, detail STRING, priority DOUBLE, choice_probability DOUBLE, propensity DOUBLE,
    policy STRING, decided_at TIMESTAMP, processed_at TIMESTAMP
"""


# Appended to once per micro-batch (so checkpointed rarely: STREAMED_TABLE_PROPERTIES), with
# statistics for the reads that filter them: per customer, by time, a decision's rows.
# Compacted by the job itself between micro-batches (DecisionTableCompaction).
SERVED_PROPERTIES = {
    "delta.dataSkippingStatsColumns": "customer_number,channel,decision_id,decided_at,processed_at",
    **STREAMED_TABLE_PROPERTIES,
}
DECISION_LOG_PROPERTIES = {
    "delta.dataSkippingStatsColumns": "decision_id,customer_number,decided_at",
    **STREAMED_TABLE_PROPERTIES,
}


def current_serving_sql(served: str) -> str:
    """The newest served row per customer x channel: a later decision (``decided_at``, its
    latest trigger's event time) replaces an earlier one, never the reverse; between rows of the
    same decision time, the one written last (``processed_at``) counts."""
    columns = ", ".join(ddl_columns(NEXT_BEST_ACTIONS_DDL))
    return (
        f"SELECT {columns} FROM (SELECT *, row_number() OVER (PARTITION BY customer_number, channel "
        "ORDER BY decided_at DESC, processed_at DESC, decision_id DESC) AS _newest "
        f"FROM {served}) WHERE _newest = 1"
    )


def ensure_decision_tables(spark: SparkSession, tables: Tables) -> None:
    """Create ``gold.served_actions``, the ``gold.next_best_actions`` view over it, and the log.

    Why a view over an append-only table rather than a table kept current by MERGE: a decision
    is visible once its rows are appended (one Delta commit, ~0.2 s here), where a MERGE per
    micro-batch costs 1-2 s on two cores, most of the live lane's latency. Superseded rows are
    dropped from ``served_actions`` by :func:`compact_served_actions` now and then.

    A ``gold.next_best_actions`` table from before (kept by MERGE) has its rows moved into
    ``served_actions`` and is replaced by the view.
    """
    served = tables.gold("served_actions")
    current = tables.gold("next_best_actions")
    spark.sql(f"CREATE SCHEMA IF NOT EXISTS {current.rsplit('.', 1)[0]}")
    spark.sql(
        f"CREATE TABLE IF NOT EXISTS {served} ({NEXT_BEST_ACTIONS_DDL}) USING delta "
        f"{properties_sql(SERVED_PROPERTIES)}"
    )
    ensure_properties(spark, served, SERVED_PROPERTIES)
    if spark.catalog.tableExists(current) and _kind_of(spark, current) != "VIEW":
        if spark.table(served).limit(1).count() == 0:  # not moved yet (a move cut short left rows)
            columns = ", ".join(ddl_columns(NEXT_BEST_ACTIONS_DDL))
            spark.sql(f"INSERT INTO {served} SELECT {columns} FROM {current}")
        spark.sql(f"DROP TABLE {current}")
    spark.sql(f"CREATE OR REPLACE VIEW {current} AS {current_serving_sql(served)}")
    log = tables.gold("decision_log")
    spark.sql(
        f"CREATE TABLE IF NOT EXISTS {log} ({DECISION_LOG_DDL}) USING delta "
        f"{properties_sql(DECISION_LOG_PROPERTIES)}"
    )
    ensure_properties(spark, log, DECISION_LOG_PROPERTIES)


@dataclass(frozen=True)
class Compacted:
    """What one round of :class:`DecisionTableCompaction` did."""

    superseded_rows_dropped: int
    log_files_merged: int

    def describe(self) -> str:
        return (
            f"decision tables compacted: {self.superseded_rows_dropped:,} superseded served rows "
            f"dropped, {self.log_files_merged:,} small decision-log files merged"
        )


class DecisionTableCompaction:
    """Compacts the decision job's tables between its micro-batches, every ``every_minutes``
    (0: never): :func:`compact_served_actions` and :func:`compact_decision_log`. Between
    batches, so no append of the job's own runs at the same time and no decision waits on it."""

    def __init__(self, spark: SparkSession, tables: Tables, every_minutes: float) -> None:
        self.spark = spark
        self.tables = tables
        self.every_seconds = every_minutes * 60.0
        self.last = time.monotonic()

    def when_due(self) -> Compacted | None:
        """Compact if the interval has passed since the last compaction (or the start)."""
        if not self.every_seconds or time.monotonic() - self.last < self.every_seconds:
            return None
        done = Compacted(
            compact_served_actions(self.spark, self.tables), compact_decision_log(self.spark, self.tables)
        )
        self.last = time.monotonic()
        return done


def _kind_of(spark: SparkSession, name: str) -> str:
    """``VIEW``, ``MANAGED`` or ``EXTERNAL``: what the catalog holds under ``name``."""
    return str(one_row(spark.sql(f"DESCRIBE TABLE EXTENDED {name}").where("col_name = 'Type'"))[1]).upper()


def compact_served_actions(spark: SparkSession, tables: Tables) -> int:
    """Drop the served rows a newer one replaced (the view reads the rest); how many were dropped.

    Run by the decision job between micro-batches (``decisioning.serving.compact_every_minutes``),
    so no append of its own runs at the same time; the table is rewritten with the view's rows.
    """
    served = tables.gold("served_actions")
    total = spark.table(served).count()
    current = spark.sql(current_serving_sql(served)).localCheckpoint(eager=True)
    kept = current.count()
    if kept < total:
        current.write.insertInto(served, overwrite=True)  # keeps the table's properties
    return total - kept


def compact_decision_log(spark: SparkSession, tables: Tables) -> int:
    """Merge the decision log's small files (a micro-batch appends one or two); files merged.

    The log is append-only, so only the files change (Delta ``OPTIMIZE``; a commit with no data
    change). ``explain-decision``, the policy evaluation and the contact history read it.
    """
    return compact_table(spark, tables.gold("decision_log"))


# ------------------------------------------------------------------------------------ triggers


def trigger_rows(source: str, events: DataFrame, cfg: Config, *keep: str) -> DataFrame:
    """One trigger source's events (silver's columns, or a raw record parsed by its contract and
    scored by :func:`pipelines.lakehouse.intents.with_scores`) in the trigger shape:
    customer_number (null for digital and app-chat rows: attributed later by session or login),
    session_id, trigger_login_id, event_id, trigger_type (null when the event calls for nothing),
    trigger_product, trigger_intent, event_time, then the ``keep`` columns. The lakehouse job and
    the live lane share this mapping.

    A recognised intent in what a customer said is an ``intent`` trigger (a complaint call stays a
    ``complaint`` trigger and still carries its intent), so actions with an ``intent:`` rule can
    answer it at once."""
    none = F.lit(None).cast("string")
    customer = F.col("customer_number") if source not in ("digital", "app_chat") else none
    session = F.col("session_id") if source == "digital" else none
    login = F.col("login_id") if source == "app_chat" else none
    product = F.col("product") if source == "digital" else none
    said = F.col("intent") if source in SPOKEN_SOURCES else none
    recognised = said.isNotNull() & (said != F.lit(cfg.ml.text.unrecognised_label))
    if source == "transactions":
        low_balance = float(cfg.decisioning.triggers.low_balance_threshold)
        kind = (
            F.when(F.col("txn_type") == "salary", "salary")
            .when(F.col("txn_type") == "failed_payment", "failed_payment")
            .when(F.col("balance_after") < F.lit(low_balance), "low_balance")
        )
    elif source == "digital":
        kind = F.when(F.col("event_type").isin(*BROWSE_EVENTS), "product_view").when(
            (F.col("event_type") == "application_step") & (F.col("step") != "submit"), "application_step"
        )
    elif source == "contact_centre":
        kind = F.when(F.col("interaction_type") == "complaint", "complaint").when(recognised, "intent")
    elif source == "app_chat":
        kind = F.when(recognised, "intent")
    elif source == "consent":
        kind = F.lit("consent_change")
    elif source == "offer_responses":
        kind = F.lit("offer_response")
    else:
        raise ValueError(f"{source!r} is not a trigger source ({', '.join(TRIGGER_SOURCES)})")
    return events.select(
        customer.alias("customer_number"),
        session.alias("session_id"),
        login.alias("trigger_login_id"),
        "event_id",
        kind.cast("string").alias("trigger_type"),
        product.alias("trigger_product"),
        F.when(recognised, said).alias("trigger_intent"),
        "event_time",
        *keep,
    )


def trigger_stream(
    spark: SparkSession,
    tables: Tables,
    cfg: Config,
    max_files: int | None = None,
    since: datetime | None = None,
) -> DataFrame:
    """One stream of trigger rows over the silver event tables, in one shape.

    Columns: customer_number (null for digital rows, attributed per batch), session_id,
    trigger_event_id, trigger_type, trigger_product, event_time, ingested_at. With ``since``,
    events that happened before it call for nothing: a decision job started on a year of
    history acts on what happens from then on, not on every old salary.
    """

    def read(source: str) -> DataFrame:
        # an erasure's commits change rows: skipped (silver's streamed tables are otherwise appended)
        reader = spark.readStream.format("delta").option("skipChangeCommits", "true")
        if max_files:
            reader = reader.option("maxFilesPerTrigger", max_files)
        return reader.table(tables.silver(source))

    present = [s for s in TRIGGER_SOURCES if spark.catalog.tableExists(tables.silver(s))]  # an older home
    parts = [trigger_rows(source, read(source), cfg, "_ingested_at") for source in present]
    stream = parts[0]
    for part in parts[1:]:
        stream = stream.unionByName(part)
    stream = stream.where(F.col("trigger_type").isNotNull())
    if since is not None:
        stream = stream.where(F.col("event_time") >= F.lit(since))
    return as_triggers(stream)


def as_triggers(rows: DataFrame) -> DataFrame:
    """Silver rows in the trigger shape (:func:`trigger_rows`, kept ``_ingested_at``) as the
    decision job takes them: event id and ingest time under their trigger names."""
    return rows.select(
        "customer_number",
        "session_id",
        "trigger_login_id",
        F.col("event_id").alias("trigger_event_id"),
        "trigger_type",
        "trigger_product",
        "trigger_intent",
        "event_time",
        F.col("_ingested_at").alias("ingested_at"),
    )


def attribute(spark: SparkSession, tables: Tables, triggers: DataFrame) -> DataFrame:
    """Digital trigger rows get the customer who logged in during their session (gold's rule), and
    app-chat rows the customer of their login."""
    if "trigger_login_id" not in triggers.columns:  # trigger rows of an older shape name no login
        triggers = triggers.withColumn("trigger_login_id", F.lit(None).cast("string"))
    sessions = triggers.where(F.col("session_id").isNotNull()).select("session_id").distinct()
    session_login = (
        spark.table(tables.silver("digital"))
        .join(F.broadcast(sessions), "session_id", "left_semi")
        .where(F.col("login_id").isNotNull())
        .groupBy("session_id")
        .agg(F.max("login_id").alias("_login"))
    )
    logins = (
        spark.table(tables.silver("customers"))
        .where(F.col("login_id").isNotNull())
        .select(F.col("login_id").alias("_login"), F.col("customer_number").alias("_by_login"))
        .distinct()
    )
    attributed = (
        triggers.join(session_login, "session_id", "left")
        .withColumn("_login", F.coalesce("trigger_login_id", "_login"))
        .join(logins, "_login", "left")
        .withColumn("customer_number", F.coalesce("customer_number", "_by_login"))
    )
    # anonymous browsing belongs to nobody: no one to decide for
    return attributed.where(F.col("customer_number").isNotNull()).drop(
        "_login", "_by_login", "session_id", "trigger_login_id"
    )


# ------------------------------------------------------------------------------------- context


def _table_or_none(spark: SparkSession, name: str) -> DataFrame | None:
    return spark.table(name) if spark.catalog.tableExists(name) else None


def _only(rows: DataFrame, customers: DataFrame | None) -> DataFrame:
    """``rows`` of these customers (a small broadcast set); every row when ``customers`` is None."""
    return rows if customers is None else rows.join(F.broadcast(customers), "customer_number", "left_semi")


def context(spark: SparkSession, tables: Tables, customers: DataFrame | None) -> DataFrame:
    """Per customer: status, holdings, gold features and the latest scores (null when unscored).

    ``customers``: the customer numbers wanted (None: every customer)."""
    profiles = _only(spark.table(tables.silver("customers")), customers)
    status = profiles.groupBy("customer_number").agg(
        F.max_by("status", "snapshot_time").alias("customer_status")
    )
    accounts = _only(spark.table(tables.silver("accounts")), customers)
    latest = accounts.groupBy("account_id").agg(
        F.max_by(F.struct("customer_number", "product", "status"), "snapshot_time").alias("a")
    )
    holdings = (
        latest.where(F.col("a.status") == "open")
        .groupBy(F.col("a.customer_number").alias("customer_number"))
        .agg(*(F.max(F.col("a.product") == p).alias(f"holds_{p}") for p in PRODUCTS))
    )
    features = _only(spark.table(tables.customer_features), customers).select(
        "customer_number", *FEATURE_COLUMNS
    )
    out = status.join(holdings, "customer_number", "left").join(features, "customer_number", "left")
    for p in PRODUCTS:
        out = out.withColumn(f"holds_{p}", F.coalesce(f"holds_{p}", F.lit(False)))
    scores = _table_or_none(spark, tables.gold("customer_scores"))
    score_columns = [*(f"propensity_{p}" for p in SCORED_PRODUCTS), "churn_risk", "segment_name"]
    if scores is not None:
        present = [c for c in score_columns if c in scores.columns]
        versions = ["model_versions"] if "model_versions" in scores.columns else []
        out = out.join(
            _only(scores, customers).select("customer_number", *present, *versions),
            "customer_number",
            "left",
        )
    for column in score_columns:
        if column not in out.columns:
            out = out.withColumn(column, F.lit(None).cast("double" if column != "segment_name" else "string"))
    if "model_versions" not in out.columns:
        out = out.withColumn("model_versions", F.lit(None).cast("map<string,string>"))
    return out


def contact_history(spark: SparkSession, tables: Tables, customers: DataFrame | None) -> DataFrame:
    """Earlier delivered decisions ("decided") and every offer response of these customers (None: all)."""
    decided = (
        _only(spark.table(tables.gold("decision_log")), customers)
        .where((F.col("stage") == "chosen") & (F.col("action_id") != "no_action"))
        .select(
            "customer_number",
            "action_id",
            "channel",
            "decision_id",
            F.col("decided_at").alias("contacted_at"),
            F.lit("decided").alias("response"),
        )
    )
    responses = _only(spark.table(tables.silver("offer_responses")), customers).select(
        "customer_number",
        "action_id",
        "channel",
        "decision_id",
        F.col("event_time").alias("contacted_at"),
        "response",
    )
    return decided.unionByName(responses)


def bandit_outcomes(spark: SparkSession, tables: Tables, exclude: set[str] | None = None) -> pd.DataFrame:
    """Delivered model-policy decisions with whether they were accepted (the bandit's evidence).

    Columns: decision_id, action_id, channel, propensity, accepted.

    ``exclude``: decision ids left out (the batch being decided, in case a replay finds its own
    first attempt in the log)."""
    chosen = (
        spark.table(tables.gold("decision_log"))
        .where(
            (F.col("stage") == "chosen") & (F.col("action_id") != "no_action") & (F.col("policy") == "model")
        )
        .select("decision_id", "action_id", "channel", "propensity")
    )
    if exclude:
        chosen = chosen.where(~F.col("decision_id").isin(sorted(exclude)))
    accepted = (
        spark.table(tables.silver("offer_responses"))
        .where(F.col("response") == "accept")
        .select("decision_id", "action_id", "channel", F.lit(True).alias("accepted"))
        .distinct()
    )
    rows = chosen.join(accepted, ["decision_id", "action_id", "channel"], "left").select(
        "decision_id",
        "action_id",
        "channel",
        F.coalesce("propensity", F.lit(0.0)).alias("propensity"),
        F.coalesce("accepted", F.lit(False)).alias("accepted"),
    )
    return rows.toPandas()


# ------------------------------------------------------------------------------------ decisions


def decide_batch(
    spark: SparkSession,
    cfg: Config,
    tables: Tables,
    catalog: ActionCatalog,
    triggers: DataFrame,
    *,
    maybe_replay: bool,
    appends: DecisionAppends | None = None,
) -> FunnelResult | None:
    """Decide for every customer in one micro-batch of trigger rows and write the results
    (through ``appends``, the job's; when not given, opened for this batch, which costs two table
    lookups: a stream passes its own)."""
    attributed = attribute(spark, tables, triggers).persist()
    try:
        customers = attributed.select("customer_number").distinct()
        if customers.limit(1).count() == 0:
            return None
        requests: pd.DataFrame = (
            attributed.withColumn("decided_at", F.col("event_time"))
            .join(context(spark, tables, customers), "customer_number", "left")
            .toPandas()
        )
        consent = (
            spark.table(tables.consent_current)
            .join(F.broadcast(customers), "customer_number", "left_semi")
            .select("customer_number", "purpose", "channel", "granted")
            .toPandas()
        )
        contacts = contact_history(spark, tables, customers).toPandas()
        active = (
            spark.table(tables.gold("next_best_actions"))
            .join(F.broadcast(customers), "customer_number", "left_semi")
            .select("customer_number", "channel", "action_id", "expires_at", "decision_id")
            .toPandas()
        )
        reasons = reason_codes(spark, tables, customers)
    finally:
        attributed.unpersist()
    requests["customer_status"] = requests["customer_status"].fillna("unknown")
    exploration = cfg.decisioning.exploration
    chooser = ThompsonChooser(
        state_from_history(bandit_outcomes(spark, tables, exclude=request_decision_ids(requests))),
        exploration.prior_shape,
        exploration.prior_rate,
        draws=exploration.draws,
        seed=exploration.seed,
        lift=exploration.lift,
    )
    result = run_funnel(requests, consent, contacts, active, catalog, cfg.decisioning, chooser)
    if appends is None:
        appends = DecisionAppends(spark, tables, cfg.decisioning.serving.appends)
    write_decisions(spark, catalog, result, requests, reasons, appends, maybe_replay=maybe_replay)
    return result


def reason_codes(
    spark: SparkSession, tables: Tables, customers: DataFrame | None
) -> dict[tuple[str, str], list[str]]:
    """(customer, model) -> the model's reason codes in rank order, from the latest scoring."""
    explanations = _table_or_none(spark, tables.gold("propensity_explanations"))
    if explanations is None:
        return {}
    rows: pd.DataFrame = (
        _only(explanations, customers).select("customer_number", "model", "reason_rank", "reason").toPandas()
    )
    rows = rows.sort_values("reason_rank")
    return {key: list(group["reason"]) for key, group in rows.groupby(["customer_number", "model"])}


def model_of(action_id: str, catalog: ActionCatalog) -> str | None:
    action = catalog[action_id]
    if action.product:
        return action.product
    return "churn" if action.kind == "retention" else None


class DecisionAppends:
    """How one decision job appends to ``gold.served_actions`` and ``gold.decision_log``.

    Opened once per job, after :func:`ensure_decision_tables`: ``engine`` is
    ``decisioning.serving.appends`` (``delta-rs``: a served batch commits in milliseconds instead
    of a Spark job's ~0.25 s; see :mod:`pipelines.lakehouse.delta_appends` for when Spark appends anyway).
    """

    def __init__(
        self, spark: SparkSession, tables: Tables, engine: str, listener: CommitListener | None = None
    ) -> None:
        self.served = DeltaAppender(spark, tables.gold("served_actions"), NEXT_BEST_ACTIONS_DDL, engine)
        self.log = DeltaAppender(spark, tables.gold("decision_log"), DECISION_LOG_DDL, engine)
        self.listener = listener  # told the served rows once appended (the online store's write-through)

    def describe(self) -> str:
        """One line for the job's start message: which engine appends to which table."""
        return "; ".join(
            f"{a.table} appended by {a.engine}" + (f" ({a.why_spark})" if a.why_spark else "")
            for a in (self.served, self.log)
        )


def write_decisions(
    spark: SparkSession,
    catalog: ActionCatalog,
    result: FunnelResult,
    requests: pd.DataFrame,
    reasons: dict[tuple[str, str], list[str]],
    appends: DecisionAppends,
    *,
    maybe_replay: bool,
) -> dict[str, float]:
    """Append the chosen actions to ``gold.served_actions`` and every candidate's fate to the log.

    Returns the seconds each append took, by table name (what a batch's progress message shows).

    ``requests`` give each decision its triggers' ingestion time and model versions.
    ``maybe_replay`` is true for the first batch a job runs after a (re)start, the only one that
    can repeat a batch whose writes went through before its commit was recorded: then the
    decisions (decision ids are deterministic) a table holds already are left out of it, table
    by table.
    """
    processed_at = pd.Timestamp(datetime.now(UTC))
    decisions = result.decisions.copy()
    writes: list[tuple[DeltaAppender, pd.DataFrame]] = []
    if len(decisions):
        # the triggers' earliest ingestion: decision latency is processed_at - triggered_at
        ingested = requests.groupby("customer_number")["ingested_at"].min()
        decisions["triggered_at"] = pd.to_datetime(decisions["customer_number"].map(ingested), utc=True)
        versions = requests.drop_duplicates("customer_number").set_index("customer_number")["model_versions"]
        decisions["model_versions"] = decisions["customer_number"].map(
            lambda c: dict(versions.get(c) or {}) if versions.get(c) is not None else {}
        )

        def reason_list(row: Any) -> list[str]:
            model = model_of(row.action_id, catalog)
            return list(reasons.get((row.customer_number, model), [])) if model else []

        decisions["reason_codes"] = [reason_list(r) for r in decisions.itertuples()]
        decisions["processed_at"] = processed_at
        writes.append((appends.served, decisions))
    log_rows = result.log.copy()
    if len(log_rows):
        log_rows["processed_at"] = processed_at
        writes.append((appends.log, log_rows))
    # one after the other, the served actions first: a decision is visible once they commit
    took: dict[str, float] = {}
    for appender, rows in writes:
        started = time.monotonic()
        if maybe_replay:
            rows = _not_yet_written(spark, appender.table, rows)
        if len(rows):
            appender.append(rows)
            if appender is appends.served and appends.listener is not None:
                appends.listener.served(rows, time.time())
        took[appender.table] = time.monotonic() - started
    return took


def _not_yet_written(spark: SparkSession, table: str, rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` without the decisions ``table`` holds already (a replayed batch's).

    The lookup reads the batch's decision ids in its ``decided_at`` range (the tables keep
    statistics on both, so it skips the other files): once per start, not per batch. Delta's
    own idempotent writes (``txnAppId``) look the writer up in the table's state on every
    append instead, which costs more than the append here.
    """
    ids = sorted(set(rows["decision_id"]))
    held: pd.DataFrame = (
        spark.table(table)
        .where(F.col("decided_at").between(rows["decided_at"].min(), rows["decided_at"].max()))
        .where(F.col("decision_id").isin(ids))
        .select("decision_id")
        .distinct()
        .toPandas()
    )
    return rows[~rows["decision_id"].isin(set(held["decision_id"]))]


def start_decision_stream(
    spark: SparkSession,
    cfg: Config,
    tables: Tables,
    checkpoint: str,
    configure_trigger: Callable[[Any], Any],
    progress: Callable[[str], None] = print,
    since: datetime | None = None,
    listener: CommitListener | None = None,
) -> StreamingQuery:
    """The decision query: silver triggers -> funnel -> serving table and decision log
    (``listener``: told the served rows, e.g. the online store's write-through)."""
    from pipelines.services.spark import require_tables

    require_tables(
        spark,
        [tables.silver("customers"), tables.customer_features],
        "run `journeylake ingest` first (decisions are made on silver's events and gold's features)",
    )
    ensure_decision_tables(spark, tables)
    catalog = load_catalog(cfg)
    appends = DecisionAppends(spark, tables, cfg.decisioning.serving.appends, listener)
    progress(appends.describe())
    if not spark.catalog.tableExists(tables.gold("customer_scores")):
        progress(
            f"warning: no model scores yet ({tables.gold('customer_scores')} does not exist): offers "
            "are ranked at the catalog's default propensity until `journeylake train` and "
            "`journeylake score` run"
        )
    compaction = DecisionTableCompaction(spark, tables, cfg.decisioning.serving.compact_every_minutes)
    batches_run = 0  # only the first batch after a start can replay a written one

    def run_batch(batch: DataFrame, batch_id: int) -> None:
        nonlocal batches_run
        result = decide_batch(
            spark, cfg, tables, catalog, batch, maybe_replay=batches_run == 0, appends=appends
        )
        batches_run += 1
        compacted = compaction.when_due()
        if compacted:
            progress(compacted.describe())
        if result is not None:
            progress(
                f"batch {batch_id}: {result.decisions['decision_id'].nunique():,} decisions, "
                f"{len(result.decisions):,} actions served, {len(result.log):,} candidates logged"
            )

    writer = (
        trigger_stream(spark, tables, cfg, since=since)
        .writeStream.queryName("decide_next_best_actions")
        .option("checkpointLocation", checkpoint)
        .foreachBatch(run_batch)
    )
    return configure_trigger(writer).start()
