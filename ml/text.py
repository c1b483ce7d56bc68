"""What customers say: the intent of a text (BANKING77's 77 intents) with a confidence, and its sentiment.

**Intent.** TF-IDF over word 1-2-grams and character 2-5-grams within word boundaries (which
survive typos and agents' shorthand), then a linear SVM, one-vs-rest over the 77 intents. The
SVM's decision scores become a confidence by a softmax whose temperature is fitted on
out-of-fold scores of the training queries (``ml.text.calibration_folds``): the same accuracy as
the SVM, probabilities that mean what they say. ``bench/bench_text.py`` measured it against a raw
softmax, scikit-learn's CalibratedClassifierCV (sigmoid and temperature), logistic regression and
SGD on the held-out queries (accuracy, macro-F1, train time, log-loss, calibration error): the
figures are in bench/README.md. It trains in seconds on one core and needs no model hub.

A text whose top intent's confidence is below ``ml.text.min_confidence`` is labelled
``ml.text.unrecognised_label`` ("unrecognised"): kept and labelled, never dropped. Training uses
:func:`pipelines.sources.banking77.split`'s first part only; its held-out part (a fixed 20% of
each intent, which the simulator never uses either) is where accuracy and macro-F1 are measured,
next to a majority-class baseline (:func:`evaluate`).

**Sentiment.** VADER's compound score (Hutto and Gilbert 2014; the ``vaderSentiment`` package
ships its lexicon, MIT), in [-1, 1]: a lexicon with rules for negation, intensifiers,
capitals and punctuation, so "this is RIDICULOUS!!!" scores far below "how do I order a card".
It measures the tone of the words, not the customer's situation. How it was validated
(:func:`sentiment_by_polarity`, logged with every training and pinned by tests/ml/test_text.py):
BANKING77 has no sentiment labels, so its intents were split by their names' meaning into
problems (a card swallowed, compromised, declined; a failed transfer, a charge twice, ...:
:data:`PROBLEM_INTENTS`) and how-to questions (:data:`HOW_TO_INTENTS`). On the held-out queries
the problem reports score lower on average and far more often negative (about 27% against 5%),
but the separation is weak (AUC about 0.62): most problem reports are written in neutral words
("my card was declined"). So sentiment adds the customer's tone to the intent; it does not
replace it, and a threshold on it alone would miss most problems.

**Persistence.** :meth:`TextModel.save` writes JSON (the vectorizers' settings and terms, the
intents, the temperature) and an ``.npz`` of plain float arrays (idf weights, coefficients),
read back with ``allow_pickle=False``: loading a model never unpickles anything (ml/registry.py's
rule). skops would persist scikit-learn's own objects, but only against a list of trusted types
that has to follow scikit-learn's internals from release to release; the fitted state of this
model is a vocabulary and a few arrays, which plain files hold exactly.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer

from ml.settings import TextModelConfig
from pipelines.errors import InputError
from pipelines.sources import banking77

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from ml.train import ModelReport
    from pipelines.config import Config

FAMILY, TARGET = "text", "intent"
FORMAT_VERSION = 1
META_FILE = "text_model.json"
ARRAYS_FILE = "text_model.npz"
OUTPUT_COLUMNS = ("intent", "intent_confidence", "sentiment")
CHAMPION_METRIC = "macro_f1"  # every intent counts the same: a rare one may trigger a service action
NEGATIVE_COMPOUND = -0.05  # VADER's own cut: below it a text reads negative, above +0.05 positive

# The sentiment check's two groups of intents, chosen by what the intent's name says happened:
# something went wrong for the customer, or they ask how something works. Intents whose tone is
# not clear from the name (pending payments, fees asked about, closing an account) are in neither.
PROBLEM_INTENTS: frozenset[str] = frozenset(
    {
        "balance_not_updated_after_bank_transfer",
        "balance_not_updated_after_cheque_or_cash_deposit",
        "card_not_working",
        "card_payment_not_recognised",
        "card_payment_wrong_exchange_rate",
        "card_swallowed",
        "cash_withdrawal_not_recognised",
        "compromised_card",
        "contactless_not_working",
        "declined_card_payment",
        "declined_cash_withdrawal",
        "declined_transfer",
        "direct_debit_payment_not_recognised",
        "extra_charge_on_statement",
        "failed_transfer",
        "lost_or_stolen_card",
        "lost_or_stolen_phone",
        "pin_blocked",
        "Refund_not_showing_up",
        "reverted_card_payment?",
        "top_up_failed",
        "top_up_reverted",
        "transaction_charged_twice",
        "transfer_not_received_by_recipient",
        "unable_to_verify_identity",
        "virtual_card_not_working",
        "wrong_amount_of_cash_received",
        "wrong_exchange_rate_for_cash_withdrawal",
    }
)
HOW_TO_INTENTS: frozenset[str] = frozenset(
    {
        "activate_my_card",
        "age_limit",
        "apple_pay_or_google_pay",
        "atm_support",
        "automatic_top_up",
        "card_about_to_expire",
        "card_acceptance",
        "card_delivery_estimate",
        "card_linking",
        "change_pin",
        "country_support",
        "disposable_card_limits",
        "edit_personal_details",
        "exchange_rate",
        "exchange_via_app",
        "fiat_currency_support",
        "get_disposable_virtual_card",
        "get_physical_card",
        "getting_spare_card",
        "getting_virtual_card",
        "order_physical_card",
        "receiving_money",
        "supported_cards_and_currencies",
        "top_up_by_cash_or_cheque",
        "top_up_limits",
        "topping_up_by_card",
        "transfer_into_account",
        "verify_my_identity",
        "verify_source_of_funds",
        "verify_top_up",
        "visa_or_mastercard",
        "why_verify_identity",
    }
)


# ----------------------------------------------------------------------------- the model


def _vectorizer(params: dict[str, Any], terms: Sequence[str] | None = None) -> TfidfVectorizer:
    """A TF-IDF vectorizer from its saved ``params`` (and, when loading, its fitted ``terms``)."""
    return TfidfVectorizer(
        analyzer=params["analyzer"],
        ngram_range=tuple(params["ngram_range"]),
        min_df=params["min_df"],
        lowercase=params["lowercase"],
        sublinear_tf=params["sublinear_tf"],
        norm=params["norm"],
        dtype=np.float32,
        vocabulary=None if terms is None else {term: i for i, term in enumerate(terms)},
    )


def _vectorizer_params(analyzer: str, ngrams: tuple[int, int], min_df: int) -> dict[str, Any]:
    return {
        "analyzer": analyzer,
        "ngram_range": list(ngrams),
        "min_df": min_df,
        "lowercase": True,
        "sublinear_tf": True,
        "norm": "l2",
    }


def _terms(vectorizer: TfidfVectorizer) -> list[str]:
    """The fitted vocabulary as a list, the term of column i at position i."""
    terms = [""] * len(vectorizer.vocabulary_)
    for term, column in vectorizer.vocabulary_.items():
        terms[column] = term
    return terms


@cache
def _sentiment_analyzer() -> Any:
    """VADER, once per process (it reads its ~7,500-word lexicon from the package)."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def _clean(texts: Iterable[Any]) -> list[str]:
    """Texts as strings; a missing value (None, NaN) is the empty text."""
    return ["" if t is None or (isinstance(t, float) and math.isnan(t)) else str(t) for t in texts]


