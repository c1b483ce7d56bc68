"""Shared test fixtures: one config, one metastore and one Spark session for the whole run.

The test session gets its own home folder (a pytest temporary directory) and its own metastore
port, both exported as JOURNEYLAKE_HOME / JOURNEYLAKE_METASTORE_PORT so that subprocesses the
tests start (CLI invocations, second Spark processes) share them; a running demo in
``.journeylake/`` is never touched. The test metastore server is stopped at the end.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Set before anything loads a config: subprocesses inherit these.
_HOME_ENV = "JOURNEYLAKE_HOME"
_PORT_ENV = "JOURNEYLAKE_METASTORE_PORT"
_KAFKA_PORT_ENV = "JOURNEYLAKE_KAFKA_PORT"  # the test broker's port; its controller takes the next one
_STORE_PORT_ENV = "JOURNEYLAKE_STORE_PORT"  # the test online store's port


# Fixtures that start the shared Spark session or a JVM service: a test using any of them,
# directly or through another fixture, is "slow" (`make test-fast` leaves it out).
SLOW_FIXTURES = frozenset({"spark", "kafka_broker"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs Spark or the Kafka broker ``slow``, whether or not its file says so;
    and run the ``erases`` tests last: they erase people from the session's shared home, whose
    every other test has then had its turn (and left its files for the erasure to reach)."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: item.get_closest_marker("erases") is not None)  # stable: order kept


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _free_port_pair() -> int:
    """A free port P whose neighbour P + 1 is free too (the Kafka broker and its controller)."""
    for _ in range(50):
        port = _free_port()
        if port >= 65535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two adjacent free ports on 127.0.0.1 for the test Kafka broker")


@pytest.fixture(scope="session", autouse=True)
def jl_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The test session's JOURNEYLAKE_HOME, exported for every test and subprocess.

    Autouse, so that even a test that never asks for a config cannot touch ./.journeylake or
    a demo's metastore port.
    """
    home = tmp_path_factory.mktemp("journeylake-home")
    saved = {
        name: os.environ.get(name)
        for name in (_HOME_ENV, _PORT_ENV, _KAFKA_PORT_ENV, _STORE_PORT_ENV, "JOURNEYLAKE_TARGET")
    }
    os.environ[_HOME_ENV] = str(home)
    os.environ[_PORT_ENV] = str(_free_port())
    os.environ[_KAFKA_PORT_ENV] = str(_free_port_pair())
    os.environ[_STORE_PORT_ENV] = str(_free_port())
    os.environ.pop("JOURNEYLAKE_TARGET", None)
    yield home
    # whoever started the test metastore (a fixture or a CLI subprocess), it stops here
    from pipelines.config import load_config
    from pipelines.services import kafka_broker, metastore, redis_server

    metastore.stop(load_config("local"))
    kafka_broker.down(load_config("local"))  # the same for the test Kafka broker
    # ... and so do servers that tests started in homes of their own under the temp folder
    metastore.stop_servers_under(tmp_path_factory.getbasetemp())
    kafka_broker.stop_brokers_under(tmp_path_factory.getbasetemp())
    redis_server.down(load_config("local"))  # the test online store, and any a test started elsewhere
    redis_server.stop_servers_under(tmp_path_factory.getbasetemp())
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


# The run's one Spark session. It plans the point-in-time training set and dbt's models beside
# the streams' merges: the optimizer's trees of those plans (hundreds of MB at their peak) did not
# fit a 1 GB driver, whose broadcasts then failed for want of memory. 2 GB is the jobs' own default.
#
# The tests' banks are small, so their time goes to fixed costs per plan: Spark's code generation
# is off (the same results in less time on such data). The JIT is the full one: this JVM runs the
# same plans for the whole run, so the quick compiler's slower code would cost more than the
# optimizing compiler's work (short-lived test processes keep the quick one, test_ingest_restart).
# `make demo` runs the jobs' own settings, code generation included.
SESSION_SETTINGS = {
    "spark.shuffle_partitions": 2,
    "spark.driver_memory": "2g",
    "spark.app_name": "journeylake-tests",
    "spark.java_options": "-XX:ReservedCodeCacheSize=256m",
    "spark.conf": {"spark.sql.codegen.wholeStage": "false", "spark.sql.codegen.factoryMode": "NO_CODEGEN"},
}


