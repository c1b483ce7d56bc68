"""Customer segments for marketing: HDBSCAN finds them, a LightGBM surrogate scores and explains them.

Why this shape:

- **HDBSCAN** (``sklearn.cluster.HDBSCAN``) does not need the number of segments up front and can
  say "this customer fits no segment" (noise), which k-means cannot. It is roughly O(n^2), so on a
  big bank it runs on a random subsample of ``max_fit_rows`` customers.
- HDBSCAN has no ``predict`` for new customers, so a small **LightGBM surrogate** is trained on its
  labels, on the original (imputed) features. The surrogate is the scoring model: it labels the
  rows left out of the subsample and every new customer, and its TreeSHAP values say what defines
  each segment. Its holdout accuracy (``surrogate_accuracy``) says how faithful it is to HDBSCAN.
- Segment names are made from the surrogate's explanation in the bank's own words (the feature
  ``descriptions``), so marketing reads "High savings balance · low app sessions", not "cluster 3".
- Saved models are a LightGBM text file and a JSON file, never a pickle: they can be read, diffed
  and loaded by a different Python version without running code.

Nothing here needs Spark or MLflow; the training job and registry wrap these functions.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.cluster import HDBSCAN
from sklearn.decomposition import PCA
from sklearn.metrics import accuracy_score, adjusted_rand_score, normalized_mutual_info_score
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler

from ml.settings import SegmentationModelConfig

SETTING = "ml.segmentation"  # where these settings live in conf/base.yml, for error messages
UNSEGMENTED = -1
UNSEGMENTED_NAME = "unsegmented"
MODEL_JSON = "segmentation.json"
SURROGATE_TXT = "surrogate.txt"
FORMAT_VERSION = 1

_SURROGATE_ROUNDS = 100
_SURROGATE_LEAVES = 15
_THREADS = 2  # HDBSCAN's neighbour searches; the machines this runs on may have two cores
# LightGBM's OpenMP threads spin while they wait: on a busy two-core machine two threads trained the
# surrogate 30x slower than one, and a 100-tree model on <= max_fit_rows rows needs no more than one
_LGBM_THREADS = 1
_NAME_FEATURES = 2  # features in a segment's name
_PROFILE_FEATURES = 3  # features in its "defining_features" text
_SHAP_MEMBERS = 250  # members per segment whose SHAP values are averaged to explain it
_KNN_NEIGHBOURS = 5  # noise="nearest": votes among the nearest clustered customers


class SegmentationError(ValueError):
    """A problem the user can fix (data or settings); the message names the column or setting."""


@dataclass(frozen=True)
class _Run:
    """One fit's settings: the ``ml.segmentation`` section, the smallest segment for the customers
    given (``min_cluster_size_for``) and the money-like columns whose heavy tails would otherwise
    dominate distances (logged before scaling)."""

    settings: SegmentationModelConfig
    min_cluster_size: int
    log_features: tuple[str, ...]

    @classmethod
    def of(cls, settings: SegmentationModelConfig, customers: int, log_features: Sequence[str]) -> _Run:
        return cls(settings, settings.min_cluster_size_for(customers), tuple(log_features))

    def smallest_setting(self) -> str:
        """The setting that set the smallest segment, with its value, for an error message."""
        share, size = self.settings.min_cluster_share, self.settings.min_cluster_size
        if self.min_cluster_size > size:
            return f"{SETTING}.min_cluster_share (now {share:g}: {self.min_cluster_size} customers)"
        return f"{SETTING}.min_cluster_size (now {size})"


@dataclass
class SegmentationModel:
    """A fitted segmentation: the surrogate that scores customers, plus what marketing reads.

    ``profiles`` has one row per segment: ``segment_id``, ``name``, ``size``, ``share``,
    ``defining_features`` (text) and ``median_<feature>`` for every feature (NaN skipped).
    ``class_segment_ids[i]`` is the segment id of the surrogate's class ``i``. ``settings`` is the
    ``ml.segmentation`` section it was fitted with; ``min_cluster_size`` the smallest segment
    that meant for its customers and ``log_features`` the columns logged before scaling.
    """

    feature_names: list[str]
    segment_names: dict[int, str]
    profiles: pd.DataFrame
    surrogate: lgb.Booster
    class_segment_ids: list[int]
    medians: dict[str, float]
    surrogate_accuracy: float
    descriptions: dict[str, str] = field(default_factory=dict)
    settings: SegmentationModelConfig = field(default_factory=SegmentationModelConfig)
    min_cluster_size: int = 0
    log_features: tuple[str, ...] = ()

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Segment ids for customers (rows of ``X``): the surrogate's most likely class.

        Missing values are filled with the training medians, as in training, so a customer with
        a new NaN gets the same treatment the surrogate learnt from. Extra columns are ignored.
        """
        values = _imputed(_numeric(X, self.feature_names), self.medians)
        classes = _surrogate_classes(self.surrogate, values, len(self.class_segment_ids))
        return np.asarray(self.class_segment_ids, dtype=np.int64)[classes]

    def save(self, path: Path) -> None:
        """Write the model to the folder ``path``: the booster as LightGBM text, the rest as JSON.

        No pickle, on purpose: loading a pickle runs code, and pickles break across versions.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.surrogate.save_model(str(path / SURROGATE_TXT))
        profiles = self.profiles.astype(object).where(self.profiles.notna(), None)
        document = {
            "format_version": FORMAT_VERSION,
            "feature_names": self.feature_names,
            "segment_names": [[int(k), v] for k, v in sorted(self.segment_names.items())],
            "class_segment_ids": [int(s) for s in self.class_segment_ids],
            "medians": {k: _json_float(v) for k, v in self.medians.items()},
            "surrogate_accuracy": _json_float(self.surrogate_accuracy),
            "descriptions": self.descriptions,
            "settings": self.settings.model_dump(),
            "min_cluster_size": self.min_cluster_size,
            "log_features": list(self.log_features),
            "profiles": {
                "columns": [str(c) for c in profiles.columns],
                "data": [[_json_value(v) for v in row] for row in profiles.itertuples(index=False)],
            },
        }
        (path / MODEL_JSON).write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")

    @classmethod
    def load(cls, path: Path) -> SegmentationModel:
        """Read a model written by :meth:`save`."""
        path = Path(path)
        json_path, booster_path = path / MODEL_JSON, path / SURROGATE_TXT
        for needed in (json_path, booster_path):
            if not needed.is_file():
                raise SegmentationError(f"no segmentation model at {path}: {needed.name} is missing")
        document = json.loads(json_path.read_text())
        if document.get("format_version") != FORMAT_VERSION:
            raise SegmentationError(
                f"{json_path}: format_version {document.get('format_version')!r} is not "
                f"{FORMAT_VERSION}; retrain the segmentation"
            )
        profiles = pd.DataFrame(document["profiles"]["data"], columns=document["profiles"]["columns"])
        for column in profiles.columns:
            if column.startswith("median_") or column == "share":
                profiles[column] = profiles[column].astype(float)
        for column in ("segment_id", "size"):
            profiles[column] = profiles[column].astype(np.int64)
        settings = dict(document["settings"])
        # models saved before the settings were the config section kept these among the settings
        log_features = document.get("log_features", settings.pop("log_features", []))
        min_cluster_size = document.get("min_cluster_size", settings["min_cluster_size"])
        return cls(
            feature_names=list(document["feature_names"]),
            segment_names={int(k): v for k, v in document["segment_names"]},
            profiles=profiles,
            surrogate=lgb.Booster(model_file=str(booster_path)),
            class_segment_ids=[int(s) for s in document["class_segment_ids"]],
            medians={k: (math.nan if v is None else float(v)) for k, v in document["medians"].items()},
            surrogate_accuracy=(
                math.nan if document["surrogate_accuracy"] is None else document["surrogate_accuracy"]
            ),
            descriptions=dict(document["descriptions"]),
            settings=SegmentationModelConfig.model_validate(settings),
            min_cluster_size=int(min_cluster_size),
            log_features=tuple(log_features),
        )


def fit_segmentation(
    X: pd.DataFrame,
    descriptions: dict[str, str],
    settings: SegmentationModelConfig,
    seed: int = 0,
    log_features: Sequence[str] = (),
) -> tuple[SegmentationModel, np.ndarray]:
    """Find segments in ``X`` (one row per customer) and train the surrogate that scores them.

    Returns the model and one segment id per row of ``X``, after noise handling: HDBSCAN's labels
    for the rows it saw, and the surrogate's for the rest when ``X`` has more than
    ``settings.max_fit_rows`` rows. Segment ids are numbered by size, 0 the largest; -1 is
    "unsegmented" and appears only with ``noise="unsegmented"``. ``seed`` picks the subsample and
    seeds the surrogate; with no subsample HDBSCAN itself is deterministic.
    ``descriptions`` maps feature names to plain words; a feature without one is named as is.
    ``settings`` is the ``ml.segmentation`` section (``cfg.ml.segmentation``); the smallest segment
    is ``settings.min_cluster_size_for(len(X))``. ``log_features`` are money-like columns of ``X``
    whose heavy tails would otherwise dominate distances: they are sign-logged before scaling.
    """
    run = _Run.of(settings, len(X), log_features)
    values = _validated(X, run)
    feature_names = list(values.columns)
    medians = {name: float(values[name].median()) for name in feature_names}
    imputed = _imputed(values, medians)

    fit_rows = _fit_rows(len(imputed), settings.max_fit_rows, np.random.default_rng(seed))
    fit_values = imputed[fit_rows]
    fit_labels = _cluster(fit_values, feature_names, run)

    class_segment_ids = sorted(int(s) for s in np.unique(fit_labels))
    classes = np.searchsorted(class_segment_ids, fit_labels)
    surrogate, accuracy = _train_surrogate(fit_values, classes, len(class_segment_ids), run, seed)

    labels = fit_labels
    if len(fit_rows) < len(imputed):
        labels = np.empty(len(imputed), dtype=np.int64)
        rest = np.ones(len(imputed), dtype=bool)
        rest[fit_rows] = False
        labels[fit_rows] = fit_labels
        predicted = _surrogate_classes(surrogate, imputed[rest], len(class_segment_ids))
        labels[rest] = np.asarray(class_segment_ids)[predicted]

    defining = _defining_features(
        surrogate,
        fit_values,
        classes,
        class_segment_ids,
        feature_names,
        run.log_features,
        np.random.default_rng(seed),
    )
    names = _segment_names(defining, descriptions)
    if UNSEGMENTED in class_segment_ids:
        names = {UNSEGMENTED: UNSEGMENTED_NAME, **names}
    profiles = _profiles(values, labels, names, defining, descriptions)
    model = SegmentationModel(
        feature_names=feature_names,
        segment_names=names,
        profiles=profiles,
        surrogate=surrogate,
        class_segment_ids=class_segment_ids,
        medians=medians,
        surrogate_accuracy=accuracy,
        descriptions={name: descriptions.get(name, name) for name in feature_names},
        settings=settings,
        min_cluster_size=run.min_cluster_size,
        log_features=run.log_features,
    )
    return model, labels


def stability(X: pd.DataFrame, settings: SegmentationModelConfig, log_features: Sequence[str] = ()) -> float:
    """Mean pairwise adjusted Rand index of the segmentations of ``settings.seeds``' subsamples.

    HDBSCAN is deterministic on a given set of rows, so refitting the same data with another seed
    would always score 1.0 and say nothing. Instead each seed draws its own random 80% of the
    customers (at most ``max_fit_rows``) and clusters them; two fits are compared on the customers
    they share. Near 1: the segments are a property of the customers; low: an accident of which
    customers were sampled, and marketing should not build campaigns on them. With
    ``noise="unsegmented"`` the unsegmented customers count as one group of their own. The
    smallest segment and ``log_features`` are as in :func:`fit_segmentation` for the same ``X``.
    """
    if len(settings.seeds) < 2:
        raise SegmentationError(f"{SETTING}.seeds needs at least two seeds to compare, got {settings.seeds}")
    run = _Run.of(settings, len(X), log_features)
    values = _validated(X, run)
    feature_names = list(values.columns)
    imputed = _imputed(values, {name: float(values[name].median()) for name in feature_names})
    size = min(int(0.8 * len(imputed)), settings.max_fit_rows)
    if size < 2 * run.min_cluster_size:
        raise _too_few_rows(size, run, "an 80% subsample of X")
    fits = []
    for seed in settings.seeds:
        rows = np.sort(np.random.default_rng(seed).choice(len(imputed), size=size, replace=False))
        labels = np.full(len(imputed), UNSEGMENTED - 1, dtype=np.int64)  # -2: not in this subsample
        labels[rows] = _cluster(imputed[rows], feature_names, run)
        fits.append((rows, labels))
    scores = []
    for (rows_a, labels_a), (rows_b, labels_b) in combinations(fits, 2):
        shared = np.intersect1d(rows_a, rows_b, assume_unique=True)
        scores.append(adjusted_rand_score(labels_a[shared], labels_b[shared]))
    return float(np.mean(scores))


def agreement(labels: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """How well segments match known groups (e.g. the simulator's personas): ARI and NMI.

    Both ignore how segments are numbered; 1.0 is a perfect match, ~0 is chance. ARI punishes
    split or merged groups harder than NMI does, so the two together show which happened.
    """
    labels, truth = np.asarray(labels), np.asarray(truth)
    if labels.shape != truth.shape:
        raise ValueError(f"labels ({labels.shape}) and truth ({truth.shape}) must have the same shape")
    return {
        "ari": float(adjusted_rand_score(truth, labels)),
        "nmi": float(normalized_mutual_info_score(truth, labels)),
    }


# --- preparing the data -------------------------------------------------------------------------


def _validated(X: pd.DataFrame, run: _Run) -> pd.DataFrame:
    """``X`` as floats, or a SegmentationError naming the columns or setting at fault."""
    if X.shape[1] == 0:
        raise SegmentationError("X has no feature columns to segment on")
    if X.columns.duplicated().any():
        duplicated = sorted({str(c) for c in X.columns[X.columns.duplicated()]})
        raise SegmentationError(f"X has duplicated column(s): {', '.join(duplicated)}")
    values = _numeric(X, [str(c) for c in X.columns])
    if len(values) < 2 * run.min_cluster_size:
        raise _too_few_rows(len(values), run, "X")
    empty = [name for name in values.columns if values[name].isna().all()]
    if empty:
        raise SegmentationError(
            f"column(s) with no values (all NaN): {', '.join(empty)}; drop them or fix the feature job"
        )
    unknown = [name for name in run.log_features if name not in values.columns]
    if unknown:
        raise SegmentationError(f"log_features names column(s) not in X: {', '.join(unknown)}")
    return values


def _too_few_rows(rows: int, run: _Run, what: str) -> SegmentationError:
    return SegmentationError(
        f"{what} has {rows} rows; at least two segments of {run.min_cluster_size} customers need "
        f"{2 * run.min_cluster_size}: give more customers or lower {run.smallest_setting()}"
    )


def _numeric(X: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The named columns as float64 (booleans become 0/1); text columns are an error."""
    missing = [name for name in columns if name not in X.columns]
    if missing:
        raise SegmentationError(f"X is missing feature column(s): {', '.join(missing)}")
    frame = X[columns]
    not_numeric = [
        name
        for name in columns
        if not (pd.api.types.is_numeric_dtype(frame[name]) or pd.api.types.is_bool_dtype(frame[name]))
    ]
    if not_numeric:
        raise SegmentationError(
            f"column(s) are not numeric: {', '.join(not_numeric)}; encode or drop them before segmenting"
        )
    return frame.astype("float64")


def _imputed(values: pd.DataFrame, medians: dict[str, float]) -> np.ndarray:
    """NaN replaced with the training medians (a robust, explainable fill for skewed amounts)."""
    return values.fillna(medians).to_numpy(dtype=np.float64)


def _signed_log(values: np.ndarray) -> np.ndarray:
    """sign(x)·log1p(|x|): tames heavy tails, keeps zero at zero and overdrafts negative."""
    return np.sign(values) * np.log1p(np.abs(values))


def _fit_rows(rows: int, max_rows: int, rng: np.random.Generator) -> np.ndarray:
    """All row positions, or a sorted random sample of ``max_rows`` of them."""
    if rows <= max_rows:
        return np.arange(rows)
    return np.sort(rng.choice(rows, size=max_rows, replace=False))


def _space(values: np.ndarray, feature_names: list[str], run: _Run) -> np.ndarray:
    """The space distances are measured in: log money, standardised, optionally PCA-reduced."""
    values = values.copy()
    for name in run.log_features:
        column = feature_names.index(name)
        values[:, column] = _signed_log(values[:, column])
    scaled = StandardScaler().fit_transform(values)
    components = run.settings.pca_components
    if components is None:
        return scaled
    if isinstance(components, int):
        components = min(components, *scaled.shape)
    # "full" SVD: exact and deterministic, and cheap for the tens of features we have
    return PCA(n_components=components, svd_solver="full").fit_transform(scaled)


def _cluster(values: np.ndarray, feature_names: list[str], run: _Run) -> np.ndarray:
    """HDBSCAN segment ids (0 = largest) after noise handling, for imputed ``values``."""
    settings = run.settings
    space = _space(values, feature_names, run)
    raw = HDBSCAN(
        min_cluster_size=run.min_cluster_size,
        min_samples=settings.min_samples,
        n_jobs=_THREADS,
        copy=True,
    ).fit_predict(space)
    found = sorted(set(raw.tolist()) - {UNSEGMENTED})
    if len(found) < 2:
        what = "no segment (every customer is noise)" if not found else "only one segment"
        raise SegmentationError(
            f"HDBSCAN found {what} in {len(values)} customers; lower {run.smallest_setting()}"
            + (f" or {SETTING}.min_samples (now {settings.min_samples})" if settings.min_samples else "")
        )
    # number segments by size, largest first, so ids read the same way on every run
    sizes = {label: int((raw == label).sum()) for label in found}
    order = sorted(found, key=lambda label: (-sizes[label], label))
    labels = np.full(len(raw), UNSEGMENTED, dtype=np.int64)
    for new, old in enumerate(order):
        labels[raw == old] = new
    noise = labels == UNSEGMENTED
    if settings.noise == "nearest" and noise.any():
        # a vote among the nearest segmented customers follows the segments' shapes, which
        # centroids would not (HDBSCAN's segments need not be round)
        knn = KNeighborsClassifier(n_neighbors=min(_KNN_NEIGHBOURS, int((~noise).sum())), n_jobs=1)
        knn.fit(space[~noise], labels[~noise])
        labels[noise] = knn.predict(space[noise])
    return labels


# --- the surrogate --------------------------------------------------------------------------------


def _surrogate_params(classes: int, run: _Run, seed: int) -> dict[str, Any]:
    params: dict[str, Any] = {
        "num_leaves": _SURROGATE_LEAVES,
        "learning_rate": 0.1,
        # small segments still get leaves of their own
        "min_data_in_leaf": max(2, min(20, run.min_cluster_size // 2)),
        "num_threads": _LGBM_THREADS,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "verbose": -1,
    }
    if classes == 2:
        params["objective"] = "binary"
    else:
        params.update(objective="multiclass", num_class=classes)
    return params


def _train_surrogate(
    values: np.ndarray, classes: np.ndarray, n_classes: int, run: _Run, seed: int
) -> tuple[lgb.Booster, float]:
    """The scoring model, trained on all rows, and its accuracy when trained on 80% and checked on 20%."""
    params = _surrogate_params(n_classes, run, seed)
    counts = np.bincount(classes, minlength=n_classes)
    stratify = classes if counts.min() >= 2 else None  # a lone unsegmented customer cannot be split
    train_x, test_x, train_y, test_y = train_test_split(
        values, classes, test_size=0.2, random_state=seed, stratify=stratify
    )
    check = lgb.train(params, _dataset(train_x, train_y), num_boost_round=_SURROGATE_ROUNDS)
    accuracy = float(accuracy_score(test_y, _surrogate_classes(check, test_x, n_classes)))
    booster = lgb.train(params, _dataset(values, classes), num_boost_round=_SURROGATE_ROUNDS)
    return booster, accuracy


def _dataset(values: np.ndarray, classes: np.ndarray) -> lgb.Dataset:
    # positional feature names: real names may hold characters LightGBM rejects; ours live in the JSON
    names = [f"f{i}" for i in range(values.shape[1])]
    return lgb.Dataset(values, label=classes, feature_name=names, free_raw_data=True)


def _surrogate_classes(booster: lgb.Booster, values: np.ndarray, n_classes: int) -> np.ndarray:
    """Class index (0..n_classes-1) with the highest probability per row."""
    probabilities = booster.predict(values, num_threads=_LGBM_THREADS)
    if n_classes == 2:
        return (np.asarray(probabilities) > 0.5).astype(np.int64)
    return np.asarray(probabilities).argmax(axis=1).astype(np.int64)


# --- explaining and naming segments ---------------------------------------------------------------


@dataclass(frozen=True)
class _Defining:
    """A feature that defines a segment: its position, and whether members have it high or low."""

    feature: str
    direction: str  # "high" or "low"
    importance: float  # mean |SHAP| over the segment's members, for its class


def _defining_features(
    booster: lgb.Booster,
    values: np.ndarray,
    classes: np.ndarray,
    class_segment_ids: list[int],
    feature_names: list[str],
    log_features: tuple[str, ...],
    rng: np.random.Generator,
) -> dict[int, list[_Defining]]:
    """Per segment, its features by mean |TreeSHAP| over its members, for its own class.

    The means are taken over at most ``_SHAP_MEMBERS`` random members per segment: TreeSHAP of a
    multiclass model costs ~2 ms per customer (20,000 customers: 45 s), and a mean over a few
    hundred is as good for picking the top three features.

    The SHAP sign says whether a feature argues *for* the segment, not whether members have it
    high or low (a low balance can argue for a segment as strongly as a high one), so the
    direction comes from the members' mean standardised value against everyone's (all members).
    """
    n_features = values.shape[1]
    n_classes = len(class_segment_ids)
    explained = np.sort(
        np.concatenate(
            [
                rng.permutation(np.flatnonzero(classes == index))[:_SHAP_MEMBERS]
                for index, segment in enumerate(class_segment_ids)
                if segment != UNSEGMENTED
            ]
        )
    )
    contributions = np.asarray(
        booster.predict(values[explained], pred_contrib=True, num_threads=_LGBM_THREADS)
    )
    if n_classes == 2:
        # binary: one set of contributions, towards class 1; class 0's are their negation
        towards_one = contributions[:, :n_features]
        per_class = np.stack([-towards_one, towards_one], axis=1)
    else:
        per_class = contributions.reshape(len(explained), n_classes, n_features + 1)[:, :, :n_features]

    logged = values.copy()
    for name in log_features:
        logged[:, feature_names.index(name)] = _signed_log(logged[:, feature_names.index(name)])
    standardised = StandardScaler().fit_transform(logged)

    defining: dict[int, list[_Defining]] = {}
    for index, segment in enumerate(class_segment_ids):
        if segment == UNSEGMENTED:
            continue
        importance = np.abs(per_class[classes[explained] == index, index, :]).mean(axis=0)
        position = standardised[classes == index].mean(axis=0)
        ranked = sorted(range(n_features), key=lambda j: (-importance[j], j))
        defining[segment] = [
            _Defining(feature_names[j], "high" if position[j] >= 0 else "low", float(importance[j]))
            for j in ranked
            if importance[j] > 0
        ]
    return defining


def _phrase(item: _Defining, descriptions: dict[str, str]) -> str:
    return f"{item.direction} {descriptions.get(item.feature, item.feature)}"


def _segment_names(defining: dict[int, list[_Defining]], descriptions: dict[str, str]) -> dict[int, str]:
    """Short unique names from each segment's top features: "High savings balance · low app sessions".

    Two segments with the same top features get a further feature each until they differ; if
    they still do not, a number.
    """

    def name(segment: int, features: int) -> str:
        items = defining[segment][:features]
        if not items:
            return f"Segment {segment}"
        text = " · ".join(_phrase(item, descriptions) for item in items)
        return text[0].upper() + text[1:]

    features = dict.fromkeys(defining, _NAME_FEATURES)
    names = {segment: name(segment, features[segment]) for segment in defining}
    while True:
        grown = [s for s in _clashes(names) if features[s] < min(_PROFILE_FEATURES, len(defining[s]))]
        if not grown:
            break
        for segment in grown:
            features[segment] += 1
            names[segment] = name(segment, features[segment])
    for segment in _clashes(names):
        names[segment] = f"{names[segment]} ({segment})"
    return dict(sorted(names.items()))


def _clashes(names: dict[int, str]) -> list[int]:
    seen: dict[str, list[int]] = {}
    for segment, text in names.items():
        seen.setdefault(text.lower(), []).append(segment)
    return sorted(s for group in seen.values() if len(group) > 1 for s in group)


def _profiles(
    values: pd.DataFrame,
    labels: np.ndarray,
    names: dict[int, str],
    defining: dict[int, list[_Defining]],
    descriptions: dict[str, str],
) -> pd.DataFrame:
    """One row per segment for marketing: size, share, defining features and feature medians."""
    rows = []
    for segment in sorted(set(labels.tolist())):
        members = values[labels == segment]
        row: dict[str, Any] = {
            "segment_id": int(segment),
            "name": names[segment],
            "size": len(members),
            "share": len(members) / len(values),
            "defining_features": ", ".join(
                _phrase(item, descriptions) for item in defining.get(segment, [])[:_PROFILE_FEATURES]
            ),
        }
        for name in values.columns:
            row[f"median_{name}"] = float(members[name].median())
        rows.append(row)
    return pd.DataFrame(rows)


def _json_float(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _json_value(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, np.integer | int) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, np.floating | float):
        return _json_float(float(value))
    return value
