"""Free text after bronze: what the redaction masks in agents' notes, and what it leaves."""

from __future__ import annotations

import re

import pytest

NOTES = {
    "Helped Priya set up a standing order to landlord": "Helped [name] set up a standing order to landlord",
    "Margaret called, card declined at till; checked limit": (
        "[name] called, card declined at till; checked limit"
    ),
    "Address change requested, DOB verified, new address SW1A 1AA": (
        "Address change requested, DOB verified, new address [postcode]"
    ),
    "Complaint: waited 40 minutes on hold, Kofi Mensah very frustrated": (
        "Complaint: waited 40 minutes on hold, [name] [name] very frustrated"
    ),
    "Call back on 07700 900123 or jo.bloggs@example.co.uk": "Call back on [number] or [email]",
    "Balance query from Niamh, explained pending transactions": (
        "Balance query from [name], explained pending transactions"
    ),
    "Fraud check on recent card payment, customer confirmed genuine": (
        "Fraud check on recent card payment, customer confirmed genuine"
    ),
    "Statement copies for last 3 months requested. Susan asked twice": (
        "Statement copies for last 3 months requested. [name] asked twice"
    ),
}


@pytest.mark.parametrize("note", sorted(NOTES))
def test_a_note_loses_names_postcodes_emails_and_numbers_and_keeps_its_words(spark, note: str) -> None:
    from pipelines.lakehouse.pii import redact

    row = spark.createDataFrame([(note,)], "note string").select(redact("note").alias("n")).first()
    assert row is not None and row["n"] == NOTES[note]


def test_no_contact_note_in_silver_holds_a_customers_postcode_or_a_name_inside_a_sentence(
    spark, ingested
) -> None:
    """On the generated bank: every postcode goes, and every name that does not open a sentence.
    A sentence-opening name missing from the given-name list is the known gap (counted here)."""
    from pipelines.lakehouse.pii import given_names

    people = spark.table(ingested.bronze("customers")).selectExpr(
        "get_json_object(raw, '$.first_name') AS first", "get_json_object(raw, '$.postcode') AS postcode"
    )
    firsts = {r["first"] for r in people.collect() if r["first"]}
    postcodes = {r["postcode"] for r in people.collect() if r["postcode"]}
    notes = [r["note"] for r in spark.table(ingested.silver("contact_centre")).select("note").collect()]
    assert notes and postcodes and firsts
    text = "\n".join(n for n in notes if n)
    assert not [p for p in postcodes if p in text]
    inside = re.compile(r"(?<=[a-z0-9,;:)] )(" + "|".join(map(re.escape, firsts)) + r")\b")
    assert not inside.findall(text)
    opening = [n for n in notes if n and n.split(" ", 1)[0] in firsts]
    assert all(n.split(" ", 1)[0] not in given_names() for n in opening)