def sentiment(texts: Iterable[Any]) -> np.ndarray:
    """VADER's compound score of each text, in [-1, 1] (0.0 for an empty text)."""
    analyzer = _sentiment_analyzer()
    return np.array(
        [analyzer.polarity_scores(t)["compound"] if t.strip() else 0.0 for t in _clean(texts)],
        dtype=np.float64,
    )


class TextModel:
    """The fitted intent classifier with its confidence, plus sentiment; see the module docstring.

    ``min_confidence`` and ``unrecognised_label`` are saved with the model (its MLflow pyfunc
    uses them) and replaced by the configured ones with :meth:`configured`, which
    :func:`load_text_champion` applies: changing them needs no retraining.
    """

    def __init__(
        self,
        intents: Sequence[str],
        vectorizers: dict[str, TfidfVectorizer],
        vectorizer_params: dict[str, dict[str, Any]],
        coefs: dict[str, np.ndarray],
        intercept: np.ndarray,
        temperature: float,
        min_confidence: float,
        unrecognised_label: str,
        info: dict[str, Any] | None = None,
    ) -> None:
        self.intents = tuple(intents)
        self.vectorizers = vectorizers  # "word", "char": fitted TfidfVectorizers
        self.vectorizer_params = vectorizer_params
        self.coefs = coefs  # per vectorizer: (its features, intents), float32
        self.intercept = intercept  # (intents,), float32
        self.temperature = float(temperature)
        self.min_confidence = float(min_confidence)
        self.unrecognised_label = unrecognised_label
        self.info = info or {}
        self._labels = np.array(self.intents, dtype=object)

    def configured(self, settings: TextModelConfig) -> TextModel:
        """The same fitted model with ``settings``' min_confidence and unrecognised label."""
        return TextModel(
            self.intents,
            self.vectorizers,
            self.vectorizer_params,
            self.coefs,
            self.intercept,
            self.temperature,
            settings.min_confidence,
            settings.unrecognised_label,
            self.info,
        )

    @property
    def features(self) -> int:
        return sum(len(v.vocabulary_) for v in self.vectorizers.values())

    def decision_scores(self, texts: Sequence[str]) -> np.ndarray:
        """The SVM's score of every intent for every text, (texts, intents)."""
        scores = np.tile(self.intercept, (len(texts), 1))
        for name, vectorizer in self.vectorizers.items():
            scores += vectorizer.transform(texts) @ self.coefs[name]
        return scores

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """The confidence of every intent for every text, (texts, intents), rows summing to 1."""
        logits = self.decision_scores(texts).astype(np.float64) / self.temperature
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        return weights / weights.sum(axis=1, keepdims=True)

    def top_intents(self, texts: Iterable[Any]) -> tuple[np.ndarray, np.ndarray]:
        """(top intent, its confidence) of each text, whatever the confidence."""
        probabilities = self.probabilities(_clean(texts))
        best = probabilities.argmax(axis=1)
        return self._labels[best], probabilities[np.arange(len(best)), best]

    def predict(self, texts: Iterable[Any]) -> pd.DataFrame:
        """``intent``, ``intent_confidence`` (0..1) and ``sentiment`` (-1..1), one row per text.

        The intent is ``unrecognised_label`` when its confidence is below ``min_confidence``;
        an empty or missing text is unrecognised with confidence 0 and sentiment 0.
        """
        cleaned = _clean(texts)
        intents, confidence = self.top_intents(cleaned)
        blank = np.array([not t.strip() for t in cleaned], dtype=bool)
        confidence = np.where(blank, 0.0, confidence)
        recognised = (confidence >= self.min_confidence) & ~blank
        return pd.DataFrame(
            {
                "intent": np.where(recognised, intents, self.unrecognised_label).astype(object),
                "intent_confidence": confidence.astype(np.float64),
                "sentiment": sentiment(cleaned),
            }
        )

    # ------------------------------------------------------------------ files, no pickle

    def save(self, path: Path) -> None:
        """Write the model into folder ``path``: text_model.json and text_model.npz (no pickle)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": FORMAT_VERSION,
            "intents": list(self.intents),
            "temperature": self.temperature,
            "min_confidence": self.min_confidence,
            "unrecognised_label": self.unrecognised_label,
            "vectorizers": {
                name: {"params": self.vectorizer_params[name], "terms": _terms(vectorizer)}
                for name, vectorizer in self.vectorizers.items()
            },
            "info": self.info,
        }
        (path / META_FILE).write_text(json.dumps(meta, allow_nan=False) + "\n", encoding="utf-8")
        arrays: dict[str, Any] = {"intercept": self.intercept}
        for name, vectorizer in self.vectorizers.items():
            arrays[f"{name}_idf"] = np.asarray(vectorizer.idf_, dtype=np.float64)
            arrays[f"{name}_coef"] = self.coefs[name]
        with (path / ARRAYS_FILE).open("wb") as handle:
            np.savez_compressed(handle, **arrays)

    @classmethod
    def load(cls, path: Path) -> TextModel:
        """Read a model that ``save`` wrote into folder ``path``."""
        path = Path(path)
        for name in (META_FILE, ARRAYS_FILE):
            if not (path / name).is_file():
                raise InputError(f"{path / name} not found: not a saved text model folder")
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
        if meta.get("format_version") != FORMAT_VERSION:
            raise InputError(
                f"{path / META_FILE} has format_version {meta.get('format_version')!r}; "
                f"this code reads version {FORMAT_VERSION}"
            )
        with np.load(path / ARRAYS_FILE, allow_pickle=False) as arrays:
            stored = {key: arrays[key] for key in arrays.files}
        vectorizers, params, coefs = {}, {}, {}
        for name, saved in meta["vectorizers"].items():
            vectorizer = _vectorizer(saved["params"], saved["terms"])
            vectorizer.idf_ = stored[f"{name}_idf"]
            vectorizers[name], params[name], coefs[name] = vectorizer, saved["params"], stored[f"{name}_coef"]
        return cls(
            meta["intents"],
            vectorizers,
            params,
            coefs,
            stored["intercept"],
            meta["temperature"],
            meta["min_confidence"],
            meta["unrecognised_label"],
            meta["info"],
        )


# ----------------------------------------------------------------------------- fitting


def fit_temperature(scores: np.ndarray, truth: np.ndarray) -> float:
    """The temperature T minimising the log-loss of softmax(scores / T) at the true classes
    (``truth``: column indexes), searched on a log scale."""
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    rows = np.arange(len(truth))

    def loss(log_t: float) -> float:
        return float(-log_softmax(scores / math.exp(log_t), axis=1)[rows, truth].mean())

    return float(math.exp(minimize_scalar(loss, bounds=(-7.0, 3.0), method="bounded").x))


def fit_text_model(
    texts: Sequence[str], intents: Sequence[str], settings: TextModelConfig, seed: int = 0
) -> TextModel:
    """Fit the vectorizers, the SVM and the confidence's temperature on ``texts``."""
    import scipy.sparse as sp
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.svm import LinearSVC

    texts, labels = _clean(texts), np.asarray(intents, dtype=object)
    params = {
        "word": _vectorizer_params("word", settings.word_ngrams, settings.min_df),
        "char": _vectorizer_params("char_wb", settings.char_ngrams, settings.min_df),
    }
    vectorizers = {name: _vectorizer(p) for name, p in params.items()}
    blocks = [vectorizer.fit_transform(texts) for vectorizer in vectorizers.values()]
    features = sp.hstack(blocks).tocsr()
    svm = LinearSVC(C=settings.svm_c, random_state=seed).fit(features, labels)
    folds = StratifiedKFold(settings.calibration_folds, shuffle=True, random_state=seed)
    out_of_fold = cross_val_predict(
        LinearSVC(C=settings.svm_c, random_state=seed), features, labels, cv=folds, method="decision_function"
    )
    classes = [str(c) for c in svm.classes_]
    temperature = fit_temperature(out_of_fold, np.searchsorted(svm.classes_, labels))
    coef = np.ascontiguousarray(svm.coef_.T, dtype=np.float32)  # (features, intents)
    split_at = blocks[0].shape[1]
    coefs = {"word": coef[:split_at].copy(), "char": coef[split_at:].copy()}
    info = {
        "trained_on_queries": len(texts),
        "trained_on_sha256": texts_digest(texts),
        "features": int(features.shape[1]),
    }
    return TextModel(
        classes,
        vectorizers,
        params,
        coefs,
        svm.intercept_.astype(np.float32),
        temperature,
        settings.min_confidence,
        settings.unrecognised_label,
        info,
    )


