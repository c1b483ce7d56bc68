"""Erasure in the files around the lakehouse, the Delta log's statistics and the byte scan, on
small files made here (no Spark)."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.config import PrivacyConfig
from pipelines.privacy.erase_files import erase_exports, erase_jsonl, erase_spool
from pipelines.privacy.erase_tables import scrub_log
from pipelines.privacy.people import People
from pipelines.privacy.scan import person_patterns, scan

IDENTIFIERS = PrivacyConfig().identifiers  # the shipped order: strongest first


def _people() -> People:
    return People(
        {
            "customer_number": {"C100"},
            "login_id": {"ob100"},
            "device_id": {"D100"},
            "unified_customer_id": {"U1"},
        }
    )


def test_landing_lines_of_the_person_go_and_every_other_line_stays_in_a_file_of_the_same_name(
    tmp_path: Path,
) -> None:
    landing = tmp_path / "landing" / "digital" / "retry"
    landing.mkdir(parents=True)
    lines = [
        {"event_id": "E1", "customer_number": "C100"},  # theirs
        {"event_id": "E2", "customer_number": "C1000"},  # a longer number: someone else's
        {"event_id": "E3", "login_id": "ob100", "device_id": "D999"},  # their login on a device
        {"event_id": "E4", "login_id": "ob200", "device_id": "D100"},  # someone else logged in on it
        {"event_id": "E5", "login_id": None, "device_id": "D100"},  # anonymous on their device
    ]
    deep = '{"a":' * 5000 + "1" + "}" * 5000  # valid JSON deeper than Python's parser goes
    text = "".join(json.dumps(r) + "\n" for r in lines) + "not json, mentions C100 here\nnot json, C1000\n"
    text += deep + "\n" + '{"customer_number":"C100","x":' + "[" * 5000 + "]" * 5000 + "}\n"
    path = landing / "2026-01-01.jsonl"
    path.write_text(text)
    done = erase_jsonl([tmp_path / "landing"], _people(), IDENTIFIERS)
    kept = path.read_text().splitlines()
    assert [json.loads(k)["event_id"] for k in kept[:2]] == ["E2", "E4"]
    assert kept[2:] == ["not json, C1000", deep]  # the deep line of theirs goes by its mention
    assert (done.files, done.rows) == (1, 5)
    assert erase_jsonl([tmp_path / "landing"], _people(), IDENTIFIERS).rows == 0  # a re-run finds nothing


def test_spooled_batches_lose_the_persons_rows_only(tmp_path: Path) -> None:
    doc = {
        "app_id": "a",
        "sequence": 1,
        "served": [{"customer_number": "C100"}, {"customer_number": "C200"}],
        "log": [{"customer_number": "C100"}],
        "responses": [{"customer_number": "C200"}],
        "decisions": [{"customer_number": "C100", "decision_id": "d1"}],
    }
    path = tmp_path / "0001-a-00000001.json"
    path.write_text(json.dumps(doc))
    done = erase_spool(tmp_path, _people(), IDENTIFIERS)
    after = json.loads(path.read_text())
    assert (
        after["served"] == [{"customer_number": "C200"}] and after["log"] == [] and after["decisions"] == []
    )
    assert after["responses"] == [{"customer_number": "C200"}] and done.rows == 3


def test_an_export_is_rewritten_as_exported_and_its_manifest_says_so(tmp_path: Path) -> None:
    from pipelines.lakehouse.segment_export import file_bytes

    day = tmp_path / "2026-12-07"
    day.mkdir()
    table = pa.table({"segment_name": ["s", "s", "s"], "customer_number": ["C100", "C200", "C300"]})
    files = {}
    for kind in ("csv", "parquet"):
        data = file_bytes(table, kind)
        (day / f"s_2026-12-07.{kind}").write_bytes(data)
        files[kind] = {"file": f"s_2026-12-07.{kind}", "bytes": len(data), "sha256": "x"}
    (day / "manifest.json").write_text(json.dumps({"segments": [{"name": "s", "rows": 3, "files": files}]}))
    done = erase_exports(tmp_path, _people(), IDENTIFIERS, "req-1")
    manifest = json.loads((day / "manifest.json").read_text())
    segment = manifest["segments"][0]
    assert segment["rows"] == 2 and manifest["rewritten_by_erasure"] == ["req-1"]
    expected = table.filter(pa.array([False, True, True]))
    for kind in ("csv", "parquet"):
        data = (day / segment["files"][kind]["file"]).read_bytes()
        assert data == file_bytes(expected, kind)  # byte for byte what the export writes
        assert segment["files"][kind]["sha256"] == hashlib.sha256(data).hexdigest()
    assert (done.files, done.rows) == (2, 1)


def test_log_statistics_naming_an_erased_id_are_dropped_and_the_rest_kept(tmp_path: Path) -> None:
    log = tmp_path / "_delta_log"
    log.mkdir()
    named = {
        "numRecords": 2,
        "minValues": {"customer_number": "C100"},
        "maxValues": {"customer_number": "C300"},
    }
    other = {
        "numRecords": 1,
        "minValues": {"customer_number": "C200"},
        "maxValues": {"customer_number": "C200"},
    }
    commit = [
        {"commitInfo": {"operation": "WRITE"}},
        {"add": {"path": "a.parquet", "stats": json.dumps(named)}},
        {"add": {"path": "b.parquet", "stats": json.dumps(other)}},
    ]
    (log / "00000000000000000000.json").write_text("".join(json.dumps(a) + "\n" for a in commit))
    add = pa.array(
        [
            {"path": "a.parquet", "stats": json.dumps(named)},
            None,
            {"path": "b.parquet", "stats": json.dumps(other)},
        ]
    )
    pq.write_table(pa.table({"add": add}), log / "00000000000000000010.checkpoint.parquet")
    (log / "00000000000000000010.crc").write_text(json.dumps({"allFiles": [{"stats": json.dumps(named)}]}))
    assert scrub_log(tmp_path, ["C100"]) == 3
    actions = [json.loads(line) for line in (log / "00000000000000000000.json").read_text().splitlines()]
    assert "stats" not in actions[1]["add"] and actions[2]["add"]["stats"] == json.dumps(other)
    rows = pq.read_table(log / "00000000000000000010.checkpoint.parquet").column("add").to_pylist()
    assert (
        rows[0] == {"path": "a.parquet", "stats": None}
        and rows[1] is None
        and rows[2]["stats"] == json.dumps(other)
    )
    assert not (log / "00000000000000000010.crc").exists()
    assert scan(tmp_path, {"C100": re.compile(rb"C100")})[0] == []


def test_the_scan_reads_inside_parquet_and_gzip_and_names_what_it_cannot_open(tmp_path: Path) -> None:
    person = {"email": "ann.lee@example.com", "phone": "+447700900001", "customer_number": "C100"}
    person |= {"first_name": "Ann", "last_name": "Lee"}
    pq.write_table(pa.table({"email": ["ann.lee@example.com"] * 50}), tmp_path / "part-0.snappy.parquet")
    (tmp_path / "events.json.gz").write_bytes(gzip.compress(b'{"first_name":"Ann","last_name":"Lee"}'))
    (tmp_path / "state.delta").write_bytes(b"LZ4Block" + b"\x00" * 20)
    (tmp_path / "clean.txt").write_text("C1000 is someone else")
    hits, files = scan(tmp_path, person_patterns(person))
    found = {(h.path.name, h.label, h.where.split()[0]) for h in hits}
    assert ("part-0.snappy.parquet", "email", "column") in found
    assert ("events.json.gz", "name", "gzip") in found
    assert ("state.delta", "unscanned", "Spark") in found
    assert files == 4 and not any(h.path.name == "clean.txt" for h in hits)


def test_an_erased_id_in_a_commits_description_is_replaced_and_other_ids_kept(tmp_path: Path) -> None:
    """``UPDATE t SET ... WHERE customer_number IN ('C100', 'C1000')`` keeps its predicate, ids
    included, in the commit's ``commitInfo`` (what DESCRIBE HISTORY shows)."""
    log = tmp_path / "_delta_log"
    log.mkdir()
    predicate = "(customer_number IN ('C100', 'C1000', 'C200'))"
    commit = [
        {
            "commitInfo": {
                "operation": "UPDATE",
                "operationParameters": {"predicate": json.dumps([predicate])},
            }
        },
        {"remove": {"path": "a.parquet", "dataChange": True}},
    ]
    (log / "00000000000000000003.json").write_text("".join(json.dumps(a) + "\n" for a in commit))
    assert scrub_log(tmp_path, ["C100", "C1000"]) == 1
    text = (log / "00000000000000000003.json").read_text()
    info = json.loads(text.splitlines()[0])["commitInfo"]
    assert json.loads(info["operationParameters"]["predicate"]) == [
        "(customer_number IN ('<erased>', '<erased>', 'C200'))"
    ]
    assert "C100" not in text and json.loads(text.splitlines()[1]) == commit[1]
