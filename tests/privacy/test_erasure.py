"""Erasure proven by the bytes: three people erased from the session's home, then every file under
it (data decompressed) searched for their email, phone, name and customer number.

These tests run last (marker ``erases``, tests/conftest.py): every other test has written its
tables, logs, exports and spool files into the home by then, and the erasure has to reach them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipelines.privacy.erasure import Erasure, erase, records_table
from pipelines.privacy.scan import Hit, anyones_patterns, landed_people, person_patterns, scan, unshared

pytestmark = [pytest.mark.slow, pytest.mark.erases]


@pytest.fixture(scope="module")
def erased(spark, jl_config, built) -> dict[str, Any]:
    """Three people erased, asked for by three kinds of id: customer number, login, device."""
    from pyspark.sql import functions as F

    from pipelines.tables import Tables

    candidates = unshared(*landed_people(jl_config.paths.landing))
    identity = spark.table(Tables.from_config(jl_config).gold("identity_map"))
    devices = {
        r["customer_number"]: r["id_value"]
        for r in identity.where(F.col("id_type") == "device_id").collect()
        if r["customer_number"]
    }
    by_device = [p for p in candidates if p["customer_number"] in devices]
    others = [p for p in candidates if p not in by_device[:1]]
    chosen = [others[0], others[1], by_device[0]]
    asked = [chosen[0]["customer_number"], chosen[1]["login_id"], devices[chosen[2]["customer_number"]]]
    patterns = {f"{p['customer_number']}:{k}": v for p in chosen for k, v in person_patterns(p).items()}
    before, _ = scan(jl_config.paths.landing, patterns)
    outcome = erase(spark, jl_config, asked, "test-dpo", progress=lambda _line: None)[-1]
    return {"chosen": chosen, "asked": asked, "patterns": patterns, "before": before, "outcome": outcome}


def test_the_scan_finds_each_persons_pii_before_the_erasure(erased: dict[str, Any]) -> None:
    found = {h.label for h in erased["before"]}
    for person in erased["chosen"]:
        for field in ("email", "phone", "customer_number", "name"):
            assert f"{person['customer_number']}:{field}" in found


def test_any_kind_of_id_resolves_to_the_person_and_every_layer_loses_their_rows(
    erased: dict[str, Any],
) -> None:
    outcome: Erasure = erased["outcome"]
    assert outcome.persons == 3 and not outcome.unknown
    removed = outcome.rows_removed
    for table in ("bronze.customers", "silver.customers", "silver.transactions", "gold.identity_map"):
        assert removed.get(table, 0) > 0, f"{table}: {removed}"
    assert removed.get("files:landing", 0) > 0


def test_no_byte_under_the_home_names_an_erased_person(erased: dict[str, Any], jl_config) -> None:
    """Zero hits, but in the local broker's topic logs: Kafka cannot rewrite a topic, and the design
    (README, "Erasure") bounds what stays there by the topics' retention instead. So a hit there
    passes only when its topic deletes records within ``kafka.retention_days`` and the erasure
    record says by when."""
    home = Path(jl_config.paths.home)
    # the simulator's answer key is not the bank's data: a bank has no such folder
    hits, files = scan(home, erased["patterns"], skip=[home / "truth"])
    assert files > 100
    topics_dir = home / "kafka" / "data"
    in_topics = [h for h in hits if h.path.is_relative_to(topics_dir)]
    elsewhere = [h for h in hits if h not in in_topics]
    assert elsewhere == [], "\n".join(_show(h, home) for h in elsewhere[:20])
    if in_topics:
        from pipelines.services.kafka_topics import topic_retention

        retention = topic_retention(jl_config, prefix="")
        for hit in in_topics:
            topic = hit.path.relative_to(topics_dir).parts[0].rsplit("-", 1)[0]
            assert 0 < retention[topic] <= jl_config.kafka.retention_ms, f"{topic}: {retention[topic]} ms"
        notes = erased["outcome"].notes
        assert any("leave with their retention" in n for n in notes), notes


def test_the_record_names_nobody_and_a_repeat_says_already_erased(
    erased: dict[str, Any], spark, jl_config
) -> None:
    from pipelines.tables import Tables

    rows = spark.table(records_table(jl_config, Tables.from_config(jl_config))).collect()
    record = next(r for r in rows if r["request_id"] == erased["outcome"].request_id)
    assert record["requested_by"] == "test-dpo" and record["persons"] == 3
    assert len(record["id_hashes"]) >= 3 and record["rows_removed"]["bronze.customers"] > 0
    again = erase(spark, jl_config, [*erased["asked"], "C-NOBODY-0"], "test-dpo", progress=lambda _l: None)[
        -1
    ]
    assert sorted(again.already) == sorted(erased["asked"])
    assert again.unknown == ["C-NOBODY-0"] and again.persons == 0


def test_outside_bronze_no_file_holds_any_customers_raw_email_phone_name_or_postcode(jl_config) -> None:
    """Raw PII stays in bronze: everything else under the home (silver, gold, dbt's tables, their
    logs and checkpoints, MLflow, exports, the store, the API's spool, logs) is searched for every
    generated customer's email, phone, full name and postcode as the sources delivered them.
    Bronze's equivalents are left out: its tables, the landing and held-back files, the Kafka
    topics (the sources' own copies) and the simulator's answer key."""
    home = Path(jl_config.paths.home)
    people: dict[str, dict[str, Any]] = {}
    for landing in (Path(jl_config.paths.landing), home / "ml_bank" / "landing"):
        people.update(landed_people(landing)[0])
    assert len(people) > 100
    patterns = anyones_patterns(list(people.values()))
    in_landing, _ = scan(Path(jl_config.paths.landing), patterns)
    assert {h.label for h in in_landing} >= {"email", "phone", "postcode"}  # the search finds them
    warehouse = home / jl_config.paths.warehouse
    bronze = [warehouse / "bronze.db", warehouse / "ml_bronze.db", home / "kafka"]
    raw = [Path(jl_config.paths.landing), Path(jl_config.paths.held), home / "truth"]
    raw += [home / "ml_bank" / "landing", home / "ml_bank" / "truth"]
    hits, files = scan(home, patterns, skip=[*bronze, *raw])
    assert files > 100
    assert hits == [], "\n".join(_show(h, home) for h in hits[:30])


def _show(hit: Hit, home: Path) -> str:
    return f"{hit.label} in {hit.path.relative_to(home)} ({hit.where})"


def test_the_streams_go_on_after_an_erasure_and_do_not_bring_the_rows_back(
    erased: dict[str, Any], spark, jl_config, land_known
) -> None:
    """The erasure's commits change rows in tables the streams read: they are skipped, and what
    lands next flows as before."""
    from datetime import timedelta

    from pyspark.sql import functions as F

    from pipelines.lakehouse import ingest
    from pipelines.tables import Tables

    tables = Tables.from_config(jl_config)
    consent = spark.table(tables.silver("consent"))
    newest = consent.agg(F.max("event_time")).first()[0]
    someone = consent.where(~F.col("customer_number").isin([p["customer_number"] for p in erased["chosen"]]))
    customer = someone.first()["customer_number"]
    event = {
        "event_id": "AFTER-ERASURE-1",
        "event_time": (newest + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "schema_version": 1,
        "customer_number": customer,
        "purpose": "marketing",
        "channel": "email",
        "granted": True,
        "captured_via": "app",
    }
    land_known("consent", "9999-after-erasure.jsonl", [event])
    ingest.run(spark, jl_config, until_idle=True, tables=tables, progress=lambda _m: None)
    assert spark.table(tables.silver("consent")).where("event_id = 'AFTER-ERASURE-1'").count() == 1
    numbers = [p["customer_number"] for p in erased["chosen"]]
    for source in ("customers", "transactions", "consent"):
        assert spark.table(tables.silver(source)).where(F.col("customer_number").isin(numbers)).count() == 0
