"""Intent and sentiment of what customers say, computed in silver's stream before the text is redacted.

The raw words (a contact-centre note, an app-chat message) stay in bronze; silver keeps what the
champion text model (``ml/text.py``) reads in them, scored inside the micro-batch that redacts
them: ``intent`` (one of BANKING77's 77, or ``ml.text.unrecognised_label`` when the model is not
confident: kept and labelled, never dropped), ``intent_confidence``, ``sentiment`` (-1..1) and
``intent_model_version``, the registered version that scored the row.

The model is resolved from the registry's ``@champion`` alias when a stream starts and re-checked
every ``REFRESH_S``: a new champion is picked up by a running ingest within minutes. Its files
are written once per version under ``<paths.mlflow>/served/`` in the model's own format (JSON and
plain arrays, no pickle), and each Python worker loads them once (a cache per process): the
tasks ship a folder name, not a model.

With no champion registered, rows are written with the four columns null (``intent_model_version``
null says why) and ingest says so when it starts: run ``journeylake train --only text``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from pipelines.config import Config
from pipelines.tables import Tables

if TYPE_CHECKING:
    from ml.text import TextModel

# the sources that carry what customers said, and the SQL that reads their words from a record
# (the app chat's bot replies are not the customer's)
SPOKEN: dict[str, str] = {
    "contact_centre": "note",
    "app_chat": "CASE WHEN direction = 'customer' THEN message END",
}
SCORED_DDL = "intent STRING, intent_confidence DOUBLE, sentiment DOUBLE, intent_model_version STRING"
SCORED_COLUMNS: tuple[str, ...] = ("intent", "intent_confidence", "sentiment", "intent_model_version")
REFRESH_S = 300.0  # how often a running stream asks the registry whether the champion changed


@dataclass(frozen=True)
class Scorer:
    """The champion text model as the stream uses it: its files' folder and registered version;
    ``folder`` None when no champion is registered (``reason`` says so)."""

    folder: str | None
    version: str | None
    reason: str = ""
    min_confidence: float = 0.0  # ml.text's, applied by the workers' copy of the model
    unrecognised_label: str = ""

    def describe(self, cfg: Config) -> str:
        from ml.registry import model_name
        from ml.text import FAMILY, TARGET

        name = model_name(cfg, FAMILY, TARGET)
        if self.folder is None:
            return f"intent model: none ({self.reason}); intent and sentiment stay empty"
        return f"intent model: {name} v{self.version}"


NO_MODEL = Scorer(None, None, "not a source of what customers say")
_lock = threading.Lock()
_resolved: dict[str, tuple[float, Scorer]] = {}  # tracking URI -> (checked at, scorer)


def current_scorer(cfg: Config, now: float | None = None) -> Scorer:
    """The champion to score with (resolved at most every REFRESH_S per registry)."""
    from ml import registry

    uri = registry.tracking_uri(cfg)
    now = time.monotonic() if now is None else now
    with _lock:
        cached = _resolved.get(uri)
        if cached and now - cached[0] < REFRESH_S:
            return cached[1]
        scorer = _resolve(cfg, cached[1] if cached else None)
        _resolved[uri] = (now, scorer)
        return scorer


def forget_scorers() -> None:
    """Resolve again at the next batch (after a training in the same process, for one)."""
    with _lock:
        _resolved.clear()


def _resolve(cfg: Config, previous: Scorer | None) -> Scorer:
    """The champion of ``cfg``'s registry. MLflow's process-wide URIs are put back after: a
    process may hold several homes' registries (tests do), and ingest must not move theirs."""
    import mlflow

    kept = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    try:
        return _resolve_in(cfg, previous)
    finally:
        mlflow.set_tracking_uri(kept[0])
        mlflow.set_registry_uri(kept[1])


def _resolve_in(cfg: Config, previous: Scorer | None) -> Scorer:
    from ml import registry
    from ml.text import FAMILY, TARGET, load_text_champion
    from pipelines.errors import InputError

    client = registry.configure(cfg)
    name = registry.model_name(cfg, FAMILY, TARGET)
    version = registry.current_champion(client, name)
    if version is None:
        return Scorer(
            None, None, f"no {name}@{registry.CHAMPION} in the registry: run `journeylake train --only text`"
        )
    if previous is not None and previous.version == str(version.version) and previous.folder:
        return previous  # (a changed ml.text floor takes effect at the next start)
    folder = Path(cfg.paths.mlflow) / "served" / f"{name}-v{version.version}"
    if not (folder / "ready").exists():
        try:
            model, number = load_text_champion(cfg)
        except InputError as exc:
            return Scorer(None, None, str(exc))
        folder = Path(cfg.paths.mlflow) / "served" / f"{name}-v{number}"
        model.save(folder)
        (folder / "ready").write_text(number)
    settings = cfg.ml.text
    return Scorer(str(folder), str(version.version), "", settings.min_confidence, settings.unrecognised_label)


