"""The one Spark session factory, and table names that follow the target.

Locally, :func:`get_spark` builds a session from the config: ``spark.master`` (``local[*]`` by
default, any master accepted), Delta's SQL extension and catalog, the jars from ``make jars``
(local paths, never resolved at start), and Spark's Hive catalog on the shared metastore (the
Derby network server is started first if needed), with settings that suit a small machine.
The layer schemas (bronze, silver, gold) are created if missing.

On Databricks (metastore kind ``unity``) the platform owns the session: it is returned as is.

    cfg = load_config()
    spark = get_spark(cfg)
    spark.table(table_name(cfg, "bronze", "transactions"))
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from pipelines.config import PROJECT_ROOT, Config
from pipelines.errors import InputError
from pipelines.services import jars, metastore
from pipelines.tables import LAYERS, schema_name

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from pyspark.sql import DataFrame, Row, SparkSession

LOG4J_CONF = PROJECT_ROOT / "conf" / "log4j2.properties"
# task scheduler pools: a job whose thread names BACKGROUND_POOL gets what the others leave
SCHEDULER_POOLS = PROJECT_ROOT / "conf" / "fairscheduler.xml"
BACKGROUND_POOL = "background"
POOL_PROPERTY = "spark.scheduler.pool"
# what OPTIMIZE counts as small, and how large the files it writes may grow (conf/ spark.conf may
# override both); pipelines/lakehouse/compaction.py leaves files of OPTIMIZE_MIN_FILE_BYTES alone.
OPTIMIZE_MIN_FILE_BYTES = 32 * 1024 * 1024
OPTIMIZE_MAX_FILE_BYTES = 128 * 1024 * 1024
# file:// paths without Hadoop's checksum sidecars. By default every file Spark or Delta writes
# locally gets a ``.<name>.crc`` beside it (a second file to create and rename), which the
# streams pay on every micro-batch: measured here, a file-source trigger's offset and commit log
# writes took 33-41 ms each with them and 18-21 ms without, its listing 68-77 ms and 52-62 ms.
# The local disk is trusted as it is for Derby and MLflow; files written with sidecars before
# are still read (the sidecars are hidden files, which Spark and Delta skip).
LOCAL_FILE_SYSTEM = {
    "spark.hadoop.fs.file.impl": "org.apache.hadoop.fs.RawLocalFileSystem",
    "spark.hadoop.fs.AbstractFileSystem.file.impl": "org.apache.hadoop.fs.local.RawLocalFs",
}


def spark_settings(cfg: Config, app_name: str | None = None) -> dict[str, str]:
    """Every setting :func:`get_spark` gives a local session (useful to inspect or to log)."""
    s = cfg.spark
    spark_jars = jars.spark_jars()
    driver_classpath = [str(p) for p in spark_jars if p.name.startswith("derbyclient")]
    java_options = [
        f"-Dlog4j.configurationFile=file:{LOG4J_CONF}" if LOG4J_CONF.is_file() else "",
        f"-Dderby.stream.error.file={cfg.paths.logs / 'derby-client.log'}",
        f"-Djourneylake.logs={cfg.paths.logs}",  # where conf/log4j2.properties writes full traces
        # Stopping a foreachBatch query mid-batch: Spark tells an interrupt from a failure by
        # matching a regex against the Python error's text, which overflowed the default 1 MB
        # thread stack (a java.lang.StackOverflowError trace at every stop; none with 16 MB,
        # reserved, not allocated). Later options (s.java_options) win.
        "-Xss16m",
        s.java_options,
    ]
    settings: dict[str, str] = {
        "spark.master": s.master or "local[*]",
        "spark.app.name": app_name or s.app_name,
        "spark.driver.memory": s.driver_memory,
        # our jars as local files: nothing is downloaded when a session starts
        "spark.jars": ",".join(str(p) for p in spark_jars if str(p) not in driver_classpath),
        # JDBC drivers must be on the JVM's own classpath for the Hive client to load them
        "spark.driver.extraClassPath": os.pathsep.join(driver_classpath),
        "spark.driver.extraJavaOptions": " ".join(o for o in java_options if o),
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.warehouse.dir": str(cfg.paths.warehouse),
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(s.shuffle_partitions),
        "spark.default.parallelism": str(s.shuffle_partitions),
        # Delta rebuilds table state with 50 tasks by default: far too many on 2 cores
        "spark.databricks.delta.snapshotPartitions": str(s.shuffle_partitions),
        # what the jobs' own compaction (pipelines/compaction.py) merges, and into what size
        "spark.databricks.delta.optimize.minFileSize": str(OPTIMIZE_MIN_FILE_BYTES),
        "spark.databricks.delta.optimize.maxFileSize": str(OPTIMIZE_MAX_FILE_BYTES),
        "spark.scheduler.mode": "FAIR",
        "spark.scheduler.allocation.file": str(SCHEDULER_POOLS),
        "spark.ui.enabled": str(s.ui_enabled).lower(),
        "spark.ui.showConsoleProgress": "false",
        "spark.ui.retainedJobs": str(s.retained_history),
        "spark.ui.retainedStages": str(s.retained_history),
        "spark.ui.retainedTasks": str(s.retained_history * 100),
        "spark.sql.ui.retainedExecutions": str(s.retained_history),
        "spark.sql.streaming.ui.retainedProgressUpdates": str(s.retained_history),
        "spark.sql.streaming.numRecentProgressUpdates": str(s.retained_history),
        "spark.sql.streaming.checkpointLocation": str(cfg.paths.checkpoints / "_default"),
    }
    if (s.master or "local").startswith("local"):
        settings["spark.driver.host"] = "127.0.0.1"
        settings["spark.driver.bindAddress"] = "127.0.0.1"
        settings.update(LOCAL_FILE_SYSTEM)
    settings.update(metastore.hive_settings(cfg))
    settings.update({key: _conf_value(value) for key, value in s.conf.items()})
    return settings


@contextmanager
def scheduler_pool(spark: SparkSession, pool: str) -> Iterator[None]:
    """Spark jobs of this thread, and of the streaming queries it starts (their threads inherit
    the setting), run in the task scheduler pool ``pool`` (conf/fairscheduler.xml)."""
    context = spark.sparkContext
    before = context.getLocalProperty(POOL_PROPERTY)
    context.setLocalProperty(POOL_PROPERTY, pool)
    try:
        yield
    finally:
        context.setLocalProperty(POOL_PROPERTY, before)  # type: ignore[arg-type]  # None: unset


def one_row(df: DataFrame) -> Row:
    """The row of a query that always returns one: an aggregate without grouping, DESCRIBE DETAIL.
    (``first()`` is typed ``Row | None`` for the queries that may return none.)"""
    row = df.first()
    if row is None:
        raise RuntimeError(f"expected one row, got none from: {df.columns}")
    return row


def records(df: DataFrame) -> list[dict[str, Any]]:
    """A small query's rows as dicts, through pandas (column types as ``toPandas`` gives them;
    pyspark types ``toPandas`` without pandas' stubs, hence the annotation here)."""
    frame: pd.DataFrame = df.toPandas()
    rows: list[dict[str, Any]] = frame.to_dict("records")
    return rows


