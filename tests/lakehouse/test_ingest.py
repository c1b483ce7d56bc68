"""Landing -> bronze -> silver -> gold on a small generated bank with faults.

One session-scoped run (``world`` / ``ingested`` in conftest.py, shared with the dbt tests) feeds
most tests, since Spark work is the expensive part; each test pins one behaviour of the result
against the simulator's truth.
"""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_every_landing_line_is_accounted_for(spark, ingested, world):
    from pipelines.contracts import CONTRACTS
    from pipelines.lakehouse.audit import reconcile

    result = reconcile(spark, ingested, world / "truth")
    assert sorted(result["source"]) == sorted(CONTRACTS)  # every source landed and reconciled
    for row in result.to_dict("records"):
        assert row["ok"], f"{row['source']}: {row}"
        assert row["actual_silver"] + row["actual_quarantine"] + row["actual_duplicate"] == row["lines"]


def test_every_labelled_fault_is_found_where_expected(spark, ingested, world):
    from pipelines.lakehouse.audit import fault_findings

    findings = fault_findings(spark, ingested, world / "truth")
    assert len(findings) >= 5, findings  # the small world carries most fault types
    for row in findings.to_dict("records"):
        assert row["ok"], row


def test_quarantine_names_the_rule_and_keeps_the_record(spark, ingested):
    rows = spark.table(ingested.quarantine).collect()
    assert rows
    for row in rows:
        assert row["rule"] == row["failed_rules"][0]
        assert row["raw_sha256"] and row["source_file"]
        if row["rule"] != "malformed_json":
            assert row["record"], row


def test_silver_holds_no_raw_pii(spark, ingested, jl_config):
    from pipelines.lakehouse.pii import hmac_sha256_hex, pii_key

    customers = spark.table(ingested.silver("customers"))
    assert "email" not in customers.columns and "first_name" not in customers.columns
    bronze_row = json.loads(spark.table(ingested.bronze("customers")).first()["raw"])
    silver_row = customers.where(f"customer_number = '{bronze_row['customer_number']}'").first()
    key = pii_key(jl_config.ingest.pii_key_env, jl_config.ingest.pii_key_default)
    assert silver_row["email_token"] == hmac_sha256_hex(key, bronze_row["email"].strip().lower().encode())
    assert silver_row["birth_year"] == int(bronze_row["date_of_birth"][:4])


def test_schema_drift_is_kept_as_rescued_data(spark, ingested):
    drifted = spark.table(ingested.silver("digital")).where("_rescued_data IS NOT NULL").first()
    assert drifted is not None
    assert "app_version" in json.loads(drifted["_rescued_data"])


def test_silver_keeps_file_statistics_on_the_columns_reads_filter_on(spark, ingested):
    from pipelines.lakehouse.silver import SILVER_TABLES, stats_columns

    for source, table in SILVER_TABLES.items():
        properties = {
            r["key"]: r["value"] for r in spark.sql(f"SHOW TBLPROPERTIES {ingested.silver(source)}").collect()
        }
        columns = properties["delta.dataSkippingStatsColumns"].split(",")
        assert columns == stats_columns(table), source
        assert table.contract.event_time in columns and "_silver_batch" in columns, source


def test_every_table_a_stream_commits_to_is_checkpointed_without_auto_compaction(spark, ingested):
    from pipelines.lakehouse.silver import SILVER_TABLES
    from pipelines.tables import STREAMED_TABLE_PROPERTIES

    names = [
        *(ingested.bronze(s) for s in SILVER_TABLES if spark.catalog.tableExists(ingested.bronze(s))),
        *(ingested.silver(s) for s in SILVER_TABLES),
        ingested.quarantine,
        ingested.duplicates,
        ingested.consent_current,
        ingested.customer_features,
    ]
    assert len(names) > 20
    for name in names:
        properties = {r["key"]: r["value"] for r in spark.sql(f"SHOW TBLPROPERTIES {name}").collect()}
        assert all(properties.get(k) == v for k, v in STREAMED_TABLE_PROPERTIES.items()), name


