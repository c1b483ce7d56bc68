"""Great Expectations suites: one per silver table and gold mart, the single source of every check.

The files are GX 1.x Expectation Suites as GX itself writes them
(``conf/gx/expectations/<layer>.<table>.json``: ``name``, ``expectations`` of ``type``,
``kwargs``, ``meta``, ``severity``, ``description``), read here as plain JSON so that the stream
does not import GX. Each expectation has a **rule name**, ``meta.name`` (default:
``<type>:<column>``): the rule a quarantined row failed, and the expectation a validation result
names.

A silver table's suite is its file's expectations after the ones its event contract implies
(``pipelines/contracts.py`` defines fields, types and allowed values once; their rules are
generated here, named ``missing_required:<field>``, ``wrong_type:<field>``, ``not_allowed:<field>``,
plus ``malformed_json``, ``unknown_customer`` and ``event_time_in_future``). The stream compiles
a silver suite's **critical** expectations to one Spark projection per micro-batch
(:mod:`pipelines.lakehouse.expectations`), so only row-level types may appear in a silver suite:
anything else is an error at load naming it. ``warning`` and ``info`` expectations do not
quarantine: the checkpoints (``journeylake validate``) report how many rows fail them, which is
how a new rule is tried before it is enforced. Gold suites may use any GX expectation; they run
only in checkpoints.

Queries of ``unexpected_rows_expectation`` name other tables as ``{silver}.<table>`` or
``{gold}.<table>`` (the configured schemas); ``{batch}`` is GX's own placeholder for the rows
validated. In a silver suite such a query must read ``SELECT * FROM {batch} WHERE <condition>``
(the stream quarantines a row where the condition holds).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, get_args

from pipelines.config import Config, conf_dir, display_path
from pipelines.contracts import CONTRACTS, Contract, FieldType
from pipelines.errors import ConfigError
from pipelines.lakehouse.pii import FREE_TEXT_FIELDS
from pipelines.quality.settings import SUITE_NAME

Severity = Literal["critical", "warning", "info"]
SEVERITIES: tuple[str, ...] = get_args(Severity)
Layer = Literal["silver", "gold"]
# How the stream evaluates a rule: a row predicate compiled from the expectation, or one of the
# two checks that need more than the row (the parse of the raw line, the join with customers)
StreamForm = Literal["predicate", "raw_json", "known_customer"]

NOT_NULL = "expect_column_values_to_not_be_null"
OF_TYPE = "expect_column_values_to_be_of_type"
IN_SET = "expect_column_values_to_be_in_set"
JSON_PARSEABLE = "expect_column_values_to_be_json_parseable"
UNEXPECTED_ROWS = "unexpected_rows_expectation"

# The expectation types a silver suite may use: each is a condition on one row, which the stream
# evaluates for every row of a micro-batch (pipelines.lakehouse.expectations compiles each)
ROW_TYPES: frozenset[str] = frozenset(
    {
        NOT_NULL,
        "expect_column_values_to_be_null",
        OF_TYPE,
        IN_SET,
        "expect_column_values_to_not_be_in_set",
        "expect_column_values_to_be_between",
        "expect_column_values_to_match_regex",
        "expect_column_values_to_not_match_regex",
        "expect_column_value_lengths_to_be_between",
        JSON_PARSEABLE,
        UNEXPECTED_ROWS,
    }
)
# keyword arguments of a row-level expectation the stream understands beyond the type's own
_ROW_KWARGS = {"column", "row_condition", "condition_parser", "mostly"}
_TYPE_KWARGS: dict[str, set[str]] = {
    NOT_NULL: set(),
    "expect_column_values_to_be_null": set(),
    OF_TYPE: {"type_"},
    IN_SET: {"value_set"},
    "expect_column_values_to_not_be_in_set": {"value_set"},
    "expect_column_values_to_be_between": {"min_value", "max_value", "strict_min", "strict_max"},
    "expect_column_values_to_match_regex": {"regex"},
    "expect_column_values_to_not_match_regex": {"regex"},
    "expect_column_value_lengths_to_be_between": {"min_value", "max_value", "strict_min", "strict_max"},
    JSON_PARSEABLE: set(),
    UNEXPECTED_ROWS: {"unexpected_rows_query"},
}
# GX 1.24 types whose results its own store cannot write (numpy 2's booleans in the result's
# details: "TypeError: Object of type bool is not JSON serializable"), with what to use instead
UNSTORABLE_TYPES: dict[str, str] = {
    "expect_column_quantile_values_to_be_between": (
        "expect_column_median_to_be_between, or an unexpected_rows_expectation over "
        "percentile_approx(column, q)"
    ),
}
# the one form of unexpected_rows_expectation a silver suite may use
WHERE_QUERY = re.compile(
    r"^\s*select\s+\*\s+from\s+\{batch\}\s+where\s+(?P<condition>.+?)\s*;?\s*$", re.I | re.S
)
# a contract field's type as Spark names it (what expect_column_values_to_be_of_type compares)
SPARK_TYPES: dict[FieldType, str] = {
    "string": "StringType",
    "int": "IntegerType",
    "long": "LongType",
    "double": "DoubleType",
    "boolean": "BooleanType",
    "timestamp": "TimestampType",
    "date": "DateType",
}
# how far past its ingest time an event may claim to have happened (clock skew between sources)
FUTURE_TOLERANCE = "1 day"


@dataclass(frozen=True)
class Rule:
    """One expectation of a suite, with the name its failures go by."""

    type: str
    kwargs: Mapping[str, Any]
    name: str
    severity: Severity = "critical"
    description: str = ""
    origin: Literal["contract", "suite"] = "suite"
    in_stream: StreamForm = "predicate"
    in_checkpoint: bool = True  # False: checks what only the stream sees (the raw line, a raw PII value)
    # the kwargs in the silver table, where they differ from the stream's (a PII field is checked
    # raw in the stream and as its <field>_token column in silver)
    checkpoint_kwargs: Mapping[str, Any] | None = None

    @property
    def column(self) -> str | None:
        value = self.kwargs.get("column")
        return str(value) if value is not None else None

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column the expectation reads by name (column, column_list, a pair's A and B)."""
        named = [self.kwargs.get(k) for k in ("column", "column_A", "column_B")]
        named += list(self.kwargs.get("column_list") or [])
        return tuple(str(c) for c in named if c)

    @property
    def row_condition(self) -> str | None:
        """The Spark condition limiting the rows checked (GX writes it as a string or, since 1.2x,
        as ``{"type": "pass_through", "pass_through_filter": ...}``)."""
        value = self.kwargs.get("row_condition")
        if isinstance(value, Mapping):
            value = value.get("pass_through_filter")
        return str(value) if value else None

    @property
    def condition(self) -> str | None:
        """The row condition an ``unexpected_rows_expectation`` of the ``WHERE`` form flags."""
        match = WHERE_QUERY.match(str(self.kwargs.get("unexpected_rows_query", "")))
        return match.group("condition") if match else None

    def to_gx(self, schemas: Mapping[str, str]) -> dict[str, Any]:
        """This rule as a GX expectation configuration, ``{silver}``/``{gold}`` resolved."""
        kwargs = dict(self.checkpoint_kwargs if self.checkpoint_kwargs is not None else self.kwargs)
        query = kwargs.get("unexpected_rows_query")
        if isinstance(query, str):
            kwargs["unexpected_rows_query"] = resolve_schemas(query, schemas)
        config: dict[str, Any] = {
            "type": self.type,
            "kwargs": kwargs,
            "meta": {"name": self.name, "origin": self.origin},
            "severity": self.severity,
        }
        if self.description:
            config["description"] = self.description
        return config


