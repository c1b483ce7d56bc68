"""Point-in-time customer features and labels, computed from silver with Spark.

Training a propensity model on features that "know" the future is the classic way to get a
great holdout score and a useless model. Everything here is computed **as of a cut-off time T**:
features read only rows whose event (or snapshot) time is at or before T, and labels read only
what happened in the horizon after T. ``tests/test_ml_features.py`` proves the first half by
recomputing the features with every row after T removed and checking nothing changes.

The real-time features of ``gold.customer_features`` (``pipelines.lakehouse.gold.compute_features``) are
reused as they are, so a model sees the same definitions when it is trained and when the
decision stream scores it; the 30-day behaviour, holdings and bureau features that only models
need are added here.

A training set needs the same features at several cut-offs. Calling
:func:`point_in_time_features` once per cut-off builds a plan of ~1,400 operators each time (the
gold features plus ten more aggregations and joins) and spends almost all its time planning and
re-planning it, not reading rows: about a minute per cut-off on a bank of a few thousand
customers. :func:`point_in_time_features_at` computes every cut-off in one query instead: each
row is paired with every cut-off whose window holds it and everything is grouped by
(customer, cut-off). It restates the few gold features the models use (``_realtime_at``) for many
cut-offs at once and must give exactly what :func:`point_in_time_features` gives for each one.

``FEATURES`` names every model feature with the plain words reason codes use, and says which are
protected (never given as a reason to a customer or an auditor).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from pipelines.contracts import INCOME_BANDS, PRODUCTS
from pipelines.errors import InputError
from pipelines.lakehouse.gold import (
    BROWSE_EVENTS,
    LOOKBACK,
    _digital_with_customer,
    compute_features,
    current_customers,
)
from pipelines.tables import Tables

HISTORY = timedelta(days=30)  # the behaviour window of the model-only features
PROPENSITY_PRODUCTS: tuple[str, ...] = tuple(p for p in PRODUCTS if p != "current_account")
APPLICATION_STEP_INDEX = {"start": 0, "personal_details": 1, "income": 2, "document_upload": 3, "review": 4}


@dataclass(frozen=True)
class Feature:
    """A model feature: its column, the plain words a reason code uses, and whether it is protected."""

    name: str
    description: str
    protected: bool = False
    money: bool = False  # heavy-tailed amounts: log-scaled for segmentation


def _features() -> tuple[Feature, ...]:
    out = [
        Feature("age", "age", protected=True),
        Feature("income_band_rank", "income band"),
        Feature("tenure_years", "years as a customer"),
        Feature("registered_online", "online banking registration"),
        Feature("events_24h", "activity in the last 24 hours"),
        Feature("events_7d", "activity in the last 7 days"),
        Feature("digital_sessions_7d", "online sessions in the last 7 days"),
        Feature("product_views_7d", "product pages viewed in the last 7 days"),
        Feature("current_account_balance", "current account balance", money=True),
        Feature("card_utilisation", "credit card utilisation"),
        Feature("salary_received_7d", "salary paid in within the last 7 days"),
        Feature("failed_payments_7d", "failed payments in the last 7 days"),
        Feature("fees_7d", "fees charged in the last 7 days"),
        Feature("complaints_7d", "complaints in the last 7 days"),
        Feature("complaints_30d", "complaints in the last 30 days"),
        Feature("hours_since_last_contact", "hours since the bank last contacted the customer"),
        Feature("open_application_step", "how far an unfinished application got"),
        Feature("salary_30d", "salary paid in over the last 30 days", money=True),
        Feature("card_spend_30d", "card spending over the last 30 days", money=True),
        Feature("card_spend_count_30d", "card payments in the last 30 days"),
        Feature("atm_withdrawals_30d", "cash withdrawals in the last 30 days"),
        Feature("transfers_out_30d", "transfers out in the last 30 days"),
        Feature("failed_payments_30d", "failed payments in the last 30 days"),
        Feature("fees_30d", "fees charged in the last 30 days"),
        Feature("rent_paid_30d", "rent payments in the last 30 days"),
        Feature("business_spend_share_30d", "share of card spending on business services"),
        Feature("travel_spend_share_30d", "share of card spending on travel"),
        Feature("gambling_spend_30d", "gambling spending over the last 30 days", money=True),
        Feature("web_sessions_30d", "website sessions in the last 30 days"),
        Feature("app_sessions_30d", "app sessions in the last 30 days"),
        Feature("branch_visits_30d", "branch visits in the last 30 days"),
        Feature("atm_visits_30d", "ATM visits in the last 30 days"),
        Feature("calls_30d", "calls to the contact centre in the last 30 days"),
        Feature("contact_sentiment_30d", "mood in contact-centre conversations"),
        Feature("offers_seen_30d", "offers shown in the last 30 days"),
        Feature("offers_clicked_30d", "offers clicked in the last 30 days"),
        Feature("offers_dismissed_30d", "offers dismissed in the last 30 days"),
        Feature("products_held", "number of products held"),
        Feature("deposit_balance", "savings and current account balances", money=True),
        Feature("lending_balance", "loan, mortgage and card balances", money=True),
        Feature("credit_limit", "credit card limit", money=True),
        Feature("bureau_score", "credit bureau score"),
        Feature("bureau_total_debt", "total debt at all lenders", money=True),
        Feature("bureau_utilisation", "credit used at all lenders"),
        Feature("bureau_delinquencies_12m", "missed payments at any lender in the last year"),
        Feature("bureau_inquiries_6m", "recent credit searches"),
    ]
    for product in PROPENSITY_PRODUCTS:
        words = product.replace("_", " ")
        out += [
            Feature(f"holds_{product}", f"already holding a {words}"),
            Feature(f"views_{product}_7d", f"{words} pages viewed in the last 7 days"),
            Feature(f"views_{product}_30d", f"{words} pages viewed in the last 30 days"),
            Feature(f"applications_{product}_30d", f"{words} applications started in the last 30 days"),
        ]
    return tuple(out)


FEATURES: tuple[Feature, ...] = _features()
FEATURE_NAMES: list[str] = [f.name for f in FEATURES]
DESCRIPTIONS: dict[str, str] = {f.name: f.description for f in FEATURES}
PROTECTED: frozenset[str] = frozenset(f.name for f in FEATURES if f.protected)
MONEY_FEATURES: tuple[str, ...] = tuple(f.name for f in FEATURES if f.money)
# Context carried beside the features (fairness groups, keys); never a model input.
CONTEXT_COLUMNS: tuple[str, ...] = ("customer_number", "as_of", "age_band", "region")

# Features where "nothing happened" means 0 (counts, sums, holdings), not "unknown".
ZERO_WHEN_MISSING: frozenset[str] = frozenset(
    {
        f.name
        for f in FEATURES
        if f.name.endswith(("_7d", "_30d")) and "share" not in f.name and "sentiment" not in f.name
    }
    | {f"holds_{p}" for p in PROPENSITY_PRODUCTS}
    | {"products_held", "deposit_balance", "lending_balance"}
)
KEYS: list[str] = ["customer_number", "as_of"]  # one row per customer x cut-off


def _between(df: DataFrame, col: str, since: datetime, until: datetime) -> DataFrame:
    return df.where(
        (F.col("event_date") >= F.lit(since.date()))
        & (F.col(col) > F.lit(since))
        & (F.col(col) <= F.lit(until))
    )


def _count(cond: Column) -> Column:
    return F.count(F.when(cond, 1))


def _age_band(age: Column) -> Column:
    return (
        F.when(age < 25, "18-24")
        .when(age < 35, "25-34")
        .when(age < 45, "35-44")
        .when(age < 55, "45-54")
        .when(age < 65, "55-64")
        .otherwise("65+")
    )


# The model-only feature definitions, shared by the one-cut-off and the many-cut-off paths so the
# two cannot drift apart. Each is a list of aggregate expressions over one silver table's rows
# (or a projection), whatever the rows are grouped by.


def _browse() -> Column:
    return F.col("event_type").isin("product_view", "compare", "calculator")


def _product_view(product: str, since: Column | None = None) -> Column:
    """A browse event about ``product`` (after ``since`` when given)."""
    cond = _browse() & (F.col("product") == product)
    return cond if since is None else cond & (F.col("event_time") > since)


def _money_aggs() -> list[Column]:
    card = (F.col("txn_type") == "card_spend") & (F.col("amount") < 0)
    return [
        F.sum(F.when(F.col("txn_type") == "salary", F.col("amount"))).alias("salary_30d"),
        (-F.sum(F.when(card, F.col("amount")))).alias("card_spend_30d"),
        _count(card).alias("card_spend_count_30d"),
        _count(F.col("txn_type") == "atm_withdrawal").alias("atm_withdrawals_30d"),
        _count(F.col("txn_type") == "transfer_out").alias("transfers_out_30d"),
        _count(F.col("txn_type") == "failed_payment").alias("failed_payments_30d"),
        _count(F.col("txn_type") == "fee").alias("fees_30d"),
        _count(F.col("txn_type") == "rent").alias("rent_paid_30d"),
        (
            F.sum(F.when(card & (F.col("merchant_category") == "business_services"), -F.col("amount")))
            / F.sum(F.when(card, -F.col("amount")))
        ).alias("business_spend_share_30d"),
        (
            F.sum(F.when(card & (F.col("merchant_category") == "travel"), -F.col("amount")))
            / F.sum(F.when(card, -F.col("amount")))
        ).alias("travel_spend_share_30d"),
        F.coalesce(
            -F.sum(F.when(card & (F.col("merchant_category") == "gambling"), F.col("amount"))), F.lit(0.0)
        ).alias("gambling_spend_30d"),
    ]


def _visit_aggs() -> list[Column]:
    return [
        _count(F.col("channel") == "branch").alias("branch_visits_30d"),
        _count(F.col("channel") == "atm").alias("atm_visits_30d"),
    ]


def _call_aggs() -> list[Column]:
    return [F.count(F.lit(1)).alias("calls_30d"), F.avg("sentiment").alias("contact_sentiment_30d")]


def _offer_aggs() -> list[Column]:
    return [
        _count(F.col("response") == "impression").alias("offers_seen_30d"),
        _count(F.col("response") == "click").alias("offers_clicked_30d"),
        _count(F.col("response") == "dismiss").alias("offers_dismissed_30d"),
    ]


def _holdings_aggs() -> list[Column]:
    """Over each customer's open accounts (latest snapshot of each account)."""
    return [
        F.count(F.lit(1)).alias("products_held"),
        F.sum(
            F.when(F.col("product").isin("current_account", "savings", "investments"), F.col("balance"))
        ).alias("deposit_balance"),
        F.sum(
            F.when(F.col("product").isin("credit_card", "mortgage", "personal_loan"), F.abs(F.col("balance")))
        ).alias("lending_balance"),
        F.sum("credit_limit").alias("credit_limit"),
        *(
            F.max(F.when(F.col("product") == p, 1).otherwise(0)).alias(f"holds_{p}")
            for p in PROPENSITY_PRODUCTS
        ),
    ]


