"""``journeylake score``: every customer's segment, propensities and churn risk, with reason codes.

The champions (``models:/<name>@champion``) are loaded once on the driver and shipped to Spark
tasks, which compute features as of the scoring time (the same point-in-time code training
used), score them, and explain every score with SHAP in the same pass: explanations are cheap
enough (LightGBM's own TreeSHAP) to stay switched on for every customer.

Writes two tables, replaced whole on each run (Delta history keeps earlier runs):
- ``gold.customer_scores``: one row per customer in the core-banking profile, with segment,
  ``propensity_<product>``, ``churn_risk`` and the model versions used;
- ``gold.propensity_explanations``: one row per customer x model x reason rank, with the plain
  words, the feature and its SHAP contribution (log-odds), so an auditor can query why.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ml import registry
from ml.features import DESCRIPTIONS, FEATURE_NAMES, PROTECTED, point_in_time_features
from ml.settings import PropensityTarget
from pipelines.config import Config
from pipelines.errors import InputError
from pipelines.tables import Tables

REASON_SCHEMA = "array<struct<rank:int,feature:string,reason:string,shap_value:double>>"


@dataclass(frozen=True)
class Champions:
    propensity: dict[PropensityTarget, tuple[Any, str]]  # target -> (model, version)
    segmentation: tuple[Any, str] | None

    def versions(self) -> dict[str, str]:
        out = {f"propensity_{t}": v for t, (_, v) in self.propensity.items()}
        if self.segmentation:
            out["segmentation"] = self.segmentation[1]
        return out


def load_champions(cfg: Config) -> Champions:
    """Every configured model's champion; a model with none yet is named in the error."""
    registry.configure(cfg)
    propensity, missing = {}, []
    for target in cfg.ml.propensity.targets:
        name = registry.model_name(cfg, "propensity", target)
        try:
            propensity[target] = registry.load_champion("propensity", name)
        except Exception:  # noqa: BLE001 - MLflow raises several types for "no such model/alias"
            missing.append(name)
    segmentation = None
    try:
        segmentation = registry.load_champion("segmentation", registry.model_name(cfg, "segmentation"))
    except Exception:  # noqa: BLE001
        missing.append(registry.model_name(cfg, "segmentation"))
    if not propensity:
        raise InputError(
            f"no champion model in the registry at {registry.tracking_uri(cfg)} (looked for "
            f"{', '.join(missing)}@champion): run `journeylake train` first"
        )
    return Champions(propensity, segmentation)


def _output_schema(champions: Champions) -> str:
    fields = ["customer_number string", "segment_id int", "segment_name string"]
    for target in champions.propensity:
        column = "churn_risk" if target == "churn" else f"propensity_{target}"
        fields += [f"{column} double", f"reasons_{target} {REASON_SCHEMA}"]
    return ", ".join(fields)


def score_frame(pdf: pd.DataFrame, champions: Champions, top_k: int) -> pd.DataFrame:
    """Score and explain one batch of feature rows (pure pandas: also what the benchmark times)."""
    from ml.explain import reason_codes

    x = pdf[FEATURE_NAMES].astype("float64")
    out = pd.DataFrame({"customer_number": pdf["customer_number"].to_numpy()})
    if champions.segmentation:
        model = champions.segmentation[0]
        segments = model.predict(x[model.feature_names])
        out["segment_id"] = segments.astype("int32")
        out["segment_name"] = [model.segment_names.get(int(s), "unsegmented") for s in segments]
    else:
        out["segment_id"], out["segment_name"] = None, None
    for target, (model, _) in champions.propensity.items():
        column = "churn_risk" if target == "churn" else f"propensity_{target}"
        features = x[model.feature_names]
        out[column] = model.predict_proba(features)
        codes = reason_codes(model, features, DESCRIPTIONS, set(PROTECTED), top_k)
        reasons = []
        for row in codes.itertuples(index=False):
            items = []
            for rank in range(1, top_k + 1):
                feature = getattr(row, f"reason_feature_{rank}")
                if feature is None or (isinstance(feature, float) and pd.isna(feature)):
                    continue
                items.append(
                    {
                        "rank": rank,
                        "feature": feature,
                        "reason": getattr(row, f"reason_{rank}"),
                        "shap_value": float(getattr(row, f"reason_shap_{rank}")),
                    }
                )
            reasons.append(items)
        out[f"reasons_{target}"] = reasons
    return out