def test_streamed_tables_leave_compaction_to_the_job_which_merges_beside_running_appends(spark):
    """Appends write their file and nothing else (no auto compaction inside the write); the
    job's compaction merges the small files while another thread keeps appending, and loses or
    repeats no row."""
    import threading

    from delta.tables import DeltaTable

    from pipelines.lakehouse.compaction import compact_table
    from pipelines.tables import STREAMED_TABLE_PROPERTIES, properties_sql

    name = "properties_test.streamed"
    spark.sql("CREATE SCHEMA IF NOT EXISTS properties_test")
    spark.sql(f"DROP TABLE IF EXISTS {name}")
    spark.sql(f"CREATE TABLE {name} (id BIGINT) USING delta {properties_sql(STREAMED_TABLE_PROPERTIES)}")

    def append(n: int) -> None:
        spark.range(n * 10, n * 10 + 10).coalesce(1).write.format("delta").mode("append").saveAsTable(name)

    for n in range(60):
        append(n)
    assert spark.sql(f"DESCRIBE DETAIL {name}").first()["numFiles"] == 60  # one file per append

    appending = threading.Thread(target=lambda: [append(n) for n in range(60, 80)])
    appending.start()
    merged = compact_table(spark, name)
    appending.join()
    assert merged >= 60
    ids = spark.table(name).toPandas()["id"]
    assert len(ids) == ids.nunique() == 800  # every append kept, none twice
    assert spark.sql(f"DESCRIBE DETAIL {name}").first()["numFiles"] <= 21  # merged + later appends
    operations = list(DeltaTable.forName(spark, name).history().toPandas()["operation"])
    assert operations.count("OPTIMIZE") == 1  # ours; none from inside the appends
    spark.sql(f"DROP TABLE {name}")


def test_periodic_compaction_filters_partitions_and_survives_a_failure(spark):
    """Bronze is compacted only in the partitions its filter names; a table that cannot be
    compacted is reported, not raised, and the others are still done."""
    from pipelines.lakehouse.compaction import PeriodicCompaction

    name = "properties_test.partitioned"
    spark.sql("CREATE SCHEMA IF NOT EXISTS properties_test")
    spark.sql(f"DROP TABLE IF EXISTS {name}")
    spark.sql(f"CREATE TABLE {name} (id BIGINT, day DATE) USING delta PARTITIONED BY (day)")
    for day in ("2026-01-01", "2026-01-02"):
        for n in range(3):
            spark.sql(f"INSERT INTO {name} VALUES ({n}, DATE'{day}')")
    said: list[str] = []
    targets = {"properties_test.missing": None, name: "day >= '2026-01-02'"}
    assert PeriodicCompaction(spark, lambda: targets, 0, said.append).when_due() is None  # 0: never
    compaction = PeriodicCompaction(spark, lambda: targets, 1e-9, said.append)
    assert compaction.when_due() == 3
    files = spark.sql(
        f"SELECT day, count(DISTINCT file) AS n FROM (SELECT day, input_file_name() AS file FROM {name}) "
        "GROUP BY day"
    )
    assert {str(r["day"]): r["n"] for r in files.collect()} == {"2026-01-01": 3, "2026-01-02": 1}
    assert said[0].startswith("compaction of properties_test.missing failed, retried next round: ")
    assert "\n" not in said[0] and said[1].startswith("compacted: 3 small files merged")
    spark.sql(f"DROP TABLE {name}")


def test_a_table_from_an_earlier_release_gets_its_properties_once(spark):
    from delta.tables import DeltaTable

    from pipelines.tables import ensure_properties

    spark.sql("CREATE SCHEMA IF NOT EXISTS properties_test")
    spark.sql("DROP TABLE IF EXISTS properties_test.old")
    spark.sql("CREATE TABLE properties_test.old (a INT) USING delta")
    wanted = {"delta.checkpointInterval": "100", "delta.dataSkippingStatsColumns": "a"}
    ensure_properties(spark, "properties_test.old", wanted)
    ensure_properties(spark, "properties_test.old", wanted)  # already there: no second commit
    properties = {r["key"]: r["value"] for r in spark.sql("SHOW TBLPROPERTIES properties_test.old").collect()}
    assert all(properties.get(k) == v for k, v in wanted.items())
    operations = DeltaTable.forName(spark, "properties_test.old").history().toPandas()["operation"]
    assert list(operations).count("SET TBLPROPERTIES") == 1


def test_consent_current_holds_the_newest_state_per_purpose_and_channel(spark, ingested):
    from pyspark.sql import functions as F
    from pyspark.sql.window import Window

    events = spark.table(ingested.silver("consent"))
    newest = Window.partitionBy("customer_number", "purpose", "channel").orderBy(
        F.col("event_time").desc(), F.col("event_id").desc()
    )
    expected = (
        events.withColumn("r", F.row_number().over(newest))
        .where("r = 1")
        .select("customer_number", "purpose", "channel", "granted")
    )
    current = spark.table(ingested.consent_current).select("customer_number", "purpose", "channel", "granted")
    assert current.count() == expected.count()
    assert current.exceptAll(expected).count() == 0


