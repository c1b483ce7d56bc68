"""Point-in-time customer features and labels, computed from silver with Spark.

Training a propensity model on features that "know" the future is the classic way to get a
great holdout score and a useless model. Everything here is computed **as of a cut-off time T**:
features read only rows whose event (or snapshot) time is at or before T, and labels read only
what happened in the horizon after T. ``tests/ml/test_training.py`` proves the first half by
recomputing the features with every row after T removed and checking nothing changes.

The real-time features are ``pipelines.lakehouse.features``' definitions, the very ones
``gold.customer_features`` is computed with, so a model sees the same values when it is trained
and when it is scored (``tests/lakehouse/test_features.py`` holds both paths to it). The 30-day
behaviour, holdings and bureau features that only models need are added here, as extra
aggregates computed in the same groupings as the real-time ones.

One function computes every cut-off: :func:`point_in_time_features_at` pairs each row with every
cut-off whose window holds it and groups by (customer, cut-off). A query per cut-off spent
about a minute planning a ~1,400-operator plan; one query for all of them is planned once.
:func:`point_in_time_features` (scoring) is the same function at one cut-off.

``FEATURES`` names every model feature with the plain words reason codes use, and says which are
protected (never given as a reason to a customer or an auditor).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from pipelines.contracts import INCOME_BANDS, PRODUCTS
from pipelines.errors import InputError
from pipelines.lakehouse.features import (
    AS_OF,
    BROWSE_EVENTS,
    KEYS,
    LOOKBACK,
    REALTIME_DESCRIPTIONS,
    WEEK_AGO,
    Cutoffs,
    ExtraAggregates,
    realtime_features,
)
from pipelines.services.spark import one_row
from pipelines.tables import Tables

HISTORY = LOOKBACK  # the model-only 30-day features use the real-time features' window
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
        Feature("events_24h", REALTIME_DESCRIPTIONS["events_24h"]),
        Feature("events_7d", REALTIME_DESCRIPTIONS["events_7d"]),
        Feature("digital_sessions_7d", REALTIME_DESCRIPTIONS["digital_sessions_7d"]),
        Feature("product_views_7d", REALTIME_DESCRIPTIONS["product_views_7d"]),
        Feature("current_account_balance", REALTIME_DESCRIPTIONS["current_account_balance"], money=True),
        Feature("card_utilisation", REALTIME_DESCRIPTIONS["card_utilisation"]),
        Feature("salary_received_7d", REALTIME_DESCRIPTIONS["salary_received_7d"]),
        Feature("failed_payments_7d", REALTIME_DESCRIPTIONS["failed_payments_7d"]),
        Feature("fees_7d", REALTIME_DESCRIPTIONS["fees_7d"]),
        Feature("complaints_7d", REALTIME_DESCRIPTIONS["complaints_7d"]),
        Feature("complaints_30d", REALTIME_DESCRIPTIONS["complaints_30d"]),
        Feature("hours_since_last_contact", REALTIME_DESCRIPTIONS["hours_since_last_contact"]),
        Feature("open_application_step", REALTIME_DESCRIPTIONS["open_application_last_step"]),
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
        Feature("leaving_intents_30d", "times the customer said they want to close their account"),
        Feature("problem_intents_30d", "problems reported to the contact centre (declines, charges, ...)"),
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


# The model-only feature definitions. Each is a list of aggregate expressions over one silver
# table's rows (or a projection), computed in the real-time features' groupings
# (``_model_only_aggregates``).


def _product_view(product: str, since: Column | None = None) -> Column:
    """A browse event about ``product`` (after ``since`` when given)."""
    cond = F.col("event_type").isin(*BROWSE_EVENTS) & (F.col("product") == product)
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


# What customers said in the contact centre, as the text model read it (silver's intent column):
# features a bank can leave out of its models (ml.propensity.text_features) to see what they add.
TEXT_FEATURES: tuple[str, ...] = ("contact_sentiment_30d", "leaving_intents_30d", "problem_intents_30d")
LEAVING_INTENTS: tuple[str, ...] = ("terminate_account",)


def _call_aggs() -> list[Column]:
    from ml.text import PROBLEM_INTENTS

    return [
        F.count(F.lit(1)).alias("calls_30d"),
        F.avg("sentiment").alias("contact_sentiment_30d"),
        _count(F.col("intent").isin(*LEAVING_INTENTS)).alias("leaving_intents_30d"),
        _count(F.col("intent").isin(*sorted(PROBLEM_INTENTS))).alias("problem_intents_30d"),
    ]


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


def _model_only_aggregates() -> ExtraAggregates:
    """The model-only features, as extra aggregates of the real-time features' groupings."""
    week_ago = F.col(WEEK_AGO)
    views = [f"views_{product}_{days}" for product in PROPENSITY_PRODUCTS for days in ("7d", "30d")]
    return ExtraAggregates(
        transactions=_money_aggs(),
        visits=_visit_aggs(),
        contact_centre=_call_aggs(),
        offer_responses=_offer_aggs(),
        open_accounts=_holdings_aggs(),
        sessions=[
            F.max(F.col("channel") == "web").alias("_web"),
            F.max(F.col("channel") == "app").alias("_app"),
            *(
                agg
                for product in PROPENSITY_PRODUCTS
                for agg in (
                    _count(_product_view(product, week_ago)).alias(f"views_{product}_7d"),
                    _count(_product_view(product)).alias(f"views_{product}_30d"),
                )
            ),
        ],
        digital=[
            _count(F.col("_web")).alias("web_sessions_30d"),
            _count(F.col("_app")).alias("app_sessions_30d"),
            *(F.sum(name).alias(name) for name in views),
        ],
        # applications started per product: distinct applications with a step about it
        session_applications=[
            F.max(F.col("product") == p).alias(f"_applied_{p}") for p in PROPENSITY_PRODUCTS
        ],
        applications=[F.max(f"_applied_{p}").alias(f"_applied_{p}") for p in PROPENSITY_PRODUCTS],
        customer_applications=[
            _count(F.col(f"_applied_{p}")).alias(f"applications_{p}_30d") for p in PROPENSITY_PRODUCTS
        ],
    )