def texts_digest(texts: Iterable[str]) -> str:
    """SHA-256 of the sorted texts: which queries a model learnt from, whatever their order."""
    digest = hashlib.sha256()
    for text in sorted(texts):
        digest.update(text.encode("utf-8") + b"\x00")
    return digest.hexdigest()


# ----------------------------------------------------------------------------- measuring


def majority_baseline(training: Sequence[banking77.Query], held_out: Sequence[banking77.Query]) -> float:
    """Accuracy on ``held_out`` of always answering the most frequent training intent."""
    most = Counter(q.intent for q in training).most_common(1)[0][0]
    return sum(q.intent == most for q in held_out) / len(held_out)


def evaluate(model: TextModel, held_out: Sequence[banking77.Query]) -> dict[str, float]:
    """Accuracy and macro-F1 of the top intent on ``held_out``, and what the confidence floor does:
    the share of queries recognised (confidence >= min_confidence) and the accuracy among them."""
    from sklearn.metrics import accuracy_score, f1_score

    truth = np.array([q.intent for q in held_out], dtype=object)
    predicted, confidence = model.top_intents([q.text for q in held_out])
    recognised = confidence >= model.min_confidence
    return {
        "accuracy": float(accuracy_score(truth, predicted)),
        "macro_f1": float(f1_score(truth, predicted, average="macro")),
        "recognised_share": float(recognised.mean()),
        "accuracy_recognised": float((predicted[recognised] == truth[recognised]).mean())
        if recognised.any()
        else float("nan"),
    }


