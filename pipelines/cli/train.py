"""``journeylake train``: fit segmentation, propensity, churn and text models; print them next to the truth.

The text model (intent and sentiment of what customers say, ml/text.py) learns from BANKING77,
which ships with the project, not from the lakehouse: ``--only text`` trains it on a home where
nothing was ingested yet, ``--no-text`` leaves it out.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.cli.quality_gate import add_force_argument, pass_quality_gate
from pipelines.config import add_config_arguments, config_from_args

if TYPE_CHECKING:
    from ml.train import ModelReport
    from pipelines.config import Config


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
    parser.add_argument("--no-text", action="store_true", help="skip the text (intent and sentiment) model")
    parser.add_argument(
        "--only",
        choices=["text"],
        default=None,
        help="train only this family: text (intent and sentiment, from BANKING77; needs no ingest)",
    )
    add_force_argument(parser)
    add_config_arguments(parser)


def locks(args: argparse.Namespace) -> tuple[str, ...]:
    return ("train",)


def run(args: argparse.Namespace) -> int:
    from ml.train import format_reports
    from pipelines.errors import InputError

    cfg = config_from_args(args)
    if args.only == "text":
        clashing = [
            flag
            for flag, given in (
                ("--no-text", args.no_text),
                ("--model", bool(args.model)),
                ("--no-segmentation", args.no_segmentation),
                ("--truth", bool(args.truth)),
            )
            if given
        ]
        if clashing:
            raise InputError(f"--only text trains the text model alone: drop {', '.join(clashing)}")
        print(format_reports([_train_text(cfg)], cfg.ml.propensity.enough_positive_customers))
        return 0
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

    require_lakehouse(
        cfg,
        "run `journeylake ingest` first (models train on silver's history; "
        "`journeylake train --only text` needs none)",
    )
    from ml.train import train_all
    from pipelines.services.spark import get_spark
    from pipelines.tables import Tables

    spark = get_spark(cfg, "journeylake-train")
    pass_quality_gate(spark, cfg, "train", args.force)
    reports = [] if args.no_text else [_train_text(cfg)]
    reports += train_all(
        spark, cfg, Tables.from_config(cfg), truth_dir, args.model, segmentation=not args.no_segmentation
    )
    print(format_reports(reports, cfg.ml.propensity.enough_positive_customers))
    return 0


def _train_text(cfg: Config) -> ModelReport:
    from ml import registry
    from ml.text import train_text_model

    print("train: text intent and sentiment (BANKING77, held-out queries kept out) ...", flush=True)
    return train_text_model(cfg, registry.configure(cfg))