def _conf_value(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def get_spark(cfg: Config, app_name: str | None = None) -> SparkSession:
    """The Spark session for this config (created once per process, then reused).

    Local targets: starts the shared metastore if needed, builds the session and creates the
    layer schemas. Databricks: returns the platform's active session unchanged.
    """
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if not cfg.is_local:
        return active or SparkSession.builder.getOrCreate()
    if active is not None:
        return active

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if (cfg.spark.master or "local").startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

    settings = spark_settings(cfg, app_name)
    if cfg.catalog.metastore.kind == "derby-server":
        metastore.ensure_running(cfg)
    for folder in (cfg.paths.warehouse, cfg.paths.checkpoints, cfg.paths.logs):
        folder.mkdir(parents=True, exist_ok=True)

    builder = SparkSession.builder
    for key, value in settings.items():
        builder = builder.config(key, value)
    if settings.get("spark.sql.catalogImplementation") == "hive":
        builder = builder.enableHiveSupport()
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(cfg.spark.log_level)
    ensure_schemas(spark, cfg)
    return spark


def ensure_schemas(spark: SparkSession, cfg: Config) -> None:
    """Create the layer schemas (bronze, silver, gold) if missing, located under the warehouse."""
    for layer in LAYERS:
        schema = schema_name(cfg, layer)
        if spark.catalog.databaseExists(schema):
            continue
        location = cfg.paths.warehouse / f"{getattr(cfg.catalog.schemas, layer)}.db"
        try:
            spark.sql(f"CREATE SCHEMA IF NOT EXISTS {schema} LOCATION '{location}'")
        except Exception:
            if not spark.catalog.databaseExists(schema):  # else another process just created it
                raise


def require_tables(spark: SparkSession, names: list[str], what_next: str) -> None:
    """Raise InputError naming the tables of ``names`` this catalog lacks, and what to run first
    (a verb on a home its prerequisites have not run on gets one line, not a query's trace)."""
    missing = [name for name in names if not spark.catalog.tableExists(name)]
    if missing:
        raise InputError(f"{', '.join(missing)} not found in the catalog: {what_next}")


def require_lakehouse(cfg: Config, what_next: str) -> None:
    """Raise InputError when this home holds no tables at all (nothing ingested yet), before a
    verb spends seconds starting Spark to find out. Catalogs that are not local (Unity) pass."""
    if cfg.catalog.metastore.kind == "unity":
        return
    warehouse = cfg.paths.warehouse
    if not warehouse.is_dir() or not any(warehouse.iterdir()):
        raise InputError(f"no tables on home {cfg.paths.home} yet (nothing in {warehouse}): {what_next}")
