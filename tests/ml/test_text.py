"""The intent and sentiment model (ml/text.py): measured on BANKING77's held-out queries, saved
without pickle, registered in a real MLflow store (sqlite under a temporary folder) with the
champion rule. No Spark: the text model learns from the vendored BANKING77 split.

The module trains twice, once: a deliberately weak model (unigrams seen in 200+ queries), then
the default one, into one registry; the registry tests read what those two did.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml import registry
from ml.settings import TextModelConfig
from ml.text import (
    HOW_TO_INTENTS,
    OUTPUT_COLUMNS,
    PROBLEM_INTENTS,
    TextModel,
    evaluate,
    load_text_champion,
    sentiment_by_polarity,
    texts_digest,
    train_text_model,
)
from pipelines.errors import InputError
from pipelines.sources import banking77

WEAK = {"word_ngrams": [1, 1], "char_ngrams": [1, 1], "min_df": 200}
GIBBERISH = ["qwzx vbnm plok", "asdfgh jkl"]


@pytest.fixture(scope="module")
def text_config(tmp_path_factory: pytest.TempPathFactory, mlflow_uris_kept: None):
    from pipelines.config import load_config

    return load_config("local", overrides={"paths.mlflow": str(tmp_path_factory.mktemp("text-mlflow"))})


@pytest.fixture(scope="module")
def trained(text_config):
    """(the weak model's report, the default model's report), registered in that order."""
    from pipelines.config import load_config

    client = registry.configure(text_config)
    weak_config = load_config(
        "local", overrides={"paths.mlflow": str(text_config.paths.mlflow), "ml.text": WEAK}
    )
    weak = train_text_model(weak_config, client)
    return weak, train_text_model(text_config, client)


@pytest.fixture(scope="module")
def model(text_config, trained) -> TextModel:
    champion, _ = load_text_champion(text_config)
    return champion


def test_held_out_accuracy_is_at_least_085_and_far_above_the_majority_baseline(trained):
    _, report = trained
    m = report.metrics
    training, held_out = banking77.split()
    assert report.rows == len(training) and m["held_out_queries"] == len(held_out)
    assert m["accuracy"] >= 0.85 and m["macro_f1"] >= 0.85, m
    assert m["majority_baseline"] < 0.05 and m["accuracy"] > 10 * m["majority_baseline"], m
    # the confidence floor keeps most queries, and is right more often on those it keeps
    assert m["recognised_share"] > 0.9 and m["accuracy_recognised"] > m["accuracy"], m


def test_the_model_never_learnt_from_the_held_out_queries(model: TextModel):
    training, held_out = banking77.split()
    assert model.info["trained_on_sha256"] == texts_digest([q.text for q in training])
    assert model.info["trained_on_queries"] == len(training)
    assert not {q.text for q in held_out} & {q.text for q in training}
    # what it learnt from it gets almost all right; the held-out queries far less so
    learnt, _ = model.top_intents([q.text for q in training])
    learnt_accuracy = float(np.mean(learnt == np.array([q.intent for q in training], dtype=object)))
    assert learnt_accuracy > evaluate(model, held_out)["accuracy"] + 0.05


def test_a_saved_model_loads_without_unpickling_and_predicts_identically(
    model: TextModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    folder = tmp_path / "model"
    model.save(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["text_model.json", "text_model.npz"]
    with np.load(folder / "text_model.npz", allow_pickle=False) as arrays:  # no object arrays in it
        assert all(arrays[key].dtype.kind == "f" for key in arrays.files)

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("loading a text model unpickled something")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    loaded = TextModel.load(folder)
    monkeypatch.undo()

    texts = [q.text for q in banking77.split()[1]] + ["", "my card was STOLEN!!!", *GIBBERISH]
    pd.testing.assert_frame_equal(loaded.predict(texts), model.predict(texts))
    assert loaded.intents == model.intents and loaded.temperature == model.temperature


def test_the_champion_loads_from_the_registry_without_mlflows_pickled_wrapper(text_config, trained):
    """MLflow pickles a pyfunc's Python wrapper (python_model.pkl); the stream's loader never
    reads it: with every such file overwritten, the champion still loads and predicts."""
    pickles = list(Path(text_config.paths.mlflow).rglob("python_model.pkl"))
    assert pickles
    kept = {path: path.read_bytes() for path in pickles}
    try:
        for path in pickles:
            path.write_bytes(b"not a pickle")
        champion, version = load_text_champion(text_config)
    finally:
        for path, content in kept.items():
            path.write_bytes(content)
    assert version == str(trained[1].registered)  # MLflow numbers versions; the loader names them
    assert champion.predict(["I think my card has been stolen"])["intent"][0] == "lost_or_stolen_card"


def test_a_clear_request_gets_its_intent_with_a_high_confidence(model: TextModel):
    out = model.predict(
        [
            "I think my card has been stolen, please block it",
            "how do I change my PIN?",
            "The ATM swallowed my card",
            "I was charged twice for the same coffee yesterday",
        ]
    )
    assert list(out.columns) == list(OUTPUT_COLUMNS)
    assert list(out["intent"]) == [
        "lost_or_stolen_card",
        "change_pin",
        "card_swallowed",
        "transaction_charged_twice",
    ]
    assert (out["intent_confidence"] > 0.9).all(), out


def test_gibberish_is_labelled_unrecognised_and_the_label_is_configurable(model: TextModel):
    texts = [*GIBBERISH, "", None]
    out = model.predict(texts)
    assert len(out) == len(texts)  # kept, never dropped
    assert (out["intent"] == "unrecognised").all(), out
    assert (out["intent_confidence"] < model.min_confidence).all()

    relabelled = model.configured(TextModelConfig(unrecognised_label="no_intent")).predict(texts)
    assert list(relabelled["intent"]) == ["no_intent"] * len(texts)
    # it is the confidence floor that refuses them: without one, gibberish gets a (weak) intent
    floorless = model.configured(TextModelConfig(min_confidence=0.0)).predict(GIBBERISH)
    assert floorless["intent"].isin(model.intents).all() and (floorless["intent_confidence"] < 0.4).all()
    with pytest.raises(ValueError, match="not one of the intents"):
        TextModelConfig(unrecognised_label="card_arrival")


def test_sentiment_is_negative_for_angry_texts_and_near_zero_for_plain_questions(model: TextModel):
    angry = model.predict(
        [
            "Terrible service. I am furious that you blocked my card again",
            "I'm really upset and angry, you stole my money",
            "worst bank ever, I hate this app",
        ]
    )["sentiment"]
    plain = model.predict(
        ["How do I order a new card?", "What is the exchange rate for euros?", "Where is my account number?"]
    )["sentiment"]
    assert (angry < -0.5).all(), angry
    assert (plain.abs() < 0.3).all(), plain
    assert angry.max() < plain.min()


def test_problem_reports_score_more_negative_than_how_to_questions_on_held_out_queries():
    """What the lexicon's validation shows, and how weak it is (ml/text.py's docstring)."""
    assert not PROBLEM_INTENTS & HOW_TO_INTENTS
    assert PROBLEM_INTENTS | HOW_TO_INTENTS <= set(banking77.intents())
    check = sentiment_by_polarity(banking77.split()[1])
    assert check["sentiment_problem_mean"] < check["sentiment_how_to_mean"] - 0.05, check
    assert check["sentiment_problem_negative_share"] > 3 * check["sentiment_how_to_negative_share"], check
    assert 0.55 < check["sentiment_auc"] < 0.8, check  # a real but weak separation


def test_a_better_model_takes_the_champion_alias_from_a_weaker_one(text_config, trained):
    from mlflow.tracking import MlflowClient

    weak, report = trained
    assert str(weak.registered) == "1" and weak.champion and "first version" in weak.outcome
    assert weak.metrics["macro_f1"] < report.metrics["macro_f1"] - 0.05
    assert str(report.registered) == "2" and report.champion, report.outcome
    assert "beats champion v1" in report.outcome
    _, version = load_text_champion(text_config)
    assert version == "2"
    client = MlflowClient()
    run = client.get_run(
        client.get_model_version(registry.model_name(text_config, "text", "intent"), "2").run_id
    )
    assert run.data.metrics["accuracy"] == pytest.approx(report.metrics["accuracy"])
    assert {"macro_f1", "majority_baseline", "train_seconds", "texts_per_second"} <= set(run.data.metrics)
    assert run.data.params["train_sha256"] == texts_digest([q.text for q in banking77.split()[0]])


def test_a_retrained_model_no_better_than_the_champion_is_registered_but_not_promoted(text_config, trained):
    _, champion = trained
    again = train_text_model(text_config, registry.configure(text_config))
    assert again.registered and again.registered != champion.registered
    assert not again.champion and f"champion v{champion.registered} kept" in again.outcome, again.outcome
    assert again.metrics["macro_f1"] == champion.metrics["macro_f1"]  # the same queries, the same model
    _, version = load_text_champion(text_config)
    assert version == str(champion.registered)


def test_the_registered_pyfunc_takes_a_text_column_and_returns_intent_confidence_and_sentiment(
    text_config, trained
):
    import mlflow

    registry.configure(text_config)
    pyfunc = mlflow.pyfunc.load_model(
        registry.champion_uri(registry.model_name(text_config, "text", "intent"))
    )
    out = pyfunc.predict(pd.DataFrame({"text": ["The ATM swallowed my card", GIBBERISH[0]]}))
    assert list(out.columns) == list(OUTPUT_COLUMNS)
    assert list(out["intent"]) == ["card_swallowed", "unrecognised"]


def test_no_champion_yet_is_an_input_error_naming_the_command_to_run(tmp_path: Path, mlflow_uris_kept: None):
    from pipelines.config import load_config

    empty = load_config("local", overrides={"paths.mlflow": str(tmp_path / "mlflow")})
    with pytest.raises(InputError, match=r"journeylake_text_intent@champion.*journeylake train --only text"):
        load_text_champion(empty)
