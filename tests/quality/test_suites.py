"""The Great Expectations suites as the one source of every check (no Spark here)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipelines.config import load_config
from pipelines.contracts import CONTRACTS
from pipelines.errors import ConfigError
from pipelines.quality.suites import ROW_TYPES, load_suites, silver_suite, suites_dir


@pytest.fixture
def edited_suites(tmp_path: Path):
    """A copy of conf/gx/expectations and a config reading it: the test edits the copy."""
    folder = tmp_path / "expectations"
    shutil.copytree(suites_dir(load_config()), folder)

    def edit(name: str, expectations: list[dict], **suite: object):
        path = folder / f"{name}.json"
        data = json.loads(path.read_text()) if path.exists() else {"name": name, "expectations": []}
        data["expectations"] += expectations
        data.update(suite)
        path.write_text(json.dumps(data))
        return load_config(overrides={"quality.suites": str(folder)})

    return edit


def test_a_silver_suite_is_its_contracts_rules_then_its_files_expectations_in_order():
    suite = silver_suite(load_config(), "transactions")
    names = [r.name for r in suite.rules]
    assert names[0] == "malformed_json"
    assert "missing_required:amount" in names and "wrong_type:amount" in names
    assert names.index("unknown_customer") < names.index("event_time_in_future") < names.index("zero_amount")
    assert names[-2:] == ["zero_amount", "bad_currency"]
    assert {r.origin for r in suite.rules[-2:]} == {"suite"}


def test_every_silver_table_and_gate_has_a_suite_and_every_silver_expectation_is_row_level():
    cfg = load_config()
    suites = load_suites(cfg)
    assert {f"silver.{s}" for s in CONTRACTS} <= set(suites)
    assert any(name.startswith("gold.") for name in suites)
    for command, names in cfg.quality.gates.items():
        assert set(names) <= set(suites), f"{command} gates on a suite with no file"
    for suite in suites.values():
        if suite.layer == "silver":
            assert {r.type for r in suite.rules} <= ROW_TYPES
        assert len({r.name for r in suite.rules}) == len(suite.rules)


def test_a_customers_suite_without_the_known_customer_rule_says_so_in_its_meta():
    names = [r.name for r in silver_suite(load_config(), "customers").rules]
    assert "unknown_customer" not in names
    assert "unknown_customer" in [r.name for r in silver_suite(load_config(), "accounts").rules]


def test_a_table_level_expectation_in_a_silver_suite_is_an_error_naming_it(edited_suites):
    cfg = edited_suites(
        "silver.transactions",
        [
            {
                "type": "expect_table_row_count_to_be_between",
                "kwargs": {"min_value": 1},
                "meta": {"name": "rows"},
            }
        ],
    )
    with pytest.raises(
        ConfigError,
        match=r"silver\.transactions\.json: expectation 3 \(rows\): "
        r"expect_table_row_count_to_be_between is not a row-level expectation",
    ):
        silver_suite(cfg, "transactions")


@pytest.mark.parametrize(
    ("expectation", "message"),
    [
        (
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "amount", "mostly": 0.9}},
            "'mostly' cannot apply row by row",
        ),
        (
            {
                "type": "unexpected_rows_expectation",
                "kwargs": {"unexpected_rows_query": "SELECT count(*) FROM {batch}"},
            },
            r"reads 'SELECT \* FROM \{batch\} WHERE <condition>'",
        ),
        (
            {
                "type": "expect_column_values_to_not_be_null",
                "kwargs": {"column": "amount"},
                "meta": {"name": "zero_amount"},
            },
            "two expectations are named 'zero_amount'",
        ),
        (
            {
                "type": "expect_column_values_to_not_be_null",
                "kwargs": {"column": "amount"},
                "meta": {"name": "wrong_type:amount"},
            },
            "has the name of a rule the transactions contract implies",
        ),
        (
            {
                "type": "expect_column_values_to_be_in_set",
                "kwargs": {"column": "amount", "value_set": [1]},
                "severity": "fatal",
            },
            "severity 'fatal'",
        ),
    ],
)
def test_a_silver_expectation_the_stream_cannot_enforce_is_refused_at_load(
    edited_suites, expectation, message
):
    cfg = edited_suites("silver.transactions", [expectation])
    with pytest.raises(ConfigError, match=message):
        silver_suite(cfg, "transactions")


def test_a_suite_file_for_a_table_that_does_not_exist_is_named(edited_suites, tmp_path: Path):
    cfg = edited_suites("silver.transactions", [])
    (tmp_path / "expectations" / "silver.payments.json").write_text('{"expectations": []}')
    with pytest.raises(ConfigError, match=r"silver\.payments\.json: no source 'payments'"):
        load_suites(cfg)


def test_a_gold_suite_may_use_table_level_expectations_and_queries_name_layers_not_schemas():
    suites = load_suites(load_config())
    gold = [s for s in suites.values() if s.layer == "gold"]
    assert any(r.type not in ROW_TYPES for s in gold for r in s.rules)
    spec = suites["gold.customer_360"].to_gx({"silver": "cat.silver_x", "gold": "cat.gold_y"})
    queries = [
        e["kwargs"]["unexpected_rows_query"]
        for e in spec["expectations"]
        if "unexpected_rows_query" in e["kwargs"]
    ]
    assert queries and all("{gold}" not in q and "{silver}" not in q for q in queries)
    assert any("cat.gold_y.identity_map" in q for q in queries)
