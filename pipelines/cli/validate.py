"""``journeylake validate``: run the Great Expectations suites as checkpoints, record the results
in ``gold.dq_results`` and rebuild the Data Docs.

Silver is validated on the rows ingested since its last validation (``--full``: all of them);
gold marts whole, typically after ``journeylake dbt build``. Exits 1 when a critical expectation
failed (naming each), so a scheduler (the Databricks job after dbt) sees the failure; the gated
commands (``quality.gates``) then refuse to run until a validation passes, or with ``--force``.
"""

from __future__ import annotations

import argparse

from pipelines.config import add_config_arguments, config_from_args
from pipelines.errors import InputError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layer", choices=("silver", "gold"), help="validate only this layer's suites")
    parser.add_argument(
        "--table",
        metavar="T",
        help="validate only this table's suite (silver.transactions, gold.customer_360, or the bare name)",
    )
    parser.add_argument(
        "--full", action="store_true", help="validate all of a silver table's rows, not only the new ones"
    )
    parser.add_argument(
        "--docs", action="store_true", help="print where the Data Docs are (validates nothing)"
    )
    add_config_arguments(parser)


def locks(args: argparse.Namespace) -> tuple[str, ...]:
    return () if args.docs else ("validate",)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    from pipelines.quality.checkpoints import docs_index

    index = docs_index(cfg)
    if args.docs:
        if args.layer or args.table or args.full:
            raise InputError("--docs prints where the Data Docs are: it takes no --layer, --table or --full")
        if not index.is_file():
            raise InputError(f"no Data Docs on home {cfg.paths.home} yet: run `journeylake validate` first")
        print(f"Data Docs: {index}\n  open {index.as_uri()} in a browser")
        return 0
    from pipelines.quality.checkpoints import validate
    from pipelines.services.spark import get_spark, require_lakehouse
    from pipelines.tables import Tables

    require_lakehouse(cfg, "run `journeylake ingest` (and `journeylake dbt build`) first")
    spark = get_spark(cfg, "journeylake-validate")
    outcome = validate(
        spark,
        cfg,
        layer=args.layer,
        table=args.table,
        full=args.full,
        progress=lambda line: print(f"  {line}"),
    )
    print("\n".join(outcome.summary(per_suite=False)))  # the suites' lines were printed as they ran
    print(f"results: {Tables.from_config(cfg).gold(cfg.quality.results_table)} (run_id = '{outcome.run_id}')")
    blocking = outcome.blocking
    if blocking:
        print(
            f"validate: {len(blocking)} critical expectations failed; "
            f"{', '.join(sorted(cfg.quality.gates))} stop on the tables they read until this passes"
        )
        return 1
    return 0
