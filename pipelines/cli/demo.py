"""``journeylake demo``: the main job end to end on the embedded default.

Generate a synthetic bank and hold back its last days -> ingest the history through bronze /
silver / gold -> build the dbt models (unified customer, journeys, funnels) and score identity
resolution against the truth -> train the segmentation, propensity and churn models (each next to
its truth ceiling) and score every customer with reason codes -> export marketing's segments ->
the closed loop: the live days stream in while the decision job runs, the simulator answers every
contact, and the policies are compared and audited -> the reconciliation of every landing line
against the simulator's truth (nothing lost) -> the online store and the decision API, asked as
channels ask (pipelines/cli/demo_api.py) -> how to query it.
"""

from __future__ import annotations

import argparse
import shutil
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.config import Config, add_config_arguments, config_from_args
from pipelines.errors import InputError
from pipelines.tables import Tables

if TYPE_CHECKING:  # --help stays fast: Spark and rich load in run()
    from pyspark.sql import SparkSession
    from rich.console import Console


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--customers", type=int, default=1200, help="simulated customers (default: 1200)")
    parser.add_argument(
        "--days", type=int, default=42, help="simulated days (default: 42; models need weeks of history)"
    )
    parser.add_argument("--seed", type=int, default=42, help="simulator seed (default: 42)")
    parser.add_argument(
        "--demand-scale",
        type=float,
        default=15.0,
        help="busier product demand (default: 15; 1 = the simulator's natural rates): a bank this small "
        "and short opens too few products for every model to have ml.propensity.min_positives",
    )
    parser.add_argument(
        "--churn-scale",
        type=float,
        default=3.0,
        help="a higher churn hazard, for the same reason (default: 3)",
    )
    parser.add_argument(
        "--live-days",
        type=int,
        default=3,
        help="the last days of the bank are played live through the decision loop (default: 3; 0: none)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the previous demo's data instead of starting afresh"
    )
    add_config_arguments(parser)


def _reset(spark: SparkSession, cfg: Config) -> None:
    """Drop the demo's tables and checkpoints so a rerun starts from the same empty state.

    Every schema the jobs write goes, dbt's work schema too: a table left in the catalog over a
    deleted folder makes dbt's next incremental run fail with ``DELTA_TABLE_NOT_FOUND``."""
    from pipelines.services.dbt_runner import work_schema
    from pipelines.services.spark import ensure_schemas
    from pipelines.tables import LAYERS, schema_name

    for schema in (*(schema_name(cfg, layer) for layer in LAYERS), work_schema(cfg)):
        spark.sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    folders = (
        cfg.paths.checkpoints,
        cfg.paths.warehouse,
        cfg.paths.landing,
        cfg.paths.home / "truth",
        cfg.paths.held,
        cfg.paths.mlflow,
        cfg.paths.gx,  # validation results and Data Docs of the tables just dropped
    )
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    cfg.paths.warehouse.mkdir(parents=True, exist_ok=True)
    ensure_schemas(spark, cfg)


def locks(args: argparse.Namespace) -> tuple[str, ...]:
    from pipelines.services.job_lock import JOB_KINDS

    return JOB_KINDS  # the demo runs every job on its home


def run(args: argparse.Namespace) -> int:
    """The demo; the metastore server it started is stopped at the end (nothing left running)."""
    from pyspark.sql import SparkSession

    from pipelines.services import metastore

    cfg = config_from_args(args)
    already_up = cfg.catalog.metastore.kind != "derby-server" or metastore.status(cfg).running
    try:
        return _demo(args)
    finally:
        if not already_up:
            session = SparkSession.getActiveSession()
            if session is not None:
                session.stop()  # its connections to the catalog go first
            if metastore.stop(cfg):
                print("metastore: stopped (the demo started it; any journeylake command starts it again)")


