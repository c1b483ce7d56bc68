"""The real-time customer features: one definition, computed as of any moment.

``gold.customer_features`` (the stream, one moment per micro-batch), the point-in-time training
sets (many cut-offs at once) and scoring all compute these features with :func:`realtime_features`,
so a model is trained on the very values it is scored on. A consumer that needs more features
from the same rows (the model-only 30-day behaviour in ``ml.features``) passes them as
:class:`ExtraAggregates`: they are computed in the same aggregations, not in a second pass.

Every row is paired with every cut-off T whose window holds it (event time in (T - LOOKBACK, T],
snapshot time <= T) and every feature is an aggregate grouped by (customer, T), so no cut-off
sees a row recorded after it, and one cut-off or twenty is the same query.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from pipelines.errors import InputError
from pipelines.tables import Tables

LOOKBACK = timedelta(days=30)  # the longest window any feature uses
EVENT_SOURCES = ("transactions", "digital", "visits", "contact_centre", "offer_responses")
BROWSE_EVENTS = ("product_view", "compare", "calculator")
KEYS: list[str] = ["customer_number", "as_of"]  # one row per customer x cut-off

# The cut-off frame's columns: T itself and the bounds every window compares with.
AS_OF = "as_of"
SINCE = "_cutoff_since"  # T - LOOKBACK
SINCE_DATE = "_cutoff_since_date"  # its date: event_date partitions before it hold no row of T
HOUR_AGO = "_cutoff_hour_ago"
DAY_AGO = "_cutoff_day_ago"
WEEK_AGO = "_cutoff_week_ago"


@dataclass(frozen=True)
class RealtimeFeature:
    """A real-time feature: its column and what it means in plain words (reason codes use them)."""

    name: str
    description: str


# gold.customer_features' columns after customer_number and features_as_of, in table order.
REALTIME_FEATURES: tuple[RealtimeFeature, ...] = (
    RealtimeFeature("last_event_at", "time of the customer's latest event"),
    RealtimeFeature("events_1h", "activity in the last hour"),
    RealtimeFeature("events_24h", "activity in the last 24 hours"),
    RealtimeFeature("events_7d", "activity in the last 7 days"),
    RealtimeFeature("digital_sessions_7d", "online sessions in the last 7 days"),
    RealtimeFeature("product_views_7d", "product pages viewed in the last 7 days"),
    RealtimeFeature("last_product_viewed", "the product the customer looked at last"),
    RealtimeFeature("last_product_viewed_at", "when the customer last looked at a product"),
    RealtimeFeature("open_application_id", "the latest unfinished application"),
    RealtimeFeature("open_application_product", "the product of the latest unfinished application"),
    RealtimeFeature("open_application_last_step", "how far an unfinished application got"),
    RealtimeFeature("open_application_updated_at", "when the latest unfinished application last moved"),
    RealtimeFeature("current_account_balance", "current account balance"),
    RealtimeFeature("card_utilisation", "credit card utilisation"),
    RealtimeFeature("salary_received_7d", "salary paid in within the last 7 days"),
    RealtimeFeature("last_salary_at", "when a salary was last paid in"),
    RealtimeFeature("failed_payments_7d", "failed payments in the last 7 days"),
    RealtimeFeature("fees_7d", "fees charged in the last 7 days"),
    RealtimeFeature("complaints_7d", "complaints in the last 7 days"),
    RealtimeFeature("complaints_30d", "complaints in the last 30 days"),
    RealtimeFeature("last_contact_centre_at", "when the customer last spoke to the contact centre"),
    RealtimeFeature("last_marketing_contact_at", "when the bank last showed the customer an offer"),
    RealtimeFeature("hours_since_last_contact", "hours since the bank last contacted the customer"),
)
REALTIME_FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in REALTIME_FEATURES)
REALTIME_DESCRIPTIONS: dict[str, str] = {f.name: f.description for f in REALTIME_FEATURES}


@dataclass(frozen=True)
class Cutoffs:
    """The moments features are computed at: one row per cut-off T, with T's window bounds.

    The bounds are Python literals computed once per T (``F.lit`` of datetimes and dates), so
    every comparison sees the same value whatever the number of cut-offs.
    """

    frame: DataFrame
    as_ofs: tuple[datetime, ...]
    constants: tuple[Mapping[str, object], ...]  # per cut-off: its columns' values

    @classmethod
    def at(
        cls,
        spark: SparkSession,
        as_ofs: Sequence[datetime],
        extra: Callable[[datetime], Mapping[str, object]] | None = None,
    ) -> Cutoffs:
        """Cut-offs at ``as_ofs``; ``extra(T)`` adds constants of a consumer's own (its columns)."""
        if not as_ofs:
            raise InputError("features need at least one cut-off time (as_ofs is empty)")
        constants = tuple(
            {
                AS_OF: as_of,
                SINCE: as_of - LOOKBACK,
                SINCE_DATE: (as_of - LOOKBACK).date(),
                HOUR_AGO: as_of - timedelta(hours=1),
                DAY_AGO: as_of - timedelta(hours=24),
                WEEK_AGO: as_of - timedelta(days=7),
                **(extra(as_of) if extra is not None else {}),
            }
            for as_of in as_ofs
        )
        rows = [F.struct(*(F.lit(value).alias(name) for name, value in row.items())) for row in constants]
        return cls(spark.range(1).select(F.inline(F.array(*rows))), tuple(as_ofs), constants)

    @property
    def earliest_since(self) -> datetime:
        return min(self.as_ofs) - LOOKBACK

    @property
    def latest(self) -> datetime:
        return max(self.as_ofs)

    def each(self, df: DataFrame, condition: Column | None = None) -> DataFrame:
        """``df``'s rows once per cut-off (for which ``condition`` holds), with its columns.

        One cut-off is a projection of literals (the stream's case: no join to plan or run);
        several are a join with the cut-offs, a handful of rows, broadcast.
        """
        if len(self.constants) == 1:
            return df.select("*", *(F.lit(value).alias(name) for name, value in self.constants[0].items()))
        if condition is None:
            return df.crossJoin(F.broadcast(self.frame))
        return df.join(F.broadcast(self.frame), condition)

    def events(self, df: DataFrame, time_col: str = "event_time") -> DataFrame:
        """Each row once per cut-off T whose window (T - LOOKBACK, T] holds it.

        The literal bounds of all windows come first, so Delta skips the files no window reads
        (with one cut-off they are exactly that cut-off's window).
        """
        since: date = self.earliest_since.date()
        rows = df.where(
            (F.col("event_date") >= F.lit(since))
            & (F.col(time_col) > F.lit(self.earliest_since))
            & (F.col(time_col) <= F.lit(self.latest))
        )
        return self.each(
            rows,
            (F.col("event_date") >= F.col(SINCE_DATE))
            & (F.col(time_col) > F.col(SINCE))
            & (F.col(time_col) <= F.col(AS_OF)),
        )

    def latest_snapshot(self, df: DataFrame, key: str, scope: DataFrame | None = None) -> DataFrame:
        """The latest snapshot (``snapshot_time`` <= T) of each ``key``, for every cut-off T.

        ``scope`` ((customer, T) rows) keeps only those customers' snapshots at T, before the
        latest is chosen.
        """
        rows = df.where(F.col("snapshot_time") <= F.lit(self.latest))
        rows = self.each(rows, F.col("snapshot_time") <= F.col(AS_OF))
        if scope is not None:
            rows = rows.join(scope.select(*KEYS), KEYS, "left_semi")
        latest = Window.partitionBy(key, AS_OF).orderBy(F.col("snapshot_time").desc())
        return rows.withColumn("_rank", F.row_number().over(latest)).where("_rank = 1").drop("_rank")


