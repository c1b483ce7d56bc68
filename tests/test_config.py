"""Layered configuration: base + target overlay + overrides, validated with clear messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.config import PROJECT_ROOT, load_config
from pipelines.errors import ConfigError


@pytest.fixture
def conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private conf/ folder with a small base and a local target; env cleared."""
    directory = tmp_path / "conf"
    (directory / "targets").mkdir(parents=True)
    (directory / "base.yml").write_text(
        "paths:\n  home: state\n  landing: landing\n"
        "spark:\n  shuffle_partitions: 4\n  app_name: base-app\n  conf:\n    spark.a: '1'\n"
        "catalog:\n  metastore:\n    port: 15270\n"
    )
    (directory / "targets" / "local.yml").write_text(
        "spark:\n  shuffle_partitions: 2\n  conf:\n    spark.b: '2'\n"
    )
    monkeypatch.setenv("JOURNEYLAKE_CONF_DIR", str(directory))
    for name in ("JOURNEYLAKE_HOME", "JOURNEYLAKE_TARGET", "JOURNEYLAKE_METASTORE_PORT"):
        monkeypatch.delenv(name, raising=False)
    return directory


def test_target_overlay_is_deep_merged_onto_base(conf: Path) -> None:
    cfg = load_config()
    assert cfg.target == "local"
    assert cfg.spark.shuffle_partitions == 2  # from the overlay
    assert cfg.spark.app_name == "base-app"  # kept from base
    assert cfg.spark.conf == {"spark.a": "1", "spark.b": "2"}  # dicts merge key by key


def test_overrides_win_and_may_be_dotted(conf: Path) -> None:
    cfg = load_config(overrides={"spark.shuffle_partitions": 3, "kafka": {"topic_prefix": "bank."}})
    assert cfg.spark.shuffle_partitions == 3
    assert cfg.kafka.topic_prefix == "bank."