def _bureau_columns() -> list[Column]:
    """Over each customer's latest bureau report."""
    return [
        F.col("bureau_score").cast("double").alias("bureau_score"),
        F.col("total_debt").alias("bureau_total_debt"),
        F.col("credit_utilisation").alias("bureau_utilisation"),
        F.col("delinquencies_12m").cast("double").alias("bureau_delinquencies_12m"),
        F.col("inquiries_6m").cast("double").alias("bureau_inquiries_6m"),
    ]


def _profile_columns(as_of: Column, year: Column, day: Column) -> list[Column]:
    """Over the latest core-banking profile; ``year`` and ``day`` are the cut-off's year and date."""
    income_rank = F.lit(None).cast("double")
    for rank, band in enumerate(INCOME_BANDS):
        income_rank = F.when(F.col("income_band") == band, F.lit(float(rank))).otherwise(income_rank)
    age = year - F.col("birth_year")
    return [
        F.col("customer_number"),
        as_of.cast("timestamp").alias("as_of"),
        _age_band(age).alias("age_band"),
        F.col("region"),
        age.cast("double").alias("age"),
        income_rank.alias("income_band_rank"),
        (F.datediff(day, F.col("customer_since")) / 365.25).alias("tenure_years"),
        F.col("login_id").isNotNull().cast("int").alias("registered_online"),
    ]


