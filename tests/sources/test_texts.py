"""What customers say in the synthetic bank: real words, agents' shorthand, the truth kept apart."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.contracts import CONTACT_TOPICS, CONTRACTS
from pipelines.errors import InputError
from pipelines.sources import banking77
from pipelines.sources.simulator import SimConfig, generate
from pipelines.sources.simulator import texts as T

SOURCES = ("contact_centre", "app_chat")
PHONE = re.compile(r"(?:\b07\d{3} ?\d{6}\b|\+44 7\d{3} \d{6})")
SHORTHAND = re.compile(r"\b(?:cust|cx|adv|pls|acct|trf|pmt|txn|SR|svc req|cmplt|DPA|ID&V|cb req|wd)\b")


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split())


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("texts") / "bank"
    generate(SimConfig(customers=2000, days=21, seed=13), out)
    return out


@pytest.fixture(scope="module")
def said(bank: Path) -> pd.DataFrame:
    return pd.read_parquet(bank / "truth" / "utterances.parquet")


@pytest.fixture(scope="module")
def records(bank: Path) -> pd.DataFrame:
    """Every parseable contact-centre and chat record (first copy of a duplicate), with its source."""
    rows = []
    for source in SOURCES:
        for path in sorted((bank / "landing" / source).glob("*.jsonl")):
            for line in path.read_text().splitlines():
                try:
                    rows.append({"source": source, **json.loads(line)})
                except json.JSONDecodeError:
                    continue
    return pd.DataFrame(rows).drop_duplicates(["source", "event_id"])


def _texts(records: pd.DataFrame) -> list[str]:
    return [t for t in records["note"].tolist() + records["message"].tolist() if isinstance(t, str)]


def test_the_same_seed_says_the_same_words_and_another_seed_other_words(tmp_path: Path) -> None:
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        generate(SimConfig(customers=300, days=4, seed=seed), tmp_path / name)

    def said_in(name: str) -> tuple[dict[str, bytes], pd.DataFrame]:
        root = tmp_path / name
        files = {
            p.relative_to(root).as_posix(): p.read_bytes()
            for source in SOURCES
            for p in sorted((root / "landing" / source).glob("*.jsonl"))
        }
        return files, pd.read_parquet(root / "truth" / "utterances.parquet")

    (a, truth_a), (b, truth_b), (c, truth_c) = said_in("a"), said_in("b"), said_in("c")
    assert a and a == b and truth_a.equals(truth_b)
    assert not truth_a.empty and set(truth_a["source"]) == set(SOURCES)
    assert a != c and not truth_a.equals(truth_c)


def test_no_note_or_chat_message_holds_a_held_out_banking77_query(records: pd.DataFrame) -> None:
    held_out = {_norm(q.text) for q in banking77.split()[1]}
    held_out |= {_norm(q.text.replace("'", "").replace("\u2019", "")) for q in banking77.split()[1]}
    texts = _texts(records)
    assert len(texts) > 1000
    said = "\n".join(_norm(t) for t in texts)
    bare = "\n".join(_norm(t.replace("'", "").replace("\u2019", "")) for t in texts)
    assert not [q for q in held_out if q in said or q in bare]


def test_the_simulator_draws_only_from_the_training_part_of_banking77() -> None:
    usable = {" ".join(q.text.split()) for q in banking77.split()[0]}
    drawn = T.corpus().texts.to_pylist()
    assert set(drawn) <= usable and len(drawn) > 0.95 * len(usable)
    held_out = [_norm(q.text) for q in banking77.split()[1]]
    joined = "\n".join(_norm(t) for t in drawn)
    assert not [q for q in held_out if q in joined]


def test_every_customer_message_has_one_truth_row_with_a_banking77_intent(
    said: pd.DataFrame, records: pd.DataFrame
) -> None:
    assert set(said["true_intent"]) <= set(banking77.intents())
    assert said["event_id"].is_unique
    assert said["true_sentiment"].between(-1, 1).all()
    assert (said["true_topic"] == said["true_intent"].map(T.INTENT_TOPIC)).all()
    assert set(said["situation"]) <= set(T.SITUATIONS)
    customer = records[(records["source"] == "contact_centre") | (records["direction"] == "customer")]
    bot = records[records["direction"] == "bot"]
    assert set(customer["event_id"]) <= set(said["event_id"])
    assert not set(bot["event_id"]) & set(said["event_id"])
    chat = said[said["source"] == "app_chat"]
    assert (
        chat["topic_correct"].isna().all() and chat["states_intent"].any() and not chat["states_intent"].all()
    )


def test_landing_records_carry_the_words_and_no_sentiment(records: pd.DataFrame) -> None:
    calls = records[records["source"] == "contact_centre"]
    assert "sentiment" not in records.columns
    assert "sentiment" not in CONTRACTS["contact_centre"].field_names
    assert set(calls["schema_version"]) == {CONTRACTS["contact_centre"].version} == {2}
    assert set(calls["topic"].dropna()) == set(CONTACT_TOPICS)


def test_agents_pick_a_wrong_topic_at_about_the_configured_share(
    said: pd.DataFrame, records: pd.DataFrame
) -> None:
    calls = said[said["source"] == "contact_centre"].merge(
        records[["event_id", "topic"]].dropna(), on="event_id"
    )
    wrong = calls["topic"] != calls["true_topic"]
    assert (wrong == ~calls["topic_correct"].astype(bool)).all()
    rate, n = SimConfig().topic_error_rate, len(calls)
    assert n > 1000 and abs(wrong.mean() - rate) < 4 * np.sqrt(rate * (1 - rate) / n)


def test_a_topic_error_rate_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(InputError, match="topic_error_rate"):
        SimConfig(topic_error_rate=1.5)


def test_customers_with_a_high_churn_hazard_voice_leaving_and_complaints_more_often(
    bank: Path, said: pd.DataFrame
) -> None:
    state = pd.read_parquet(
        bank / "truth" / "daily_state.parquet", columns=["date", "customer_number", "churn_hazard"]
    )
    state["date"] = pd.to_datetime(state["date"]).dt.date
    rows = said.assign(date=said["event_time"].dt.date).merge(state, on=["customer_number", "date"])
    leaving = rows["true_intent"].isin(T.LEAVING_INTENTS)
    high = rows["churn_hazard"] >= rows["churn_hazard"].quantile(0.9)
    low = rows["churn_hazard"] <= rows["churn_hazard"].median()
    assert high.sum() > 150 and low.sum() > 500
    # voiced more often (by a factor, not by the fees and stress that come with a high hazard alone),
    # and by no means always
    assert 0.2 < leaving[high].mean() < 0.6 and leaving[high].mean() > 3 * leaving[low].mean()
    closing = rows["true_intent"] == "terminate_account"
    assert closing[high].mean() > 0.07 and closing[high].mean() > 4 * closing[low].mean()


def test_a_situation_calls_for_its_intents(said: pd.DataFrame) -> None:
    share = said.groupby("situation")["true_intent"].agg(lambda s: s.value_counts(normalize=True).to_dict())
    assert share["declined_payment"].get("declined_card_payment", 0) > 0.2
    assert share["fees"].get("extra_charge_on_statement", 0) > 0.2
    assert share["leaving"].get("terminate_account", 0) > 0.3
    assert said.loc[said["situation"] == "everyday", "true_intent"].nunique() > 60


def test_notes_carry_agent_shorthand_names_and_phone_numbers_sometimes(
    bank: Path, records: pd.DataFrame
) -> None:
    notes = records["note"].dropna()
    customers = pd.concat(
        pd.read_json(p, lines=True, dtype=False)
        for p in sorted((bank / "landing" / "customers").glob("*.jsonl"))
    ).dropna(subset=["customer_number", "first_name"])
    first = customers.drop_duplicates("customer_number").set_index("customer_number")["first_name"]
    calls = records[records["source"] == "contact_centre"].dropna(subset=["note", "customer_number"])
    named = [
        n in note
        for n, note in zip(calls["customer_number"].map(first).fillna("\0"), calls["note"], strict=True)
    ]
    for share in (
        notes.str.contains(SHORTHAND).mean(),
        notes.str.contains(PHONE).mean(),
        np.mean(named),
        notes.str.contains("@").mean(),
        (notes == notes.str.lower()).mean(),  # typed in lower case (no name, postcode or capitals)
    ):
        assert 0.03 < share < 0.97
    assert notes.str.contains(SHORTHAND).mean() > 0.5


def test_chat_messages_are_informal_and_sometimes_hold_card_digits_or_an_email(records: pd.DataFrame) -> None:
    chat = records[records["source"] == "app_chat"]
    mine = chat.loc[chat["direction"] == "customer", "message"].dropna()
    assert 0.02 < mine.str.contains(r"card ending(?: in)? \d{4}\b").mean() < 0.2
    assert 0.005 < mine.str.contains("@").mean() < 0.2
    assert (mine == mine.str.lower()).mean() > 0.4
    assert mine.str.len().median() < chat.loc[chat["direction"] == "bot", "message"].str.len().median()
    sessions = chat.groupby("chat_session_id")["direction"].agg(set)
    assert (sessions == {"customer", "bot"}).mean() > 0.9


def test_a_chat_names_its_customer_by_login_and_app_device(
    bank: Path, records: pd.DataFrame, said: pd.DataFrame
) -> None:
    ids = pd.read_parquet(bank / "truth" / "identities.parquet")
    owner = dict(
        zip(zip(ids["id_type"].astype(str), ids["id_value"], strict=True), ids["person_id"], strict=True)
    )
    chat = records[records["source"] == "app_chat"].dropna(subset=["login_id", "device_id"])
    chat = chat.merge(said[["event_id", "person_id"]], on="event_id")
    assert len(chat) > 100
    assert (chat["login_id"].map(lambda v: owner.get(("login_id", v))) == chat["person_id"]).all()
    assert (chat["device_id"].map(lambda v: owner.get(("device_id", v))) == chat["person_id"]).all()


def test_the_mood_shows_in_some_of_the_words(said: pd.DataFrame, records: pd.DataFrame) -> None:
    rows = said.merge(records[["event_id", "note", "message"]], on="event_id")
    text = rows["note"].fillna(rows["message"]).fillna("")
    angry = text.str.contains(r"upset|very unhappy|irate|angry|extremely frustrated|ridiculous|useless|!!!")
    pleased = text.str.contains(r"thanked|happy w/|pleased|grateful|satisfied|thanks!|thx :\)|cheers")
    assert rows.loc[angry, "true_sentiment"].mean() < -0.4 < 0.2 < rows.loc[pleased, "true_sentiment"].mean()
    assert 0.1 < (angry | pleased).mean() < 0.6  # not every message says how its writer feels
    by_situation = rows.groupby("situation")["true_sentiment"].mean()
    assert by_situation["fees"] < by_situation["everyday"] - 0.3
    assert by_situation["leaving"] < by_situation["new_card"] - 0.3
