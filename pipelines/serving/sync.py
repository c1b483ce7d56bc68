"""``journeylake online-store sync``: the lakehouse's current state of every customer -> the store.

Stages, each idempotent (a key is replaced by the same value, a contact is a set member):

    identities   gold.identity_map (any resolved id -> customer number), each number itself and
                 the login silver.customers gives it
    context      status and holdings from silver, gold.customer_features, the latest scores
                 (the same columns, read by the same code, as the decision job's context)
    reasons      the latest reason codes per customer and model
    consent      silver.consent_current
    contacts     delivered decisions and offer responses of the last contact_history_days
    serving      gold.next_best_actions rows not yet expired
    bandit       the Thompson sampler's state, from the decision log and the responses

Resumable: the stages a run finished are kept in the store (``jl:sync``); a run that stopped
half-way is resumed from the first unfinished stage (the others are not read again), and a run
that finished lets the next one start afresh. After the bulk load, the streams keep the store
current (write-through, :mod:`pipelines.serving.write_through`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipelines.config import Config
from pipelines.lakehouse.delta_appends import local_path
from pipelines.nba.bandit import state_from_history
from pipelines.nba.decide import (
    FEATURE_COLUMNS,
    bandit_outcomes,
    contact_history,
    context,
    ensure_decision_tables,
    reason_codes,
)
from pipelines.services.spark import one_row, records
from pipelines.serving.store import StoreWriter, connect, epoch_ms
from pipelines.tables import Tables

SYNC_KEY = "jl:sync"
STAGES = ("identities", "context", "reasons", "consent", "contacts", "serving", "bandit")
CORE_COLUMNS_PREFIX = "holds_"


@dataclass
class StageResult:
    stage: str
    rows: int
    seconds: float
    skipped: bool = False


def context_parts(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The decision context split into the store's parts (core, features, scores)."""
    core = [
        "customer_number",
        "customer_status",
        *[c for c in frame.columns if c.startswith(CORE_COLUMNS_PREFIX)],
    ]
    features = ["customer_number", *[c for c in FEATURE_COLUMNS if c in frame.columns]]
    taken = set(core) | set(features)
    scores = ["customer_number", *[c for c in frame.columns if c not in taken]]
    return {"core": frame[core], "features": frame[features], "scores": frame[scores]}


def _table_exists(spark: SparkSession, name: str) -> bool:
    return bool(spark.catalog.tableExists(name))