def _application_step_rank(last_step: Column) -> Column:
    step_rank = F.lit(None).cast("double")
    for step, index in APPLICATION_STEP_INDEX.items():
        step_rank = F.when(last_step == step, F.lit(float(index + 1))).otherwise(step_rank)
    return F.coalesce(step_rank, F.lit(0.0))


def _model_columns(out: DataFrame) -> DataFrame:
    """``CONTEXT_COLUMNS`` then ``FEATURE_NAMES`` as doubles (0 for a missing count, else null)."""
    return out.select(
        *CONTEXT_COLUMNS,
        *(
            (F.coalesce(F.col(name), F.lit(0)) if name in ZERO_WHEN_MISSING else F.col(name))
            .cast("double")
            .alias(name)
            for name in FEATURE_NAMES
        ),
    )


def active_customers(spark: SparkSession, tables: Tables, as_of: datetime) -> DataFrame:
    """Customers whose latest core-banking profile at ``as_of`` says active (the scoring population)."""
    return current_customers(spark, tables, as_of).where(F.col("status") == "active")


def point_in_time_features(
    spark: SparkSession, tables: Tables, as_of: datetime, customers: DataFrame | None = None
) -> DataFrame:
    """One row per active customer at ``as_of`` (or per row of ``customers``) with every model feature.

    Reads only rows with event or snapshot time <= ``as_of``. Columns: ``CONTEXT_COLUMNS`` then
    ``FEATURE_NAMES`` (numbers; nulls where a value is unknown, e.g. no bureau report yet).
    For many cut-offs at once use :func:`point_in_time_features_at` (same values, one query).
    """
    since = as_of - HISTORY
    profile = active_customers(spark, tables, as_of)
    if customers is not None:
        profile = profile.join(customers.select("customer_number").distinct(), "customer_number", "left_semi")
    population = profile.select("customer_number")

    def scoped(df: DataFrame) -> DataFrame:
        return df.join(population, "customer_number", "left_semi")

    realtime = compute_features(spark, tables, as_of, population)
    txns = scoped(_between(spark.table(tables.silver("transactions")), "event_time", since, as_of))
    digital = scoped(_digital_with_customer(spark, tables, since, as_of))
    visits = scoped(_between(spark.table(tables.silver("visits")), "event_time", since, as_of))
    calls = scoped(_between(spark.table(tables.silver("contact_centre")), "event_time", since, as_of))
    offers = scoped(_between(spark.table(tables.silver("offer_responses")), "event_time", since, as_of))
    week_ago = F.lit(as_of - timedelta(days=7))

    money = txns.groupBy("customer_number").agg(*_money_aggs())
    digital_agg = digital.groupBy("customer_number").agg(
        F.countDistinct(F.when(F.col("channel") == "web", F.col("session_id"))).alias("web_sessions_30d"),
        F.countDistinct(F.when(F.col("channel") == "app", F.col("session_id"))).alias("app_sessions_30d"),
        *(
            agg
            for product in PROPENSITY_PRODUCTS
            for agg in (
                _count(_product_view(product, week_ago)).alias(f"views_{product}_7d"),
                _count(_product_view(product)).alias(f"views_{product}_30d"),
                F.countDistinct(
                    F.when(
                        (F.col("event_type") == "application_step") & (F.col("product") == product),
                        F.col("application_id"),
                    )
                ).alias(f"applications_{product}_30d"),
            )
        ),
    )
    visit_agg = visits.groupBy("customer_number").agg(*_visit_aggs())
    call_agg = calls.groupBy("customer_number").agg(*_call_aggs())
    offer_agg = offers.groupBy("customer_number").agg(*_offer_aggs())

    accounts = scoped(spark.table(tables.silver("accounts")).where(F.col("snapshot_time") <= F.lit(as_of)))
    latest_account = Window.partitionBy("account_id").orderBy(F.col("snapshot_time").desc())
    open_accounts = accounts.withColumn("_rank", F.row_number().over(latest_account)).where(
        (F.col("_rank") == 1) & (F.col("status") == "open")
    )
    holdings = open_accounts.groupBy("customer_number").agg(*_holdings_aggs())
    bureau_rows = scoped(spark.table(tables.silver("bureau")).where(F.col("snapshot_time") <= F.lit(as_of)))
    latest_report = Window.partitionBy("customer_number").orderBy(F.col("snapshot_time").desc())
    bureau = (
        bureau_rows.withColumn("_rank", F.row_number().over(latest_report))
        .where("_rank = 1")
        .select("customer_number", *_bureau_columns())
    )

    base = profile.select(*_profile_columns(F.lit(as_of), F.lit(as_of.year), F.lit(as_of.date())))
    realtime = realtime.select(
        "customer_number",
        "events_24h",
        "events_7d",
        "digital_sessions_7d",
        "product_views_7d",
        "current_account_balance",
        "card_utilisation",
        F.col("salary_received_7d").cast("int").alias("salary_received_7d"),
        "failed_payments_7d",
        "fees_7d",
        "complaints_7d",
        "complaints_30d",
        "hours_since_last_contact",
        _application_step_rank(F.col("open_application_last_step")).alias("open_application_step"),
    )
    out = base.join(realtime, "customer_number", "left")
    for part in (money, digital_agg, visit_agg, call_agg, offer_agg, holdings, bureau):
        out = out.join(part, "customer_number", "left")
    return _model_columns(out)