@dataclass(frozen=True)
class Suite:
    name: str  # <layer>.<table>
    rules: tuple[Rule, ...]
    path: Path | None = None  # the suite file (None: a silver table without one)
    notes: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def layer(self) -> Layer:
        return "gold" if self.name.startswith("gold.") else "silver"

    @property
    def table(self) -> str:
        return self.name.split(".", 1)[1]

    def rule(self, name: str) -> Rule:
        return next(r for r in self.rules if r.name == name)

    def to_gx(self, schemas: Mapping[str, str]) -> dict[str, Any]:
        """The suite as GX reads it (``gx.ExpectationSuite(**suite.to_gx(...))``)."""
        suite: dict[str, Any] = {
            "name": self.name,
            "expectations": [r.to_gx(schemas) for r in self.rules if r.in_checkpoint],
            "meta": {**self.meta, "source": display_path(self.path) if self.path else "contract"},
        }
        if self.notes:
            suite["notes"] = self.notes
        return suite


def resolve_schemas(text: str, schemas: Mapping[str, str]) -> str:
    """``{silver}`` / ``{gold}`` in a query -> the configured (catalog-qualified) schemas."""
    for layer, schema in schemas.items():
        text = text.replace("{" + layer + "}", schema)
    return text


def suites_dir(cfg: Config) -> Path:
    path = cfg.quality.suites
    return path if path.is_absolute() else conf_dir() / path


