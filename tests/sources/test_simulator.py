"""The synthetic bank: determinism, realism the later stages rely on, faults and the truth."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.cli import main
from pipelines.contracts import CONTRACTS, SCHEMA_DRIFT_FIELD, STREAM_SOURCES
from pipelines.sources.simulator import PERSONAS, FaultRates, MemoryWriter, SimConfig, generate
from pipelines.sources.simulator import closed_loop as CL

CUSTOMERS, DAYS = 600, 12
TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
IDENTITY_FIELDS = ("customer_number", "login_id", "device_id", "cookie_id", "crm_contact_id")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "bank"
    generate(SimConfig(customers=CUSTOMERS, days=DAYS, seed=7), out)
    return out


@pytest.fixture(scope="module")
def records(run: Path) -> pd.DataFrame:
    return pd.read_parquet(run / "truth" / "records")


@pytest.fixture(scope="module")
def landed(run: Path) -> list[dict]:
    """Every landing line, parsed (None if it is not JSON), with its file and line number."""
    rows = []
    for path in sorted((run / "landing").glob("*/*.jsonl")):
        rel = path.relative_to(run).as_posix()
        for no, line in enumerate(path.read_text().splitlines(), start=1):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                rec = None
            rows.append({"source": path.parent.name, "file": rel, "line": no, "record": rec})
    return rows


def _type_ok(value: object, ftype: str) -> bool:
    if ftype == "double":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if ftype in ("int", "long"):
        return isinstance(value, int) and not isinstance(value, bool)
    if ftype == "boolean":
        return isinstance(value, bool)
    if ftype == "timestamp":
        return isinstance(value, str) and bool(TS_RE.match(value))
    if ftype == "date":
        return isinstance(value, str) and bool(DATE_RE.match(value))
    return isinstance(value, str)


def _reference_fates(landed: list[dict]) -> list[str]:
    """What a strict pipeline does with each line, computed independently of the simulator."""
    known = {
        r["record"]["customer_number"]
        for r in landed
        if r["source"] == "customers" and r["record"] and "customer_number" in r["record"]
    }
    seen: set[tuple[str, str]] = set()
    fates = []
    for r in landed:
        rec, contract = r["record"], CONTRACTS[r["source"]]
        if rec is None:
            fates.append("quarantine")
            continue
        bad = any(rec.get(f) is None for f in contract.required_fields) or any(
            rec.get(f.name) is not None and not _type_ok(rec[f.name], f.type) for f in contract.fields
        )
        if not bad and contract.customer_key and contract.source != "customers":
            number = rec.get(contract.customer_key)
            bad = number is not None and number not in known
        if bad:
            fates.append("quarantine")
            continue
        key = (r["source"], rec[contract.key])
        if contract.kind == "stream" and key in seen:
            fates.append("duplicate")
            continue
        seen.add(key)
        fates.append("silver")
    return fates


def _landing_bytes(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes() for p in sorted((root / "landing").rglob("*.jsonl"))
    }


def test_same_seed_gives_identical_bytes_and_another_seed_different_data(tmp_path: Path) -> None:
    a, b, c = (tmp_path / x for x in "abc")
    for out, seed in ((a, 3), (b, 3), (c, 4)):
        generate(SimConfig(customers=150, days=3, seed=seed), out)
    assert _landing_bytes(a) == _landing_bytes(b)
    assert pd.read_parquet(a / "truth" / "records").equals(pd.read_parquet(b / "truth" / "records"))
    assert pd.read_parquet(a / "truth" / "propensity.parquet").equals(
        pd.read_parquet(b / "truth" / "propensity.parquet")
    )
    other = _landing_bytes(c)
    same = _landing_bytes(a)
    assert other.keys() & same.keys()
    assert all(other[k] != same[k] for k in other.keys() & same.keys() if k.endswith("2026-01-01.jsonl"))


def test_every_persona_is_present(run: Path) -> None:
    persons = pd.read_parquet(run / "truth" / "persons.parquet")
    assert set(persons["persona"]) == set(PERSONAS)
    assert len(persons) == CUSTOMERS


def test_truth_ledger_lists_every_landing_line(records: pd.DataFrame, landed: list[dict]) -> None:
    ledger = records.set_index(["file", "line"])
    assert len(records) == len(landed)
    assert set(ledger.index) == {(r["file"], r["line"]) for r in landed}
    assert set(records["expected_fate"]) <= {"silver", "quarantine", "duplicate"}


def test_expected_fate_matches_an_independent_strict_reader(
    records: pd.DataFrame, landed: list[dict]
) -> None:
    ledger = dict(
        zip(zip(records["file"], records["line"], strict=True), records["expected_fate"], strict=True)
    )
    reference = _reference_fates(landed)
    expected = [ledger[(r["file"], r["line"])] for r in landed]
    mismatches = [
        (r["file"], r["line"], e, f) for r, e, f in zip(landed, expected, reference, strict=True) if e != f
    ]
    assert not mismatches[:5]
    per_source = records.groupby(["source", "expected_fate"]).size().unstack(fill_value=0)
    assert (per_source.sum(axis=1) == records.groupby("source").size()).all()


def test_fault_rates_are_within_tolerance_of_configured_rates(records: pd.DataFrame) -> None:
    rates = FaultRates().stream_rates()
    stream = records[records["source"].isin(STREAM_SOURCES)]
    events = len(stream) - int((stream["fault"] == "duplicate").sum())
    counts = stream["fault"].value_counts()
    for fault, rate in rates.items():
        eligible = events
        if fault == "unknown_customer":  # only sources that name the customer
            keyless = [s for s in STREAM_SOURCES if CONTRACTS[s].customer_key is None]
            eligible = int((~stream["source"].isin(keyless)).sum())
        expected = rate * eligible
        observed = int(counts.get(fault, 0))
        assert abs(observed - expected) <= 4 * np.sqrt(expected) + 2, (fault, observed, expected)


def test_every_fault_is_labelled_on_the_line_that_has_it(records: pd.DataFrame, landed: list[dict]) -> None:
    ledger = {
        (f, n): {"fault": fault, "record_key": key, "drift": drift}
        for f, n, fault, key, drift in zip(
            records["file"],
            records["line"],
            records["fault"],
            records["record_key"],
            records["drift"],
            strict=True,
        )
    }
    first_line: dict[tuple[str, str], str] = {}
    for r in landed:
        row = ledger[(r["file"], r["line"])]
        fault, rec = row["fault"], r["record"]
        contract = CONTRACTS[r["source"]]
        assert (rec is None) == (fault == "malformed_json")
        if rec is None:
            continue
        assert rec[contract.key] == row["record_key"]
        if fault == "missing_required":
            assert any(f not in rec for f in contract.required_fields)
        if fault == "wrong_type":
            assert any(
                rec.get(f.name) is not None and not _type_ok(rec[f.name], f.type) for f in contract.fields
            )
        assert (SCHEMA_DRIFT_FIELD in rec) == bool(row["drift"])
        if fault == "schema_drift":
            assert r["source"] == "digital"
        if fault == "late":
            batch = pd.Timestamp(
                Path(r["file"]).stem.split("_")[0].replace("T", " ").replace("-00", ":00", 1)[:16] + "Z"
            )
            event_hour = pd.Timestamp(rec["event_time"]).floor("h")
            assert batch > event_hour and batch - event_hour <= pd.Timedelta(hours=6)
        key = (r["source"], rec[contract.key])
        if fault == "duplicate":
            assert first_line[key] == json.dumps(rec)
        first_line.setdefault(key, json.dumps(rec))


def test_faults_none_gives_clean_data(tmp_path: Path) -> None:
    generate(SimConfig(customers=150, days=3, faults=FaultRates.preset("none")), tmp_path / "clean")
    records = pd.read_parquet(tmp_path / "clean" / "truth" / "records")
    assert records["fault"].isna().all()
    assert (records["expected_fate"] == "silver").all()
    assert not records["drift"].any()


def test_document_upload_is_the_step_that_loses_most_applicants(landed: list[dict]) -> None:
    reached: dict[str, set[str]] = defaultdict(set)
    for r in landed:
        rec = r["record"]
        if (
            r["source"] == "digital"
            and rec
            and rec.get("event_type") == "application_step"
            and rec.get("step")
        ):
            reached[rec["step"]].add(rec["application_id"])
    steps = CONTRACTS["digital"].get("step").allowed
    drop = {s: 1 - len(reached[n]) / len(reached[s]) for s, n in zip(steps, steps[1:], strict=False)}
    assert max(drop, key=drop.get) == "document_upload"
    assert drop["document_upload"] > 1.5 * max(v for s, v in drop.items() if s != "document_upload")


def test_every_event_identity_maps_to_a_person(run: Path, landed: list[dict], records: pd.DataFrame) -> None:
    ids = pd.read_parquet(run / "truth" / "identities.parquet")
    known = set(zip(ids["id_type"].astype(str), ids["id_value"], strict=True))
    unknown_customer = set(records.loc[records["fault"] == "unknown_customer", "record_key"])
    checked = Counter()
    for r in landed:
        rec = r["record"]
        if rec is None or rec.get(CONTRACTS[r["source"]].key) in unknown_customer:
            continue
        for field in IDENTITY_FIELDS:
            if rec.get(field) is not None:
                assert (field, rec[field]) in known, (r["file"], r["line"], field)
                checked[field] += 1
    assert all(checked[f] > 0 for f in IDENTITY_FIELDS)


def test_anonymous_digital_events_carry_device_but_no_login(landed: list[dict]) -> None:
    required = CONTRACTS["digital"].required_fields
    digital = [
        r["record"]
        for r in landed
        if r["source"] == "digital" and r["record"] and all(r["record"].get(f) for f in required)
    ]
    anonymous = [rec for rec in digital if rec.get("login_id") is None]
    assert anonymous and all(rec["device_id"] for rec in anonymous)
    assert all(rec["login_id"] for rec in digital if rec.get("event_type") == "login")


def test_crm_records_vary_like_people_type_them(run: Path) -> None:
    crm = pd.concat(
        pd.read_json(p, lines=True, dtype=False)
        for p in sorted((run / "landing" / "crm_contacts").glob("*.jsonl"))
        if p.name.startswith("2026-01-01")
    )
    assert 0.35 < crm["customer_number"].isna().mean() < 0.75
    ids = pd.read_parquet(run / "truth" / "identities.parquet")
    per_person = ids[ids["id_type"] == "crm_contact_id"].groupby("person_id").size()
    assert (per_person > 1).mean() > 0.15  # duplicates inside the CRM


def test_true_propensity_rises_after_a_life_event_signal(run: Path) -> None:
    events = pd.read_parquet(run / "truth" / "life_events.parquet")
    prop = pd.read_parquet(
        run / "truth" / "propensity.parquet", columns=["date", "person_id", "product", "p_accept"]
    )
    for event, product in (("home_buying", "mortgage"), ("cash_flow_stress", "personal_loan")):
        onsets = events[events["event"] == event][["person_id", "date"]].rename(columns={"date": "onset"})
        p = prop[prop["product"] == product].merge(onsets, on="person_id")
        offset = (pd.to_datetime(p["date"]) - pd.to_datetime(p["onset"])).dt.days
        before = p.loc[offset.between(-3, -1), "p_accept"].mean()
        after = p.loc[offset.between(0, 2), "p_accept"].mean()
        assert after > 2 * before, (event, before, after)


def test_labels_have_true_probabilities_for_the_window(run: Path) -> None:
    labels = pd.read_parquet(run / "truth" / "labels.parquet")
    assert len(labels) == CUSTOMERS
    prob_cols = [c for c in labels if c.startswith("p_")]
    assert labels[prob_cols].apply(lambda s: s.between(0, 1).all()).all()
    assert labels.filter(like="opened_").to_numpy().sum() > 0


def test_the_true_daily_opening_probabilities_account_for_every_opening_campaigns_included(
    tmp_path: Path,
) -> None:
    """Expected openings (applications + the bank's own campaigns) match the realised ones.

    The ex-ante truth is what the ML ceiling is built on: without the campaign part it expected
    about half the openings, and a model that saw who was recently contacted beat the "ceiling".
    """
    generate(SimConfig(customers=2500, days=30, seed=5), tmp_path / "bank")
    truth = pd.read_parquet(
        tmp_path / "bank" / "truth" / "propensity.parquet",
        columns=["date", "person_id", "product", "held", "p_open", "p_open_campaign"],
    ).sort_values(["person_id", "product", "date"])
    truth["held_next"] = truth.groupby(["person_id", "product"])["held"].shift(-1)
    at_risk = truth[~truth["held"] & truth["held_next"].notna()]
    realised = int(at_risk["held_next"].astype(bool).sum())
    from_applications = float(at_risk["p_open"].sum())
    expected = from_applications + float(at_risk["p_open_campaign"].sum())
    assert realised > 100
    assert abs(realised - expected) < 4 * np.sqrt(expected), (realised, expected)
    assert from_applications < 0.75 * realised  # campaigns open a large share: the truth must hold them
    assert at_risk["p_open_campaign"].between(0, 1).all()
    assert (truth.loc[truth["held"], "p_open_campaign"] == 0).all()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> CL.World:
    out = tmp_path_factory.mktemp("loop") / "bank"
    generate(SimConfig(customers=800, days=14, seed=11), out)
    return CL.World.load(out)


def test_oracle_beats_static_rules_which_beat_random(world: CL.World) -> None:
    oracle = CL.expected_value(world, CL.oracle_policy(world))
    static = CL.expected_value(world, CL.static_rule_policy(world))
    random = CL.expected_value(world, CL.random_policy(world, seed=1))
    assert oracle.value > 3 * static.value > 0
    assert static.value > 2 * random.value
    assert static.value - random.value > 0.1 * oracle.value
    assert oracle.violations == static.violations == 0 < random.violations


def test_contact_fatigue_and_consent_change_the_true_probabilities(world: CL.World) -> None:
    decisions = CL.static_rule_policy(world)
    decisions = decisions[decisions["action_id"] != "no_action"].head(50)
    first = CL.score_decisions(world, decisions)
    again = decisions.assign(
        decision_id=decisions["decision_id"] + "-again",
        decided_at=decisions["decided_at"] + pd.Timedelta(hours=1),
    )
    both = CL.score_decisions(world, pd.concat([decisions, again]))
    before, after = first["p_accept"].to_numpy(), both["p_accept"].to_numpy()[50:]
    assert ((after < before) | (before == 0)).all() and (after < before).sum() > 25
    assert (both["contacts_7d"].to_numpy()[50:] == first["contacts_7d"].to_numpy() + 1).all()
    assert (both["p_complaint"].to_numpy()[50:] > first["p_complaint"].to_numpy()).all()
    no_consent = decisions.assign(channel="sms", decision_id=decisions["decision_id"] + "-sms")
    scored = CL.score_decisions(world, no_consent)
    assert (scored.loc[~scored["consent_ok"], "p_complaint"] > 0.1).all()


def test_closed_loop_responses_are_deterministic_and_consistent(world: CL.World) -> None:
    decisions = CL.oracle_policy(world)
    w1, w2 = MemoryWriter(), MemoryWriter()
    a = CL.respond(world, decisions, seed=5, writer=w1)
    b = CL.respond(world, decisions.iloc[::-1], seed=5, writer=w2)
    assert w1.batches == w2.batches and len(a) == len(b)
    expected = CL.score_decisions(world, decisions)["p_accept"].sum()
    accepted = (a["response"] == "accept").sum()
    assert abs(accepted - expected) <= 4 * np.sqrt(expected) + 2
    assert set(a["response"]) <= {"impression", "click", "accept", "dismiss", "complaint"}
    assert (a["event_time"] > pd.Timestamp(decisions["decided_at"].iloc[0])).all()


def test_bad_arguments_end_with_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    (tmp_path / "afile").write_text("x")
    cases = [
        (["--customers", "-5"], "--customers must be a positive number"),
        (["--days", "0"], "--days must be a positive number"),
        (["--faults", "chaos"], "--faults must be 'default' or 'none'"),
    ]
    for extra, message in cases:
        assert main(["generate", "--out", str(tmp_path / "o"), *extra]) == 1
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    assert main(["generate", "--out", str(tmp_path / "full"), "--customers", "10", "--days", "1"]) == 1
    assert "not empty" in capsys.readouterr().err
    assert main(["generate", "--out", str(tmp_path / "afile"), "--customers", "10", "--days", "1"]) == 1
    assert "is a file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--out", str(tmp_path / "o"), "--customers", "many"])
    assert exc.value.code == 2


def test_cli_generate_writes_landing_and_truth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert main(["generate", "--customers", "50", "--days", "2", "--out", str(out)]) == 0
    assert "lines/s" in capsys.readouterr().out
    manifest = json.loads((out / "truth" / "manifest.json").read_text())
    written = {source for source, lines in manifest["lines"].items() if lines}
    assert sorted(p.name for p in (out / "landing").iterdir()) == sorted(written)
    assert set(CONTRACTS) - written <= {"app_chat"}  # 50 customers may not chat in two days
    assert (
        main(["generate", "--customers", "50", "--days", "2", "--out", str(out), "--overwrite", "--quiet"])
        == 0
    )


def test_bulk_encoders_match_the_reference_formatting() -> None:
    """The numpy fast paths (fixed-width ids, timestamps, dates, small-number tables, row
    replacement) write exactly what the per-value formatting and Arrow's casts write."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from pipelines.sources.simulator import codec as C

    ms = np.array([0, 1_767_225_600_123, 1_767_311_999_999, 1_700_000_000_000])
    assert C.format_timestamps(ms).to_pylist() == [C.iso_timestamp(int(x)) for x in ms]
    assert C.format_timestamps(ms, quote=True, prefix="x").to_pylist() == [
        f'x"{C.iso_timestamp(int(x))}"' for x in ms
    ]
    days = np.array([-20_000, 0, 20_454, 20_513, 2_932_896])
    assert C.format_dates(days).to_pylist() == [C.iso_date(int(d)) for d in days]
    numbers = np.array([0, 7, 115, 999_999_999_999])
    assert C.fixed_ids("TX", numbers, 12).strings(strip=1).to_pylist() == [f"TX{n:012d}" for n in numbers]
    assert C.prefixed("S", np.array([5, 2_999_999_999]), 10, quote=True).to_pylist() == [
        '"S0000000005"',
        '"S2999999999"',
    ]
    lines = pa.array(["a\n", "bb\n", "ccc\n", "d\n"])
    assert C.replace_rows(lines, np.array([1, 3]), ["X\n", "YYYY\n"]).to_pylist() == [
        "a\n",
        "X\n",
        "ccc\n",
        "YYYY\n",
    ]
    for values in (
        np.array([0.13, -0.0, 0.5, np.nan]),
        np.array([0.13, 0.0, -0.25, 1.0, np.nan]),
        np.array([3.0, np.nan, 0.0]),
        np.array([1, 0, 5, 2]),
        np.array([True, False]),
    ):
        ftype = "boolean" if values.dtype == bool else ("int" if values.dtype.kind == "i" else "double")
        part = C._small_numbers(values, ftype)
        if part is None:
            continue
        got = [part.values[c] for c in part.codes]
        want = pc.fill_null(pc.cast(pa.array(values, from_pandas=True), pa.string()), "null").to_pylist()
        if ftype == "double" and values.dtype.kind == "f":
            assert got == want
        elif ftype == "boolean":
            assert got == ["true", "false"]
        else:
            assert got == [str(v) for v in values]