# ---------------------------------------------------------------------------------------------
# Many cut-offs in one query


def _cutoff_frame(spark: SparkSession, constants: Sequence[dict[str, Any]]) -> DataFrame:
    """One row per cut-off holding its constants (``as_of`` and ``_pit_*`` columns).

    The values are the very Python literals the one-cut-off code compares with (``F.lit`` of the
    same datetimes and dates), so every comparison sees the same value on both paths.
    """
    rows = [F.struct(*(F.lit(value).alias(name) for name, value in row.items())) for row in constants]
    return spark.range(1).select(F.inline(F.array(*rows)))


def _in_windows(df: DataFrame, col: str, cutoffs: DataFrame) -> DataFrame:
    """Each row once per cut-off T whose window (T - HISTORY, T] holds it: ``_between`` for every T.

    The cut-offs are a handful of rows, broadcast; a row lands in every window that holds it.
    """
    return df.join(
        F.broadcast(cutoffs),
        (F.col("event_date") >= F.col("_pit_since_date"))
        & (F.col(col) > F.col("_pit_since"))
        & (F.col(col) <= F.col("as_of")),
    )


def _latest_at(df: DataFrame, key: str, cutoffs: DataFrame, scope: DataFrame | None = None) -> DataFrame:
    """The latest snapshot (``snapshot_time`` <= T) of each ``key``, for every cut-off T.

    ``scope`` (customer, T rows) keeps only those customers' snapshots at T, before the latest is
    chosen, as the one-cut-off code scopes before its window.
    """
    rows = df.join(F.broadcast(cutoffs), F.col("snapshot_time") <= F.col("as_of"))
    if scope is not None:
        rows = rows.join(scope, KEYS, "left_semi")
    latest = Window.partitionBy(key, "as_of").orderBy(F.col("snapshot_time").desc())
    return rows.withColumn("_rank", F.row_number().over(latest)).where("_rank = 1").drop("_rank")


