"""Data quality: the stream's checks compiled from the Great Expectations suites against the
hand-written rules they replaced, on the same files in the same run; then a full validation of
silver and gold (GX checkpoints on Spark) on the bench bank.

1. Every source's landing lines are parsed and checked as silver's micro-batch does
   (``silver.checked_rows``), with the rules compiled from ``conf/gx/expectations`` and with the
   hand-written rules of the release before GX (reproduced below as the reference), each going
   first in half of the passes (after one uncounted warm-up pass), into Spark's ``noop`` sink
   (the whole plan runs, nothing is written).
   Issue 28's target: compiled within 5% of hand-written.
2. ``journeylake validate`` on the bank after ``dbt build``: every gold suite, then every silver
   suite on all its rows (``--full``), with each suite's seconds.
"""

from __future__ import annotations

import argparse
import shutil
import time
from functools import partial
from typing import TYPE_CHECKING

from _common import ensure_bank, landing_lines, own_home

if TYPE_CHECKING:  # journeylake is imported once the benchmark's home and ports are set
    from pipelines.lakehouse.expectations import Expectation
    from pipelines.lakehouse.silver import SilverTable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=3500)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument(
        "--repeats",
        type=int,
        default=4,
        help="passes of each rule set over every source (even: each goes first as often)",
    )
    parser.add_argument(
        "--rules-only", action="store_true", help="measure the checks only (no dbt build, no validate)"
    )
    parser.add_argument("--home", help="a home to reuse (a bank already generated there is kept)")
    args = parser.parse_args()
    home = own_home(args.home, "journeylake-bench-quality-")

    from pipelines.config import load_config
    from pipelines.lakehouse import ingest, silver
    from pipelines.lakehouse.intents import NO_MODEL
    from pipelines.quality.checkpoints import validate
    from pipelines.services import metastore
    from pipelines.services.dbt_runner import run_dbt
    from pipelines.services.spark import get_spark
    from pipelines.sources.simulator import FaultRates, SimConfig
    from pipelines.tables import Tables

    cfg = load_config("local")
    spark = get_spark(cfg, "journeylake-bench-quality")
    try:
        tables = Tables.from_config(cfg)
        sim = SimConfig(customers=args.customers, days=args.days, seed=1, faults=FaultRates.preset("default"))
        took = ensure_bank(spark, cfg, tables, home, sim)
        print(
            f"bank: {args.customers:,} customers x {args.days} days in {home}"
            + (f" ({took:.0f} s)" if took else "")
        )

        sources = ingest.present_sources(cfg)
        lines = {s: landing_lines(spark, cfg, s).cache() for s in sources}
        events = sum(frame.count() for frame in lines.values())
        rule_sets = {
            "compiled from the GX suites": {s: silver.SILVER_TABLES[s].rules(cfg) for s in sources},
            "hand-written (before GX)": {s: handwritten_rules(silver.SILVER_TABLES[s]) for s in sources},
        }
        seconds = dict.fromkeys(rule_sets, 0.0)
        for repeat in range(args.repeats + 1):  # the first pass warms the JVM up and is not counted
            order = list(rule_sets) if repeat % 2 == 0 else list(reversed(rule_sets))
            for kind in order:
                started = time.perf_counter()
                for s in sources:
                    table = silver.SILVER_TABLES[s]
                    frame = silver.checked_rows(spark, lines[s], table, tables, rule_sets[kind][s], NO_MODEL)
                    frame.write.format("noop").mode("overwrite").save()
                if repeat:
                    seconds[kind] += time.perf_counter() - started
        print(
            f"\nparse + check of {events:,} landing lines x {args.repeats} passes "
            "(noop sink, each rule set first in half of them):"
        )
        for kind, total in seconds.items():
            print(
                f"  {kind:<30} {total / args.repeats:6.2f} s a pass  "
                f"{events * args.repeats / total:>10,.0f} events/s"
            )
        compiled, handwritten = seconds.values()
        print(f"  compiled / hand-written time: {compiled / handwritten:.3f} (target <= 1.05)")
        for frame in lines.values():
            frame.unpersist()

        if args.rules_only:
            return
        run_dbt(cfg, ["build", "--quiet"])
        for layer, full in (("gold", False), ("silver", True)):
            started = time.perf_counter()
            run = validate(spark, cfg, layer=layer, full=full)
            total = time.perf_counter() - started
            ran = [o for o in run.outcomes if o.skipped is None]
            print(
                f"\nvalidate --layer {layer}{' --full' if full else ''}: {len(ran)} suites, "
                f"{sum(len(o.results) for o in ran)} expectations, {sum(o.rows for o in ran):,} rows "
                f"in {total:.1f} s "
                f"({len(run.blocking)} critical failed)"
            )
            for o in sorted(ran, key=lambda o: -o.seconds):
                print(
                    f"  {o.suite.name:<34} {len(o.results):>3} expectations "
                    f"{o.rows:>10,} rows {o.seconds:6.1f} s"
                )
        print(
            f"\nData Docs: {run.docs}"
            + ("" if args.home else " (removed with the bench's home: --home keeps it)")
        )
    finally:
        spark.stop()
        metastore.stop(cfg)  # the next run picks another port: a server left running would refuse it
        if not args.home:  # a home of its own: nothing of the run is left behind
            shutil.rmtree(home, ignore_errors=True)