@dataclass(frozen=True)
class ExtraAggregates:
    """A consumer's own aggregates, computed in the same groupings as the real-time features.

    Each field is a list of aliased aggregate expressions over the rows of one grouping; their
    columns come out of :func:`realtime_features` beside the real-time features (the session and
    application levels only through the level above them), so their names must not start with
    an underscore (this module's own columns do). The cut-off columns (``WEEK_AGO`` ...) can be
    compared with on every event level.
    """

    transactions: Sequence[Column] = ()  # per (customer, T): the window's transactions
    visits: Sequence[Column] = ()  # per (customer, T): branch and ATM visits
    contact_centre: Sequence[Column] = ()  # per (customer, T): contact-centre interactions
    offer_responses: Sequence[Column] = ()  # per (customer, T): offer impressions and responses
    open_accounts: Sequence[Column] = ()  # per (customer, T): the latest snapshot of each open account
    sessions: Sequence[Column] = ()  # per (session, T): the session's digital events
    digital: Sequence[Column] = ()  # per (customer, T): their session rows (``sessions``' columns)
    session_applications: Sequence[Column] = ()  # per (session, application, T): its steps
    applications: Sequence[Column] = ()  # per (customer, application, T): its session rows
    customer_applications: Sequence[Column] = ()  # per (customer, T): their application rows