def texts_per_second(model: TextModel, texts: Sequence[str], repeats: int = 3) -> float:
    """Texts scored (intent, confidence and sentiment) per second of this process's CPU time,
    the best of ``repeats`` passes: the rate of one core, as a Spark task on one core runs it."""
    model.predict(texts[:10])  # VADER's lexicon is read once per process: not part of the rate
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        model.predict(texts)
        best = min(best, time.process_time() - started)
    return len(texts) / max(best, 1e-9)


def sentiment_by_polarity(queries: Sequence[banking77.Query]) -> dict[str, float]:
    """Sentiment of the problem-report intents against the how-to intents (see the module
    docstring): mean score and share scored negative in each group, and the AUC of "how-to scores
    higher than problem" (0.5: no separation)."""
    from sklearn.metrics import roc_auc_score

    problem = sentiment([q.text for q in queries if q.intent in PROBLEM_INTENTS])
    how_to = sentiment([q.text for q in queries if q.intent in HOW_TO_INTENTS])
    labels = np.r_[np.zeros(len(problem)), np.ones(len(how_to))]
    return {
        "sentiment_problem_mean": float(problem.mean()),
        "sentiment_how_to_mean": float(how_to.mean()),
        "sentiment_problem_negative_share": float((problem < NEGATIVE_COMPOUND).mean()),
        "sentiment_how_to_negative_share": float((how_to < NEGATIVE_COMPOUND).mean()),
        "sentiment_auc": float(roc_auc_score(labels, np.r_[problem, how_to])),
    }