def score_customers(
    spark: SparkSession, cfg: Config, tables: Tables, as_of: datetime | None = None
) -> tuple[DataFrame, Champions, datetime]:
    """Scores and reasons for every active customer as of ``as_of`` (default: the newest event)."""
    from ml.features import data_window

    champions = load_champions(cfg)
    if as_of is None:
        as_of = data_window(spark, tables)[1]
    features = point_in_time_features(spark, tables, as_of)
    top_k = cfg.ml.reason_codes

    def score_batches(batches: Any) -> Any:
        for pdf in batches:
            yield score_frame(pdf, champions, top_k)

    scored = features.mapInPandas(score_batches, _output_schema(champions))
    return scored, champions, as_of


def write_scores(
    spark: SparkSession, cfg: Config, tables: Tables, as_of: datetime | None = None
) -> dict[str, Any]:
    """Write ``gold.customer_scores`` and ``gold.propensity_explanations``; returns counts and versions."""
    scored, champions, as_of = score_customers(spark, cfg, tables, as_of)
    scored = scored.persist()
    try:
        versions = champions.versions()
        version_map = F.create_map(*(F.lit(x) for kv in versions.items() for x in kv))
        scored_at = F.current_timestamp()
        score_columns = [c for c in scored.columns if not c.startswith("reasons_") and c != "customer_number"]
        # every configured model has its column, null while it has no champion (customer_360 reads them all)
        with_all = scored
        for target in cfg.ml.propensity.targets:
            column = "churn_risk" if target == "churn" else f"propensity_{target}"
            if column not in scored.columns:
                with_all = with_all.withColumn(column, F.lit(None).cast("double"))
                score_columns.append(column)
        # the status the scores were computed with: the latest profile at the scoring time
        profile = spark.table(tables.silver("customers")).where(F.col("snapshot_time") <= F.lit(as_of))
        latest = profile.groupBy("customer_number").agg(
            F.max_by("status", "snapshot_time").alias("customer_status")
        )
        scores = latest.join(
            with_all.select("customer_number", *score_columns), "customer_number", "left"
        ).select(
            "customer_number",
            "customer_status",
            *score_columns,
            F.lit(as_of).cast("timestamp").alias("features_as_of"),
            scored_at.alias("scored_at"),
            version_map.alias("model_versions"),
        )
        spark.sql(f"CREATE SCHEMA IF NOT EXISTS {tables.gold('customer_scores').rsplit('.', 1)[0]}")
        (
            scores.write.format("delta")
            .mode("overwrite")
            .option("overwriteSchema", "true")
            .saveAsTable(tables.gold("customer_scores"))
        )
        explanations = None
        for target in champions.propensity:
            column = "churn_risk" if target == "churn" else f"propensity_{target}"
            part = scored.select(
                "customer_number",
                F.lit(target).alias("model"),
                F.lit(champions.propensity[target][1]).alias("model_version"),
                F.col(column).alias("score"),
                F.explode(f"reasons_{target}").alias("r"),
            ).select(
                "customer_number",
                "model",
                "model_version",
                "score",
                F.col("r.rank").alias("reason_rank"),
                F.col("r.feature").alias("feature"),
                F.col("r.reason").alias("reason"),
                F.col("r.shap_value").alias("shap_value"),
            )
            explanations = part if explanations is None else explanations.unionByName(part)
        assert explanations is not None
        (
            explanations.withColumn("features_as_of", F.lit(as_of).cast("timestamp"))
            .withColumn("scored_at", scored_at)
            .write.format("delta")
            .mode("overwrite")
            .option("overwriteSchema", "true")
            .saveAsTable(tables.gold("propensity_explanations"))
        )
        scored_count = scored.count()
    finally:
        scored.unpersist()
    return {"customers_scored": scored_count, "as_of": as_of, "model_versions": versions}