def _activity_aggs(source: str) -> list[Column]:
    """This source's share of ``events_24h`` / ``events_7d`` (gold's union of every event table)."""
    return [
        _count(F.col("event_time") > F.col("_pit_day_ago")).alias(f"_{source}_24h"),
        _count(F.col("event_time") > F.col("_pit_week_ago")).alias(f"_{source}_7d"),
    ]


ACTIVITY_SOURCES = ("txn", "digital", "visit", "call", "offer")


def _realtime_at(
    txns: DataFrame,
    digital: DataFrame,
    login_ranks: DataFrame,
    logins: DataFrame,
    visits: DataFrame,
    calls: DataFrame,
    offers: DataFrame,
    account_state: DataFrame,
) -> dict[str, DataFrame]:
    """Gold's real-time features (``pipelines.lakehouse.gold.compute_features``) next to the model-only ones.

    Inputs are rows already paired with their cut-offs (``digital`` not yet attributed to
    customers; ``login_ranks`` numbers every login in login order, ``logins`` maps (cut-off, login
    rank) to customers); every output is keyed by ``KEYS``.
    Gold's definitions, restated for many cut-offs at once, limited to the model features:
    counts of events (all sources) in the last 24 hours and 7 days; distinct digital sessions and
    browse events in the last 7 days; the current account balance (latest ``balance_after`` of a
    transaction on an account whose latest snapshot is a current account, else the open current
    accounts' snapshot balance); card utilisation of open cards; a salary in the last 7 days;
    failed payments, fees and complaints; hours since the last contact-centre interaction or
    offer impression; and the last step of the most recently updated unsubmitted application.

    Digital events are summed up per session before they are attributed (a session belongs to
    whoever logged in during it, ``gold._digital_with_customer``: the greatest login seen in the
    session, here the greatest login rank, which keeps the aggregate hash-based), and distinct
    counts are taken in two steps (per session or application, then per customer): the same
    numbers as joining every event to its customer and ``countDistinct``, for a fraction of the
    rows.
    """
    week_ago, day_ago = F.col("_pit_week_ago"), F.col("_pit_day_ago")

    def is_type(txn_type: str) -> Column:
        return F.col("txn_type") == txn_type

    # A transaction's balance counts if its account's latest snapshot is a current account. The
    # latest such balance is found in two steps: the latest time (a hash aggregate), then the rows
    # at that time. ``max_by`` over a struct ordering in the main aggregate would turn it into a
    # sort-based aggregate of every transaction, the slowest step of the whole query.
    current_accounts = (
        account_state.where(F.col("product") == "current_account")
        .select("account_id", "as_of", F.lit(True).alias("_on_current_account"))
        .distinct()
    )
    txns = txns.join(F.broadcast(current_accounts), ["account_id", "as_of"], "left")
    has_balance = F.coalesce(F.col("_on_current_account"), F.lit(False)) & F.col("balance_after").isNotNull()
    money = txns.groupBy(*KEYS).agg(
        *_money_aggs(),
        *_activity_aggs("txn"),
        F.max(F.when(is_type("salary"), F.col("event_time"))).alias("last_salary_at"),
        _count(is_type("failed_payment") & (F.col("event_time") > week_ago)).alias("failed_payments_7d"),
        _count(is_type("fee") & (F.col("event_time") > week_ago)).alias("fees_7d"),
        F.max(F.when(has_balance, F.col("event_time"))).alias("_balance_at"),
    )
    balance = (
        txns.where(has_balance)
        .join(
            F.broadcast(money.select(*KEYS, F.col("_balance_at").alias("event_time"))), [*KEYS, "event_time"]
        )
        .groupBy(*KEYS)
        .agg(F.max_by("balance_after", F.struct("event_time", "event_id")).alias("_txn_balance"))
    )
    holdings = (
        account_state.where(F.col("status") == "open")
        .groupBy(*KEYS)
        .agg(
            *_holdings_aggs(),
            F.sum(F.when(F.col("product") == "current_account", F.col("balance"))).alias("_snapshot_balance"),
            (
                F.sum(F.when(F.col("product") == "credit_card", F.abs(F.col("balance"))))
                / F.sum(F.when(F.col("product") == "credit_card", F.col("credit_limit")))
            ).alias("card_utilisation"),
        )
    )

    recent = F.col("event_time") > week_ago
    sessions = (
        digital.join(F.broadcast(login_ranks), "login_id", "left")
        .groupBy("as_of", "session_id")
        .agg(
            F.max("_login_rank").alias("_login_rank"),
            F.max(F.col("channel") == "web").alias("_web"),
            F.max(F.col("channel") == "app").alias("_app"),
            F.max(recent).alias("_recent"),
            _count(F.col("event_time") > day_ago).alias("_digital_24h"),
            _count(recent).alias("_digital_7d"),
            _count(recent & F.col("event_type").isin(*BROWSE_EVENTS)).alias("product_views_7d"),
            *(
                agg
                for product in PROPENSITY_PRODUCTS
                for agg in (
                    _count(_product_view(product, week_ago)).alias(f"views_{product}_7d"),
                    _count(_product_view(product)).alias(f"views_{product}_30d"),
                )
            ),
        )
        # sessions nobody logged in to belong to no one (a null login matches no customer)
        .join(F.broadcast(logins), ["as_of", "_login_rank"])
    )
    summed = ["_digital_24h", "_digital_7d", "product_views_7d"] + [
        f"views_{product}_{days}" for product in PROPENSITY_PRODUCTS for days in ("7d", "30d")
    ]
    browsing = sessions.groupBy(*KEYS).agg(
        _count(F.col("_web")).alias("web_sessions_30d"),
        _count(F.col("_app")).alias("app_sessions_30d"),
        _count(F.col("_recent")).alias("digital_sessions_7d"),
        *(F.sum(name).alias(name) for name in summed),
    )
    step_order = F.struct("event_time", "step_index")
    applications = (
        digital.where((F.col("event_type") == "application_step") & F.col("application_id").isNotNull())
        .groupBy("as_of", "session_id", "application_id")
        .agg(
            F.max_by("step", step_order).alias("_last_step"),
            F.max(step_order).alias("_last_step_order"),
            F.max("event_time").alias("_updated_at"),
            F.max(F.when(F.col("step") == "submit", 1).otherwise(0)).alias("_submitted"),
            *(F.max(F.col("product") == p).alias(f"_applied_{p}") for p in PROPENSITY_PRODUCTS),
        )
        .join(sessions.select("as_of", "session_id", "customer_number"), ["as_of", "session_id"])
        .groupBy(*KEYS, "application_id")
        .agg(
            F.max_by("_last_step", "_last_step_order").alias("last_step"),
            F.max("_updated_at").alias("updated_at"),
            F.max("_submitted").alias("submitted"),
            *(F.max(f"_applied_{p}").alias(f"_applied_{p}") for p in PROPENSITY_PRODUCTS),
        )
        .groupBy(*KEYS)
        .agg(
            *(_count(F.col(f"_applied_{p}")).alias(f"applications_{p}_30d") for p in PROPENSITY_PRODUCTS),
            # the most recently updated application not submitted (max_by skips null orderings)
            F.max_by("last_step", F.when(F.col("submitted") == 0, F.col("updated_at"))).alias(
                "open_application_last_step"
            ),
        )
    )

    is_complaint = F.col("interaction_type") == "complaint"
    service = calls.groupBy(*KEYS).agg(
        *_call_aggs(),
        *_activity_aggs("call"),
        _count(is_complaint & (F.col("event_time") > week_ago)).alias("complaints_7d"),
        _count(is_complaint).alias("complaints_30d"),
        F.max("event_time").alias("last_contact_centre_at"),
    )
    marketing = offers.groupBy(*KEYS).agg(
        *_offer_aggs(),
        *_activity_aggs("offer"),
        F.max(F.when(F.col("response") == "impression", F.col("event_time"))).alias(
            "last_marketing_contact_at"
        ),
    )
    visit_agg = visits.groupBy(*KEYS).agg(*_visit_aggs(), *_activity_aggs("visit"))
    return {
        "money": money,
        "balance": balance,
        "holdings": holdings,
        "browsing": browsing,
        "applications": applications,
        "service": service,
        "marketing": marketing,
        "visits": visit_agg,
    }


