"""`journeylake train --only text` and `journeylake classify-text`, as a user runs them.

The module's home gets its champion text model from the real CLI on a home where nothing was
ingested (the text model learns from BANKING77, not from the lakehouse). Scoring a file runs the
CLI as a process; bad input runs the CLI's entry point in this process (the same parser and error
handling, seconds faster), each ending in one line and exit code 1.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipelines.cli import main
from pipelines.sources import banking77


def run_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOURNEYLAKE_")}
    env["JOURNEYLAKE_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def trained_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """A home with nothing ingested, where `journeylake train --only text` ran."""
    home = tmp_path_factory.mktemp("text-home")
    return home, run_cli(home, "train", "--only", "text")


@pytest.fixture
def in_home(trained_home, monkeypatch: pytest.MonkeyPatch, mlflow_uris_kept: None) -> Path:
    home, _ = trained_home
    monkeypatch.setenv("JOURNEYLAKE_HOME", str(home))
    return home


def test_train_only_text_needs_no_lakehouse_and_prints_the_text_models_line(trained_home):
    home, result = trained_home
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (home / "warehouse").exists()  # no Spark, no tables: the lakehouse was never needed
    line = next(line for line in result.stdout.splitlines() if line.startswith("text intent: accuracy"))
    assert "majority baseline" in line and "held-out BANKING77 queries" in line and "texts/s" in line
    assert "text intent: first version: champion (macro_f1" in result.stdout


def test_train_without_a_lakehouse_still_says_to_ingest_first_and_names_the_text_only_way(tmp_path: Path):
    result = run_cli(tmp_path / "home", "train", "--no-text")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("journeylake train: error: no tables on home"), lines
    assert (
        "`journeylake ingest` first" in lines[0] and "`journeylake train --only text` needs none" in lines[0]
    )


def test_classify_text_scores_a_csv_with_the_champion_including_texts_the_project_never_saw(
    trained_home, tmp_path: Path
):
    home, _ = trained_home
    rows = pd.DataFrame(
        {
            "note_id": ["007", "008", "009", "010", "011", "012"],
            "text": [
                "I think my card has been stolen, please block it",
                "I was charged twice for the same coffee yesterday",
                "zxqv wplk mrtg",
                "NA",
                "",
                "Ich möchte mein Konto schließen",
            ],
            "channel": ["app", "chat", "chat", "app", "app", "chat"],
        }
    )
    assert not set(rows["text"]) & {q.text for q in banking77.queries()}  # never seen, trained on or held out
    source, out = tmp_path / "notes.csv", tmp_path / "scored" / "notes_scored.csv"
    rows.to_csv(source, index=False)

    result = run_cli(home, "classify-text", "--in", str(source), "--out", str(out))

    assert result.returncode == 0, result.stderr[-3000:]
    assert f"scored 6 rows of {source} with journeylake_text_intent v1" in result.stdout
    assert str(out) in result.stdout
    scored = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(scored.columns) == ["note_id", "text", "channel", "intent", "intent_confidence", "sentiment"]
    pd.testing.assert_frame_equal(scored[rows.columns], rows)  # the input's columns, unchanged
    assert list(scored["intent"]) == [
        "lost_or_stolen_card",
        "transaction_charged_twice",
        "unrecognised",
        "unrecognised",
        "unrecognised",
        "unrecognised",
    ]
    confidence, sentiment = scored["intent_confidence"].astype(float), scored["sentiment"].astype(float)
    assert confidence.between(0, 1).all() and sentiment.between(-1, 1).all()
    assert confidence[4] == 0.0 and sentiment[0] < 0  # an empty note; a stolen card reads negative


def test_classify_text_reads_another_text_column(in_home: Path, tmp_path: Path, capsys):
    source, out = tmp_path / "chat.csv", tmp_path / "chat_scored.csv"
    source.write_text("id,body\n1,The ATM swallowed my card\n", encoding="utf-8")

    assert main(["classify-text", "--in", str(source), "--text-column", "body", "--out", str(out)]) == 0

    assert "scored 1 rows" in capsys.readouterr().out
    assert pd.read_csv(out)["intent"].tolist() == ["card_swallowed"]


BAD_INPUTS = {
    "missing file": (None, "no such file"),
    "missing column": (b"id,body\n1,my card is lost\n", "no column 'text' (its columns: 'id', 'body')"),
    "empty file": (b"", "the file is empty"),
    "header only": (b"id,text\n", "a header but no rows"),
    "not UTF-8": ("id,text\n1,carte bloqu\u00e9e\n".encode("latin-1"), "not UTF-8"),
    "gzip, not CSV": (gzip.compress(b"id,text\n1,my card is lost\n"), "not UTF-8"),
    "unclosed quote": (b'id,text\n1,"my card is lost\n', "not a readable CSV file"),
    "row longer than the header": (b"id,text\n1,my card,is,lost\n", "more cells than the header"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_naming_the_file_and_a_non_zero_exit(
    case: str, in_home: Path, tmp_path: Path, capsys
):
    content, expected = BAD_INPUTS[case]
    source, out = tmp_path / "input.csv", tmp_path / "out.csv"
    if content is not None:
        source.write_bytes(content)

    code = main(["classify-text", "--in", str(source), "--out", str(out)])

    captured = capsys.readouterr()
    assert code == 1
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert lines[0].startswith(f"journeylake classify-text: error: --in {source}: "), lines
    assert expected in lines[0], lines
    assert not out.exists()


def test_an_output_path_that_is_a_folder_is_refused_in_one_line(in_home: Path, tmp_path: Path, capsys):
    source = tmp_path / "input.csv"
    source.write_text("text\nmy card is lost\n", encoding="utf-8")

    assert main(["classify-text", "--in", str(source), "--out", str(tmp_path)]) == 1

    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        f"journeylake classify-text: error: --out {tmp_path}: is a folder; name the CSV file to write"
    ]


def test_no_champion_yet_says_to_run_train_only_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_uris_kept: None, capsys
):
    monkeypatch.setenv("JOURNEYLAKE_HOME", str(tmp_path / "empty-home"))
    source = tmp_path / "input.csv"
    source.write_text("text\nmy card is lost\n", encoding="utf-8")

    assert main(["classify-text", "--in", str(source), "--out", str(tmp_path / "out.csv")]) == 1

    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("journeylake classify-text: error: no champion text model")
    assert "run `journeylake train --only text` first" in lines[0]