def load_suites(cfg: Config) -> dict[str, Suite]:
    """Every suite: each silver table's (contract rules + its file), then each gold file's."""
    files = _suite_files(suites_dir(cfg))
    suites = {f"silver.{source}": silver_suite(cfg, source) for source in CONTRACTS}
    for name, path in sorted(files.items()):
        if name.startswith("gold."):
            suites[name] = _read_suite(path, "gold")
    return suites


def silver_suite(cfg: Config, source: str) -> Suite:
    """The suite of ``silver.<source>``: its contract's rules, then its file's (if any)."""
    contract = CONTRACTS[source]
    path = _suite_files(suites_dir(cfg)).get(f"silver.{source}")
    own = _read_suite(path, "silver") if path is not None else Suite(f"silver.{source}", ())
    rules = contract_rules(contract, check_customer=bool(own.meta.get("check_customer", True)))
    names = {r.name for r in rules}
    for rule in own.rules:
        if rule.name in names:
            raise ConfigError(
                f"{display_path(path or suites_dir(cfg))}: expectation {rule.name!r} has the name of "
                f"a rule the {source} contract implies: give it another meta.name"
            )
    return Suite(own.name, rules + own.rules, path, own.notes, own.meta)


def contract_rules(contract: Contract, check_customer: bool = True) -> tuple[Rule, ...]:
    """What a source's event contract implies for each record: it parses, required fields are
    present, typed fields have their type, listed values are allowed, the customer is known
    (when ``check_customer``) and the event is not in the future."""
    rules: list[Rule] = [
        Rule(
            JSON_PARSEABLE,
            {"column": "raw"},
            "malformed_json",
            description="the line is a JSON object",
            origin="contract",
            in_stream="raw_json",
            in_checkpoint=False,
        )
    ]
    for f in contract.fields:
        # silver keeps a PII value only as its keyed hash, <field>_token (free text: redacted)
        tokenized = f.pii and f.name not in FREE_TEXT_FIELDS
        if f.required:
            rules.append(
                Rule(
                    NOT_NULL,
                    {"column": f.name},
                    f"missing_required:{f.name}",
                    origin="contract",
                    checkpoint_kwargs={"column": f"{f.name}_token"} if tokenized else None,
                )
            )
        if f.type != "string":
            rules.append(
                Rule(
                    OF_TYPE,
                    {"column": f.name, "type_": SPARK_TYPES[f.type]},
                    f"wrong_type:{f.name}",
                    origin="contract",
                    in_checkpoint=not tokenized,
                )
            )
        if f.allowed:
            rules.append(
                Rule(
                    IN_SET,
                    {"column": f.name, "value_set": list(f.allowed)},
                    f"not_allowed:{f.name}",
                    origin="contract",
                )
            )
    key = contract.customer_key
    if check_customer and key:
        rules.append(
            Rule(
                UNEXPECTED_ROWS,
                {
                    "unexpected_rows_query": (
                        f"SELECT * FROM {{batch}} WHERE {key} IS NOT NULL AND {key} NOT IN "
                        f"(SELECT customer_number FROM {{silver}}.customers)"
                    )
                },
                "unknown_customer",
                description=f"{key} is a core-banking customer (silver.customers)",
                origin="contract",
                in_stream="known_customer",
            )
        )
    rules.append(
        Rule(
            UNEXPECTED_ROWS,
            {
                "unexpected_rows_query": (
                    f"SELECT * FROM {{batch}} WHERE {contract.event_time} > "
                    f"_ingested_at + INTERVAL {FUTURE_TOLERANCE}"
                )
            },
            "event_time_in_future",
            description=f"{contract.event_time} is at most {FUTURE_TOLERANCE} after the record was ingested",
            origin="contract",
        )
    )
    return tuple(rules)


def _suite_files(directory: Path) -> dict[str, Path]:
    return _suite_files_at(directory, _mtimes(directory))


def _mtimes(directory: Path) -> tuple[tuple[str, int], ...]:
    """The suite files' names and change times: a suite edited on disk is read again."""
    if not directory.is_dir():
        return ()
    return tuple(sorted((p.name, p.stat().st_mtime_ns) for p in directory.glob("*.json")))


