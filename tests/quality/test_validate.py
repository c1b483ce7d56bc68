"""Great Expectations on the test bank: the suites drive the stream's quarantine, the checkpoints
validate silver and gold into gold.dq_results and Data Docs, and a failed critical expectation
stops the commands that read the table."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import datetime
from pathlib import Path

import pytest

from pipelines.cli import main
from pipelines.quality.checkpoints import docs_index, validate
from pipelines.quality.gates import GateError, check_gate
from pipelines.quality.suites import load_suites, suites_dir
from pipelines.tables import Tables


def _with_suites(cfg, folder: Path):
    return cfg.model_copy(update={"quality": cfg.quality.model_copy(update={"suites": folder})})


def _transaction(spark, customer: str, event_id: str, amount: float) -> str:
    return json.dumps(
        {
            "event_id": event_id,
            "event_time": "2026-01-02T10:00:00.000Z",
            "schema_version": 1,
            "customer_number": customer,
            "account_id": "AC000000001",
            "txn_type": "card_spend",
            "amount": amount,
            "currency": "GBP",
            "merchant_category": "retail",
            "counterparty": "SHOP",
            "balance_after": 100.0,
        }
    )


def test_an_expectation_added_to_a_suite_quarantines_rows_under_its_name(
    spark, jl_config, ingested, tmp_path
):
    """The stream's quarantine is compiled from the suite file: add an expectation and the next
    micro-batch sends the rows failing it to quarantine, under the expectation's meta.name; a
    warning-severity one only measures."""
    from pipelines.lakehouse import silver

    folder = tmp_path / "expectations"
    shutil.copytree(suites_dir(jl_config), folder)
    path = folder / "silver.transactions.json"
    suite = json.loads(path.read_text())
    suite["expectations"] += [
        {
            "type": "expect_column_values_to_be_between",
            "kwargs": {"column": "amount", "min_value": -5000, "max_value": 5000},
            "meta": {"name": "amount_over_review_limit"},
            "severity": "critical",
        },
        {
            "type": "expect_column_values_to_not_match_regex",
            "kwargs": {"column": "counterparty", "regex": "^SHOP$"},
            "meta": {"name": "shop_counterparty_trial"},
            "severity": "warning",
        },
    ]
    path.write_text(json.dumps(suite))
    edited = _with_suites(jl_config, folder)

    tables = Tables(lambda layer, name: f"gx_edit_{layer}.{name}")
    spark.sql("CREATE SCHEMA IF NOT EXISTS gx_edit_silver")
    silver.ensure_silver_tables(spark, tables, ["customers", "transactions"])
    spark.sql(f"INSERT INTO gx_edit_silver.customers SELECT * FROM {ingested.silver('customers')}")
    customer = spark.table(ingested.silver("customers")).first()["customer_number"]
    table = silver.SILVER_TABLES["transactions"]

    def land(cfg, batch_id: int, prefix: str) -> None:
        lines = [
            _transaction(spark, customer, f"{prefix}1", 25.0),
            _transaction(spark, customer, f"{prefix}2", 9000.0),
        ]
        batch = spark.createDataFrame(
            [(line, f"test/{prefix}.jsonl", datetime(2026, 1, 2, 11)) for line in lines],
            "raw STRING, _source_file STRING, _ingested_at TIMESTAMP",
        )
        silver.process_batch(batch, batch_id, table=table, tables=tables, cfg=cfg, run_id="gx-edit")

    land(edited, 0, "GXEDIT")
    land(jl_config, 1, "GXPLAIN")
    # an unchanged suite is compiled once and its rules reused by every micro-batch; an edit
    # compiles it again
    assert table.rules(jl_config) is table.rules(jl_config)
    assert [r.name for r in table.rules(edited)] != [r.name for r in table.rules(jl_config)]
    quarantined = {
        r["record_id"]: r["rule"]
        for r in spark.table(tables.quarantine).where("record_id LIKE 'GX%'").collect()
    }
    landed = {
        r["event_id"]
        for r in spark.table(tables.silver("transactions")).where("event_id LIKE 'GX%'").collect()
    }
    assert quarantined == {"GXEDIT2": "amount_over_review_limit"}
    # the warning rule quarantines nothing; without the edit the same amount lands
    assert landed == {"GXEDIT1", "GXPLAIN1", "GXPLAIN2"}


def test_silver_and_gold_validate_with_results_for_analysts_and_each_silver_row_once(spark, jl_config, built):
    for table in ("silver.transactions", "silver.customers"):  # customers: PII checked as tokens
        first = validate(spark, jl_config, table=table)
        assert first.outcomes[0].rows > 0 and len(first.outcomes[0].results) > 10
        assert not first.blocking, [f"{o.suite.name}: {r.rule.name} {r.summary()}" for o, r in first.blocking]
    again = validate(spark, jl_config, table="silver.transactions")
    assert again.outcomes[0].skipped is not None and "no rows ingested since" in again.outcomes[0].skipped

    gold = validate(spark, jl_config, layer="gold")
    assert not gold.blocking, [f"{o.suite.name}: {r.rule.name} {r.summary()}" for o, r in gold.blocking]
    results = Tables.from_config(jl_config).gold(jl_config.quality.results_table)
    by_suite = {
        r["suite"]: r["n"]
        for r in spark.sql(
            f"SELECT suite, count(*) AS n FROM {results} WHERE run_id = '{gold.run_id}' GROUP BY suite"
        ).collect()
    }
    expected = {o.suite.name: len(o.results) for o in gold.outcomes if o.skipped is None}
    assert by_suite == expected and by_suite["gold.customer_360"] > 10
    assert docs_index(jl_config).is_file()


def test_a_duplicate_key_in_a_mart_fails_validation_and_stops_the_export_until_forced(
    spark, jl_config, built, tmp_path, capsys
):
    tables = Tables.from_config(jl_config)
    mart = tables.gold("customer_360")
    version = spark.sql(f"DESCRIBE HISTORY {mart}").agg({"version": "max"}).first()[0]
    duplicate = spark.table(mart).limit(1).collect()[0]
    spark.createDataFrame([duplicate], spark.table(mart).schema).write.insertInto(mart)
    try:
        run = validate(spark, jl_config, table="gold.customer_360")
        failed = {r.rule.name: r for _, r in run.blocking}
        assert "unified_customer_id_unique" in failed
        assert failed["unified_customer_id_unique"].unexpected_count == 2
        # the results and Data Docs are files under the home: they count the duplicates but do
        # not name the person (erasure would have to find them there)
        gx_files = [p for p in Path(jl_config.paths.gx).rglob("*") if p.is_file()]
        for value in (duplicate["unified_customer_id"], duplicate["customer_number"]):
            assert not [p for p in gx_files if value.encode() in p.read_bytes()], value

        with pytest.raises(
            GateError,
            match=r"export-segments stopped: gold\.customer_360 .* failed .*"
            r"unified_customer_id_unique \(2 unexpected of",
        ):
            check_gate(spark, jl_config, "export-segments")
        capsys.readouterr()
        assert main(["export-segments", "--out", str(tmp_path / "exports")]) == 1
        err = capsys.readouterr().err
        assert "unified_customer_id_unique" in err and "--force" in err and len(err.strip().splitlines()) <= 2
        assert not (tmp_path / "exports").exists()

        assert main(["export-segments", "--out", str(tmp_path / "exports"), "--force"]) == 0
        overrides = spark.table(tables.gold(jl_config.quality.overrides_table)).collect()
        assert any(
            o["command"] == "export-segments" and "unified_customer_id_unique" in o["expectations"]
            for o in overrides
        )
    finally:
        spark.sql(f"RESTORE TABLE {mart} TO VERSION AS OF {version}")
        validate(spark, jl_config, table="gold.customer_360")
    check_gate(spark, jl_config, "export-segments")  # passes again


def test_data_docs_render_every_suite_in_a_headless_browser_without_the_internet(spark, jl_config, built):
    """Chromium opens the index and a validation page from disk. The index's tables are drawn by
    bootstrap-table, from the site's own copy of its script: the suite names are in rendered
    table cells only if the page ran, and every suite is there, validated or not."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "chromium is missing: `make chromium` installs it"
    validate(spark, jl_config, table="gold.identity_map")
    index = docs_index(jl_config)
    tags = [line for line in index.read_text().splitlines() if "<script" in line or "<link" in line]
    assert not [t for t in tags if "https://" in t], "a page still loads from the internet"

    def cells(page: Path) -> list[str]:
        proc = subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--virtual-time-budget=5000",
                "--dump-dom",
                page.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        return [
            re.sub(r"<[^>]+>", "", m.group(1)).strip()
            for m in re.finditer(r"<td[^>]*>(.*?)</td>", proc.stdout, re.S)
        ]

    assert set(load_suites(jl_config)) <= set(cells(index))
    page = next((index.parent / "validations" / "gold" / "identity_map").rglob("*.html"))
    shown = " ".join(" ".join(cells(page)).split())
    suite = load_suites(jl_config)["gold.identity_map"]
    assert f"Evaluated Expectations {len(suite.rules)}" in shown
    for rule in suite.rules:  # the page renders each expectation by its description
        assert " ".join(rule.description.split()) in shown, rule.name
