"""``journeylake train``: fit segmentation, propensity and churn models; print them next to the truth."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.config import add_config_arguments, config_from_args


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--truth",
        default=None,
        help="a simulator truth folder: adds each model's ceiling AUC and the segments' agreement with "
        "personas (default: <home>/truth when it exists; a bank's own data has none)",
    )
    parser.add_argument(
        "--model",
        action="append",
        metavar="TARGET",
        help="train only this propensity target (repeatable; default: ml.propensity.targets)",
    )
    parser.add_argument("--no-segmentation", action="store_true", help="skip the segmentation model")
    add_config_arguments(parser)


def locks(args: argparse.Namespace) -> tuple[str, ...]:
    return ("train",)


def run(args: argparse.Namespace) -> int:
    from ml.train import format_reports, train_all
    from pipelines.errors import InputError
    from pipelines.services.spark import get_spark
    from pipelines.tables import Tables

    cfg = config_from_args(args)
    known = set(cfg.ml.propensity.targets)
    unknown = sorted(set(args.model or []) - known)
    if unknown:
        raise InputError(
            f"--model {', '.join(unknown)}: not in ml.propensity.targets ({', '.join(sorted(known))})"
        )
    truth_dir = Path(args.truth).resolve() if args.truth else cfg.paths.home / "truth"
    if args.truth and not (truth_dir / "propensity.parquet").exists():
        raise InputError(
            f"--truth {truth_dir}: no propensity.parquet there (a `journeylake generate` truth folder)"
        )
    from pipelines.services.spark import require_lakehouse

    require_lakehouse(cfg, "run `journeylake ingest` first (models train on silver's history)")
    spark = get_spark(cfg, "journeylake-train")
    reports = train_all(
        spark, cfg, Tables.from_config(cfg), truth_dir, args.model, segmentation=not args.no_segmentation
    )
    print(format_reports(reports, cfg.ml.propensity.enough_positive_customers))
    return 0