def sync(
    spark: SparkSession,
    cfg: Config,
    progress: Callable[[str, str], None] = lambda stage, message: None,
    full: bool = False,
) -> list[StageResult]:
    """Load the store from the lakehouse; ``full`` ignores an unfinished run and starts afresh."""
    tables = Tables.from_config(cfg)
    client = connect(cfg)
    writer = StoreWriter(client, cfg.online_store.contact_history_days)
    done = {k.decode() if isinstance(k, bytes) else k for k in client.hkeys(SYNC_KEY)} if not full else set()
    if full:
        client.delete(SYNC_KEY)
    now = datetime.now(UTC)
    results: list[StageResult] = []

    def run(stage: str, body: Callable[[], int]) -> None:
        if stage in done:
            results.append(StageResult(stage, 0, 0.0, skipped=True))
            progress(stage, "done in an earlier run, skipped")
            return
        started = time.monotonic()
        rows = body()
        took = time.monotonic() - started
        client.hset(SYNC_KEY, stage, str(rows))
        results.append(StageResult(stage, rows, took))
        progress(stage, f"{rows:,} rows in {took:.1f} s")

    def identities() -> int:
        pairs: list[tuple[str, str]] = []
        # The core-banking record links a customer's own login deterministically: the app can
        # ask by it even before dbt has resolved the other ids into gold.identity_map.
        customers: pd.DataFrame = (
            spark.table(tables.silver("customers"))
            .select("customer_number", "login_id")
            .distinct()
            .toPandas()
        )
        for cn, login in customers.itertuples(index=False):
            pairs.append((str(cn), str(cn)))
            if isinstance(login, str) and login:
                pairs.append((login, str(cn)))
        mapped = tables.gold("identity_map")
        if _table_exists(spark, mapped):
            rows: pd.DataFrame = (
                spark.table(mapped)
                .where(F.col("customer_number").isNotNull())
                .select("identity_key", "id_value", "unified_customer_id", "customer_number")
                .toPandas()
            )
            for r in rows.itertuples(index=False):
                cn = str(r.customer_number)
                pairs += [(str(r.identity_key), cn), (str(r.id_value), cn), (str(r.unified_customer_id), cn)]
        return writer.put_identities(pairs)

    def context_stage() -> int:
        frame: pd.DataFrame = context(spark, tables, None).toPandas()
        features_at = _features_commit_ms(spark, tables.customer_features)
        for part, rows in context_parts(frame).items():
            writer.put_context(part, rows.to_dict("records"), features_at if part == "features" else None)
        return len(frame)

    def reasons_stage() -> int:
        by_customer: dict[str, dict[str, list[str]]] = {}
        for (cn, model), reasons in reason_codes(spark, tables, None).items():
            by_customer.setdefault(str(cn), {})[str(model)] = list(reasons)
        return writer.put_reasons(by_customer)

    def consent_stage() -> int:
        if not _table_exists(spark, tables.consent_current):
            return 0
        columns = ["customer_number", "purpose", "channel", "granted", "event_time", "event_id"]
        return writer.put_consent(records(spark.table(tables.consent_current).select(*columns)))

    def contacts_stage() -> int:
        if not _table_exists(spark, tables.gold("decision_log")):
            return 0
        since = now - timedelta(days=cfg.online_store.contact_history_days)
        return writer.add_contacts(
            records(contact_history(spark, tables, None).where(F.col("contacted_at") >= F.lit(since)))
        )

    def serving_stage() -> int:
        current = tables.gold("next_best_actions")
        if not _table_exists(spark, current):
            return 0
        return writer.put_serving(records(spark.table(current).where(F.col("expires_at") > F.lit(now))))

    def bandit_stage() -> int:
        # written even when nothing was decided yet: the store then holds the lakehouse's (empty)
        # state rather than whatever an earlier bank left, and a second sync changes nothing
        rows: list[dict[str, Any]] = []
        if _table_exists(spark, tables.gold("decision_log")):
            rows = state_from_history(bandit_outcomes(spark, tables)).to_dict("records")
        writer.put_bandit_state(rows, version=now.isoformat())
        return len(rows)

    bodies = {
        "identities": identities,
        "context": context_stage,
        "reasons": reasons_stage,
        "consent": consent_stage,
        "contacts": contacts_stage,
        "serving": serving_stage,
        "bandit": bandit_stage,
    }
    for stage in STAGES:
        run(stage, bodies[stage])
    writer.put_meta(
        synced_at=now.isoformat(),
        stages={r.stage: r.rows for r in results if not r.skipped},
        tables=decision_table_paths(spark, tables),
    )
    client.delete(SYNC_KEY)  # finished: the next run starts afresh
    return results


def decision_table_paths(spark: SparkSession, tables: Tables) -> dict[str, str]:
    """Local paths of gold.served_actions and gold.decision_log (created if missing), where the
    API's process appends with delta-rs; a table on object storage is left out (its appends then
    wait in the API's spool: see pipelines/serving/delivery.py)."""
    ensure_decision_tables(spark, tables)
    paths = {}
    for name in ("served_actions", "decision_log"):
        location = str(one_row(spark.sql(f"DESCRIBE DETAIL {tables.gold(name)}"))["location"])
        path = local_path(location)
        if path is not None:
            paths[name] = path
    return paths


def _features_commit_ms(spark: SparkSession, table: str) -> int | None:
    """When the features table last committed (its newest Delta version's timestamp)."""
    if not _table_exists(spark, table):
        return None
    row = spark.sql(f"DESCRIBE HISTORY {table} LIMIT 1").select("timestamp").first()
    return epoch_ms(row["timestamp"]) if row else None