# ----------------------------------------------------------------------------- MLflow


def train_text_model(cfg: Config, client: MlflowClient) -> ModelReport:
    """Train on BANKING77 minus its held-out part, measure on the held-out part, log the run and
    register ``<prefix>_text_intent``: ``@champion`` only when its macro-F1 beats the champion's,
    re-scored on the same held-out queries."""
    import tempfile

    import mlflow

    from ml import registry
    from ml.train import ModelReport

    started = time.perf_counter()
    settings = cfg.ml.text
    training, held_out = banking77.split()
    report = ModelReport(FAMILY, TARGET, rows=len(training))
    model = fit_text_model(
        [q.text for q in training], [q.intent for q in training], settings, seed=cfg.ml.training.seed
    )
    train_seconds = time.perf_counter() - started
    texts = [q.text for q in held_out]
    report.metrics = {
        **evaluate(model, held_out),
        "majority_baseline": majority_baseline(training, held_out),
        "train_seconds": train_seconds,
        "texts_per_second": texts_per_second(model, texts),
        "held_out_queries": float(len(held_out)),
        **sentiment_by_polarity(held_out),
    }
    name = registry.model_name(cfg, FAMILY, TARGET)

    registry.experiment(cfg, FAMILY)
    with mlflow.start_run(run_name=f"{FAMILY}_{TARGET}"):
        mlflow.set_tags(
            {
                "target": TARGET,
                "data": "BANKING77 training split (CC BY 4.0), pipelines/sources/banking77",
                "holdout": f"{banking77.HELD_OUT_SHARE:.0%} of each intent by keyed hash (banking77.split)",
            }
        )
        mlflow.log_params(
            {
                **{f"text_{k}": v for k, v in settings.model_dump().items()},
                "seed": cfg.ml.training.seed,
                "classifier": "TF-IDF word + char_wb n-grams, LinearSVC, softmax with fitted temperature",
                "temperature": round(model.temperature, 6),
                "features": model.features,
                "intents": len(model.intents),
                "train_queries": len(training),
                "train_sha256": model.info["trained_on_sha256"],
                "sentiment": "VADER compound (vaderSentiment)",
            }
        )
        mlflow.log_metrics(report.metrics)
        with tempfile.TemporaryDirectory() as tmp:
            per_intent = Path(tmp) / "per_intent.csv"
            _per_intent_report(model, held_out).to_csv(per_intent, index=False)
            mlflow.log_artifact(str(per_intent))
        uri = registry.log_model(model, FAMILY, pd.DataFrame({"text": texts}))

        def champion_score(_uri: str) -> float:
            try:
                champion, _ = registry.load_champion(FAMILY, name)
            except InputError:  # a format this code no longer reads: the new model replaces it
                return float("-inf")
            return evaluate(champion, held_out)[CHAMPION_METRIC]

        outcome = registry.register(
            client, name, uri, report.metrics[CHAMPION_METRIC], champion_score, CHAMPION_METRIC
        )
        mlflow.set_tag("registry", outcome.reason)
    report.registered, report.champion, report.outcome = outcome.version, outcome.champion, outcome.reason
    report.seconds = time.perf_counter() - started
    return report