@pytest.fixture(scope="session")
def jl_config(jl_home: Path):
    """The local config the tests run with: home in a temp dir, a private metastore port."""
    from pipelines.config import load_config

    return load_config(
        "local",
        overrides=dict(SESSION_SETTINGS),
    )


@pytest.fixture(scope="session")
def kafka_broker(jl_config) -> str:
    """The test home's local Kafka broker, started once per run; its bootstrap address.

    It runs on the session's private port (JOURNEYLAKE_KAFKA_PORT) and is stopped when the
    session ends (see ``jl_home``), whoever stopped or restarted it in between.
    """
    from pipelines.services import kafka_broker as broker

    state, _started = broker.up(jl_config)
    return state.bootstrap


@pytest.fixture(scope="session")
def online_store(jl_config):
    """The test home's online store (a real redis-server), started once per run."""
    from pipelines.services import redis_server

    state, _started = redis_server.up(jl_config)
    return state


API_TOKEN = "test-token-0123456789abcdef"  # the bearer token of the test API servers


@pytest.fixture(scope="module")
def serve_api(jl_config) -> Iterator[Callable[..., str]]:
    """Starts `journeylake serve` (its own processes, a free port) and gives its base URL; every
    server a module started is stopped after it."""
    from pipelines.services.api_server import ApiProcess, start_api

    started: list[ApiProcess] = []

    def start(workers: int = 1) -> str:
        api = start_api(_free_port(), workers=workers, env={"JOURNEYLAKE_API_TOKEN": API_TOKEN})
        started.append(api)
        return api.url

    yield start
    for api in started:
        api.stop()


@pytest.fixture(scope="session")
def spark(jl_config):
    """A Spark session on the shared (test) catalog, with Delta, stopped at the end."""
    from pipelines.services.spark import get_spark

    session = get_spark(jl_config)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def world(jl_config):
    """A generated bank with faults (landing + truth) in the test home's landing folder."""
    from pipelines.sources.simulator import FaultRates, SimConfig, generate

    out = Path(jl_config.paths.home)
    generate(
        SimConfig(customers=120, days=4, seed=7, faults=FaultRates.preset("default")), out, overwrite=True
    )
    return out


@pytest.fixture(scope="session")
def land_known(jl_config, world) -> Callable[[str, str, list[dict]], Path]:
    """Land extra records in the test bank *and tell the truth about them* (expected in silver).

    Tests that add late or revoking events run in any order relative to the exact
    reconciliations of test_ingest.py, which stay exact because truth knows every line landed.
    """
    import json

    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    def land(source: str, name: str, records: list[dict]) -> Path:
        path = Path(jl_config.paths.landing) / source / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        known = pd.DataFrame(
            {
                "source": source,
                "file": f"landing/{source}/{name}",
                "line": pd.array(range(1, len(records) + 1), dtype="int32"),
                "record_key": [r["event_id"] for r in records],
                "fault": None,
                "expected_fate": "silver",
                "drift": False,
            }
        )
        records_dir = world / "truth" / "records"
        schema = pq.read_schema(next(records_dir.glob("part-*.parquet")))  # typed as the simulator's
        pq.write_table(
            pa.Table.from_pandas(known, schema=schema, preserve_index=False),
            records_dir / f"landed-by-test-{path.stem}.parquet",
        )
        return path

    return land


def register_text_model(cfg) -> str:
    """Train the intent and sentiment model and make it the champion of ``cfg``'s registry, as a
    bank does before its first ingest (silver reads intents with it); its version. MLflow's
    process-wide URIs are put back after."""
    import mlflow

    from ml.registry import configure
    from ml.text import train_text_model
    from pipelines.lakehouse.intents import forget_scorers

    kept = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    try:
        report = train_text_model(cfg, configure(cfg))
    finally:
        mlflow.set_tracking_uri(kept[0])
        mlflow.set_registry_uri(kept[1])
    forget_scorers()
    assert report.champion, report.outcome
    return str(report.registered)


@pytest.fixture(scope="session")
def text_model(jl_config) -> str:
    """The test home's champion text model; its registered version."""
    return register_text_model(jl_config)