def _features_match_batch_recompute(spark, tables) -> None:
    from pipelines.lakehouse.gold import compute_features

    gold = spark.table(tables.customer_features).drop("updated_at")
    assert gold.count() > 0
    for (as_of,) in gold.select("features_as_of").distinct().collect():
        stored = gold.where(gold.features_as_of == as_of)
        customers = stored.select("customer_number")
        recomputed = compute_features(spark, tables, as_of, customers)
        diff = stored.exceptAll(recomputed.select(*stored.columns))
        assert diff.count() == 0, diff.limit(5).collect()


def test_gold_features_equal_a_batch_recomputation_from_silver(spark, ingested):
    _features_match_batch_recompute(spark, ingested)


def test_training_features_equal_the_gold_stream_s_features_at_the_same_moments(spark, ingested):
    """Train/serve skew check: the point-in-time training path (every cut-off in one query)
    gives the gold stream's values for each customer at each moment the stream computed, and
    the stream's one-cut-off path's values at earlier moments."""
    import pandas as pd
    from pyspark.sql import functions as F

    from ml.features import APPLICATION_STEP_INDEX, point_in_time_features_at

    shared = [
        "events_24h",
        "events_7d",
        "digital_sessions_7d",
        "product_views_7d",
        "current_account_balance",
        "card_utilisation",
        "salary_received_7d",
        "failed_payments_7d",
        "fees_7d",
        "complaints_7d",
        "complaints_30d",
        "hours_since_last_contact",
    ]
    from pipelines.lakehouse.gold import compute_features

    stream = spark.table(ingested.customer_features)
    streamed = [row[0] for row in stream.select("features_as_of").distinct().collect()]
    assert streamed  # one moment per micro-batch; how many depends on how the batches fell
    # and earlier moments through the stream's own one-cut-off path, so that the training path
    # always computes several cut-offs in one query, however the stream's batches fell
    earlier = [max(streamed) - timedelta(hours=h) for h in (12, 36, 60)]
    gold = stream
    for moment in earlier:
        gold = gold.unionByName(compute_features(spark, ingested, moment))
    as_ofs = streamed + earlier
    step_rank = F.lit(0.0)
    for step, index in APPLICATION_STEP_INDEX.items():
        step_rank = F.when(F.col("open_application_last_step") == step, float(index + 1)).otherwise(step_rank)
    served = gold.select(
        "customer_number",
        F.col("features_as_of").alias("as_of"),
        *(F.col(name).cast("double").alias(name) for name in shared),
        step_rank.alias("open_application_step"),
    )
    trained = point_in_time_features_at(spark, ingested, as_ofs).select(
        "customer_number", "as_of", *shared, "open_application_step"
    )
    keys = ["customer_number", "as_of"]
    columns = [*shared, "open_application_step"]
    # each side evaluated once (a few thousand rows), joined here: every Spark action re-ran the plans
    served_pd, trained_pd = served.toPandas(), trained.toPandas()
    both = served_pd.merge(trained_pd, on=keys, suffixes=("_s", "_t"))
    assert len(both) > 0.8 * len(served_pd), (len(both), len(served_pd))  # every active customer's row
    both = both.sort_values(keys).reset_index(drop=True)
    left_pd = both[keys + [f"{c}_s" for c in columns]].rename(columns=lambda c: c.removesuffix("_s"))
    right_pd = both[keys + [f"{c}_t" for c in columns]].rename(columns=lambda c: c.removesuffix("_t"))
    assert left_pd["events_7d"].sum() > 0 and left_pd["current_account_balance"].notna().any()
    # float sums may differ in their last bits between a one-cut-off and a many-cut-off plan
    pd.testing.assert_frame_equal(left_pd, right_pd, check_exact=False, rtol=1e-9)