def _demo(args: argparse.Namespace) -> int:
    from rich.console import Console

    from pipelines.cli.ingest import print_layer_counts
    from pipelines.lakehouse import ingest
    from pipelines.services.spark import get_spark
    from pipelines.sources.simulator import FaultRates, SimConfig, generate
    from pipelines.tables import Tables

    console = Console()
    cfg = config_from_args(args)
    started = time.monotonic()

    def step(message: str) -> None:
        console.print(f"[bold][{time.monotonic() - started:6.1f}s][/bold] {message}")

    def table(text: str) -> None:
        """A plain-text report, printed as is: no markup, no wrapping (its columns stay aligned)."""
        console.print(text, markup=False, highlight=False, soft_wrap=True)

    step(f"starting Spark (home: {cfg.paths.home})")
    spark = get_spark(cfg, "journeylake-demo")
    tables = Tables.from_config(cfg)
    if not args.keep:
        _reset(spark, cfg)

    home = cfg.paths.home
    if not (cfg.paths.landing.is_dir() and any(cfg.paths.landing.iterdir())):
        step(
            f"generating a bank: {args.customers:,} customers x {args.days} days (seed {args.seed}; "
            f"demand x{args.demand_scale:g}, churn x{args.churn_scale:g})"
        )
        sim = SimConfig(
            customers=args.customers,
            days=args.days,
            seed=args.seed,
            faults=FaultRates.preset("default"),
            demand_scale=args.demand_scale,
            churn_scale=args.churn_scale,
        )
        training = cfg.ml.training
        history = training.min_history_days + training.horizon_days + 1  # one training cut-off
        if not 0 <= args.live_days <= args.days - history:
            raise InputError(
                f"--live-days {args.live_days}: use 0 to {max(args.days - history, 0)} for {args.days} days "
                f"(the models need {history} days of history: "
                "ml.training.min_history_days + horizon_days + 1)"
            )
        stats = generate(sim, home, overwrite=True)
        step(f"landed {stats.total_lines:,} lines in {cfg.paths.landing}")
        if args.live_days:
            from pipelines.nba.closed_loop import hold_back

            first_live = (sim.start + timedelta(days=args.days - args.live_days)).isoformat()
            held_files = hold_back(cfg.paths.landing, cfg.paths.held, first_live)
            step(f"held back {held_files:,} files from {first_live} on: the live days, played by decisions")

    step("train the intent and sentiment model (BANKING77) that silver reads what customers say with")
    from ml.registry import configure
    from ml.text import train_text_model
    from ml.train import format_reports, train_all

    table(format_reports([train_text_model(cfg, configure(cfg))], 0))
    ingest.run(spark, cfg, until_idle=True, tables=tables, progress=lambda m: step(f"ingest {m}"))
    print_layer_counts(spark, cfg, tables)

    truth = home / "truth"
    from pipelines.lakehouse.intents import agreement_with_truth

    agreement = agreement_with_truth(spark, cfg, tables, truth)
    if agreement is not None:
        console.print(agreement.line())
    step("dbt build: staging -> identity resolution -> customer_360, sessions, funnels")
    from pipelines.services.dbt_runner import run_dbt

    run_dbt(cfg, ["build", "--quiet"])
    if truth.is_dir():
        from pipelines.lakehouse.identity_eval import score_identity_map

        scores = score_identity_map(spark, tables.gold("identity_map"), truth, tables.silver("digital"))
        table("\n".join(scores.lines()))
    friction = spark.sql(
        f"SELECT abandoned_at_step, customers_lost FROM {tables.gold('friction_points')} "
        "WHERE product = 'all' ORDER BY friction_rank LIMIT 3"
    ).collect()
    if friction:
        console.print(
            "top friction points (customers lost): "
            + ", ".join(f"{r['abandoned_at_step']} {r['customers_lost']}" for r in friction)
        )
    step("train: segmentation, propensity and churn models (MLflow), each next to the truth ceiling")
    from ml.score import write_scores

    reports = train_all(spark, cfg, tables, truth if truth.is_dir() else None, progress=lambda m: step(m))
    table(format_reports(reports, cfg.ml.propensity.enough_positive_customers))
    if any(r.champion for r in reports if r.family == "propensity"):
        scored = write_scores(spark, cfg, tables)
        step(
            f"scored {scored['customers_scored']:,} customers with reason codes -> "
            f"{tables.gold('customer_scores')}, {tables.gold('propensity_explanations')}"
        )
        run_dbt(cfg, ["build", "--quiet", "--select", "customer_360+"])  # scores flow into customer_360
    from datetime import UTC, datetime

    from ml.registry import tracking_uri
    from pipelines.lakehouse.segment_export import export_segments

    step("validate: the Great Expectations suites on silver and gold (checkpoints, results, Data Docs)")
    from pipelines.quality.checkpoints import validate
    from pipelines.quality.gates import check_gate

    validation = validate(spark, cfg)
    table("\n".join(validation.summary()))
    for note in check_gate(spark, cfg, "export-segments"):  # the export is gated as when run alone
        console.print(note)
    today = datetime.now(UTC).date()
    manifest = export_segments(spark, cfg, today, cfg.paths.exports)
    step(f"segment export for marketing -> {cfg.paths.exports / today.isoformat()}")
    for segment in manifest["segments"]:
        excluded = sum(segment["excluded"].values())
        console.print(
            f"  {segment['name']:<20} {segment['rows']:>6,} customers to contact by {segment['channel']}"
            f" ({excluded:,} of {segment['matched']:,} matched left out: no consent or not active)"
        )
    held = cfg.paths.held
    from pipelines.nba.closed_loop import held_days, plot_policy_values, run_closed_loop

    days = held_days(held) if held.is_dir() else []
    if days and truth.is_dir():
        step(
            f"closed loop: {len(days)} live day(s) streamed in, decided as they arrive, "
            "answered by the simulator"
        )
        loop = run_closed_loop(spark, cfg, tables, held=held, days=days, progress=step)
        loop.plot = plot_policy_values(loop, home / "reports" / "policy_comparison.png")
        table("\n".join(loop.lines()))
        from pipelines.nba.catalog import load_catalog
        from pipelines.nba.evaluate import evaluate_policies, format_report

        table(format_report(evaluate_policies(spark, cfg, tables, load_catalog(cfg))))
    elif held.is_dir():
        step(f"no live days left in {held}: the closed loop has been played (run without --keep to replay)")
    if truth.is_dir():
        _print_reconciliation(spark, tables, truth, console)
    # after the reconciliation: the API's own events (a revocation, a dismissal) are not the simulator's
    step("the decision API: online store, sync from the lakehouse, channels asking at the moment")
    from pipelines.cli.demo_api import run_tour

    run_tour(spark, cfg, tables, step, table)
    from pipelines.cli.demo_erasure import run_erasure

    erased_cleanly = run_erasure(spark, cfg, step, table)
    step("done")
    console.print(
        "\nQuery it (any number of processes can share the catalog):\n"
        '  .venv/bin/journeylake sql -e "SELECT * FROM gold.customer_features LIMIT 5"\n'
        '  .venv/bin/journeylake sql -e "SELECT * FROM gold.customer_360 LIMIT 5"\n'
        '  .venv/bin/journeylake sql -e "SELECT * FROM gold.funnels LIMIT 20"\n'
        '  .venv/bin/journeylake sql -e "SELECT rule, count(*) FROM silver.quarantine GROUP BY rule"\n'
        '  .venv/bin/journeylake sql -e "SELECT * FROM silver.consent_current LIMIT 5" --format csv\n'
        '  .venv/bin/journeylake sql -e "SELECT * FROM gold.propensity_explanations LIMIT 8"\n'
        "Re-export marketing's segments: .venv/bin/journeylake export-segments --date YYYY-MM-DD\n"
        "Decisions at the moment of interaction (README: Calling the decision API):\n"
        "  .venv/bin/journeylake online-store up && .venv/bin/journeylake online-store sync\n"
        "  JOURNEYLAKE_API_TOKEN=<a long secret> .venv/bin/journeylake serve\n"
        "MLflow UI (experiments, registry, SHAP plots):\n"
        f"  .venv/bin/mlflow ui --backend-store-uri {tracking_uri(cfg)}\n"
        "Notebooks: notebooks/01_segments.ipynb, 02_propensity_review.ipynb, 03_journeys.ipynb\n"
        "Next-best-actions (what channel systems read) and why one was chosen:\n"
        '  .venv/bin/journeylake sql -e "SELECT * FROM gold.next_best_actions LIMIT 5"\n'
        "  .venv/bin/journeylake explain-decision <decision_id>\n"
        "  .venv/bin/journeylake evaluate-policy\n"
        "Keep streaming new landing files: .venv/bin/journeylake ingest (and .venv/bin/journeylake decide)\n"
        "Forget a customer (any of their ids): .venv/bin/journeylake erase-customer <id>"
    )
    if not erased_cleanly:
        console.print("demo: the erased customer's PII is still on disk (the hits above): a defect to report")
        return 1
    return 0


def _print_reconciliation(spark: SparkSession, tables: Tables, truth: Path, console: Console) -> None:
    """Every landing line (generated and closed-loop responses) against where it ended up."""
    from rich.table import Table

    from pipelines.lakehouse import audit

    rec = audit.reconcile(spark, tables, truth)
    table = Table(
        title="nothing lost: landing lines vs where they ended up (expected from the simulator's truth)"
    )
    for column in ("source", "lines", "silver", "quarantine", "duplicate", "match"):
        table.add_column(column, justify="left" if column == "source" else "right")
    for r in rec.to_dict("records"):
        table.add_row(
            r["source"],
            f"{r['lines']:,}",
            *(f"{r['actual_' + f]:,} / {r['expected_' + f]:,}" for f in audit.FATES),
            "yes" if r["ok"] else f"NO ({r['files_mismatched']} files)",
        )
    console.print(table)