def _per_intent_report(model: TextModel, held_out: Sequence[banking77.Query]) -> pd.DataFrame:
    """Precision, recall, F1 and support of every intent on the held-out queries."""
    from sklearn.metrics import precision_recall_fscore_support

    truth = [q.intent for q in held_out]
    predicted, _ = model.top_intents([q.text for q in held_out])
    labels = list(model.intents)
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=labels, zero_division=0
    )
    frame = pd.DataFrame(
        {"intent": labels, "precision": precision, "recall": recall, "f1": f1, "support": support}
    )
    return frame.sort_values("f1").reset_index(drop=True)


def load_text_champion(cfg: Config) -> tuple[TextModel, str]:
    """The ``@champion`` text model (with ``cfg.ml.text``'s confidence floor and label) and its
    version; an InputError naming what to run when there is none yet."""
    from mlflow.exceptions import MlflowException

    from ml import registry

    registry.configure(cfg)
    name = registry.model_name(cfg, FAMILY, TARGET)
    try:
        model, version = registry.load_champion(FAMILY, name)
    except MlflowException:
        raise InputError(
            f"no champion text model in the registry at {registry.tracking_uri(cfg)} (looked for "
            f"{name}@{registry.CHAMPION}): run `journeylake train --only text` first"
        ) from None
    return model.configured(cfg.ml.text), version