@pytest.fixture(scope="module")
def second_run(spark, ingested, jl_config):
    """A second ingestion after two files land: late events for one customer and a non-JSON file.

    Runs after the truth-based tests (pytest keeps file order), since truth knows neither file.
    """
    from pipelines.lakehouse import ingest

    sources = ingest.present_sources(jl_config)
    counts_before = {c.source: c for c in ingest.layer_counts(spark, ingested, sources)}
    gold = spark.table(ingested.customer_features)
    as_of = gold.agg({"features_as_of": "max"}).first()[0]
    with_account = (
        spark.table(ingested.silver("accounts"))
        .where("product = 'current_account'")
        .select("customer_number", "account_id")
        .join(gold, "customer_number")
        .orderBy("customer_number")
        .first()
    )
    customer, account = with_account["customer_number"], with_account["account_id"]
    features_before = gold.where(f"customer_number = '{customer}'").first()
    late_time = as_of - timedelta(hours=2)  # before the high-water mark: late, inside the watermark
    lines = [
        json.dumps(
            {
                "event_id": f"LATE-TEST-{i}",
                "event_time": (late_time + timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                "schema_version": 1,
                "customer_number": customer,
                "account_id": account,
                "txn_type": "failed_payment",
                "amount": -25.0,
                "currency": "GBP",
                "merchant_category": None,
                "counterparty": "LATE TEST",
                "balance_after": None,
            }
        )
        for i in range(5)
    ]
    landing = Path(jl_config.paths.landing)
    (landing / "transactions" / "9999-late-test.jsonl").write_text("\n".join(lines[:3]) + "\n")
    # re-deliveries into subfolders (a retry, a per-day folder inside it) are read like any file
    retried = landing / "transactions" / "retry" / "2026-12-06" / "9999-retried.jsonl"
    retried.parent.mkdir(parents=True)
    retried.write_text("\n".join(lines[3:]) + "\n")
    (landing / "visits" / "9999-not-json.jsonl").write_bytes(
        b"PK\x03\x04 a zip, not json\nname,amount\nbob,12\n"
    )
    # well-formed JSON nested one level deeper than Spark's parser reads
    (landing / "visits" / "9999-too-deep.jsonl").write_text('{"a":' * 1001 + "1" + "}" * 1001 + "\n")
    ingest.run(spark, jl_config, until_idle=True, tables=ingested, progress=lambda _m: None)
    counts_after = {c.source: c for c in ingest.layer_counts(spark, ingested, sources)}
    return counts_before, counts_after, features_before


def test_a_second_run_adds_exactly_what_landed_since(second_run):
    before, after, _ = second_run
    for source, b in before.items():
        a = after[source]
        added = {"transactions": (5, 5, 0, 0), "visits": (4, 0, 4, 0)}.get(source, (0, 0, 0, 0))
        assert (a.bronze - b.bronze, a.silver - b.silver, a.quarantined - b.quarantined) == added[:3], source
        assert a.duplicates == b.duplicates, source


def test_late_events_update_customer_features(spark, ingested, second_run):
    """Events delivered late (event time before the high-water mark) still count in gold."""
    _, _, row = second_run
    updated = (
        spark.table(ingested.customer_features).where(f"customer_number = '{row['customer_number']}'").first()
    )
    assert updated["failed_payments_7d"] == row["failed_payments_7d"] + 5
    assert updated["events_24h"] == row["events_24h"] + 5
    _features_match_batch_recompute(spark, ingested)


def test_a_landing_file_that_is_not_json_is_quarantined_line_by_line(spark, ingested, second_run):
    rows = spark.table(ingested.quarantine).where("source_file LIKE '%9999-not-json.jsonl'").collect()
    assert len(rows) == 3
    assert {r["rule"] for r in rows} == {"malformed_json"}


def test_files_delivered_into_subfolders_of_a_source_folder_are_ingested(spark, ingested, second_run):
    rows = spark.table(ingested.silver("transactions")).where("_source_file LIKE '%/retry/2026-12-06/%'")
    assert sorted(r["event_id"] for r in rows.collect()) == ["LATE-TEST-3", "LATE-TEST-4"]


def test_json_nested_deeper_than_the_parser_reads_is_quarantined_under_its_own_rule(
    spark, ingested, second_run
):
    rows = spark.table(ingested.quarantine).where("source_file LIKE '%9999-too-deep.jsonl'").collect()
    assert [r["rule"] for r in rows] == ["json_nesting_too_deep"]


def test_missing_landing_folder_gives_a_clear_message(jl_config, tmp_path):
    from pipelines.errors import InputError
    from pipelines.lakehouse import ingest

    missing = jl_config.model_copy(
        update={"paths": jl_config.paths.model_copy(update={"landing": tmp_path / "nowhere"})}
    )
    with pytest.raises(InputError, match="landing folder not found: .*nowhere"):
        ingest.present_sources(missing)


def test_ingest_cli_reports_a_missing_landing_folder_in_one_line(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.cli",
            "ingest",
            "--until-idle",
            "--landing",
            str(tmp_path / "nope"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "landing folder not found" in result.stderr
    assert "Traceback" not in result.stderr
    shutil.rmtree(tmp_path, ignore_errors=True)