@lru_cache(maxsize=8)
def _suite_files_at(directory: Path, stamp: tuple[tuple[str, int], ...]) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for name, _ in stamp:
        suite = name.removesuffix(".json")
        if not SUITE_NAME.match(suite):
            raise ConfigError(
                f"{display_path(directory / name)}: a suite file is named <silver|gold>.<table>.json"
            )
        if suite.startswith("silver.") and suite.split(".", 1)[1] not in CONTRACTS:
            raise ConfigError(
                f"{display_path(directory / name)}: no source {suite.split('.', 1)[1]!r}; silver "
                f"tables: {', '.join(sorted(CONTRACTS))}"
            )
        files[suite] = directory / name
    return files


def _read_suite(path: Path, layer: Layer) -> Suite:
    return _read_suite_at(path, path.stat().st_mtime_ns, layer)


@lru_cache(maxsize=64)
def _read_suite_at(path: Path, _mtime: int, layer: Layer) -> Suite:
    where = display_path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{where}: not a readable JSON suite ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("expectations", []), list):
        raise ConfigError(f"{where}: a suite is a JSON object with a list of 'expectations'")
    name = path.name.removesuffix(".json")
    if data.get("name", name) != name:
        raise ConfigError(f"{where}: the suite is named {data.get('name')!r}; its file says {name!r}")
    meta = data.get("meta") or {}
    rules = tuple(_read_rule(where, i, e, layer) for i, e in enumerate(data.get("expectations", []), 1))
    seen: set[str] = set()
    for rule in rules:
        if rule.name in seen:
            raise ConfigError(f"{where}: two expectations are named {rule.name!r} (meta.name)")
        seen.add(rule.name)
    return Suite(name, rules, path, str(data.get("notes") or ""), meta if isinstance(meta, dict) else {})


def _read_rule(where: str, index: int, data: Any, layer: Layer) -> Rule:
    at = f"{where}: expectation {index}"
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise ConfigError(f"{at}: expected an object with a 'type'")
    kind = data["type"]
    kwargs = data.get("kwargs") or {}
    meta = data.get("meta") or {}
    if not isinstance(kwargs, dict) or not isinstance(meta, dict):
        raise ConfigError(f"{at} ({kind}): 'kwargs' and 'meta' are objects")
    severity = data.get("severity", "critical")
    if severity not in SEVERITIES:
        raise ConfigError(f"{at} ({kind}): severity {severity!r}; expected one of {', '.join(SEVERITIES)}")
    column = kwargs.get("column")
    name = str(meta.get("name") or (f"{kind}:{column}" if column else kind))
    if kind in UNSTORABLE_TYPES:
        raise ConfigError(
            f"{at} ({name}): Great Expectations 1.24 cannot store the result of {kind}; "
            f"use {UNSTORABLE_TYPES[kind]}"
        )
    rule = Rule(kind, kwargs, name, severity, str(data.get("description") or ""))
    if layer == "silver":
        _check_row_level(f"{at} ({name})", rule)
    return rule


def _check_row_level(at: str, rule: Rule) -> None:
    """A silver suite's expectation must be one the stream can evaluate on each row."""
    if rule.type not in ROW_TYPES:
        raise ConfigError(
            f"{at}: {rule.type} is not a row-level expectation the stream can enforce; a silver "
            f"suite may use {', '.join(sorted(ROW_TYPES))} (table-level checks go in a gold suite)"
        )
    unknown = set(rule.kwargs) - _ROW_KWARGS - _TYPE_KWARGS[rule.type]
    if rule.type == UNEXPECTED_ROWS:
        unknown -= {"column"}
    if unknown:
        raise ConfigError(f"{at}: {rule.type} does not take {', '.join(sorted(unknown))} in a silver suite")
    if rule.kwargs.get("mostly", 1) != 1:
        raise ConfigError(
            f"{at}: 'mostly' cannot apply row by row (the stream quarantines each failing row); "
            "make it a warning to measure the share instead"
        )
    if "row_condition" in rule.kwargs and rule.kwargs.get("condition_parser") != "spark":
        raise ConfigError(f"{at}: a row_condition needs condition_parser 'spark'")
    if rule.type == UNEXPECTED_ROWS and rule.condition is None:
        raise ConfigError(
            f"{at}: in a silver suite, unexpected_rows_query reads 'SELECT * FROM {{batch}} WHERE "
            "<condition>' (the stream quarantines the rows the condition finds)"
        )
    if rule.type != UNEXPECTED_ROWS and not rule.column:
        raise ConfigError(f"{at}: {rule.type} needs kwargs.column")
