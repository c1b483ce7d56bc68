"""Landing lines of arbitrary shapes, encodings and sizes through ingest: nothing is lost.

Each example lands a few files per source (in the source folder and in subfolders, as retries
and per-day deliveries arrive) made of: real records as the simulator writes them, the same with
fields mutated (wrong types, huge or odd text, keys removed or added), arbitrary JSON, JSON nested
beyond what the parser reads, binary garbage and blank lines; encoded as UTF-8 (with or without a
BOM), UTF-16 or Latin-1; lines ended by LF, CRLF or CR, the last one with or without. It is
ingested into schemas of its own (until idle) and must satisfy the nothing-lost identities:

- landing -> bronze: every line the file holds (counted as Spark's line reader splits them)
  is one bronze row of that file;
- bronze -> silver: every bronze row of a file is in exactly one of silver, quarantine and
  the duplicates log.
"""

from __future__ import annotations

import itertools
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

LONG = os.environ.get("JOURNEYLAKE_FUZZ") == "long"
SOURCES = ("customers", "transactions")
COUNTER = itertools.count()


def spark_lines(data: bytes) -> int:
    """Lines in a file as Hadoop's line reader (Spark's text source) counts them: records end at
    LF, CR or CRLF; a last record without an ending counts when it is not empty."""
    count, i, start, size = 0, 0, 0, len(data)
    while i < size:
        byte = data[i]
        i += 1
        if byte == 0x0A:
            count, start = count + 1, i
        elif byte == 0x0D:
            if i < size and data[i] == 0x0A:
                i += 1
            count, start = count + 1, i
    return count + (1 if start < size else 0)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
odd_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        ["", " ", "null", "9999-12-31T23:59:59Z", "1970-01-01T00:00:00Z", "NaN", "\u202e", "🏦" * 5]
    ),
)


@st.composite
def record_line(draw: st.DrawFn, template: dict[str, Any]) -> str:
    record = dict(template)
    for key in draw(st.lists(st.sampled_from(sorted(record)), max_size=3, unique=True), label="mutated keys"):
        action = draw(st.sampled_from(["odd value", "json value", "remove"]))
        if action == "remove":
            record.pop(key)
        else:
            record[key] = draw(odd_text if action == "odd value" else json_values)
    if draw(st.booleans(), label="extra key"):
        record[draw(st.text(min_size=1, max_size=10))] = draw(json_values)
    return json.dumps(record, ensure_ascii=draw(st.booleans()), allow_nan=True)


def nested(depth: int, kind: str) -> str:
    return '{"a":' * depth + "1" + "}" * depth if kind == "object" else "[" * depth + "]" * depth


@st.composite
def line(draw: st.DrawFn, template: dict[str, Any]) -> str | bytes:
    kind = draw(
        st.sampled_from(["real", "mutated", "mutated", "json", "deep", "binary", "blank", "huge"]),
        label="kind",
    )
    if kind == "real":
        return json.dumps(template)
    if kind == "mutated":
        return draw(record_line(template))
    if kind == "json":
        return json.dumps(draw(json_values), allow_nan=True)
    if kind == "deep":
        return nested(
            draw(st.sampled_from([50, 999, 1001, 3000])), draw(st.sampled_from(["object", "array"]))
        )
    if kind == "binary":
        return draw(st.binary(min_size=1, max_size=200))
    if kind == "blank":
        return draw(st.sampled_from(["", " ", "\t"]))
    big = dict(template)
    big[sorted(big)[0]] = "x" * draw(st.sampled_from([70_000, 1_100_000]))
    return json.dumps(big)


@st.composite
def landing_file(draw: st.DrawFn, template: dict[str, Any]) -> tuple[str, bytes]:
    lines = draw(st.lists(line(template), min_size=0, max_size=25), label="lines")
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "utf-16", "latin-1"]), label="encoding")
    ending = draw(st.sampled_from(["\n", "\r\n", "\r"]), label="line ending")
    parts = [x if isinstance(x, bytes) else x.encode(encoding, errors="replace") for x in lines]
    data = ending.encode(encoding).join(parts)
    if draw(st.booleans(), label="final line ending"):
        data += ending.encode(encoding)
    folder = draw(
        st.sampled_from(["", "", "retry/", "2026-12-06/", "retry/2/", "with space/"]), label="folder"
    )
    return folder, data


@pytest.fixture(scope="module")
def templates(world: Path) -> dict[str, dict[str, Any]]:
    """A real record of each source, as the simulator wrote it (the first line that parses)."""
    found = {}
    for source in SOURCES:
        for path in sorted((world / "landing" / source).glob("*.jsonl")):
            for text in path.read_text().splitlines():
                try:
                    found[source] = json.loads(text)
                    break
                except ValueError:
                    continue
            if source in found:
                break
    return found


@settings(max_examples=10 if LONG else 1)
@given(data=st.data())
def test_every_landed_line_of_any_shape_is_one_row_in_bronze_and_one_in_silver_quarantine_or_duplicates(
    spark, jl_home: Path, templates: dict[str, dict[str, Any]], data: st.DataObject
) -> None:
    from pyspark.sql import functions as F

    from pipelines.config import load_config
    from pipelines.lakehouse import ingest
    from pipelines.services.spark import ensure_schemas
    from pipelines.tables import Tables

    n = next(COUNTER)
    root = jl_home / "fuzz" / str(n)
    cfg = load_config(
        "local",
        overrides={
            "spark.shuffle_partitions": 2,
            "spark.driver_memory": "2g",
            "paths.landing": str(root / "landing"),
            "paths.checkpoints": str(root / "checkpoints"),
            "catalog.schemas": {
                "bronze": f"fuzz{n}_bronze",
                "silver": f"fuzz{n}_silver",
                "gold": f"fuzz{n}_gold",
            },
        },
    )
    expected: dict[tuple[str, str], int] = {}
    for source in SOURCES:
        folder = cfg.paths.landing / source
        folder.mkdir(parents=True)
        files = data.draw(st.lists(landing_file(templates[source]), min_size=1, max_size=4), label=source)
        for i, (subfolder, content) in enumerate(files):
            path = folder / subfolder / f"part-{i}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            expected[(source, str(path))] = spark_lines(content)

    ensure_schemas(spark, cfg)
    tables = Tables.from_config(cfg)
    ingest.run(spark, cfg, until_idle=True, tables=tables, progress=lambda _m: None)

    def per_file(table: str, column: str, source: str | None = None) -> Counter[tuple[str, str]]:
        df = spark.table(table)
        src = F.lit(source) if source else F.col("source")
        rows = df.select(src.alias("source"), F.col(column).alias("file")).groupBy("source", "file").count()
        return Counter({(r["source"], unquote(urlparse(r["file"]).path)): r["count"] for r in rows.collect()})

    bronze: Counter[tuple[str, str]] = Counter()
    landed: Counter[tuple[str, str]] = Counter()
    for source in SOURCES:
        bronze += per_file(tables.bronze(source), "_source_file", source)
        landed += per_file(tables.silver(source), "_source_file", source)
    landed += per_file(tables.quarantine, "source_file")
    landed += per_file(tables.duplicates, "source_file")

    lines = Counter({k: v for k, v in expected.items() if v})
    assert bronze == lines, "landing -> bronze lost or added lines"
    assert landed == bronze, "bronze -> silver / quarantine / duplicates lost or added rows"