# ------------------------------------------------------------------------------------ workers

_models: dict[str, TextModel] = {}  # folder -> model, per Python worker process
_models_lock = threading.Lock()


def _model(folder: str, cfg_min_confidence: float, label: str) -> TextModel:
    with _models_lock:
        model = _models.get(folder)
        if model is None:
            from ml.settings import TextModelConfig
            from ml.text import TextModel

            loaded = TextModel.load(Path(folder))
            settings = TextModelConfig(min_confidence=cfg_min_confidence, unrecognised_label=label)
            model = _models[folder] = loaded.configured(settings)
        return model


def scored(text: Column, scorer: Scorer) -> Column:
    """A struct column of the four SCORED_COLUMNS for ``text`` (null when the text is null, and
    when there is no model)."""
    if scorer.folder is None:
        return F.struct(*[F.lit(None).cast(t).alias(n) for n, t in _types().items()])
    folder, version = scorer.folder, scorer.version
    floor, label = scorer.min_confidence, scorer.unrecognised_label

    @F.pandas_udf(SCORED_DDL)  # type: ignore[call-overload]
    def score(texts: pd.Series) -> pd.DataFrame:
        present = texts.notna()
        out = pd.DataFrame(
            {
                "intent": pd.Series([None] * len(texts), dtype=object),
                "intent_confidence": pd.Series([float("nan")] * len(texts), dtype="float64"),
                "sentiment": pd.Series([float("nan")] * len(texts), dtype="float64"),
                "intent_model_version": pd.Series([None] * len(texts), dtype=object),
            },
            index=texts.index,
        )
        if present.any():
            result = _model(folder, floor, label).predict(texts[present].tolist())
            result.index = texts.index[present]
            out.loc[present, ["intent", "intent_confidence", "sentiment"]] = result
            out.loc[present, "intent_model_version"] = version
        return out

    return score(text)


def spoken_text(source: str) -> Column:
    """The customer's words in a record of ``source`` (one of SPOKEN)."""
    return F.expr(SPOKEN[source])


def with_scores(df: DataFrame, text: Column, scorer: Scorer) -> DataFrame:
    """``df`` with the SCORED_COLUMNS read from ``text`` (before it is redacted)."""
    struct = scored(text, scorer)
    return (
        df.withColumn("_scored", struct)
        .select("*", *[F.col(f"_scored.{c}").alias(c) for c in SCORED_COLUMNS])
        .drop("_scored")
    )


def _types() -> dict[str, str]:
    pairs = (part.strip().split(" ", 1) for part in SCORED_DDL.split(","))
    return {name: kind for name, kind in pairs}


# ------------------------------------------------------------------------------------ the truth


@dataclass(frozen=True)
class TruthAgreement:
    """How silver's intents compare with what the simulator's customers meant (its truth)."""

    utterances: int  # customer messages and notes that state an intent
    recognised: int  # of those, labelled with an intent (not unrecognised, not null)
    correct: int  # of those, the true intent
    sentiment_correlation: float  # Pearson's r of the read and the true sentiment

    def line(self) -> str:
        share = self.recognised / self.utterances if self.utterances else 0.0
        accuracy = self.correct / self.recognised if self.recognised else 0.0
        return (
            f"intents in silver vs the simulator's truth: {self.utterances:,} notes and chat messages, "
            f"{share:.1%} recognised, {accuracy:.1%} of those right; sentiment r = "
            f"{self.sentiment_correlation:.2f}"
        )


def agreement_with_truth(
    spark: SparkSession, cfg: Config, tables: Tables, truth_dir: Path
) -> TruthAgreement | None:
    """Silver's intent and sentiment next to ``truth/utterances.parquet`` (None without it)."""
    import numpy as np

    path = truth_dir / "utterances.parquet"
    if not path.exists():
        return None
    truth = pd.read_parquet(path, columns=["event_id", "true_intent", "true_sentiment", "states_intent"])
    read = pd.concat(
        [
            spark.table(tables.silver(source)).select("event_id", "intent", "sentiment").toPandas()
            for source in SPOKEN
            if spark.catalog.tableExists(tables.silver(source))
        ]
    )
    both = truth[truth["states_intent"]].merge(read, on="event_id")
    recognised = both["intent"].notna() & (both["intent"] != cfg.ml.text.unrecognised_label)
    labelled = both[both["intent"].notna()]
    r = (
        float(np.corrcoef(labelled["sentiment"], labelled["true_sentiment"])[0, 1])
        if len(labelled) > 2
        else float("nan")
    )
    return TruthAgreement(
        utterances=len(both),
        recognised=int(recognised.sum()),
        correct=int((recognised & (both["intent"] == both["true_intent"])).sum()),
        sentiment_correlation=r,
    )