def test_target_comes_from_environment(conf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (conf / "targets" / "other.yml").write_text("spark:\n  app_name: other-app\n")
    monkeypatch.setenv("JOURNEYLAKE_TARGET", "other")
    assert load_config().spark.app_name == "other-app"
    assert load_config("local").spark.app_name == "base-app"


def test_paths_are_absolute_under_home(conf: Path) -> None:
    cfg = load_config(overrides={"paths.exports": "/abs/exports"})
    assert cfg.paths.home == (PROJECT_ROOT / "state").resolve()
    assert cfg.paths.landing == cfg.paths.home / "landing"
    assert cfg.paths.warehouse == cfg.paths.home / "warehouse"
    assert cfg.paths.exports == Path("/abs/exports")


def test_home_is_overridden_by_environment(
    conf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOURNEYLAKE_HOME", str(tmp_path / "elsewhere"))
    cfg = load_config()
    assert cfg.paths.home == tmp_path / "elsewhere"
    assert cfg.paths.checkpoints == tmp_path / "elsewhere" / "checkpoints"


def test_metastore_port_is_overridden_by_environment(conf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNEYLAKE_METASTORE_PORT", "16001")
    assert load_config().catalog.metastore.port == 16001


def test_unknown_key_names_file_and_dotted_key(conf: Path) -> None:
    (conf / "targets" / "local.yml").write_text("spark:\n  shuffle_partitionz: 2\n")
    with pytest.raises(ConfigError, match=r"targets/local\.yml: spark\.shuffle_partitionz: unknown key"):
        load_config()


def test_wrong_type_names_file_key_and_value(conf: Path) -> None:
    (conf / "targets" / "local.yml").write_text("spark:\n  shuffle_partitions: many\n")
    with pytest.raises(ConfigError) as info:
        load_config()
    assert str(info.value).endswith(
        "targets/local.yml: spark.shuffle_partitions: expected an integer, got 'many'"
    )


@pytest.mark.parametrize("key", ["trigger_interval", "gold_trigger_interval", "dedup_watermark"])
def test_an_interval_spark_cannot_read_names_its_key(conf: Path, key: str) -> None:
    (conf / "targets" / "local.yml").write_text(f"ingest:\n  {key}: every 10s\n")
    with pytest.raises(ConfigError, match=rf"targets/local\.yml: ingest\.{key}: .*every 10s"):
        load_config()


def test_a_default_role_the_sql_roles_do_not_define_is_refused(conf: Path) -> None:
    (conf / "targets" / "local.yml").write_text(
        "sql_endpoint:\n  default_role: auditor\n  roles:\n    viewer: {layers: [gold]}\n"
    )
    with pytest.raises(ConfigError, match=r"default_role 'auditor' is not one of roles \(viewer\)"):
        load_config()


def test_a_sql_role_reading_an_unknown_layer_is_refused(conf: Path) -> None:
    (conf / "targets" / "local.yml").write_text(
        "sql_endpoint:\n  roles:\n    analyst: {layers: [platinum]}\n"
    )
    with pytest.raises(ConfigError, match=r"sql_endpoint\.roles\.analyst\.layers\.0: expected one of"):
        load_config()


def test_error_blames_the_layer_that_set_the_key(conf: Path) -> None:
    (conf / "base.yml").write_text("catalog:\n  metastore:\n    kind: sqlite\n")
    with pytest.raises(ConfigError, match=r"base\.yml: catalog\.metastore\.kind: expected one of"):
        load_config()


def test_bad_yaml_names_the_file_and_line(conf: Path) -> None:
    (conf / "targets" / "local.yml").write_text("spark:\n  shuffle_partitions: [2\n")
    with pytest.raises(ConfigError, match=r"targets/local\.yml: not valid YAML \(line \d+"):
        load_config()


def test_missing_base_file_is_named(conf: Path) -> None:
    (conf / "base.yml").unlink()
    with pytest.raises(ConfigError, match=r"base\.yml: configuration file not found"):
        load_config()


def test_unknown_target_lists_known_ones(conf: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown target 'prod'; known targets: local"):
        load_config("prod")


def test_top_level_scalar_is_rejected(conf: Path) -> None:
    (conf / "targets" / "local.yml").write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match=r"targets/local\.yml: expected a mapping"):
        load_config()


@pytest.mark.parametrize("target", ["local", "databricks"])
def test_shipped_targets_validate(target: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNEYLAKE_CONF_DIR", raising=False)
    cfg = load_config(target)
    assert cfg.target == target
    assert cfg.paths.home.is_absolute()
    assert 1 <= cfg.spark.shuffle_partitions <= 8


def test_databricks_target_needs_a_real_pii_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNEYLAKE_CONF_DIR", raising=False)
    monkeypatch.delenv("JOURNEYLAKE_PII_KEY", raising=False)
    cfg = load_config("databricks")
    with pytest.raises(ConfigError, match="JOURNEYLAKE_PII_KEY"):
        cfg.pii_key()
    monkeypatch.setenv("JOURNEYLAKE_PII_KEY", "from-a-secret")
    assert cfg.pii_key() == "from-a-secret"


def test_shipped_segments_name_a_marketing_channel_each() -> None:
    cfg = load_config("local")
    assert cfg.segments
    assert {s.channel for s in cfg.segments.values()} <= {"email", "sms", "push", "phone"}


@pytest.mark.parametrize(
    ("segment", "message"),
    [
        ({"Big Savers": {"description": "d", "where": "true", "channel": "email"}}, r"segments\.Big Savers"),
        ({"savers": {"description": "d", "where": "true", "channel": "fax"}}, r"segments\.savers\.channel"),
        ({"savers": {"description": "d", "channel": "sms"}}, r"segments\.savers\.where: required key"),
    ],
)
def test_a_bad_segment_definition_names_its_key(segment: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("local", overrides={"segments": segment})


def test_kafka_options_take_secrets_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.errors import InputError
    from pipelines.lakehouse.bronze import kafka_options

    cfg = load_config(
        "local", overrides={"kafka.options": {"sasl.jaas.config": 'x password="${JL_TEST_KAFKA_SECRET}";'}}
    )
    monkeypatch.delenv("JL_TEST_KAFKA_SECRET", raising=False)
    with pytest.raises(InputError, match=r"kafka\.options\.sasl\.jaas\.config .* JL_TEST_KAFKA_SECRET"):
        kafka_options(cfg)
    monkeypatch.setenv("JL_TEST_KAFKA_SECRET", "s3cret")
    assert kafka_options(cfg) == {"sasl.jaas.config": 'x password="s3cret";'}


def test_kafka_port_from_the_environment_sets_broker_controller_and_bootstrap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JOURNEYLAKE_KAFKA_PORT", "29092")
    cfg = load_config("local")
    assert (cfg.kafka.broker.port, cfg.kafka.broker.controller_port) == (29092, 29093)
    assert cfg.kafka.bootstrap_servers == "127.0.0.1:29092"
    monkeypatch.setenv("JOURNEYLAKE_KAFKA_PORT", "many")
    with pytest.raises(ConfigError, match="JOURNEYLAKE_KAFKA_PORT: expected a port number"):
        load_config("local")
