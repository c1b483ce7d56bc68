"""A silver table's Great Expectations suite, compiled to rules the stream evaluates on every row.

The suites (:mod:`pipelines.quality.suites`, files under ``conf/gx/expectations/``) are the one
source of the checks; here each critical, row-level expectation becomes a named boolean Spark
expression that is true for a good row, and all of a table's together one projection per
micro-batch, so that checking costs a column per rule rather than a Spark job per rule (GX
running each expectation as its own job per micro-batch would not keep up with the stream).
``journeylake validate`` runs the same suites through GX itself.

A row failing any expectation goes to ``silver.quarantine`` with every rule it failed, by the
expectation's name (``meta.name``); the first failed rule (in the suite's order) is its headline
``rule``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import lru_cache, partial

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pipelines.config import display_path
from pipelines.contracts import Contract
from pipelines.errors import ConfigError, first_line
from pipelines.quality.suites import IN_SET, NOT_NULL, OF_TYPE, UNEXPECTED_ROWS, Rule, Suite

# The fields of a parsed line as text, by name (see silver.parse_records)
RAW_MAP = "_fields"
# set by the join with silver.customers before checking (silver._with_customer_flag)
KNOWN_CUSTOMER_FLAG = "_known_customer"


@dataclass(frozen=True)
class Expectation:
    """A named rule: ``check()`` returns a Column that is true when the row passes."""

    name: str
    description: str
    check: Callable[[], Column]
    # the rule a failing row is quarantined under, when it depends on the row (default: name)
    failed_as: Callable[[], Column] | None = None

    def failure_name(self) -> Column:
        return self.failed_as() if self.failed_as is not None else F.lit(self.name)


# Spark's JSON parser (Jackson's StreamReadConstraints) refuses a document nested deeper than
# this: such a line is well-formed JSON that cannot be read, not a malformed one
JSON_MAX_NESTING = 1000
JSON_TOO_DEEP = "json_nesting_too_deep"


def json_parseable() -> Expectation:
    return Expectation(
        "malformed_json",
        "expect the line to be a JSON object",
        lambda: F.col(RAW_MAP).isNotNull(),
        failed_as=lambda: F.when(
            json_nesting(F.col("raw")) > JSON_MAX_NESTING, F.lit(JSON_TOO_DEEP)
        ).otherwise(F.lit("malformed_json")),
    )


def json_nesting(raw: Column) -> Column:
    """How deep a JSON text's objects and arrays nest (brackets inside strings not counted).

    Evaluated only for lines that did not parse (inside the rule's ``when``); its lambda is not
    code-generated, which costs nothing on the rows that never reach it.
    """
    # strings as "unrolled" possessive loops: Java's regex recurses per repetition of an
    # alternation, which overflows the stack on a long string; these repeat iteratively
    no_strings = F.regexp_replace(raw, r'"[^"\\]*+(?:\\.[^"\\]*+)*+"', "")
    brackets = F.regexp_replace(no_strings, r"[^\[\]{}]", "")
    steps = F.transform(
        F.split(brackets, ""), lambda c: F.when(c.isin("{", "["), 1).when(c.isin("}", "]"), -1).otherwise(0)
    )
    start = F.struct(F.lit(0).alias("depth"), F.lit(0).alias("deepest"))
    return F.aggregate(
        steps,
        start,
        lambda acc, step: F.struct(
            (acc["depth"] + step).alias("depth"),
            F.greatest(acc["deepest"], acc["depth"] + step).alias("deepest"),
        ),
        lambda acc: acc["deepest"],
    )


def compile_suite(suite: Suite, contract: Contract, columns: Collection[str]) -> list[Expectation]:
    """The suite's critical expectations as stream rules, in the suite's order.

    ``columns`` are the columns of a checked batch (contract fields, derived and scored columns,
    lineage): an expectation naming another column is an error naming the suite and rule.
    """
    rules = []
    for rule in suite.rules:
        if rule.severity != "critical":
            continue  # measured by the checkpoints, never quarantined
        at = f"suite {suite.name} ({display_path(suite.path) if suite.path else 'contract'}): {rule.name}"
        column = rule.column
        if column is not None and rule.in_stream == "predicate" and column not in columns:
            raise ConfigError(
                f"{at}: no column {column!r} in {suite.name}; columns: {', '.join(sorted(columns))}"
            )
        rules.append(_compile(rule, contract, at))
    return rules


def _compile(rule: Rule, contract: Contract, at: str) -> Expectation:
    description = rule.description or _describe(rule)
    if rule.in_stream == "raw_json":
        return json_parseable()
    if rule.in_stream == "known_customer":
        key = contract.customer_key or "customer_number"
        return Expectation(rule.name, description, partial(_known, key))
    check = partial(_row_check, rule, contract.field_names)
    condition = rule.row_condition
    if condition is not None:
        _parse_sql(condition, at)
        return Expectation(rule.name, description, partial(_where, condition, check))
    if rule.type == UNEXPECTED_ROWS:
        _parse_sql(rule.condition or "", at)
    return Expectation(rule.name, description, check)


def _describe(rule: Rule) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in rule.kwargs.items())
    return f"{rule.type}({args})"


def _parse_sql(condition: str, at: str) -> None:
    """A condition Spark cannot parse is a configuration error at load, not a failed batch."""
    from pyspark.errors import ParseException

    try:
        F.expr(condition)
    except ParseException as exc:
        raise ConfigError(f"{at}: Spark cannot parse {condition!r} ({first_line(exc)})") from None


def _where(condition: str, check: Callable[[], Column]) -> Column:
    # GX's row_condition: rows where the condition is false or null are not checked
    return ~F.coalesce(F.expr(condition), F.lit(False)) | check()


def _known(column: str, flag: str = KNOWN_CUSTOMER_FLAG) -> Column:
    return F.col(column).isNull() | F.coalesce(F.col(flag), F.lit(False))


def _row_check(rule: Rule, fields: Collection[str]) -> Column:
    """True for a row that meets ``rule`` (a null value meets every check but not-null, as in GX)."""
    kw = rule.kwargs
    kind = rule.type
    if kind == UNEXPECTED_ROWS:
        return ~F.coalesce(F.expr(rule.condition or "false"), F.lit(False))
    name = rule.column or ""
    col = F.col(name)
    # a contract field is checked on the line's own text: present but of the wrong type is
    # wrong_type, not missing
    raw = F.col(RAW_MAP)[name] if name in fields else col
    if kind == NOT_NULL:
        return raw.isNotNull()
    if kind == "expect_column_values_to_be_null":
        return raw.isNull()
    if kind == OF_TYPE:  # absent, or parsed to the contract's type
        return raw.isNull() | col.isNotNull()
    if kind == IN_SET:
        return col.isNull() | col.isin(list(kw["value_set"]))
    if kind == "expect_column_values_to_not_be_in_set":
        return col.isNull() | ~col.isin(list(kw["value_set"]))
    if kind in ("expect_column_values_to_be_between", "expect_column_value_lengths_to_be_between"):
        value = F.length(col) if kind == "expect_column_value_lengths_to_be_between" else col
        ok = F.lit(True)
        low, high = kw.get("min_value"), kw.get("max_value")
        if low is not None:
            ok = ok & ((value > low) if kw.get("strict_min") else (value >= low))
        if high is not None:
            ok = ok & ((value < high) if kw.get("strict_max") else (value <= high))
        return col.isNull() | ok
    if kind == "expect_column_values_to_match_regex":
        return col.isNull() | col.rlike(str(kw["regex"]))
    if kind == "expect_column_values_to_not_match_regex":
        return col.isNull() | ~col.rlike(str(kw["regex"]))
    raise AssertionError(f"{kind} is in ROW_TYPES but has no compiled form")  # pragma: no cover


def apply_expectations(df: DataFrame, rules: list[Expectation]) -> DataFrame:
    """Add ``_failed_rules`` (array of failed rule names, empty when the row passes).

    A malformed line fails only ``malformed_json`` (named ``json_nesting_too_deep`` when it is
    well-formed but nested deeper than Spark's parser reads): every other rule is implied by it
    and would just repeat the same cause.
    """
    return df.withColumn("_failed_rules", failed_rules(tuple(rules)))


@lru_cache(maxsize=64)
def failed_rules(rules: tuple[Expectation, ...]) -> Column:
    """The ``_failed_rules`` expression for ``rules``, built once for rules that do not change
    (:meth:`silver.SilverTable.rules` returns the same objects while a suite is unchanged): a
    micro-batch then spends no driver time on the Python calls that build its hundreds of
    nodes. An expression names columns, not a DataFrame or a session, so it serves every batch."""
    parsed = F.col(RAW_MAP).isNotNull()
    failures = [
        F.when(~F.coalesce(rule.check(), F.lit(False)), rule.failure_name())
        if rule.name == "malformed_json"
        else F.when(parsed & ~F.coalesce(rule.check(), F.lit(False)), rule.failure_name())
        for rule in rules
    ]
    # concat_ws skips nulls; no filter/array_compact, whose lambda is not code-generated and
    # would drag every rule expression into the slow interpreted path
    joined = F.concat_ws("|", *failures)
    return F.when(joined == "", F.array().cast("array<string>")).otherwise(F.split(joined, r"\|"))