def point_in_time_features_at(spark: SparkSession, tables: Tables, as_ofs: Sequence[datetime]) -> DataFrame:
    """:func:`point_in_time_features` for every cut-off in ``as_ofs``, in one query.

    Same rows and values as calling :func:`point_in_time_features` per cut-off and stacking the
    results (the ``as_of`` column tells them apart), but planned and run once: each silver row is
    paired with every cut-off T whose window holds it (event time in (T - 30 days, T], snapshot
    time <= T) and every feature is an aggregate grouped by (customer, T), so no cut-off ever
    sees a row recorded after it.
    """
    if LOOKBACK != HISTORY:  # one window serves gold's features and the model-only ones
        raise RuntimeError(f"gold.LOOKBACK ({LOOKBACK}) and ml HISTORY ({HISTORY}) must be equal here")
    cutoffs = _cutoff_frame(
        spark,
        [
            {
                "as_of": as_of,
                "_pit_since": as_of - HISTORY,
                "_pit_since_date": (as_of - HISTORY).date(),
                "_pit_week_ago": as_of - timedelta(days=7),
                "_pit_day_ago": as_of - timedelta(hours=24),
                "_pit_year": as_of.year,
                "_pit_date": as_of.date(),
            }
            for as_of in as_ofs
        ],
    )
    latest_profile = _latest_at(spark.table(tables.silver("customers")), "customer_number", cutoffs)
    profile = latest_profile.where(F.col("status") == "active")
    population = profile.select(*KEYS)

    def events(source: str) -> DataFrame:
        return _in_windows(spark.table(tables.silver(source)), "event_time", cutoffs)

    # Digital events belong to whoever logged in during the session (gold._digital_with_customer).
    # Logins are numbered in their sort order so "the greatest login of a session" is a max of
    # numbers; one window partition on purpose: a few thousand distinct logins.
    login_ranks = (
        spark.table(tables.silver("digital"))
        .where(F.col("login_id").isNotNull())
        .select("login_id")
        .distinct()
        .select(
            "login_id",
            F.dense_rank().over(Window.partitionBy(F.lit(0)).orderBy("login_id")).alias("_login_rank"),
        )
    )
    logins = (
        latest_profile.where(F.col("login_id").isNotNull())
        .join(login_ranks, "login_id")
        .select("as_of", "_login_rank", "customer_number")
    )

    # Accounts are scoped to the population before the per-account window, as in the one-cut-off
    # code. Other rows need no scoping: their aggregates are per customer and the final left
    # joins keep only the population's rows.
    account_state = _latest_at(spark.table(tables.silver("accounts")), "account_id", cutoffs, population)
    parts = _realtime_at(
        events("transactions"),
        events("digital"),
        login_ranks,
        logins,
        events("visits"),
        events("contact_centre"),
        events("offer_responses"),
        account_state,
    )
    bureau = _latest_at(spark.table(tables.silver("bureau")), "customer_number", cutoffs).select(
        *KEYS, *_bureau_columns()
    )

    base = profile.select(
        *_profile_columns(F.col("as_of"), F.col("_pit_year"), F.col("_pit_date")), "_pit_week_ago"
    )
    out = base
    for part in (*parts.values(), bureau):
        out = out.join(part, KEYS, "left")

    def total(window: str) -> Column:
        counts = [F.coalesce(F.col(f"_{source}_{window}"), F.lit(0)) for source in ACTIVITY_SOURCES]
        return sum(counts[1:], counts[0])

    last_contact = F.greatest("last_contact_centre_at", "last_marketing_contact_at")
    out = out.select(
        "*",
        total("24h").alias("events_24h"),
        total("7d").alias("events_7d"),
        F.coalesce(F.col("_txn_balance"), F.col("_snapshot_balance")).alias("current_account_balance"),
        F.coalesce(F.col("last_salary_at") > F.col("_pit_week_ago"), F.lit(False))
        .cast("int")
        .alias("salary_received_7d"),
        ((F.col("as_of").cast("long") - last_contact.cast("long")) / 3600.0).alias(
            "hours_since_last_contact"
        ),
        _application_step_rank(F.col("open_application_last_step")).alias("open_application_step"),
    )
    return _model_columns(out)


