"""Data-quality expectations evaluated inside the stream, on every micro-batch.

An expectation is a named boolean Spark expression that is true for a good row, in the spirit
of Great Expectations' ``expect_column_values_to_...`` vocabulary but compiled to one Spark
projection, so that checking costs a column per rule rather than a job per rule. Each silver
table lists its expectations next to its definition (``pipelines/silver.py``); the generic ones
below are derived from the event contract (required fields, types, allowed values).

A row failing any expectation goes to ``silver.quarantine`` with every rule it failed; the first
failed rule (in declaration order) is its headline ``rule``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pipelines.contracts import Contract

# Typed column name for contract field ``f`` after parsing (see silver.parse_records).
RAW_MAP = "_fields"


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


# The contract rules' checks, bound to one field each with functools.partial (a lambda with
# default arguments would do the same, but its type cannot be checked).
def _present(raw: Column) -> Column:
    return raw.isNotNull()


def _typed(raw: Column, name: str) -> Column:  # absent, or parsed to the contract's type
    return raw.isNull() | F.col(name).isNotNull()


def _in_set(name: str, allowed: list[str]) -> Column:
    return F.col(name).isNull() | F.col(name).isin(allowed)


def contract_expectations(contract: Contract) -> list[Expectation]:
    """Rules every record of ``contract`` must meet: required present, types, allowed values."""
    rules: list[Expectation] = [json_parseable()]
    for f in contract.fields:
        raw = F.col(RAW_MAP)[f.name]
        if f.required:
            rules.append(
                Expectation(
                    f"missing_required:{f.name}",
                    f"expect_column_values_to_not_be_null({f.name})",
                    partial(_present, raw),
                )
            )
        if f.type != "string":
            rules.append(
                Expectation(
                    f"wrong_type:{f.name}",
                    f"expect_column_values_to_be_of_type({f.name}, {f.type})",
                    partial(_typed, raw, f.name),
                )
            )
        if f.allowed:
            allowed = list(f.allowed)
            rules.append(
                Expectation(
                    f"not_allowed:{f.name}",
                    f"expect_column_values_to_be_in_set({f.name}, {allowed})",
                    partial(_in_set, f.name, allowed),
                )
            )
    return rules


def between(name: str, low: float | None, high: float | None) -> Expectation:
    def check() -> Column:
        col = F.col(name)
        ok = F.lit(True)
        if low is not None:
            ok = ok & (col >= low)
        if high is not None:
            ok = ok & (col <= high)
        return col.isNull() | ok

    return Expectation(
        f"out_of_range:{name}",
        f"expect_column_values_to_be_between({name}, {low}, {high})",
        check,
    )


def known_customer(column: str = "customer_number", flag: str = "_known_customer") -> Expectation:
    """The record's customer exists in core banking (``flag`` is set by a join before checking)."""
    return Expectation(
        "unknown_customer",
        f"expect_column_values_to_exist_in(silver.customers.{column})",
        lambda: F.col(column).isNull() | F.coalesce(F.col(flag), F.lit(False)),
    )


def not_in_future(time_column: str, tolerance: str = "1 day") -> Expectation:
    return Expectation(
        "event_time_in_future",
        f"expect {time_column} <= ingest time + {tolerance}",
        lambda: (
            F.col(time_column).isNull()
            | (F.col(time_column) <= F.col("_ingested_at") + F.expr(f"INTERVAL {tolerance}"))
        ),
    )


def apply_expectations(df: DataFrame, rules: list[Expectation]) -> DataFrame:
    """Add ``_failed_rules`` (array of failed rule names, empty when the row passes).

    A malformed line fails only ``malformed_json`` (named ``json_nesting_too_deep`` when it is
    well-formed but nested deeper than Spark's parser reads): every other rule is implied by it
    and would just repeat the same cause.
    """
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
    failed = F.when(joined == "", F.array().cast("array<string>")).otherwise(F.split(joined, r"\|"))
    return df.withColumn("_failed_rules", failed)
