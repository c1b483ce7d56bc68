"""Point-in-time training sets: several cut-offs stacked, each with features as of T and labels after T.

One cut-off gives one example per customer, and product openings are rare; stacking a few
cut-offs a week apart multiplies the positives without mixing the future into the past. The
holdout is drawn by **customer** (a stable hash), so no customer's earlier cut-off trains a model
that is then graded on their later one.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from ml.features import HISTORY, KEYS, data_window, labels_at, point_in_time_features_at
from ml.settings import TrainingConfig
from pipelines.config import Config
from pipelines.errors import InputError
from pipelines.tables import Tables

LABEL_COLUMNS_PREFIX = "opened_"


@dataclass(frozen=True)
class TrainingSet:
    frame: pd.DataFrame  # context + features + labels + "holdout" (bool), one row per customer x cut-off
    cutoffs: list[date]
    horizon_days: int


def choose_cutoffs(first: datetime, last: datetime, training: TrainingConfig) -> list[date]:
    """Cut-off days D (T = D 00:00): the latest leaves a full horizon before the data ends."""
    last_full_day = last.date() if last.time() >= time(23, 0) else last.date() - timedelta(days=1)
    latest = last_full_day - timedelta(days=training.horizon_days)
    earliest = first.date() + timedelta(days=training.min_history_days)
    cutoffs = [latest - timedelta(days=k * training.cutoff_step_days) for k in range(training.cutoffs)]
    cutoffs = sorted(d for d in cutoffs if d >= earliest)
    if not cutoffs:
        raise InputError(
            f"the data covers {first.date()} .. {last.date()}, too short for a training cut-off: each "
            f"needs ml.training.min_history_days ({training.min_history_days}) of history before it and "
            f"ml.training.horizon_days ({training.horizon_days}) of outcomes after it; generate or ingest "
            "more days, or lower those settings"
        )
    return cutoffs


def in_holdout(customer_numbers: pd.Series, fraction: float, seed: int) -> np.ndarray:
    """Stable per-customer split: the same customer is in the holdout in every run and cut-off."""
    buckets = customer_numbers.map(lambda c: zlib.crc32(f"{seed}:{c}".encode()) % 10_000)
    return (buckets < int(fraction * 10_000)).to_numpy()


# silver tables the features read, and the column that dates their rows
FEATURE_INPUTS = {
    "transactions": "event_time",
    "digital": "event_time",
    "visits": "event_time",
    "contact_centre": "event_time",
    "offer_responses": "event_time",
    "customers": "snapshot_time",
    "accounts": "snapshot_time",
    "bureau": "snapshot_time",
}


def cached_history(
    spark: SparkSession, tables: Tables, since: datetime, until: datetime
) -> tuple[Tables, list]:
    """The silver rows every cut-off's features need, read once and kept in memory.

    Each cut-off would otherwise scan every silver table several times over. Event tables keep
    the rows in (since, until]; snapshot tables every row up to ``until`` (a customer's latest
    profile can be old). Returns a ``Tables`` whose silver names point at the cached views, and
    the cached frames (to unpersist).
    """
    cached = []
    for source, time_col in FEATURE_INPUTS.items():
        rows = spark.table(tables.silver(source)).where(F.col(time_col) <= F.lit(until))
        if time_col == "event_time":
            rows = rows.where((F.col("event_date") >= F.lit(since.date())) & (F.col(time_col) > F.lit(since)))
        rows = rows.persist()
        rows.createOrReplaceTempView(f"_training_{source}")
        cached.append(rows)
    views = Tables(
        lambda layer, name: (
            f"_training_{name}"
            if layer == "silver" and name in FEATURE_INPUTS
            else tables.resolve(layer, name)
        )
    )
    return views, cached


def build_training_set(spark: SparkSession, tables: Tables, cfg: Config) -> TrainingSet:
    """Features as of each cut-off next to the labels after it, one row per active customer x cut-off.

    Every cut-off is computed in one Spark query and collected once
    (``point_in_time_features_at`` / ``labels_at``): a query per cut-off spent about a minute
    planning a ~1,400-operator plan for a few thousand rows. Rows are sorted by cut-off and
    customer so the same data always gives the same frame (and the same trained model).
    """
    training = cfg.ml.training
    first, last = data_window(spark, tables)
    cutoffs = choose_cutoffs(first, last, training)
    as_ofs = [datetime.combine(cutoff, time()) for cutoff in cutoffs]
    history, cached = cached_history(spark, tables, as_ofs[0] - HISTORY - timedelta(days=1), as_ofs[-1])
    try:
        features = point_in_time_features_at(spark, history, as_ofs)
        outcome = labels_at(spark, tables, as_ofs, training.horizon_days)
        frame: pd.DataFrame = features.join(outcome, KEYS, "left").toPandas()
    finally:
        for rows in cached:
            rows.unpersist()
    frame = frame.sort_values(["as_of", "customer_number"], ignore_index=True)
    frame["as_of_date"] = pd.to_datetime(frame["as_of"]).dt.date
    frame["holdout"] = in_holdout(frame["customer_number"], training.holdout_fraction, training.seed)
    return TrainingSet(frame=frame, cutoffs=cutoffs, horizon_days=training.horizon_days)


def label_column(target: str) -> str:
    return "churned" if target == "churn" else f"{LABEL_COLUMNS_PREFIX}{target}"


def eligible(frame: pd.DataFrame, target: str) -> pd.Series:
    """Rows a target is defined for: a product model scores customers who do not hold it yet."""
    if target == "churn":
        return pd.Series(True, index=frame.index)
    return frame[f"holds_{target}"].fillna(0) == 0
