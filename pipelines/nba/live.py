"""Decide (live lane): raw events -> the decision funnel -> ``gold.next_best_actions`` in seconds.

The lakehouse job (:mod:`pipelines.nba.decide`) waits for each trigger to pass bronze and silver,
then reads the customers' context from Delta in every micro-batch: several Spark jobs per hop,
a minute or more from event to decision on two cores. The live lane makes the same decision
with those waits taken out:

* it reads the trigger sources' raw records itself (their Kafka topics, or the landing folder),
  parsed by their contracts in one query. A record the lakehouse would quarantine (malformed, a
  required field missing) is simply not a trigger here; bronze and silver still keep it;
* every customer's context (status, holdings, ``gold.customer_features``, scores, reason codes,
  current consent, contact history, active serving rows, the bandit's evidence, who logged in to
  which session) is held in the driver: read from the lakehouse at start, and again every
  ``decisioning.live.refresh_seconds`` in a background thread, swapped in between batches;
* what the lane sees itself applies at once, before the batch is decided: a consent change in
  the stream, an offer response, a login, and every action it serves. Each is journaled and
  applied again on top of the next snapshot, so a context read that was underway when they
  happened cannot undo them (revoking consent takes effect for the very next decision);
* the funnel and the writes are the lakehouse job's own (:func:`run_funnel`,
  :func:`write_decisions`): the same rules, the same appends to the served actions and the log.

Run one decision job per bank, this one or the lakehouse one (both would contact the same
customers). Features are as fresh as the last context read: the lane acts on the trigger that
just happened with the customer's features of up to ``refresh_seconds`` (plus the lakehouse's
own lag) ago. Triggers of customers the lakehouse does not know yet decide nothing.

Restarts: the checkpoint says which records each micro-batch held, decision ids are hashes of
customer and trigger ids, and both writes are idempotent, so a replayed batch adds nothing. An
event delivered twice (same event id) decides nothing the second time within a run (the lane
remembers ``max_seen_event_ids`` ids); across a restart, the contact policies (the same action
not repeated, channel caps) still hold, since served actions are in the context it reads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from pipelines.config import Config
from pipelines.contracts import get_contract
from pipelines.errors import InputError, first_line
from pipelines.lakehouse.batch_writes import CommitListener
from pipelines.lakehouse.bronze import read_kafka, read_landing
from pipelines.lakehouse.ingest import present_sources
from pipelines.lakehouse.intents import current_scorer, spoken_text, with_scores
from pipelines.nba.bandit import ThompsonChooser, state_from_history
from pipelines.nba.catalog import ActionCatalog, load_catalog
from pipelines.nba.decide import (
    SPOKEN_SOURCES,
    TRIGGER_SOURCES,
    DecisionAppends,
    DecisionTableCompaction,
    bandit_outcomes,
    contact_history,
    context,
    ensure_decision_tables,
    reason_codes,
    trigger_rows,
    write_decisions,
)
from pipelines.nba.funnel import CONTACT_COLUMNS, FunnelResult, request_decision_ids, run_funnel
from pipelines.services.spark import BACKGROUND_POOL, scheduler_pool
from pipelines.tables import Tables

log = logging.getLogger(__name__)

# carried beside the trigger shape: what updates the lane's context (null where a source has none)
STATE_COLUMNS: dict[str, str] = {
    "login_id": "string",
    "purpose": "string",
    "channel": "string",
    "granted": "boolean",
    "decision_id": "string",
    "action_id": "string",
    "response": "string",
}
OUTCOME_COLUMNS = ("decision_id", "action_id", "channel", "propensity", "accepted")
ACTIVE_KEEP = ("customer_number", "channel", "action_id", "expires_at", "decision_id", "decided_at")
REQUEST_TRIGGER_COLUMNS = (
    "customer_number",
    "trigger_event_id",
    "trigger_type",
    "trigger_product",
    "trigger_intent",
    "event_time",
    "ingested_at",
)
# how far back (in event time, from the newest digital event) sessions are read for attribution
SESSION_LOOKBACK = "INTERVAL 1 DAY"
# the background context re-read's thread (join it before stopping Spark under it)
REFRESH_THREAD = "live-context-refresh"


# -------------------------------------------------------------------------------------- events


def live_events(spark: SparkSession, cfg: Config) -> DataFrame:
    """The trigger sources' raw records as one stream, parsed by their contracts.

    Columns: source, the trigger shape of :func:`trigger_rows`, STATE_COLUMNS, and ingested_at
    (the Kafka producer's timestamp; for a landing file, when the lane read it). Rows are the
    triggers plus the digital events that name a login (session attribution).
    """
    parts = []
    scorer = current_scorer(cfg)
    present = set(present_sources(cfg))  # a bank without an app chat, say, has no such source
    for source in (s for s in TRIGGER_SOURCES if s in present):
        contract = get_contract(source)
        raw = (
            read_kafka(spark, cfg, source)
            if cfg.ingest.source == "kafka"
            else read_landing(spark, cfg, source)
        )
        parsed = raw.select(
            F.from_json(F.col("raw"), contract.spark_schema()).alias("e"),
            F.coalesce(F.col("_kafka_timestamp"), F.col("_ingested_at")).alias("ingested_at"),
        ).where(F.col("e").isNotNull())
        for f in contract.fields:
            if f.required:
                parsed = parsed.where(F.col(f"e.{f.name}").isNotNull())
        events = parsed.select("e.*", "ingested_at")
        if source in SPOKEN_SOURCES:  # what the customer said, read by the champion text model
            events = with_scores(events, spoken_text(source), scorer)
        fields = {f.name for f in contract.fields}
        for name, kind in STATE_COLUMNS.items():
            if name not in fields:
                events = events.withColumn(name, F.lit(None).cast(kind))
        shaped = trigger_rows(source, events, cfg, *STATE_COLUMNS, "ingested_at")
        parts.append(shaped.withColumn("source", F.lit(source)))
    stream = parts[0]
    for part in parts[1:]:
        stream = stream.unionByName(part)
    return stream.where(F.col("trigger_type").isNotNull() | F.col("login_id").isNotNull())


# ------------------------------------------------------------------------------------- context


@dataclass
class Snapshot:
    """Every customer's decision context, as read from the lakehouse at ``started`` (monotonic)."""

    customers: pd.DataFrame  # context(), indexed by customer_number
    consent: dict[str, dict[tuple[str, str], tuple[bool, pd.Timestamp, str]]]
    contacts: dict[str, dict[tuple[Any, ...], dict[str, Any]]]
    active: dict[str, dict[str, dict[str, Any]]]  # customer -> channel -> serving row
    reasons: dict[tuple[str, str], list[str]]
    logins: dict[str, str]  # login_id -> customer_number
    sessions: dict[str, str]  # session_id -> login_id
    outcomes: dict[tuple[str, str, str], dict[str, Any]]  # the bandit's evidence
    started: float


def load_snapshot(spark: SparkSession, tables: Tables) -> Snapshot:
    """Read every customer's context from the lakehouse (several Spark jobs: seconds)."""
    started = time.monotonic()
    needed = [
        tables.silver("customers"),
        tables.silver("accounts"),
        tables.silver("digital"),
        tables.silver("offer_responses"),
        tables.consent_current,
        tables.customer_features,
    ]
    absent = [name for name in needed if not spark.catalog.tableExists(name)]
    if absent:
        raise InputError(
            f"the live decision lane reads the lakehouse for context, and {', '.join(absent)} "
            "does not exist yet: run `journeylake ingest` first"
        )
    customer_rows: pd.DataFrame = context(spark, tables, None).toPandas()
    customers = customer_rows.set_index("customer_number")
    consent: dict[str, dict[tuple[str, str], tuple[bool, pd.Timestamp, str]]] = {}
    rows = spark.table(tables.consent_current).select(
        "customer_number", "purpose", "channel", "granted", "event_time", "event_id"
    )
    consent_rows: pd.DataFrame = rows.toPandas()
    for r in consent_rows.itertuples(index=False):
        consent.setdefault(r.customer_number, {})[(r.purpose, r.channel)] = (
            bool(r.granted),
            _utc(r.event_time),
            str(r.event_id),
        )
    contacts: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {}
    contact_rows: pd.DataFrame = contact_history(spark, tables, None).toPandas()
    for row in contact_rows.to_dict("records"):
        _add_contact(contacts, row)
    active: dict[str, dict[str, dict[str, Any]]] = {}
    serving: pd.DataFrame = spark.table(tables.gold("next_best_actions")).select(*ACTIVE_KEEP).toPandas()
    for row in serving.to_dict("records"):
        active.setdefault(row["customer_number"], {})[row["channel"]] = row
    logins: pd.DataFrame = (
        spark.table(tables.silver("customers"))
        .where(F.col("login_id").isNotNull())
        .select("login_id", "customer_number")
        .distinct()
        .toPandas()
    )
    digital = spark.table(tables.silver("digital"))
    newest = digital.agg(F.max("event_time")).collect()[0][0]
    sessions: dict[str, str] = {}
    if newest is not None:
        recent: pd.DataFrame = (
            digital.where(F.col("event_time") >= F.lit(newest) - F.expr(SESSION_LOOKBACK))
            .where(F.col("login_id").isNotNull())
            .groupBy("session_id")
            .agg(F.max("login_id").alias("login_id"))
            .toPandas()
        )
        sessions = dict(zip(recent["session_id"], recent["login_id"], strict=True))
    outcomes = {}
    for row in bandit_outcomes(spark, tables).to_dict("records"):
        outcomes[(row["decision_id"], row["action_id"], row["channel"])] = row
    return Snapshot(
        customers=customers,
        consent=consent,
        contacts=contacts,
        active=active,
        reasons=reason_codes(spark, tables, None),
        logins=dict(zip(logins["login_id"], logins["customer_number"], strict=True)),
        sessions=sessions,
        outcomes=outcomes,
        started=started,
    )


def _add_contact(contacts: dict[str, dict[tuple[Any, ...], dict[str, Any]]], row: dict[str, Any]) -> None:
    # the same contact read back from the lakehouse and recorded live is one entry
    key = (row["action_id"], row["channel"], row["decision_id"], row["response"], _utc(row["contacted_at"]))
    contacts.setdefault(row["customer_number"], {})[key] = {c: row[c] for c in CONTACT_COLUMNS}


def _utc(value: Any) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


class LiveContext:
    """The current snapshot, what the lane saw since, and the background re-reads.

    Every change the lane sees or makes is a journal entry ``(monotonic time, kind, row)``,
    applied to the current snapshot at once and again to every fresher snapshot swapped in for
    ``journal_seconds``: the lakehouse lands a consent change seen here a minute or so later, and
    a context read in between must not bring the old consent back. Entries are idempotent and
    ordered as the lakehouse orders them (consent by event time, serving rows by decision time),
    so applying one twice, or after the lakehouse has it, changes nothing.
    """

    def __init__(
        self, spark: SparkSession, tables: Tables, refresh_seconds: float, journal_seconds: float
    ) -> None:
        self.spark = spark
        self.tables = tables
        self.refresh_seconds = refresh_seconds
        self.journal_seconds = journal_seconds
        self.current = load_snapshot(spark, tables)
        self.journal: list[tuple[float, str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._loading: float | None = None
        self._fresh: Snapshot | None = None
        self.refreshes = 0

    # -- refresh
    def refresh_if_due(self) -> None:
        """Swap in a finished re-read; start the next one in the background when due."""
        with self._lock:
            fresh, self._fresh = self._fresh, None
        if fresh is not None:
            horizon = time.monotonic() - self.journal_seconds
            self.journal = [e for e in self.journal if e[0] >= horizon]
            for _, kind, row in self.journal:
                _apply(fresh, kind, row)
            self.current = fresh
            self._loading = None
            self.refreshes += 1
        if self._loading is None and time.monotonic() - self.current.started >= self.refresh_seconds:
            self._loading = time.monotonic()
            threading.Thread(target=self._load, name=REFRESH_THREAD, daemon=True).start()

    def _load(self) -> None:
        try:
            # the re-read's Spark jobs (seconds of them) take the task slots the decisions leave
            with scheduler_pool(self.spark, BACKGROUND_POOL):
                fresh = load_snapshot(self.spark, self.tables)
        except Exception as exc:  # keep deciding on the current context; the next batch retries
            log.warning(
                "live decisions: re-reading the context failed (%s); keeping the current one",
                first_line(exc),
            )
            self._loading = None
            return
        with self._lock:
            self._fresh = fresh

    # -- what the lane sees and does
    def record(self, kind: str, row: dict[str, Any]) -> None:
        self.journal.append((time.monotonic(), kind, row))
        _apply(self.current, kind, row)

    # -- reads for one batch
    def customer_of(self, customer_number: Any, session_id: Any, login_id: Any = None) -> str | None:
        """A trigger's customer: named, or by the login of its session (digital) or its own (chat)."""
        if isinstance(customer_number, str):
            return customer_number
        login = login_id if isinstance(login_id, str) else None
        if login is None and isinstance(session_id, str):
            login = self.current.sessions.get(session_id)
        return self.current.logins.get(login) if login else None

    def consent_rows(self, customers: list[str]) -> pd.DataFrame:
        rows = [
            {"customer_number": c, "purpose": p, "channel": ch, "granted": v[0]}
            for c in customers
            for (p, ch), v in self.current.consent.get(c, {}).items()
        ]
        return pd.DataFrame(rows, columns=["customer_number", "purpose", "channel", "granted"])

    def contact_rows(self, customers: list[str]) -> pd.DataFrame:
        rows = [row for c in customers for row in self.current.contacts.get(c, {}).values()]
        return pd.DataFrame(rows, columns=list(CONTACT_COLUMNS))

    def active_rows(self, customers: list[str]) -> pd.DataFrame:
        rows = [row for c in customers for row in self.current.active.get(c, {}).values()]
        return pd.DataFrame(rows, columns=list(ACTIVE_KEEP))

    def outcome_rows(self, exclude: set[str]) -> pd.DataFrame:
        rows = [r for key, r in self.current.outcomes.items() if key[0] not in exclude]
        return pd.DataFrame(rows, columns=list(OUTCOME_COLUMNS))


def _apply(snapshot: Snapshot, kind: str, row: dict[str, Any]) -> None:
    """Apply one journal entry to a snapshot (idempotent)."""
    if kind == "consent":
        purpose_channel = (row["purpose"], row["channel"])
        new = (bool(row["granted"]), _utc(row["event_time"]), str(row["event_id"]))
        consent = snapshot.consent.setdefault(row["customer_number"], {})
        held = consent.get(purpose_channel)
        if held is None or (new[1], new[2]) >= (held[1], held[2]):  # the lakehouse's own order
            consent[purpose_channel] = new
    elif kind == "contact":
        _add_contact(snapshot.contacts, row)
        if row["response"] == "accept":
            outcome = (row["decision_id"], row["action_id"], row["channel"])
            if outcome in snapshot.outcomes:
                snapshot.outcomes[outcome]["accepted"] = True
    elif kind == "served":
        active = snapshot.active.setdefault(row["customer_number"], {})
        served = active.get(row["channel"])
        if served is None or _utc(row["decided_at"]) >= _utc(served["decided_at"]):
            active[row["channel"]] = {c: row[c] for c in ACTIVE_KEEP}
        _add_contact(
            snapshot.contacts,
            {**row, "contacted_at": row["decided_at"], "response": "decided"},
        )
        if row["policy"] == "model":
            outcome = (row["decision_id"], row["action_id"], row["channel"])
            propensity = float(row["propensity"] or 0.0)  # as the lakehouse reads it back
            snapshot.outcomes.setdefault(
                outcome,
                {**{c: row[c] for c in OUTCOME_COLUMNS[:3]}, "propensity": propensity, "accepted": False},
            )
    elif kind == "login":
        snapshot.sessions[row["session_id"]] = row["login_id"]
    else:  # pragma: no cover - a programming error, not an input
        raise ValueError(f"unknown journal entry kind {kind!r}")


# ----------------------------------------------------------------------------------- decisions


class LiveDecider:
    """One micro-batch of live events -> decisions (the ``foreachBatch`` of the live query)."""

    def __init__(
        self,
        spark: SparkSession,
        cfg: Config,
        tables: Tables,
        catalog: ActionCatalog,
        *,
        since: datetime | None = None,
    ) -> None:
        self.spark = spark
        self.cfg = cfg
        self.tables = tables
        self.catalog = catalog
        self.batches_run = 0  # only the first batch after a start can replay a written one
        self.since = pd.Timestamp(since).tz_convert("UTC") if since is not None else None
        live = cfg.decisioning.live
        self.context = LiveContext(spark, tables, live.refresh_seconds, live.journal_seconds)
        self.appends = DecisionAppends(spark, tables, cfg.decisioning.serving.appends)
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.max_seen = int(live.max_seen_event_ids)
        self.unknown_customers = 0
        self.timings: dict[str, float] = {}  # the last batch's phases, seconds (read ... served, log)

    def __call__(self, batch: DataFrame, batch_id: int) -> FunnelResult | None:
        maybe_replay = self.batches_run == 0
        self.batches_run += 1
        clock = time.monotonic()
        self.timings = {}
        events: pd.DataFrame = batch.toPandas()
        self.timings["read"] = time.monotonic() - clock
        self.context.refresh_if_due()
        if events.empty:
            return None
        events["event_time"] = pd.to_datetime(events["event_time"], utc=True)
        events = events.sort_values(["event_time", "event_id"], kind="stable")
        self._observe(events)
        triggers = events[events["trigger_type"].notna()].drop_duplicates("event_id")
        triggers = triggers[~triggers["event_id"].isin(self.seen)]
        if self.since is not None:
            triggers = triggers[triggers["event_time"] >= self.since]
        triggers = triggers.assign(
            customer_number=[
                self.context.customer_of(c, s, login)
                for c, s, login in zip(
                    triggers["customer_number"],
                    triggers["session_id"],
                    triggers["trigger_login_id"],
                    strict=True,
                )
            ]
        )
        known = triggers["customer_number"].isin(self.context.current.customers.index)
        self.unknown_customers += int((triggers["customer_number"].notna() & ~known).sum())
        triggers = triggers[known]
        if triggers.empty:
            self._remember(events)
            return None
        requests = (
            triggers.rename(columns={"event_id": "trigger_event_id"})[list(REQUEST_TRIGGER_COLUMNS)]
            .assign(decided_at=lambda d: d["event_time"])
            .merge(self.context.current.customers, left_on="customer_number", right_index=True, how="left")
        )
        requests["customer_status"] = requests["customer_status"].fillna("unknown")
        customers = sorted(set(requests["customer_number"]))
        exploration = self.cfg.decisioning.exploration
        chooser = ThompsonChooser(
            state_from_history(
                self.context.outcome_rows(request_decision_ids(requests))[list(OUTCOME_COLUMNS[1:])]
            ),
            exploration.prior_shape,
            exploration.prior_rate,
            draws=exploration.draws,
            seed=exploration.seed,
            lift=exploration.lift,
        )
        self.timings["context"] = time.monotonic() - clock - self.timings["read"]
        result = run_funnel(
            requests,
            self.context.consent_rows(customers),
            self.context.contact_rows(customers),
            self.context.active_rows(customers),
            self.catalog,
            self.cfg.decisioning,
            chooser,
        )
        self.timings["funnel"] = time.monotonic() - clock - sum(self.timings.values())
        took = write_decisions(
            self.spark,
            self.catalog,
            result,
            requests,
            self.context.current.reasons,  # looked up per decision: no copy for the batch
            self.appends,
            maybe_replay=maybe_replay,
        )
        # the served actions' append makes the decisions visible; the log's follows
        self.timings["served"] = took.get(self.tables.gold("served_actions"), 0.0)
        self.timings["log"] = took.get(self.tables.gold("decision_log"), 0.0)
        for row in result.decisions.to_dict("records"):
            self.context.record("served", row)
        self._remember(events)
        return result

    def _observe(self, events: pd.DataFrame) -> None:
        """Consent changes, offer responses and logins of this batch, applied before deciding."""
        for row in events[events["source"] == "consent"].to_dict("records"):
            self.context.record("consent", row)
        for row in events[events["source"] == "offer_responses"].to_dict("records"):
            self.context.record(
                "contact", {**{c: row.get(c) for c in CONTACT_COLUMNS}, "contacted_at": row["event_time"]}
            )
        logins = events[(events["source"] == "digital") & events["login_id"].notna()]
        for session, login in zip(logins["session_id"], logins["login_id"], strict=True):
            if self.context.current.sessions.get(session) != login:
                self.context.record("login", {"session_id": session, "login_id": login})

    def _remember(self, events: pd.DataFrame) -> None:
        for event_id in events.loc[events["trigger_type"].notna(), "event_id"]:
            self.seen[event_id] = None
        while len(self.seen) > self.max_seen:
            self.seen.popitem(last=False)


def start_live_decisions(
    spark: SparkSession,
    cfg: Config,
    tables: Tables,
    checkpoint: str,
    configure_trigger: Callable[[Any], Any],
    progress: Callable[[str], None] = print,
    since: datetime | None = None,
    listener: CommitListener | None = None,
) -> StreamingQuery:
    """The live decision query: raw trigger events -> funnel -> serving table and decision log
    (``listener``: told the served rows, e.g. the online store's write-through)."""
    ensure_decision_tables(spark, tables)
    decider = LiveDecider(spark, cfg, tables, load_catalog(cfg), since=since)
    decider.appends.listener = listener
    progress(decider.appends.describe())
    compaction = DecisionTableCompaction(spark, tables, cfg.decisioning.serving.compact_every_minutes)

    def run_batch(batch: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        result = decider(batch, batch_id)
        if result is not None:
            unknown = decider.unknown_customers
            note = f"; {unknown:,} triggers of customers not in the lakehouse so far" if unknown else ""
            progress(
                f"batch {batch_id}: {result.decisions['decision_id'].nunique():,} decisions, "
                f"{len(result.decisions):,} actions served in {time.monotonic() - started:.2f} s "
                f"({', '.join(f'{k} {v:.2f}' for k, v in decider.timings.items())}){note}"
            )
        compacted = compaction.when_due()
        if compacted:
            progress(compacted.describe())

    writer = (
        live_events(spark, cfg)
        .writeStream.queryName("decide_next_best_actions_live")
        .option("checkpointLocation", checkpoint)
        .foreachBatch(run_batch)
    )
    return configure_trigger(writer).start()
