"""Gold (streaming): ``gold.customer_features``, one current row per customer.

A streaming query follows every silver event table. For each micro-batch it finds the customers
the batch touched, recomputes their features from silver as of the stream's event-time
high-water mark, and merges them into the table. Recomputing the touched customers (rather than
adding deltas to running counters) is what makes the table exact under late and out-of-order
data: a late event lands in silver with its event time and the next recomputation of
that customer counts it, whatever the order of arrival. The same function computes the features
in batch, which is how tests check the stream.

Each row says the time its features are as of (``features_as_of``); a customer with no new
events keeps the row of their last update, and counts over "the last hour" are relative to it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.window import Window

from pipelines.services.spark import BACKGROUND_POOL, scheduler_pool
from pipelines.tables import STREAMED_TABLE_PROPERTIES, Tables, ensure_properties, properties_sql

LOOKBACK = timedelta(days=30)  # the longest window any feature uses
EVENT_SOURCES = ("transactions", "digital", "visits", "contact_centre", "offer_responses")
TRIGGER_SOURCES = (*EVENT_SOURCES, "accounts")
BROWSE_EVENTS = ("product_view", "compare", "calculator")


def _window(df: DataFrame, time_col: str, since: datetime, until: datetime) -> DataFrame:
    return df.where(
        (F.col("event_date") >= F.lit(since.date()))
        & (F.col(time_col) > F.lit(since))
        & (F.col(time_col) <= F.lit(until))
    )


def current_customers(spark: SparkSession, tables: Tables, until: datetime | None = None) -> DataFrame:
    """Latest core-banking profile row per customer (as of ``until`` when given)."""
    customers = spark.table(tables.silver("customers"))
    if until is not None:
        customers = customers.where(F.col("snapshot_time") <= F.lit(until))
    latest = Window.partitionBy("customer_number").orderBy(F.col("snapshot_time").desc())
    return customers.withColumn("_rank", F.row_number().over(latest)).where("_rank = 1").drop("_rank")


def _digital_with_customer(
    spark: SparkSession, tables: Tables, since: datetime, until: datetime
) -> DataFrame:
    """Digital events attributed to customers: a session belongs to whoever logged in during it."""
    digital = _window(spark.table(tables.silver("digital")), "event_time", since, until)
    session_login = (
        digital.where(F.col("login_id").isNotNull())
        .groupBy("session_id")
        .agg(F.max("login_id").alias("_session_login"))
    )
    logins = (
        current_customers(spark, tables, until)
        .where(F.col("login_id").isNotNull())
        .select(F.col("login_id").alias("_session_login"), "customer_number")
    )
    return digital.join(session_login, "session_id").join(logins, "_session_login")


def compute_features(
    spark: SparkSession, tables: Tables, as_of: datetime, customers: DataFrame | None = None
) -> DataFrame:
    """Features of ``customers`` (a frame with ``customer_number``; all customers when None) at ``as_of``."""
    since = as_of - LOOKBACK

    def scoped(df: DataFrame) -> DataFrame:
        return df if customers is None else df.join(F.broadcast(customers), "customer_number", "left_semi")

    txns = scoped(_window(spark.table(tables.silver("transactions")), "event_time", since, as_of))
    digital = scoped(_digital_with_customer(spark, tables, since, as_of))
    visits = scoped(_window(spark.table(tables.silver("visits")), "event_time", since, as_of))
    contacts = scoped(_window(spark.table(tables.silver("contact_centre")), "event_time", since, as_of))
    offers = scoped(_window(spark.table(tables.silver("offer_responses")), "event_time", since, as_of))
    accounts = scoped(spark.table(tables.silver("accounts")).where(F.col("snapshot_time") <= F.lit(as_of)))

    def ago(hours: float) -> Column:
        return F.lit(as_of - timedelta(hours=hours))

    activity = (
        txns.select("customer_number", "event_time")
        .unionByName(digital.select("customer_number", "event_time"))
        .unionByName(visits.select("customer_number", "event_time"))
        .unionByName(contacts.select("customer_number", "event_time"))
        .unionByName(offers.select("customer_number", "event_time"))
        .groupBy("customer_number")
        .agg(
            F.max("event_time").alias("last_event_at"),
            F.count(F.when(F.col("event_time") > ago(1), 1)).alias("events_1h"),
            F.count(F.when(F.col("event_time") > ago(24), 1)).alias("events_24h"),
            F.count(F.when(F.col("event_time") > ago(24 * 7), 1)).alias("events_7d"),
        )
    )

    browse = digital.where(F.col("event_type").isin(*BROWSE_EVENTS) & F.col("product").isNotNull())
    digital_agg = digital.groupBy("customer_number").agg(
        F.countDistinct(F.when(F.col("event_time") > ago(24 * 7), F.col("session_id"))).alias(
            "digital_sessions_7d"
        ),
        F.count(
            F.when((F.col("event_time") > ago(24 * 7)) & F.col("event_type").isin(*BROWSE_EVENTS), 1)
        ).alias("product_views_7d"),
    )
    last_viewed = browse.groupBy("customer_number").agg(
        F.max_by("product", F.struct("event_time", "event_id")).alias("last_product_viewed"),
        F.max("event_time").alias("last_product_viewed_at"),
    )

    steps = digital.where((F.col("event_type") == "application_step") & F.col("application_id").isNotNull())
    applications = steps.groupBy("customer_number", "application_id").agg(
        F.max_by("product", "event_time").alias("product"),
        F.max_by("step", F.struct("event_time", "step_index")).alias("last_step"),
        F.max("event_time").alias("updated_at"),
        F.max(F.when(F.col("step") == "submit", 1).otherwise(0)).alias("submitted"),
    )
    open_application = (
        applications.where("submitted = 0")
        .groupBy("customer_number")
        .agg(
            F.max_by(F.struct("application_id", "product", "last_step", "updated_at"), "updated_at").alias(
                "app"
            )
        )
        .select(
            "customer_number",
            F.col("app.application_id").alias("open_application_id"),
            F.col("app.product").alias("open_application_product"),
            F.col("app.last_step").alias("open_application_last_step"),
            F.col("app.updated_at").alias("open_application_updated_at"),
        )
    )

    latest_account = Window.partitionBy("account_id").orderBy(F.col("snapshot_time").desc())
    account_state = accounts.withColumn("_rank", F.row_number().over(latest_account)).where("_rank = 1")
    current_account_ids = account_state.where(F.col("product") == "current_account").select("account_id")
    txn_balance = (
        txns.where(F.col("balance_after").isNotNull())
        .join(current_account_ids, "account_id", "left_semi")
        .groupBy("customer_number")
        .agg(F.max_by("balance_after", F.struct("event_time", "event_id")).alias("_txn_balance"))
    )
    account_agg = (
        account_state.where(F.col("status") == "open")
        .groupBy("customer_number")
        .agg(
            F.sum(F.when(F.col("product") == "current_account", F.col("balance"))).alias("_snapshot_balance"),
            (
                F.sum(F.when(F.col("product") == "credit_card", F.abs(F.col("balance"))))
                / F.sum(F.when(F.col("product") == "credit_card", F.col("credit_limit")))
            ).alias("card_utilisation"),
        )
    )

    money = txns.groupBy("customer_number").agg(
        F.max(F.when(F.col("txn_type") == "salary", F.col("event_time"))).alias("last_salary_at"),
        F.count(
            F.when((F.col("txn_type") == "failed_payment") & (F.col("event_time") > ago(24 * 7)), 1)
        ).alias("failed_payments_7d"),
        F.count(F.when((F.col("txn_type") == "fee") & (F.col("event_time") > ago(24 * 7)), 1)).alias(
            "fees_7d"
        ),
    )
    service = contacts.groupBy("customer_number").agg(
        F.count(
            F.when((F.col("interaction_type") == "complaint") & (F.col("event_time") > ago(24 * 7)), 1)
        ).alias("complaints_7d"),
        F.count(F.when(F.col("interaction_type") == "complaint", 1)).alias("complaints_30d"),
        F.max("event_time").alias("last_contact_centre_at"),
    )
    marketing = (
        offers.where(F.col("response") == "impression")
        .groupBy("customer_number")
        .agg(F.max("event_time").alias("last_marketing_contact_at"))
    )

    base = (
        customers
        if customers is not None
        else current_customers(spark, tables, as_of).select("customer_number")
    )
    features = base.select("customer_number").distinct()
    for part in (
        activity,
        digital_agg,
        last_viewed,
        open_application,
        txn_balance,
        account_agg,
        money,
        service,
        marketing,
    ):
        features = features.join(part, "customer_number", "left")

    last_contact = F.greatest("last_contact_centre_at", "last_marketing_contact_at")
    return features.select(
        "customer_number",
        F.lit(as_of).cast("timestamp").alias("features_as_of"),
        "last_event_at",
        *(F.coalesce(c, F.lit(0)).alias(c) for c in ("events_1h", "events_24h", "events_7d")),
        F.coalesce("digital_sessions_7d", F.lit(0)).alias("digital_sessions_7d"),
        F.coalesce("product_views_7d", F.lit(0)).alias("product_views_7d"),
        "last_product_viewed",
        "last_product_viewed_at",
        "open_application_id",
        "open_application_product",
        "open_application_last_step",
        "open_application_updated_at",
        F.coalesce("_txn_balance", "_snapshot_balance").alias("current_account_balance"),
        "card_utilisation",
        F.coalesce(F.col("last_salary_at") > ago(24 * 7), F.lit(False)).alias("salary_received_7d"),
        "last_salary_at",
        *(
            F.coalesce(c, F.lit(0)).alias(c)
            for c in ("failed_payments_7d", "fees_7d", "complaints_7d", "complaints_30d")
        ),
        "last_contact_centre_at",
        "last_marketing_contact_at",
        ((F.lit(as_of).cast("long") - last_contact.cast("long")) / 3600.0).alias("hours_since_last_contact"),
    )


def ensure_gold_tables(spark: SparkSession, tables: Tables) -> None:
    schema = compute_features(
        spark, tables, datetime(2000, 1, 1), spark.createDataFrame([], "customer_number STRING")
    ).schema
    ddl = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in schema.fields)
    spark.sql(
        f"CREATE TABLE IF NOT EXISTS {tables.customer_features} ({ddl}) USING delta "
        f"{properties_sql(STREAMED_TABLE_PROPERTIES)}"
    )
    ensure_properties(spark, tables.customer_features, STREAMED_TABLE_PROPERTIES)


def touched_customers(spark: SparkSession, tables: Tables, batch: DataFrame, until: datetime) -> DataFrame:
    """Customers whose features a batch of trigger rows can change."""
    direct = batch.where(F.col("customer_number").isNotNull()).select("customer_number")
    sessions = batch.where(F.col("session_id").isNotNull()).select("session_id").distinct()
    via_digital = (
        _digital_with_customer(spark, tables, until - LOOKBACK, until)
        .join(F.broadcast(sessions), "session_id", "left_semi")
        .select("customer_number")
    )
    return direct.unionByName(via_digital).distinct()


def process_batch(batch: DataFrame, batch_id: int, *, tables: Tables) -> None:
    """Recompute the touched customers' features at the high-water mark and merge them."""
    from delta.tables import DeltaTable

    spark = batch.sparkSession
    batch = batch.persist()
    try:
        batch_max = batch.agg(F.max("event_time")).first()[0]
        if batch_max is None:
            return
        previous = spark.table(tables.customer_features).agg(F.max("features_as_of")).first()[0]
        as_of = max(batch_max, previous) if previous else batch_max
        customers = touched_customers(spark, tables, batch, as_of).persist()
        features = compute_features(spark, tables, as_of, customers)
        (
            DeltaTable.forName(spark, tables.customer_features)
            .alias("t")
            .merge(features.alias("s"), "t.customer_number = s.customer_number")
            .whenMatchedUpdateAll()
            .whenNotMatchedInsertAll()
            .execute()
        )
        customers.unpersist()
    finally:
        batch.unpersist()


