"""How good is identity resolution? ``gold.identity_map`` measured against the simulator's truth.

Pairwise figures, the usual ones for entity resolution: over every pair of source ids, a pair is
predicted linked when both ids got the same ``unified_customer_id`` and truly linked when both
belong to the same person. Precision = true links found / links predicted; recall = true links
found / true links. Also: the share of people split over several unified ids, and the share of
unified ids that merge several people. Only ids that appear in the data (and so in the map)
count.

Figures come twice: over every id, and over the *resolvable* ids. A device or cookie that was
only ever used anonymously (never in a session where someone logged in) carries no evidence of
whose it is, for us or for any bank; it counts against recall over all ids but is left out of
the resolvable set. Which ids are resolvable is read from the data, never from the truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipelines.errors import InputError
from pipelines.services.spark import one_row


@dataclass(frozen=True)
class PairScores:
    ids: int
    precision: float
    recall: float


@dataclass(frozen=True)
class IdentityScores:
    ids: int
    people: int
    unified_ids: int
    precision: float
    recall: float
    people_split: float
    unified_merged: float
    by_rule: dict[str, int]
    resolvable: PairScores

    def lines(self) -> list[str]:
        return [
            f"identity resolution vs truth: {self.ids:,} source ids, {self.people:,} people, "
            f"{self.unified_ids:,} unified ids",
            f"  all ids:        pairwise precision {self.precision:.4f}  recall {self.recall:.4f}",
            f"  resolvable ids: pairwise precision {self.resolvable.precision:.4f}  "
            f"recall {self.resolvable.recall:.4f} ({self.resolvable.ids:,} ids; target P >= 0.98, R >= 0.95)",
            f"  people split over several unified ids {self.people_split:.2%}; "
            f"unified ids merging several people {self.unified_merged:.2%}",
            "  links by rule: " + ", ".join(f"{k} {v:,}" for k, v in sorted(self.by_rule.items())),
        ]


def _pairs(df: DataFrame, *keys: str) -> int:
    counts = df.groupBy(*keys).count()
    value = one_row(counts.select(F.sum(F.col("count") * (F.col("count") - 1) / 2)))[0]
    return int(value or 0)


def _pair_scores(joined: DataFrame) -> PairScores:
    predicted_pairs = _pairs(joined, "unified_customer_id")
    true_pairs = _pairs(joined, "person_id")
    found = _pairs(joined, "unified_customer_id", "person_id")
    return PairScores(
        ids=joined.count(),
        precision=found / predicted_pairs if predicted_pairs else 1.0,
        recall=found / true_pairs if true_pairs else 1.0,
    )


def anonymous_only_ids(spark: SparkSession, digital: str) -> DataFrame:
    """Devices and cookies never seen in a session in which a login was used."""
    events = spark.table(digital)
    with_login = events.where(F.col("login_id").isNotNull()).select("session_id").distinct()
    seen = events.join(with_login.withColumn("_login", F.lit(True)), "session_id", "left")
    ids = seen.select(
        F.lit("device_id").alias("id_type"), F.col("device_id").alias("id_value"), "_login"
    ).unionByName(
        seen.where(F.col("cookie_id").isNotNull()).select(
            F.lit("cookie_id").alias("id_type"), F.col("cookie_id").alias("id_value"), "_login"
        )
    )
    return (
        ids.groupBy("id_type", "id_value")
        .agg(F.max("_login").alias("_login"))
        .where(F.col("_login").isNull())
    )


def score_identity_map(
    spark: SparkSession, identity_map: str, truth_dir: Path, digital: str | None = None
) -> IdentityScores:
    """Score the table ``identity_map`` against ``truth_dir/identities.parquet``.

    ``digital`` (the silver digital events table) tells which devices and cookies are resolvable.
    """
    truth_file = Path(truth_dir) / "identities.parquet"
    if not truth_file.is_file():
        raise InputError(f"no identity truth at {truth_file} (generate data with `journeylake generate`)")
    truth = spark.read.parquet(str(truth_file)).select("id_type", "id_value", "person_id")
    predicted = spark.table(identity_map).select("id_type", "id_value", "unified_customer_id", "link_rule")
    joined = predicted.join(truth, ["id_type", "id_value"], "inner").cache()
    try:
        overall = _pair_scores(joined)
        resolvable = joined
        if digital:
            resolvable = joined.join(anonymous_only_ids(spark, digital), ["id_type", "id_value"], "left_anti")
        stats = one_row(
            joined.agg(
                F.count("*").alias("ids"),
                F.countDistinct("person_id").alias("people"),
                F.countDistinct("unified_customer_id").alias("unified"),
            )
        )
        split = joined.groupBy("person_id").agg(F.countDistinct("unified_customer_id").alias("n"))
        merged = joined.groupBy("unified_customer_id").agg(F.countDistinct("person_id").alias("n"))
        by_rule = {r["link_rule"]: r["count"] for r in joined.groupBy("link_rule").count().collect()}
        return IdentityScores(
            ids=stats["ids"],
            people=stats["people"],
            unified_ids=stats["unified"],
            precision=overall.precision,
            recall=overall.recall,
            people_split=split.where("n > 1").count() / max(stats["people"], 1),
            unified_merged=merged.where("n > 1").count() / max(stats["unified"], 1),
            by_rule=by_rule,
            resolvable=_pair_scores(resolvable),
        )
    finally:
        joined.unpersist()
