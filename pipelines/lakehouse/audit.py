"""Reconciliation of the lakehouse against the simulator's truth: was every record accounted for?

The simulator labels every landing line with its expected fate (``silver``, ``quarantine`` or
``duplicate``) and its fault, if any. This module counts where the lines actually ended up and
compares, per source and per landing file, so "nothing lost, nothing duplicated" is a figure
rather than a hope. Only tests, benchmarks and the demo use it: the pipeline never reads truth.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipelines.contracts import CONTRACTS
from pipelines.tables import Tables

FATES = ("silver", "quarantine", "duplicate")
# where each labelled fault must be found: the fate, and for quarantine the rule's prefix
FAULT_RULES = {
    "malformed_json": "malformed_json",
    "missing_required": "missing_required:",
    "wrong_type": "wrong_type:",
    "unknown_customer": "unknown_customer",
}


def truth_records(truth_dir: str | Path) -> pd.DataFrame:
    """Every landing line the simulator wrote: source, file, line, record_key, fault, expected_fate."""
    return pd.read_parquet(Path(truth_dir) / "records")


def _landing_file(column: str, sources: list[str], source: str | None = None) -> F.Column:
    """'file:/x/y/landing/transactions/retry/a.jsonl' -> 'landing/transactions/retry/a.jsonl'
    (as truth names it): from the source's own folder on, subfolders included."""
    if source is not None:
        return F.regexp_extract(F.col(column), rf"(landing/{source}/.+)$", 1)
    named = F.lit("")
    for s in sources:
        named = F.when(F.col("source") == s, _landing_file(column, sources, s)).otherwise(named)
    return named


def actual_fates(spark: SparkSession, tables: Tables, sources: list[str] | None = None) -> pd.DataFrame:
    """Rows per (source, landing file, fate) as the pipeline wrote them."""
    sources = sources or list(CONTRACTS)
    parts = [
        spark.table(tables.silver(s)).select(
            F.lit(s).alias("source"),
            _landing_file("_source_file", sources, s).alias("file"),
            F.lit("silver").alias("fate"),
        )
        for s in sources
    ]
    parts.append(
        spark.table(tables.quarantine).select(
            "source", _landing_file("source_file", sources).alias("file"), F.lit("quarantine").alias("fate")
        )
    )
    parts.append(
        spark.table(tables.duplicates).select(
            "source", _landing_file("source_file", sources).alias("file"), F.lit("duplicate").alias("fate")
        )
    )
    union = parts[0]
    for part in parts[1:]:
        union = union.unionByName(part)
    counts = union.where(F.col("source").isin(sources)).groupBy("source", "file", "fate").count()
    actual: pd.DataFrame = counts.toPandas()
    return actual.rename(columns={"count": "actual"})


def reconcile(spark: SparkSession, tables: Tables, truth_dir: str | Path) -> pd.DataFrame:
    """Per source: lines written, expected and actual rows per fate, and whether all match.

    A source matches only if every landing file matches too, so an error in one file cannot be
    hidden by an opposite error in another.
    """
    truth = truth_records(truth_dir)
    sources = sorted(truth["source"].unique())
    expected = truth.groupby(["source", "file", "expected_fate"]).size().rename("expected").reset_index()
    expected = expected.rename(columns={"expected_fate": "fate"})
    by_file = expected.merge(actual_fates(spark, tables, sources), on=["source", "file", "fate"], how="outer")
    by_file = by_file.fillna({"expected": 0, "actual": 0})
    by_file["file_ok"] = by_file["expected"] == by_file["actual"]

    summary = by_file.pivot_table(
        index="source", columns="fate", values=["expected", "actual"], aggfunc="sum", fill_value=0
    )
    rows = []
    for source in sources:
        row: dict[str, object] = {"source": source, "lines": int((truth["source"] == source).sum())}
        for fate in FATES:
            for kind in ("expected", "actual"):
                key = (kind, fate)
                row[f"{kind}_{fate}"] = int(summary.loc[source, key]) if key in summary.columns else 0
        row["files_mismatched"] = int((~by_file.loc[by_file["source"] == source, "file_ok"]).sum())
        row["ok"] = row["files_mismatched"] == 0
        rows.append(row)
    return pd.DataFrame(rows)


def fault_findings(spark: SparkSession, tables: Tables, truth_dir: str | Path) -> pd.DataFrame:
    """Per labelled fault type: how many records carry it and how many were found where expected.

    Quarantine faults are matched by record key and must carry the right rule; malformed lines
    (no readable key) are matched per landing file; duplicates must be in ``silver.duplicates``;
    late, out-of-order and drifted records must be in silver (drifted ones with rescued data).
    """
    truth = truth_records(truth_dir)
    faults = truth[truth["fault"].notna()]
    quarantine: pd.DataFrame = (
        spark.table(tables.quarantine)
        .select(
            "source",
            F.split("record_id", "@")[0].alias("record_key"),
            "rule",
            _landing_file("source_file", sorted(CONTRACTS)).alias("file"),
        )
        .toPandas()
    )
    rows = []
    for fault, group in faults.groupby("fault"):
        labelled = len(group)
        if fault == "malformed_json":
            found_per_file = (
                quarantine[quarantine["rule"] == "malformed_json"].groupby(["source", "file"]).size()
            )
            wanted = group.groupby(["source", "file"]).size()
            found = int(sum(min(n, int(found_per_file.get(key, 0))) for key, n in wanted.items()))
        elif fault in FAULT_RULES:
            prefix = FAULT_RULES[fault]
            hits = group.merge(quarantine, on=["source", "record_key"], how="left")
            found = int(
                hits["rule"]
                .fillna("")
                .str.startswith(prefix)
                .groupby([hits["source"], hits["record_key"]])
                .any()
                .sum()
            )
        elif fault == "duplicate":
            dup = spark.table(tables.duplicates).groupBy(
                "source", F.split("record_id", "@")[0].alias("record_key")
            )
            dup_rows: pd.DataFrame = dup.count().toPandas()
            dup_counts = dup_rows.set_index(["source", "record_key"])["count"]
            wanted = group.groupby(["source", "record_key"]).size()
            found = int(sum(min(n, int(dup_counts.get(key, 0))) for key, n in wanted.items()))
        else:  # late, out_of_order, schema_drift: valid records that must reach silver
            found = 0
            for source, keys in group.groupby("source")["record_key"]:
                contract = CONTRACTS[source]
                silver = spark.table(tables.silver(source))
                if fault == "schema_drift":
                    silver = silver.where(F.col("_rescued_data").isNotNull())
                key_col = F.col(contract.key) if contract.kind == "stream" else F.split("_record_id", "@")[0]
                present = (
                    silver.where(key_col.isin(list(keys.unique()))).select(key_col.alias("k")).distinct()
                )
                found += present.count()
        rows.append({"fault": fault, "labelled": labelled, "found_where_expected": found})
    result = pd.DataFrame(rows)
    result["ok"] = result["labelled"] == result["found_where_expected"]
    return result