def handwritten_rules(table: SilverTable) -> list[Expectation]:
    """The rules silver checked before the suites existed, as they were written by hand: the
    contract's, the customer and future-time checks, then each table's own (the reference)."""
    from pyspark.sql import Column
    from pyspark.sql import functions as F

    from pipelines.lakehouse import expectations as ex
    from pipelines.lakehouse.expectations import RAW_MAP, Expectation

    def present(raw: Column) -> Column:
        return raw.isNotNull()

    def typed(raw: Column, name: str) -> Column:
        return raw.isNull() | F.col(name).isNotNull()

    def in_set(name: str, allowed: list[str]) -> Column:
        return F.col(name).isNull() | F.col(name).isin(allowed)

    def between(name: str, low: float | None, high: float | None) -> Expectation:
        def check() -> Column:
            col, ok = F.col(name), F.lit(True)
            if low is not None:
                ok = ok & (col >= low)
            if high is not None:
                ok = ok & (col <= high)
            return col.isNull() | ok

        return Expectation(f"out_of_range:{name}", "", check)

    contract = table.contract
    rules: list[Expectation] = [ex.json_parseable()]
    for f in contract.fields:
        raw = F.col(RAW_MAP)[f.name]
        if f.required:
            rules.append(Expectation(f"missing_required:{f.name}", "", partial(present, raw)))
        if f.type != "string":
            rules.append(Expectation(f"wrong_type:{f.name}", "", partial(typed, raw, f.name)))
        if f.allowed:
            rules.append(Expectation(f"not_allowed:{f.name}", "", partial(in_set, f.name, list(f.allowed))))
    key = contract.customer_key
    if key and contract.source not in ("customers", "crm_contacts"):
        rules.append(
            Expectation(
                "unknown_customer",
                "",
                lambda: F.col(key).isNull() | F.coalesce(F.col("_known_customer"), F.lit(False)),
            )
        )
    time_column = contract.event_time
    rules.append(
        Expectation(
            "event_time_in_future",
            "",
            lambda: (
                F.col(time_column).isNull()
                | (F.col(time_column) <= F.col("_ingested_at") + F.expr("INTERVAL 1 day"))
            ),
        )
    )
    own = {
        "transactions": [
            Expectation("zero_amount", "", lambda: F.col("amount").isNull() | (F.col("amount") != 0)),
            Expectation(
                "bad_currency", "", lambda: F.col("currency").isNull() | F.col("currency").rlike("^[A-Z]{3}$")
            ),
        ],
        "digital": [
            Expectation(
                "application_step_without_application",
                "",
                lambda: (
                    (F.col("event_type") != "application_step")
                    | (F.col("application_id").isNotNull() & F.col("step").isNotNull())
                ),
            )
        ],
        "accounts": [between("credit_limit", 0.0, None)],
        "bureau": [between("bureau_score", 300, 850), between("credit_utilisation", 0.0, None)],
    }
    return rules + own.get(contract.source, [])


if __name__ == "__main__":
    main()