NO_EXTRAS = ExtraAggregates()
ACTIVITY_SOURCES = ("txn", "digital", "visit", "call", "offer")


def _count(cond: Column) -> Column:
    return F.count(F.when(cond, 1))


def _activity(source: str) -> list[Column]:
    """This source's share of ``events_1h`` .. ``events_7d`` and ``last_event_at``."""
    return [
        _count(F.col("event_time") > F.col(HOUR_AGO)).alias(f"_{source}_1h"),
        _count(F.col("event_time") > F.col(DAY_AGO)).alias(f"_{source}_24h"),
        _count(F.col("event_time") > F.col(WEEK_AGO)).alias(f"_{source}_7d"),
        F.max("event_time").alias(f"_{source}_last"),
    ]


def _login_ranks(digital: DataFrame) -> DataFrame:
    """Every login of ``digital`` numbered in login order.

    "The greatest login of a session" is then a max of numbers, which keeps the session
    aggregate hash-based (a max of strings is a sort). One window partition on purpose: a few
    thousand distinct logins.
    """
    return (
        digital.where(F.col("login_id").isNotNull())
        .select("login_id")
        .distinct()
        .select(
            "login_id",
            F.dense_rank().over(Window.partitionBy(F.lit(0)).orderBy("login_id")).alias("_login_rank"),
        )
    )


def _owners(sessions: DataFrame, login_ranks: DataFrame, profiles: DataFrame) -> DataFrame:
    """``sessions`` ((T, session) rows with their greatest ``_login_rank``) with their customer.

    A session belongs to whoever logged in during it: the greatest login seen in the session in
    T's window, matched to the login of a customer's latest profile at T. Sessions nobody logged
    in to belong to no one (a null rank matches no customer).
    """
    logins = (
        profiles.where(F.col("login_id").isNotNull())
        .join(login_ranks, "login_id")
        .select(AS_OF, "_login_rank", "customer_number")
    )
    return sessions.join(logins, [AS_OF, "_login_rank"])


def session_owners(
    spark: SparkSession, tables: Tables, cutoffs: Cutoffs, sessions: DataFrame | None = None
) -> DataFrame:
    """(``as_of``, ``session_id``, ``customer_number``): whose each digital session is at each T
    (only ``sessions``' session ids when given)."""
    digital = cutoffs.events(spark.table(tables.silver("digital")))
    if sessions is not None:
        wanted = sessions.select("session_id").distinct()
        digital = digital.join(wanted, "session_id", "left_semi")
    ranks = _login_ranks(digital)
    per_session = (
        digital.join(ranks, "login_id", "left")
        .groupBy(AS_OF, "session_id")
        .agg(F.max("_login_rank").alias("_login_rank"))
    )
    profiles = cutoffs.latest_snapshot(spark.table(tables.silver("customers")), "customer_number")
    return _owners(per_session, ranks, profiles).select(AS_OF, "session_id", "customer_number")