@pytest.fixture(scope="session")
def ingested(spark, jl_config, world, text_model):
    """The world ingested once, until idle (what customers said scored by ``text_model``);
    returns the table names."""
    from pipelines.lakehouse import ingest
    from pipelines.tables import Tables

    tables = Tables.from_config(jl_config)
    ingest.run(spark, jl_config, until_idle=True, tables=tables, progress=lambda _m: None)
    return tables


@pytest.fixture(scope="session")
def built(spark, jl_config, ingested):
    """`dbt build` (models, data tests, unit tests) on the ingested test bank, once per run."""
    from pipelines.services.dbt_runner import run_dbt

    return run_dbt(jl_config, ["build"])


# ---------------------------------------------------------------- the ML test bank
# Models need weeks of history and enough product openings, which the 4-day `world` does not
# have. A second generated bank is ingested into schemas of its own (ml_bronze / ml_silver /
# ml_gold) by the same Spark session, so the exact reconciliations on `world` stay untouched.
# demand and churn are scaled up so that a small bank has enough positives for every model
ML_BANK = {"customers": 500, "days": 22, "seed": 11, "demand_scale": 20.0, "churn_scale": 4.0}


@pytest.fixture(scope="session")
def ml_overrides(jl_home: Path) -> dict:
    """The ML bank's config as overrides, so a test can vary one setting on top of them."""
    return {
        **SESSION_SETTINGS,
        "ingest.max_files_per_trigger": 100_000,  # history lands at once: one micro-batch per source
        "paths.landing": str(jl_home / "ml_bank" / "landing"),
        "paths.checkpoints": str(jl_home / "ml_bank" / "checkpoints"),
        "paths.mlflow": str(jl_home / "ml_bank" / "mlflow"),
        "catalog.schemas": {"bronze": "ml_bronze", "silver": "ml_silver", "gold": "ml_gold"},
        "ml.training": {"horizon_days": 7, "cutoffs": 2, "cutoff_step_days": 6, "min_history_days": 7},
        "ml.propensity": {"min_positives": 8, "n_estimators": 120},
        "ml.segmentation": {"min_cluster_size": 25, "seeds": [0, 1]},
    }


@pytest.fixture(scope="session")
def ml_config(ml_overrides: dict):
    from pipelines.config import load_config

    return load_config("local", overrides=ml_overrides)


@pytest.fixture(scope="session")
def ml_bank(spark, ml_config, jl_home: Path):
    """The ML bank generated and ingested (until idle); returns (tables, truth folder)."""
    from pipelines.lakehouse import ingest
    from pipelines.services.spark import ensure_schemas
    from pipelines.sources.simulator import FaultRates, SimConfig, generate
    from pipelines.tables import Tables

    ensure_schemas(spark, ml_config)
    out = jl_home / "ml_bank"
    generate(SimConfig(**ML_BANK, faults=FaultRates.preset("default")), out, overwrite=True)
    register_text_model(ml_config)  # the churn model reads what customers said
    tables = Tables.from_config(ml_config)
    ingest.run(spark, ml_config, until_idle=True, tables=tables, progress=lambda _m: None)
    return tables, out / "truth"


@pytest.fixture(scope="session")
def ml_training_set(spark, ml_config, ml_bank):
    """The ML bank's point-in-time training set, built once (tests that retrain reuse it)."""
    from ml.training_set import build_training_set

    tables, _ = ml_bank
    return build_training_set(spark, tables, ml_config)


@pytest.fixture(scope="session")
def ml_trained(spark, ml_config, ml_bank, ml_training_set):
    """Every model trained once on the ML bank (with the truth), as train_all's reports."""
    from ml.train import train_all

    tables, truth = ml_bank
    return train_all(spark, ml_config, tables, truth, progress=lambda _m: None, training=ml_training_set)


@pytest.fixture(scope="module")
def mlflow_uris_kept() -> Iterator[None]:
    """MLflow's process-wide tracking and registry URIs put back after the module: a module that
    points MLflow at a registry of its own (``ml.registry.configure``) does not move the registry
    that later modules' session fixtures (``ml_trained``) configured."""
    import mlflow

    tracking, registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    yield
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(registry)
