"""Segment exports: dated CSV + Parquet per segment and a manifest, consent-checked at export time,
idempotent per date. Runs on the shared ingested + dbt-built test bank (after test_ingest.py,
since the revocation test lands one more consent event that the simulator's truth does not know).
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow

EXPORT_DATE = date(2026, 11, 23)


def _export(spark, cfg, out: Path, day: date = EXPORT_DATE, names=None) -> dict:
    from pipelines.lakehouse.segment_export import export_segments

    return export_segments(spark, cfg, day, out, names)


def _exported_numbers(folder: Path, segment: str, day: date = EXPORT_DATE) -> set[str]:
    table = pq.read_table(folder / day.isoformat() / f"{segment}_{day.isoformat()}.parquet")
    return set(table.column("customer_number").to_pylist())


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("exports")


@pytest.fixture(scope="module")
def first_export(spark, jl_config, built, export_dir):
    return _export(spark, jl_config, export_dir)


def test_each_segment_gets_a_dated_csv_and_parquet_that_agree_with_the_manifest(
    spark, jl_config, first_export, export_dir
):
    folder = export_dir / EXPORT_DATE.isoformat()
    on_disk = json.loads((folder / "manifest.json").read_text())
    assert on_disk["segments"] == first_export["segments"]
    assert [s["name"] for s in on_disk["segments"]] == list(jl_config.segments)
    mart = spark.table(f"{jl_config.catalog.schemas.gold}.segment_exports")
    for segment in on_disk["segments"]:
        csv_rows = pa_csv.read_csv(folder / segment["files"]["csv"]["file"])
        parquet_rows = pq.read_table(folder / segment["files"]["parquet"]["file"])
        assert csv_rows.num_rows == parquet_rows.num_rows == segment["rows"]
        assert set(parquet_rows.column("segment_name").to_pylist()) <= {segment["name"]}
        assert segment["matched"] == mart.where(f"segment_name = '{segment['name']}'").count()
        assert segment["matched"] == segment["rows"] + sum(segment["excluded"].values())
        assert segment["definition"] == jl_config.segments[segment["name"]].where
    assert any(s["rows"] > 0 for s in on_disk["segments"])
    assert any(s["excluded"] for s in on_disk["segments"])  # the consent filter had work to do
    assert "customer_status = 'active'" in on_disk["filters_applied"]


def test_every_exported_customer_has_marketing_consent_for_the_channel_and_any(
    spark, jl_config, first_export, export_dir
):
    from pipelines.tables import Tables

    current = {
        (r["customer_number"], r["channel"]): r["granted"]
        for r in spark.table(Tables.from_config(jl_config).consent_current)
        .where("purpose = 'marketing'")
        .collect()
    }
    checked = 0
    for segment in first_export["segments"]:
        for number in _exported_numbers(export_dir, segment["name"]):
            assert current.get((number, segment["channel"])) is True, (segment["name"], number)
            assert current.get((number, "any")) is True, (segment["name"], number)
            checked += 1
    assert checked > 0


def test_a_customer_who_revokes_consent_is_left_out_of_the_next_export(
    spark, jl_config, first_export, export_dir, ingested, land_known
):
    """The revocation reaches silver after dbt built the mart; the export still honours it."""
    from pipelines.lakehouse import ingest

    segment = next(s for s in first_export["segments"] if s["rows"] > 0)
    customer = sorted(_exported_numbers(export_dir, segment["name"]))[0]
    newest = spark.table(ingested.silver("consent")).agg({"event_time": "max"}).first()[0]
    revocation = {
        "event_id": "REVOKE-TEST-1",
        "event_time": (newest + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "schema_version": 1,
        "customer_number": customer,
        "purpose": "marketing",
        "channel": segment["channel"],
        "granted": False,
        "captured_via": "app",
    }
    land_known("consent", "9999-revoke-test.jsonl", [revocation])
    ingest.run(spark, jl_config, until_idle=True, tables=ingested, progress=lambda _m: None)

    mart_row = (
        spark.table(ingested.gold("segment_exports"))
        .where(f"segment_name = '{segment['name']}' AND customer_number = '{customer}'")
        .first()
    )
    assert mart_row["contactable"]  # the mart was built before the revocation ...
    again = _export(spark, jl_config, export_dir)  # ... the export checks consent now
    assert customer not in _exported_numbers(export_dir, segment["name"])
    after = next(s for s in again["segments"] if s["name"] == segment["name"])
    assert after["rows"] == segment["rows"] - 1
    reason = f"no_marketing_consent_{segment['channel']}"
    assert after["excluded"].get(reason, 0) == segment["excluded"].get(reason, 0) + 1


def test_re_running_a_date_replaces_exactly_that_dates_files(spark, jl_config, built, export_dir):
    day = EXPORT_DATE + timedelta(days=1)
    folder = export_dir / day.isoformat()

    def data_files() -> dict[str, str]:
        return {
            s["files"][kind]["file"]: s["files"][kind]["sha256"]
            for s in json.loads((folder / "manifest.json").read_text())["segments"]
            for kind in ("csv", "parquet")
        }

    _export(spark, jl_config, export_dir, day)
    first = data_files()
    untouched = (export_dir / EXPORT_DATE.isoformat() / "manifest.json").read_bytes()
    _export(spark, jl_config, export_dir, day)
    assert data_files() == first  # same data, byte-identical files
    assert sorted(p.name for p in folder.iterdir()) == sorted([*first, "manifest.json"])

    only = next(iter(jl_config.segments))
    _export(spark, jl_config, export_dir, day, [only])
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"{only}_{day.isoformat()}.csv", f"{only}_{day.isoformat()}.parquet", "manifest.json"]
    )
    assert (export_dir / EXPORT_DATE.isoformat() / "manifest.json").read_bytes() == untouched
    assert not [p for p in export_dir.iterdir() if p.name.startswith(".")]  # no scratch left behind


def test_a_segment_condition_spark_cannot_resolve_is_named_with_its_conf_key(spark, built, tmp_path):
    from pipelines.config import load_config
    from pipelines.errors import InputError

    cfg = load_config(
        "local",
        overrides={
            "segments": {"broken": {"description": "x", "where": "no_such_column > 1", "channel": "sms"}}
        },
    )
    with pytest.raises(InputError, match=r"segment broken \(conf/ segments\.broken\.where.*no_such_column"):
        _export(spark, cfg, tmp_path, names=["broken"])
    with pytest.raises(InputError, match="unknown segment nope"):
        _export(spark, cfg, tmp_path, names=["nope"])


def test_export_cli_rejects_a_date_that_is_not_a_date(capsys):
    from pipelines.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["export-segments", "--date", "2026-13-01"])
    assert exit_info.value.code == 2
    assert "expected a date as YYYY-MM-DD, got '2026-13-01'" in capsys.readouterr().err
