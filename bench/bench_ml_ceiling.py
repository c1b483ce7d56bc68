"""Benchmark: each propensity model's gap to the truth ceiling, against the positives it learnt from.

The issue's target is an AUC within 0.03 of the ceiling (the simulator's true probabilities on
the same holdout) "for every model with enough positives". This measures where "enough" is: a
generated bank with busier demand (default 6,000 customers x 60 days, demand x8) goes through
the real pipeline (generate -> ingest -> point-in-time training set from silver), then every
propensity and churn model is trained, as ``journeylake train`` trains it, on a quarter, a half
and all of the customers, each on several holdout splits by customer. Printed per target and
size: the customers with a positive in training (a customer is a row at every cut-off, so rows
overstate the evidence), the mean AUC, ceiling and gap over the splits, and each split's gap.

``ml.propensity.enough_positive_customers`` (the line below the table) comes from this: from
there on, every model's mean gap is within the target.

    .venv/bin/python bench/bench_ml_ceiling.py [--customers 6000] [--days 60] [--demand 8] [--seed 42]
        [--splits 4] [--fractions 0.25,0.5,1] [--home DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
import warnings
from pathlib import Path

from _common import ensure_bank, own_home

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=6000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument(
        "--demand", type=float, default=8.0, help="simulator demand_scale (openings per customer)"
    )
    parser.add_argument("--seed", type=int, default=42, help="simulator seed")
    parser.add_argument("--splits", type=int, default=4, help="holdout splits by customer per size")
    parser.add_argument("--fractions", default="0.25,0.5,1", help="shares of the customers to train on")
    parser.add_argument("--home", default=None, help="an ingested home to reuse (skips generate + ingest)")
    args = parser.parse_args()

    home = own_home(args.home, "jl-bench-ceiling-")

    import numpy as np
    import pandas as pd

    from ml.features import FEATURE_NAMES
    from ml.propensity import NotEnoughPositives, evaluate, train_propensity
    from ml.train import CEILING_TARGET, ceiling_column, with_truth
    from ml.training_set import build_training_set, eligible, in_holdout, label_column
    from pipelines.config import load_config
    from pipelines.services import metastore
    from pipelines.services.spark import get_spark
    from pipelines.tables import Tables

    cfg = load_config()
    settings = cfg.ml.propensity
    fractions = [float(f) for f in args.fractions.split(",")]
    spark = get_spark(cfg, "journeylake-bench-ml-ceiling")
    tables = Tables.from_config(cfg)
    try:
        from pipelines.sources.simulator import FaultRates, SimConfig

        sim = SimConfig(
            customers=args.customers,
            days=args.days,
            seed=args.seed,
            faults=FaultRates.preset("default"),
            demand_scale=args.demand,
        )
        seconds = ensure_bank(spark, cfg, tables, home, sim)
        if seconds is not None:
            print(
                f"bank: {args.customers:,} customers x {args.days} days, demand x{args.demand:g}, "
                f"seed {args.seed}, generated and ingested in {seconds:.0f} s"
            )
        started = time.perf_counter()
        training = build_training_set(spark, tables, cfg)
        frame = with_truth(training, home / "truth")
        print(
            f"training set: {len(frame):,} rows ({frame['customer_number'].nunique():,} customers x "
            f"{len(training.cutoffs)} cut-offs, horizon {training.horizon_days} days) in "
            f"{time.perf_counter() - started:.0f} s"
        )
    finally:
        spark.stop()
        metastore.stop(cfg)
        if not args.home:  # a home of its own: nothing of the run is left behind
            shutil.rmtree(home, ignore_errors=True)

    customers = pd.Series(np.sort(frame["customer_number"].unique()))
    print(
        f"\n{'target':<14}{'share':>6}{'cust+':>7}{'AUC':>8}{'ceiling':>9}{'gap':>8}  gap per split "
        f"(holdout {cfg.ml.training.holdout_fraction:.0%} of customers)"
    )
    results = []  # (positive customers, mean gap)
    started = time.perf_counter()
    for target in cfg.ml.propensity.targets:
        label = label_column(target)
        for fraction in fractions:
            kept = set(customers[in_holdout(customers, fraction, 99)]) if fraction < 1 else set(customers)
            part = frame[frame["customer_number"].isin(kept)]
            rows = part[eligible(part, target) & part["label_complete"].fillna(False).astype(bool)]
            gaps, aucs, ceilings, positive_customers = [], [], [], []
            for split in range(args.splits):
                hold = in_holdout(rows["customer_number"], cfg.ml.training.holdout_fraction, split)
                train, test = rows[~hold], rows[hold]
                y = train[label].to_numpy(dtype=int)
                positive_customers.append(train.loc[y == 1, "customer_number"].nunique())
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        model = train_propensity(
                            train[FEATURE_NAMES],
                            y,
                            target,
                            settings,
                            groups=train["customer_number"],
                            seed=cfg.ml.training.seed,
                        )
                except NotEnoughPositives:
                    break
                metrics = evaluate(
                    test[label].to_numpy(dtype=int),
                    model.predict_proba(test[FEATURE_NAMES]),
                    test[ceiling_column(target)].to_numpy(dtype=float),
                )
                aucs.append(metrics["roc_auc"])
                ceilings.append(metrics["ceiling_auc"])
                gaps.append(metrics["auc_gap"])
            if not gaps:
                print(f"{target:<14}{fraction:>6.2f}  too few positives to train")
                continue
            mean_gap = float(np.nanmean(gaps))
            results.append((float(np.mean(positive_customers)), mean_gap))
            print(
                f"{target:<14}{fraction:>6.2f}{np.mean(positive_customers):>7.0f}{np.nanmean(aucs):>8.3f}"
                f"{np.nanmean(ceilings):>9.3f}{mean_gap:>+8.3f}  " + " ".join(f"{g:+.3f}" for g in gaps),
                flush=True,
            )
    print(f"({time.perf_counter() - started:.0f} s of training)")
    enough = cfg.ml.propensity.enough_positive_customers
    above = [gap for count, gap in results if count >= enough]
    below = [gap for count, gap in results if count < enough]
    print(
        f"\nfrom {enough} customers with a positive (ml.propensity.enough_positive_customers): "
        f"{sum(g <= CEILING_TARGET for g in above)} of {len(above)} models within {CEILING_TARGET} of the "
        f"ceiling on average; below it: {sum(g <= CEILING_TARGET for g in below)} of {len(below)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
