"""The session factory: Delta through the shared catalog, settings from config, table names."""

from __future__ import annotations

import pytest

from pipelines.config import load_config
from pipelines.errors import InputError
from pipelines.tables import schema_name, table_name

pytestmark = pytest.mark.slow


def test_delta_table_round_trips_through_the_catalog(spark, jl_config) -> None:
    name = table_name(jl_config, "bronze", "roundtrip")
    spark.createDataFrame([(1, "a"), (2, "b")], "id INT, label STRING").write.format("delta").mode(
        "overwrite"
    ).saveAsTable(name)
    spark.sql(f"INSERT INTO {name} VALUES (3, 'c')")

    rows = spark.table(name).orderBy("id").collect()
    assert [(r.id, r.label) for r in rows] == [(1, "a"), (2, "b"), (3, "c")]
    detail = spark.sql(f"DESCRIBE DETAIL {name}").first()
    assert detail.format == "delta"
    assert detail.location.startswith("file:" + str(jl_config.paths.warehouse))


def test_layer_schemas_exist_under_the_warehouse(spark, jl_config) -> None:
    for layer in ("bronze", "silver", "gold"):
        assert spark.catalog.databaseExists(layer)
        location = spark.sql(f"DESCRIBE SCHEMA {layer}").where("info_name = 'Location'").first()
        assert str(jl_config.paths.warehouse / f"{layer}.db") in location.info_value


def test_session_follows_config(spark, jl_config) -> None:
    conf = spark.conf
    assert conf.get("spark.sql.shuffle.partitions") == str(jl_config.spark.shuffle_partitions)
    assert conf.get("spark.sql.session.timeZone") == "UTC"
    assert conf.get("spark.sql.catalogImplementation") == "hive"
    assert "DeltaSparkSessionExtension" in conf.get("spark.sql.extensions")
    assert conf.get("spark.jars.packages", None) in (None, "")  # nothing resolved at start


def test_table_names_follow_the_target() -> None:
    local = load_config("local")
    assert table_name(local, "silver", "customers") == "silver.customers"
    databricks = load_config("databricks")
    assert table_name(databricks, "gold", "customer_360") == "journeylake_dev.gold.customer_360"
    assert schema_name(databricks, "bronze") == "journeylake_dev.bronze"


def test_unknown_layer_is_an_input_error() -> None:
    with pytest.raises(InputError, match="unknown layer 'platinum'"):
        table_name(load_config("local"), "platinum", "x")


def test_missing_jar_cache_says_run_make_jars(tmp_path, monkeypatch) -> None:
    from pipelines.errors import SetupError
    from pipelines.services import jars

    monkeypatch.setenv("JOURNEYLAKE_JAR_CACHE", str(tmp_path / "nothing-here"))
    with pytest.raises(SetupError, match=r"run `make jars`"):
        jars.spark_jars()


def test_resolved_jars_do_not_duplicate_pyspark_jars() -> None:
    from pipelines.services import jars

    bundled = {jars.artifact_of(p.name) for p in jars.pyspark_jars_dir().glob("*.jar")}
    ours = {jars.artifact_of(p.name) for p in jars.spark_jars()}
    assert {"delta-spark_4.2_2.13", "delta-storage", "spark-sql-kafka-0-10_2.13"} <= ours
    assert not ours & bundled


def test_a_stream_started_in_the_background_pool_runs_its_jobs_there(spark, tmp_path) -> None:
    """gold.customer_features starts this way: its batches take the task slots the ingest
    queries (default pool, four times the weight) leave; the starting thread is left as it was."""
    from pipelines.services.spark import BACKGROUND_POOL, POOL_PROPERTY, scheduler_pool

    context = spark.sparkContext
    weights = {
        name: context._jsc.sc().getPoolForName(name).get().weight() for name in ("default", BACKGROUND_POOL)
    }
    assert weights == {"default": 4, BACKGROUND_POOL: 1}
    assert spark.conf.get("spark.scheduler.mode") == "FAIR"

    source = str(tmp_path / "source")
    spark.range(3).write.format("delta").save(source)
    seen: list[str | None] = []

    def run_batch(batch, _batch_id) -> None:
        seen.append(batch.sparkSession.sparkContext.getLocalProperty(POOL_PROPERTY))
        batch.count()

    with scheduler_pool(spark, BACKGROUND_POOL):
        query = (
            spark.readStream.format("delta")
            .load(source)
            .writeStream.foreachBatch(run_batch)
            .option("checkpointLocation", str(tmp_path / "checkpoint"))
            .trigger(availableNow=True)
            .start()
        )
    assert context.getLocalProperty(POOL_PROPERTY) is None
    query.awaitTermination(120)
    assert seen == [BACKGROUND_POOL]


def test_the_driver_has_the_thread_stack_a_foreach_batch_stop_needs(spark) -> None:
    """Without it, stopping a foreachBatch query mid-batch printed a StackOverflowError trace
    (Spark's interrupt check runs a regex over the Python error's text)."""
    runtime = spark.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean()
    assert "-Xss16m" in list(runtime.getInputArguments())


def test_local_writes_leave_no_checksum_sidecars_and_old_ones_are_skipped(spark, tmp_path) -> None:
    """Every local file Spark or Delta writes used to get a hidden ``.<name>.crc`` beside it, a
    second file per write that each micro-batch paid for; tables written that way still read."""
    table = tmp_path / "table"
    spark.createDataFrame([(1, "a"), (2, "b")], "id INT, label STRING").write.format("delta").save(str(table))
    spark.createDataFrame([(3, "c")], "id INT, label STRING").write.format("delta").mode("append").save(
        str(table)
    )
    written = [p for p in table.rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in written)
    assert not [p for p in written if p.name.startswith(".") and p.name.endswith(".crc")]

    # sidecars as a release before this one left them (their content is never read now)
    for path in written:
        (path.parent / f".{path.name}.crc").write_bytes(b"crc\x00junk")
    assert sorted(r.id for r in spark.read.format("delta").load(str(table)).collect()) == [1, 2, 3]
    spark.createDataFrame([(4, "d")], "id INT, label STRING").write.format("delta").mode("append").save(
        str(table)
    )
    assert spark.read.format("delta").load(str(table)).count() == 4