def labels(spark: SparkSession, tables: Tables, as_of: datetime, horizon_days: int) -> DataFrame:
    """What each active customer at ``as_of`` did in the horizon after it: one 0/1 column per target.

    ``opened_<product>``: an account of that product opened on a day in (T, T + horizon]; accounts
    appear the day after approval, so this is an application approved from T's day on.
    ``churned``: the core-banking profile turned ``closed`` in (T, T + horizon].
    ``label_complete``: the data reaches T + horizon (a label window cut short is not a negative).
    """
    return labels_at(spark, tables, [as_of], horizon_days)


def labels_at(
    spark: SparkSession, tables: Tables, as_ofs: Sequence[datetime], horizon_days: int
) -> DataFrame:
    """:func:`labels` for every cut-off in ``as_ofs`` in one query, keyed by (customer, ``as_of``)."""
    horizon = timedelta(days=horizon_days)
    data_until = spark.table(tables.silver("customers")).agg(F.max("snapshot_time")).first()[0]

    def complete(until: datetime) -> bool:
        return data_until is not None and data_until >= until - timedelta(days=1)

    cutoffs = _cutoff_frame(
        spark,
        [
            {
                "as_of": as_of,
                "_pit_until": as_of + horizon,
                "_pit_date": as_of.date(),
                "_pit_until_date": (as_of + horizon).date(),
                "label_complete": complete(as_of + horizon),
            }
            for as_of in as_ofs
        ],
    )
    customers = spark.table(tables.silver("customers"))
    population = (
        _latest_at(customers, "customer_number", cutoffs)
        .where(F.col("status") == "active")
        .select(*KEYS, "label_complete")
    )
    opened = (
        spark.table(tables.silver("accounts"))
        .join(
            F.broadcast(cutoffs),
            (F.col("opened_date") > F.col("_pit_date")) & (F.col("opened_date") <= F.col("_pit_until_date")),
        )
        .groupBy(*KEYS)
        .agg(
            *(
                F.max(F.when(F.col("product") == p, 1).otherwise(0)).alias(f"opened_{p}")
                for p in PROPENSITY_PRODUCTS
            )
        )
    )
    closed = (
        customers.join(
            F.broadcast(cutoffs),
            (F.col("status") == "closed")
            & (F.col("snapshot_time") > F.col("as_of"))
            & (F.col("snapshot_time") <= F.col("_pit_until")),
        )
        .select(*KEYS, F.lit(1).alias("churned"))
        .distinct()
    )
    out = population.join(opened, KEYS, "left").join(closed, KEYS, "left")
    return out.select(
        "customer_number",
        F.col("as_of").cast("timestamp").alias("as_of"),
        *(F.coalesce(F.col(f"opened_{p}"), F.lit(0)).alias(f"opened_{p}") for p in PROPENSITY_PRODUCTS),
        F.coalesce(F.col("churned"), F.lit(0)).alias("churned"),
        F.col("label_complete"),
    )


def data_window(spark: SparkSession, tables: Tables) -> tuple[datetime, datetime]:
    """First and last event time in silver transactions: what cut-offs can be chosen from."""
    row = spark.table(tables.silver("transactions")).agg(F.min("event_time"), F.max("event_time")).first()
    if row[0] is None:
        raise InputError(
            f"no transactions in {tables.silver('transactions')}: ingest data before training "
            "(journeylake ingest --until-idle)"
        )
    return row[0], row[1]
