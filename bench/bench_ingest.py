"""Benchmark: landing -> bronze and landing -> silver throughput on ~1M generated events.

Landing -> silver is the ingest query of each source (bronze and silver from one micro-batch);
landing -> bronze is the raw copy alone, for comparison.

Prints events/s in total and per core, next to a reference measured in the same run on the same
files: converting them to Parquet with pyarrow (one JSON reader per file, no validation). The
run uses its own home folder and metastore port, so it never touches a demo's state.

    .venv/bin/python bench/bench_ingest.py [--customers 3500] [--days 30]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from _common import free_port, landing_lines

if TYPE_CHECKING:  # Spark is imported once the benchmark's environment is set
    from pyspark.sql import DataFrame


def pyarrow_reference(landing: Path, out: Path) -> tuple[int, float]:
    """Rows and seconds to convert every landing file to Parquet with pyarrow."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = 0
    started = time.perf_counter()
    for source_dir in sorted(p for p in landing.iterdir() if p.is_dir()):
        tables = []
        for path in sorted(source_dir.glob("*.jsonl")):
            # each line as text, as bronze keeps it (a JSON reader would stop at malformed lines)
            tables.append(pa.table({"raw": pa.array(path.read_text().splitlines())}))
        table = pa.concat_tables(tables)
        rows += table.num_rows
        pq.write_table(table, out / f"{source_dir.name}.parquet")
    return rows, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=3500)
    parser.add_argument("--days", type=int, default=30)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="journeylake-bench-"))
    os.environ["JOURNEYLAKE_HOME"] = str(work / "home")
    os.environ["JOURNEYLAKE_METASTORE_PORT"] = str(free_port())
    os.environ.pop("JOURNEYLAKE_TARGET", None)

    from pyspark.sql import functions as F

    from pipelines.config import load_config
    from pipelines.lakehouse import bronze, ingest, silver
    from pipelines.lakehouse.batch_writes import batch_tag
    from pipelines.services import metastore
    from pipelines.services.spark import get_spark
    from pipelines.sources.simulator import FaultRates, SimConfig, generate
    from pipelines.tables import Tables

    cfg = load_config("local")
    cores = os.cpu_count() or 1
    try:
        t0 = time.perf_counter()
        stats = generate(
            SimConfig(customers=args.customers, days=args.days, seed=1, faults=FaultRates.preset("default")),
            cfg.paths.home,
        )
        events = stats.total_lines
        print(f"generated {events:,} landing lines in {time.perf_counter() - t0:.1f}s")

        ref_out = work / "pyarrow"
        ref_out.mkdir()
        ref_rows, ref_s = pyarrow_reference(cfg.paths.landing, ref_out)

        # the intent model silver scores contact-centre notes and chat messages with (as a bank
        # would have registered it before ingesting)
        from ml.registry import configure
        from ml.text import train_text_model
        from pipelines.lakehouse import intents

        t0 = time.perf_counter()
        train_text_model(cfg, configure(cfg))
        print(f"text model trained and registered in {time.perf_counter() - t0:.1f}s")

        def scorer(source: str) -> intents.Scorer:
            return intents.current_scorer(cfg) if source in intents.SPOKEN else intents.NO_MODEL

        spark = get_spark(cfg, "journeylake-bench")
        sources = ingest.present_sources(cfg)

        def bronze_appender(table: str, checkpoint: Path) -> Callable[[DataFrame, int], None]:
            def append(batch: DataFrame, batch_id: int) -> None:
                bronze.append_batch(batch, table, batch_tag(checkpoint, batch_id), maybe_replay=True)

            return append

        def bronze_pass(label: str) -> float:
            """Seconds to land every file in bronze alone (no silver): what the raw copy costs."""
            spark.sql(f"CREATE SCHEMA IF NOT EXISTS {label}_bronze")
            tables = Tables(lambda layer, name: f"{label}_{layer}.{name}")
            queries = []
            t0 = time.perf_counter()
            for s in sources:
                bronze.ensure_bronze_table(spark, tables.bronze(s))
                checkpoint = cfg.paths.checkpoints / label / s
                queries.append(
                    bronze.read_landing(spark, cfg, s)
                    .writeStream.option("checkpointLocation", str(checkpoint))
                    .foreachBatch(bronze_appender(tables.bronze(s), checkpoint))
                    .trigger(availableNow=True)
                    .start()
                )
            ingest.await_queries(queries)
            return time.perf_counter() - t0

        def ingest_pass(label: str) -> tuple[float, dict[str, float]]:
            """Seconds for the ingest queries (landing -> bronze + silver) over every file, by stage."""
            for layer in ("bronze", "silver", "gold"):
                spark.sql(f"CREATE SCHEMA IF NOT EXISTS {label}_{layer}")
            tables = Tables(lambda layer, name: f"{label}_{layer}.{name}")
            ingest.prepare(spark, tables, sources)
            stages: dict[str, float] = {}
            t0 = time.perf_counter()
            for stage in ingest.source_stages(sources):
                started = time.perf_counter()
                ingest.await_queries(
                    [
                        ingest.start_source_stream(
                            spark, cfg, s, tables, cfg.paths.checkpoints / label / s, ingest.available_now
                        )
                        for s in stage
                    ]
                )
                stages[stage[0] if len(stage) == 1 else f"{len(stage)} sources"] = (
                    time.perf_counter() - started
                )
            seconds = time.perf_counter() - t0
            counts = ingest.layer_counts(spark, tables, sources)
            landed = sum(c.silver + c.quarantined + c.duplicates for c in counts)
            assert landed == events, f"accounting mismatch in {label} pass: {landed} != {events}"
            assert sum(c.bronze for c in counts) == events, f"bronze mismatch in {label} pass"
            return seconds, stages

        def run_pass(label: str) -> tuple[float, float, dict[str, float]]:
            return (bronze_pass(f"{label}_raw"), *ingest_pass(label))

        def batch_floor(tables: Tables) -> dict[str, float]:
            """Seconds for the same per-row work as plain Spark batch jobs, one per source.

            No streaming, no dedup, no quarantine: (landing text -> Delta), (landing text ->
            parse + check -> Delta), and the barest silver there is (each line parsed once into the
            contract's typed fields -> Delta: no checks, no PII tokens, no lineage). What a
            streaming design with one table per source could at best reach here.
            """
            spark.sql("CREATE SCHEMA IF NOT EXISTS floor_silver")
            seconds = {"text": 0.0, "parsed": 0.0, "bare": 0.0}
            for s in sources:
                text = landing_lines(spark, cfg, s)
                contract = silver.SILVER_TABLES[s].contract
                bare = text.select(F.from_json("raw", contract.spark_schema()).alias("r")).select("r.*")
                for kind, frame in (
                    ("text", text),
                    (
                        "parsed",
                        silver.checked_rows(
                            spark,
                            text,
                            silver.SILVER_TABLES[s],
                            tables,
                            silver.SILVER_TABLES[s].rules(cfg),
                            scorer(s),
                        ),
                    ),
                    ("bare", bare),
                ):
                    name = f"floor_silver.{kind}_{s}"
                    spark.sql(f"DROP TABLE IF EXISTS {name}")
                    spark.createDataFrame([], frame.schema).write.format("delta").saveAsTable(name)
                    # statistics on lineage only, as bronze and silver keep few; none on bare rows
                    stats = "'delta.dataSkippingNumIndexedCols' = '0'"
                    if kind != "bare":
                        stats = "'delta.dataSkippingStatsColumns' = '_source_file,_ingested_at'"
                    spark.sql(f"ALTER TABLE {name} SET TBLPROPERTIES ({stats})")
                    started = time.perf_counter()
                    frame.write.format("delta").mode("append").saveAsTable(name)
                    seconds[kind] += time.perf_counter() - started
            return seconds

        def scoring_cost(tables: Tables) -> tuple[int, float, float]:
            """(texts, seconds with the intent model, seconds without) writing the spoken sources'
            parse + check as batch jobs: what reading intent and sentiment costs silver."""
            spoken = [s for s in sources if s in intents.SPOKEN]
            texts, timed = 0, {"with": 0.0, "without": 0.0}
            for s in spoken:
                lines = landing_lines(spark, cfg, s)
                table = silver.SILVER_TABLES[s]
                for kind, model in (("without", intents.NO_MODEL), ("with", scorer(s))):
                    frame = silver.checked_rows(spark, lines, table, tables, table.rules(cfg), model)
                    name = f"floor_silver.scored_{kind}_{s}"
                    spark.sql(f"DROP TABLE IF EXISTS {name}")
                    started = time.perf_counter()
                    frame.write.format("delta").saveAsTable(name)
                    timed[kind] += time.perf_counter() - started
                texts += lines.count()
            return texts, timed["with"], timed["without"]

        # The first pass pays for the JVM's warm-up (class loading, JIT compilation of Spark's
        # and Delta's code paths and of the generated code): a long-running stream pays that once.
        results = {label: run_pass(label) for label in ("cold", "warm")}
        floor = batch_floor(Tables(lambda layer, name: f"warm_{layer}.{name}"))
        texts, with_model, without_model = scoring_cost(Tables(lambda layer, name: f"warm_{layer}.{name}"))

        def line(name: str, rows: int, seconds: float) -> str:
            rate = rows / seconds
            per_core = rate / cores
            figures = f"{rows:>10,} events {seconds:8.1f}s {rate:>12,.0f} ev/s"
            return f"{name:<34} {figures} {per_core:>10,.0f} ev/s/core"

        print(f"\n{cores} cores; Spark {spark.version}; {cfg.spark.master}")
        print(line("pyarrow text->parquet (ref)", ref_rows, ref_s))
        for label, (bronze_s, ingest_s, stages) in results.items():
            print(line(f"landing -> bronze only ({label} JVM)", events, bronze_s))
            print(line(f"landing -> bronze + silver ({label} JVM)", events, ingest_s))
            print("    by stage: " + ", ".join(f"{k} {v:.1f}s" for k, v in stages.items()))
        print("floor: the same per-row work as Spark batch jobs (no streaming, dedup or quarantine)")
        print(line("  landing text -> Delta", events, floor["text"]))
        print(line("  landing -> parse+check -> Delta", events, floor["parsed"]))
        print(line("  both (bronze + silver floor)", events, floor["text"] + floor["parsed"]))
        print("ceiling: the barest silver (lines parsed once into typed fields, no checks or PII tokens)")
        print(line("  landing -> parse -> Delta", events, floor["bare"]))
        print(line("  with the bronze copy", events, floor["text"] + floor["bare"]))
        extra = max(with_model - without_model, 1e-9)
        warm_ingest = results["warm"][1]
        print(
            f"intent + sentiment in silver ({intents.current_scorer(cfg).describe(cfg)}): {texts:,} "
            f"contact-centre and chat lines parsed in {with_model:.1f}s with the model, "
            f"{without_model:.1f}s without: +{extra:.1f}s ({texts / extra:,.0f} texts/s; "
            f"{100 * extra / warm_ingest:.1f}% of the warm ingest pass)"
        )
        spark.stop()
    finally:
        metastore.stop(cfg)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