def point_in_time_features(
    spark: SparkSession, tables: Tables, as_of: datetime, customers: DataFrame | None = None
) -> DataFrame:
    """One row per active customer at ``as_of`` (or per row of ``customers``) with every model feature.

    Reads only rows with event or snapshot time <= ``as_of``. Columns: ``CONTEXT_COLUMNS`` then
    ``FEATURE_NAMES`` (numbers; nulls where a value is unknown, e.g. no bureau report yet).
    :func:`point_in_time_features_at` at one cut-off.
    """
    return point_in_time_features_at(spark, tables, [as_of], customers)


def point_in_time_features_at(
    spark: SparkSession, tables: Tables, as_ofs: Sequence[datetime], customers: DataFrame | None = None
) -> DataFrame:
    """:func:`point_in_time_features` for every cut-off in ``as_ofs``, in one query.

    One row per customer active at each cut-off T (only ``customers``' when given; the ``as_of``
    column tells the cut-offs apart). Each silver row is paired with every cut-off whose window
    holds it (event time in (T - 30 days, T], snapshot time <= T) and every feature is an
    aggregate grouped by (customer, T), so no cut-off ever sees a row recorded after it.
    """
    cutoffs = Cutoffs.at(
        spark, as_ofs, extra=lambda as_of: {"_pit_year": as_of.year, "_pit_date": as_of.date()}
    )
    profile = cutoffs.latest_snapshot(spark.table(tables.silver("customers")), "customer_number")
    profile = profile.where(F.col("status") == "active")
    scope = None
    if customers is not None:
        scope = customers.select("customer_number").distinct()
        profile = profile.join(scope, "customer_number", "left_semi")
    population = profile.select(*_profile_columns(F.col(AS_OF), F.col("_pit_year"), F.col("_pit_date")))
    out = realtime_features(spark, tables, cutoffs, population, scope=scope, extra=_model_only_aggregates())
    bureau = cutoffs.latest_snapshot(spark.table(tables.silver("bureau")), "customer_number")
    out = out.join(bureau.select(*KEYS, *_bureau_columns()), KEYS, "left")
    out = out.withColumns(
        {
            # model inputs are numbers: a flag is 0/1, an application's progress its step's rank
            "salary_received_7d": F.col("salary_received_7d").cast("int"),
            "open_application_step": _application_step_rank(F.col("open_application_last_step")),
        }
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
    data_until = one_row(spark.table(tables.silver("customers")).agg(F.max("snapshot_time")))[0]

    def complete(until: datetime) -> bool:
        return data_until is not None and data_until >= until - timedelta(days=1)

    cutoffs = Cutoffs.at(
        spark,
        as_ofs,
        extra=lambda as_of: {
            "_pit_until": as_of + horizon,
            "_pit_date": as_of.date(),
            "_pit_until_date": (as_of + horizon).date(),
            "label_complete": complete(as_of + horizon),
        },
    )
    customers = spark.table(tables.silver("customers"))
    population = (
        cutoffs.latest_snapshot(customers, "customer_number")
        .where(F.col("status") == "active")
        .select(*KEYS, "label_complete")
    )
    opened = (
        spark.table(tables.silver("accounts"))
        .join(
            F.broadcast(cutoffs.frame),
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
            F.broadcast(cutoffs.frame),
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
    row = one_row(spark.table(tables.silver("transactions")).agg(F.min("event_time"), F.max("event_time")))
    if row[0] is None:
        raise InputError(
            f"no transactions in {tables.silver('transactions')}: ingest data before training "
            "(journeylake ingest --until-idle)"
        )
    return row[0], row[1]