def trigger_stream(spark: SparkSession, tables: Tables, max_files: int | None) -> DataFrame:
    """One stream over every silver table whose rows can change a customer's features."""
    parts = []
    for source in TRIGGER_SOURCES:
        reader = spark.readStream.format("delta")
        if max_files:
            reader = reader.option("maxFilesPerTrigger", max_files)
        df = reader.table(tables.silver(source))
        time_col = "snapshot_time" if source == "accounts" else "event_time"
        parts.append(
            df.select(
                F.col("customer_number")
                if source != "digital"
                else F.lit(None).cast("string").alias("customer_number"),
                F.col("session_id")
                if source == "digital"
                else F.lit(None).cast("string").alias("session_id"),
                F.col(time_col).alias("event_time"),
            )
        )
    stream = parts[0]
    for part in parts[1:]:
        stream = stream.unionByName(part)
    return stream


def start_gold_stream(
    spark: SparkSession,
    cfg: Any,
    tables: Tables,
    checkpoint: str,
    configure_trigger: Any,
    max_files: int | None = None,
) -> StreamingQuery:
    ensure_gold_tables(spark, tables)

    def run_batch(batch: DataFrame, batch_id: int) -> None:
        process_batch(batch, batch_id, tables=tables)

    writer = (
        trigger_stream(spark, tables, max_files)
        .writeStream.queryName("gold_customer_features")
        .option("checkpointLocation", checkpoint)
        .foreachBatch(run_batch)
    )
    # its jobs take the task slots the ingest queries leave: a gold batch (10-15 s on two cores)
    # does not hold back the ingest batches that run meanwhile
    with scheduler_pool(spark, BACKGROUND_POOL):
        return configure_trigger(writer).start()
