"""Benchmark: model training time, and SHAP reason codes in customers/s, at 100k customers.

1. **The real pipeline** on a generated bank (default 1,500 customers x 50 days, ingested into a
   home of its own unless ``--home`` points at one already ingested): the point-in-time
   training set from silver, then ``train_all`` (segmentation + every propensity model, with
   each model's AUC next to the truth ceiling, and the MLflow registry).
2. **At bank scale** (``--scale``, default 100,000 customers): the real training rows are
   resampled to that many customers, then each propensity model and the segmentation are
   trained on them, and every model's scores with top-4 reason codes (``ml.score.score_frame``,
   the code the scoring job runs in each Spark task) are timed. Resampling keeps the feature
   distributions and the model shapes; the cost of training and of TreeSHAP depends on rows,
   features and trees, not on where the rows came from.

    .venv/bin/python bench/bench_ml.py [--customers 1500] [--days 50] [--scale 100000] [--home DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from _common import ensure_bank, own_home

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1500)
    parser.add_argument("--days", type=int, default=50)
    parser.add_argument("--scale", type=int, default=100_000)
    parser.add_argument("--home", default=None, help="an ingested home to reuse (skips generate + ingest)")
    args = parser.parse_args()

    home = own_home(args.home, "jl-bench-ml-")

    import numpy as np
    import pandas as pd

    from ml.features import DESCRIPTIONS, FEATURE_NAMES
    from ml.propensity import PropensityModel, train_propensity
    from ml.score import Champions, score_frame
    from ml.segmentation import fit_segmentation
    from ml.settings import PropensityTarget
    from ml.train import format_reports, log_scaled_features, segmentation_features
    from ml.training_set import build_training_set, eligible, label_column
    from pipelines.config import load_config
    from pipelines.services import metastore
    from pipelines.services.spark import get_spark
    from pipelines.tables import Tables

    cfg = load_config()
    spark = get_spark(cfg, "journeylake-bench-ml")
    tables = Tables.from_config(cfg)
    try:
        from pipelines.sources.simulator import SimConfig

        seconds = ensure_bank(
            spark, cfg, tables, home, SimConfig(customers=args.customers, days=args.days, seed=42)
        )
        if seconds is not None:
            print(
                f"bank: {args.customers:,} customers x {args.days} days generated and ingested "
                f"in {seconds:.0f} s"
            )

        from pipelines.lakehouse.intents import agreement_with_truth

        agreement = agreement_with_truth(spark, cfg, tables, home / "truth")
        if agreement is not None:
            print(agreement.line())

        # 1. the real pipeline
        from ml.train import train_all

        started = time.perf_counter()
        training = build_training_set(spark, tables, cfg)
        built = time.perf_counter() - started
        print(
            f"training set: {len(training.frame):,} rows "
            f"({training.frame['customer_number'].nunique():,} customers x {len(training.cutoffs)} cut-offs) "
            f"from silver in {built:.1f} s"
        )
        started = time.perf_counter()
        reports = train_all(spark, cfg, tables, home / "truth", progress=lambda _m: None, training=training)
        print(f"training every model (with MLflow logging): {time.perf_counter() - started:.1f} s")
        print(format_reports(reports, cfg.ml.propensity.enough_positive_customers))

        # what the text features add to churn: the same training rows without them
        settings_without = cfg.ml.propensity.model_copy(update={"text_features": False})
        without = cfg.model_copy(update={"ml": cfg.ml.model_copy(update={"propensity": settings_without})})
        churn_without = train_all(
            spark,
            without,
            tables,
            home / "truth",
            ["churn"],
            segmentation=False,
            progress=lambda _m: None,
            training=training,
        )
        with_text = next(r for r in reports if r.target == "churn")
        print("churn with and without what customers said (intent and sentiment features):")
        for label, report in (("with", with_text), ("without", churn_without[0])):
            auc, ceiling = (
                report.metrics.get("roc_auc", float("nan")),
                report.metrics.get("ceiling_auc", float("nan")),
            )
            print(f"  {label:<8} holdout AUC {auc:.4f}   truth ceiling {ceiling:.4f}")

        # 2. at bank scale
        frame = training.frame
        rng = np.random.default_rng(0)
        customers = frame["customer_number"].unique()
        picks = rng.choice(len(customers), args.scale, replace=True)
        by_customer = frame.groupby("customer_number").indices
        latest = frame.sort_values("as_of").groupby("customer_number").tail(1).set_index("customer_number")
        scaled = latest.loc[customers[picks]].reset_index()
        scaled["customer_number"] = [f"S{i:08d}" for i in range(args.scale)]
        stacked_rows = np.concatenate(
            [by_customer[customers[i]] for i in picks[: args.scale // len(training.cutoffs)]]
        )
        stacked = frame.iloc[stacked_rows].reset_index(drop=True)
        print(
            f"\nat scale: {args.scale:,} customers (resampled from {len(customers):,}); "
            f"training rows {len(stacked):,}"
        )

        settings = cfg.ml.propensity
        models: dict[PropensityTarget, tuple[PropensityModel, str]] = {}  # target -> (model, version)
        for target in cfg.ml.propensity.targets:
            rows = stacked[eligible(stacked, target)]
            y = rows[label_column(target)].to_numpy(dtype=int)
            started = time.perf_counter()
            try:
                customers_of_rows = rows["customer_number"]  # a customer's cut-offs stay in one fold
                model = train_propensity(
                    rows[FEATURE_NAMES],
                    y,
                    target,
                    settings,
                    groups=customers_of_rows,
                    seed=cfg.ml.training.seed,
                )
                models[target] = (model, "bench")
            except Exception as exc:  # noqa: BLE001 - report and go on
                print(f"  propensity {target:<14} skipped: {exc}")
                continue
            print(
                f"  propensity {target:<14} {len(rows):>9,} rows {int(y.sum()):>6,} positives  "
                f"trained in {time.perf_counter() - started:6.1f} s "
                f"({models[target][0].booster.num_trees()} trees)"
            )
        columns = segmentation_features(cfg)
        seg_settings, logged = cfg.ml.segmentation, log_scaled_features(columns)
        started = time.perf_counter()
        segmentation, _ = fit_segmentation(scaled[columns], DESCRIPTIONS, seg_settings, log_features=logged)
        print(
            f"  segmentation: HDBSCAN on {min(len(scaled), seg_settings.max_fit_rows):,} + surrogate for "
            f"{len(scaled):,} customers in {time.perf_counter() - started:.1f} s "
            f"({len(segmentation.segment_names)} segments, "
            f"{len(logged)} money features log-scaled)"
        )

        from ml.explain import reason_codes
        from ml.features import PROTECTED

        x = scaled[FEATURE_NAMES].astype("float64")
        for target, (model, _) in models.items():
            started = time.perf_counter()
            reason_codes(model, x[model.feature_names], DESCRIPTIONS, set(PROTECTED), cfg.ml.reason_codes)
            seconds = time.perf_counter() - started
            print(
                f"  SHAP reason codes {target:<14} {args.scale / seconds:>9,.0f} customers/s "
                f"({seconds:.1f} s for {args.scale:,})"
            )
        champions = Champions(models, (segmentation, "bench"))
        started = time.perf_counter()
        for chunk in np.array_split(np.arange(len(scaled)), max(1, len(scaled) // 10_000)):
            score_frame(scaled.iloc[chunk], champions, cfg.ml.reason_codes)
        seconds = time.perf_counter() - started
        print(
            f"  full scoring pass (segment + {len(models)} models, each with {cfg.ml.reason_codes} reasons): "
            f"{args.scale / seconds:,.0f} customers/s in one Python process "
            f"({seconds:.1f} s for {args.scale:,})"
        )
        _ = pd  # pandas is imported for the frames above
    finally:
        spark.stop()
        if not args.home:  # a home of its own: nothing of the run is left behind
            metastore.stop(cfg)
            shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