def realtime_features(
    spark: SparkSession,
    tables: Tables,
    cutoffs: Cutoffs,
    population: DataFrame,
    *,
    scope: DataFrame | None = None,
    extra: ExtraAggregates = NO_EXTRAS,
) -> DataFrame:
    """Every real-time feature of each (``customer_number``, ``as_of``) row of ``population``.

    ``population``'s columns are kept, followed by ``REALTIME_FEATURE_NAMES`` and ``extra``'s
    columns; a customer with no events gets 0 for counts and nulls for times. ``scope`` (a small
    frame of ``customer_number``) limits the rows read to those customers: the stream's touched
    customers.

    Definitions, over the rows in the window (T - 30 days, T]:

    * ``events_1h`` .. ``events_7d``, ``last_event_at``: events of every source (transactions,
      the customer's digital events, visits, contact-centre interactions, offer responses).
    * digital events belong to whoever logged in during the session (see ``_owners``);
      ``digital_sessions_7d`` counts sessions with an event in the last 7 days and
      ``product_views_7d`` their browse events (product view, compare, calculator) in them.
    * ``last_product_viewed``: the product of the latest browse event naming one.
    * ``open_application_*``: the most recently updated application without a ``submit`` step;
      its last step and product are those of its latest step (by time, then step index).
    * ``current_account_balance``: the latest ``balance_after`` of a transaction on an account
      whose latest snapshot is a current account, else the open current accounts' snapshot
      balance; ``card_utilisation``: balances over limits of the open cards.
    * ``salary_received_7d``, ``failed_payments_7d``, ``fees_7d``, ``complaints_7d`` /
      ``_30d``; ``hours_since_last_contact``: since the last contact-centre interaction or
      offer impression.
    """

    def events(source: str) -> DataFrame:
        rows = cutoffs.events(spark.table(tables.silver(source)))
        return rows if scope is None else _scoped(rows, scope)

    week_ago, day_ago, hour_ago = F.col(WEEK_AGO), F.col(DAY_AGO), F.col(HOUR_AGO)
    population_keys = population.select(*KEYS)
    accounts = cutoffs.latest_snapshot(spark.table(tables.silver("accounts")), "account_id", population_keys)

    # transactions: a balance counts if its account's latest snapshot is a current account. The
    # latest such balance is found in two steps: the latest time (a hash aggregate), then the
    # rows at that time. ``max_by`` over a struct ordering in the main aggregate would make it a
    # sort-based aggregate of every transaction, the slowest step of the whole query.
    current_accounts = (
        accounts.where(F.col("product") == "current_account")
        .select("account_id", AS_OF, F.lit(True).alias("_on_current_account"))
        .distinct()
    )
    txns = events("transactions").join(current_accounts, ["account_id", AS_OF], "left")
    has_balance = F.coalesce(F.col("_on_current_account"), F.lit(False)) & F.col("balance_after").isNotNull()
    is_salary = F.col("txn_type") == "salary"
    money = txns.groupBy(*KEYS).agg(
        *_activity("txn"),
        F.max(F.when(is_salary, F.col("event_time"))).alias("last_salary_at"),
        F.max(is_salary & (F.col("event_time") > week_ago)).alias("_salary_7d"),
        _count((F.col("txn_type") == "failed_payment") & (F.col("event_time") > week_ago)).alias(
            "failed_payments_7d"
        ),
        _count((F.col("txn_type") == "fee") & (F.col("event_time") > week_ago)).alias("fees_7d"),
        F.max(F.when(has_balance, F.col("event_time"))).alias("_balance_at"),
        *extra.transactions,
    )
    balance = (
        txns.where(has_balance)
        .join(money.select(*KEYS, F.col("_balance_at").alias("event_time")), [*KEYS, "event_time"])
        .groupBy(*KEYS)
        .agg(F.max_by("balance_after", F.struct("event_time", "event_id")).alias("_txn_balance"))
    )
    is_card = F.col("product") == "credit_card"
    holdings = (
        accounts.where(F.col("status") == "open")
        .groupBy(*KEYS)
        .agg(
            F.sum(F.when(F.col("product") == "current_account", F.col("balance"))).alias("_snapshot_balance"),
            (
                F.sum(F.when(is_card, F.abs(F.col("balance"))))
                / F.sum(F.when(is_card, F.col("credit_limit")))
            ).alias("card_utilisation"),
            *extra.open_accounts,
        )
    )

    # digital events are summed up per session before they are attributed, and distinct counts
    # are taken in two steps (per session or application, then per customer): the same numbers
    # as attributing every event and counting distinct values, for a fraction of the rows
    digital = cutoffs.events(spark.table(tables.silver("digital")))
    ranks = _login_ranks(digital)
    recent = F.col("event_time") > week_ago
    per_session = (
        digital.join(ranks, "login_id", "left")
        .groupBy(AS_OF, "session_id")
        .agg(
            F.max("_login_rank").alias("_login_rank"),
            _count(F.col("event_time") > hour_ago).alias("_digital_1h"),
            _count(F.col("event_time") > day_ago).alias("_digital_24h"),
            _count(recent).alias("_digital_7d"),
            F.max("event_time").alias("_digital_last"),
            F.max(recent).alias("_recent"),
            _count(recent & F.col("event_type").isin(*BROWSE_EVENTS)).alias("_product_views_7d"),
            *extra.sessions,
        )
    )
    profiles = cutoffs.latest_snapshot(spark.table(tables.silver("customers")), "customer_number")
    sessions = _owners(per_session, ranks, profiles)
    if scope is not None:
        sessions = _scoped(sessions, scope)
    owners = sessions.select(AS_OF, "session_id", "customer_number")
    browsing = sessions.groupBy(*KEYS).agg(
        *(F.sum(f"_digital_{window}").alias(f"_digital_{window}") for window in ("1h", "24h", "7d")),
        F.max("_digital_last").alias("_digital_last"),
        _count(F.col("_recent")).alias("digital_sessions_7d"),
        F.sum("_product_views_7d").alias("product_views_7d"),
        *extra.digital,
    )

    # the latest browse event naming a product: a struct ordering makes a sort-based aggregate,
    # so it runs over the browse rows alone, not in the session aggregate above
    viewed_order = F.struct("event_time", "event_id")
    last_viewed = (
        digital.where(F.col("event_type").isin(*BROWSE_EVENTS) & F.col("product").isNotNull())
        .groupBy(AS_OF, "session_id")
        .agg(
            F.max_by("product", viewed_order).alias("_viewed"),
            F.max(viewed_order).alias("_viewed_order"),
        )
        .join(owners, [AS_OF, "session_id"])
        .groupBy(*KEYS)
        .agg(
            F.max_by("_viewed", "_viewed_order").alias("last_product_viewed"),
            F.max("_viewed_order.event_time").alias("last_product_viewed_at"),
        )
    )

    step_order = F.struct("event_time", "step_index")
    applications = (
        digital.where((F.col("event_type") == "application_step") & F.col("application_id").isNotNull())
        .groupBy(AS_OF, "session_id", "application_id")
        .agg(
            F.max_by("step", step_order).alias("_last_step"),
            F.max_by("product", step_order).alias("_product"),
            F.max(step_order).alias("_last_step_order"),
            F.max(F.when(F.col("step") == "submit", 1).otherwise(0)).alias("_submitted"),
            *extra.session_applications,
        )
        .join(owners, [AS_OF, "session_id"])
        .groupBy(*KEYS, "application_id")
        .agg(
            F.max_by("_last_step", "_last_step_order").alias("last_step"),
            F.max_by("_product", "_last_step_order").alias("product"),
            F.max("_last_step_order.event_time").alias("updated_at"),
            F.max("_submitted").alias("submitted"),
            *extra.applications,
        )
        .groupBy(*KEYS)
        .agg(
            # the most recently updated application not submitted (max_by skips null orderings)
            F.max_by(
                F.struct("application_id", "product", "last_step", "updated_at"),
                F.when(F.col("submitted") == 0, F.struct("updated_at", "application_id")),
            ).alias("_open"),
            *extra.customer_applications,
        )
    )

    is_complaint = F.col("interaction_type") == "complaint"
    service = (
        events("contact_centre")
        .groupBy(*KEYS)
        .agg(
            *_activity("call"),
            _count(is_complaint & (F.col("event_time") > week_ago)).alias("complaints_7d"),
            _count(is_complaint).alias("complaints_30d"),
            F.max("event_time").alias("last_contact_centre_at"),
            *extra.contact_centre,
        )
    )
    marketing = (
        events("offer_responses")
        .groupBy(*KEYS)
        .agg(
            *_activity("offer"),
            F.max(F.when(F.col("response") == "impression", F.col("event_time"))).alias(
                "last_marketing_contact_at"
            ),
            *extra.offer_responses,
        )
    )
    visits = events("visits").groupBy(*KEYS).agg(*_activity("visit"), *extra.visits)

    parts = (money, balance, holdings, browsing, last_viewed, applications, service, marketing, visits)
    out = population
    for part in parts:
        out = out.join(part, KEYS, "left")

    def total(window: str) -> Column:
        counts = [F.coalesce(F.col(f"_{source}_{window}"), F.lit(0)) for source in ACTIVITY_SOURCES]
        return sum(counts[1:], counts[0])

    def zero_when_missing(name: str) -> Column:
        return F.coalesce(F.col(name), F.lit(0)).alias(name)

    last_contact = F.greatest("last_contact_centre_at", "last_marketing_contact_at")
    features = {
        "last_event_at": F.greatest(*(F.col(f"_{source}_last") for source in ACTIVITY_SOURCES)),
        "events_1h": total("1h"),
        "events_24h": total("24h"),
        "events_7d": total("7d"),
        "digital_sessions_7d": zero_when_missing("digital_sessions_7d"),
        "product_views_7d": zero_when_missing("product_views_7d"),
        "last_product_viewed": F.col("last_product_viewed"),
        "last_product_viewed_at": F.col("last_product_viewed_at"),
        "open_application_id": F.col("_open.application_id"),
        "open_application_product": F.col("_open.product"),
        "open_application_last_step": F.col("_open.last_step"),
        "open_application_updated_at": F.col("_open.updated_at"),
        "current_account_balance": F.coalesce(F.col("_txn_balance"), F.col("_snapshot_balance")),
        "card_utilisation": F.col("card_utilisation"),
        "salary_received_7d": F.coalesce(F.col("_salary_7d"), F.lit(False)),
        "last_salary_at": F.col("last_salary_at"),
        "failed_payments_7d": zero_when_missing("failed_payments_7d"),
        "fees_7d": zero_when_missing("fees_7d"),
        "complaints_7d": zero_when_missing("complaints_7d"),
        "complaints_30d": zero_when_missing("complaints_30d"),
        "last_contact_centre_at": F.col("last_contact_centre_at"),
        "last_marketing_contact_at": F.col("last_marketing_contact_at"),
        "hours_since_last_contact": (F.col(AS_OF).cast("long") - last_contact.cast("long")) / 3600.0,
    }
    if tuple(features) != REALTIME_FEATURE_NAMES:  # the catalogue and the code name the same features
        raise RuntimeError(f"realtime_features computes {list(features)}, not REALTIME_FEATURES")
    # a consumer's extras: the parts' columns that are neither keys, features nor our own (``_x``)
    extras = [
        name
        for part in parts
        for name in part.columns
        if name not in KEYS and name not in features and not name.startswith("_")
    ]
    return out.select(
        *population.columns,
        *(column.alias(name) for name, column in features.items()),
        *extras,
    )


def _scoped(rows: DataFrame, scope: DataFrame) -> DataFrame:
    return rows.join(F.broadcast(scope.select("customer_number").distinct()), "customer_number", "left_semi")
