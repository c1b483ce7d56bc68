"""Per-product propensity and churn models: a LightGBM booster plus a calibrator.

One model per target (``propensity_mortgage``, ``churn_90d``, ...). The booster learns a ranking
in log-odds; a calibrator turns its margin into a probability that means what it says (of 1,000
customers scored 0.12, about 120 respond), which the next-best-action step needs to compare
offers. The calibrator is strictly increasing, so it never changes the ranking the booster
learned (an isotonic step function alone would tie whole blocks of customers and lose AUC).

Product openings are rare: a bank's training set may hold a few dozen positives. So no rows are
set aside: k-fold cross-validation (folds by customer when customers repeat across cut-offs)
picks the tree shape (``alternatives``) and the number of trees, the booster is then trained on
every row, and the calibrator is fitted on the out-of-fold margins. The default shape is small,
strongly regularised trees, which measured closest to the simulator's truth ceiling on banks of
a few thousand customers; the larger alternative wins when positives number in the thousands.

A saved model is two plain files, no pickle: ``booster.txt`` (LightGBM's own text format) and
``model.json`` (features, categories, calibrator numbers, training facts). The MLflow registry
and the Spark scoring around these models live elsewhere; this module is pure pandas / numpy.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

# LightGBM's OpenMP threads spin while they wait by default. Next to Spark on a few cores that
# makes a 2-thread training 10-40x slower than 1 thread; passive waiting avoids it. It only
# takes effect if set before LightGBM's OpenMP runtime loads, and an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import lightgbm as lgb  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ml.settings import SHAPE_FIELDS, PropensityModelConfig  # noqa: E402
from pipelines.errors import InputError, JourneylakeError  # noqa: E402

FORMAT_VERSION = 1
BOOSTER_FILE = "booster.txt"
META_FILE = "model.json"
GAP_DRAWS = 300  # bootstrap draws for the interval of the AUC gap to the ceiling
TIE_BREAK = 1e-6  # weight of the margin's sigmoid in an isotonic calibrator (keeps the order)


class NotEnoughPositives(JourneylakeError, ValueError):
    """The training set has too few positive (or negative) rows to learn and calibrate a model."""


@dataclass(frozen=True)
class Calibrator:
    """Maps booster margins (log-odds) to probabilities; monotone non-decreasing.

    ``isotonic``: piecewise-linear through the points (x, y), clipped to the end values outside
    [x[0], x[-1]], plus a tie-break of at most ``TIE_BREAK`` that keeps it strictly increasing.
    ``sigmoid`` (Platt): 1 / (1 + exp(-(a * margin + b))) with a >= 0.
    """

    method: str
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    a: float = 1.0
    b: float = 0.0

    def predict(self, margin: np.ndarray) -> np.ndarray:
        margin = np.asarray(margin, dtype=float)
        if self.method == "isotonic":
            steps = np.interp(margin, np.asarray(self.x), np.asarray(self.y))  # clips out of range
            # Isotonic regression is flat within each block of its fit: alone it would give whole
            # blocks of customers one probability and throw away the booster's order among them.
            # A millionth of the margin's own sigmoid keeps that order (strictly increasing) and
            # moves no probability by more than 1e-6.
            return (1.0 - TIE_BREAK) * steps + TIE_BREAK * _expit(margin)
        return _expit(self.a * margin + self.b)

    def to_dict(self) -> dict[str, Any]:
        if self.method == "isotonic":
            return {"method": "isotonic", "x": list(self.x), "y": list(self.y)}
        return {"method": "sigmoid", "a": self.a, "b": self.b}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibrator:
        if data["method"] == "isotonic":
            return cls("isotonic", x=tuple(map(float, data["x"])), y=tuple(map(float, data["y"])))
        return cls("sigmoid", a=float(data["a"]), b=float(data["b"]))

    @classmethod
    def fit(cls, method: str, margin: np.ndarray, y: np.ndarray) -> Calibrator:
        if method == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(increasing=True, y_min=0.0, y_max=1.0, out_of_bounds="clip")
            iso.fit(margin, y)
            return cls("isotonic", x=tuple(iso.X_thresholds_.tolist()), y=tuple(iso.y_thresholds_.tolist()))
        a, b = _fit_platt(margin, y)
        return cls("sigmoid", a=a, b=b)


@dataclass
class PropensityModel:
    """A trained propensity (or churn) model for one target."""

    target: str
    feature_names: list[str]
    booster: lgb.Booster
    calibrator: Calibrator
    categories: dict[str, list[str]] = field(default_factory=dict)  # categorical feature -> its values
    expected_value: float = 0.0  # the SHAP base value (log-odds) that contributions add up from
    num_threads: int = 2
    info: dict[str, Any] = field(default_factory=dict)  # training facts: rows, positives, trees, settings

    def matrix(self, X: pd.DataFrame) -> np.ndarray:
        """X's model features as a float matrix in feature order (categories as codes, NaN = missing)."""
        return _to_matrix(X, self.feature_names, self.categories, what=f"model {self.target!r}")

    def margin(self, X: pd.DataFrame) -> np.ndarray:
        """The booster's raw score: log-odds, before calibration."""
        # a dense matrix in, an array out (predict's union return type also covers sparse input)
        return cast(
            np.ndarray, self.booster.predict(self.matrix(X), raw_score=True, num_threads=self.num_threads)
        )

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Calibrated P(target = 1); monotone non-decreasing in the margin."""
        return self.calibrator.predict(self.margin(X))

    def contributions(self, X: pd.DataFrame) -> np.ndarray:
        """TreeSHAP values in log-odds, shape (rows, features).

        Each row adds up with ``expected_value`` to the row's margin.
        """
        contrib = self.booster.predict(self.matrix(X), pred_contrib=True, num_threads=self.num_threads)
        return np.asarray(contrib)[:, :-1]

    def save(self, path: Path) -> None:
        """Write the model into folder ``path``: booster.txt and model.json (no pickle)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / BOOSTER_FILE).write_text(self.booster.model_to_string(), encoding="utf-8")
        meta = {
            "format_version": FORMAT_VERSION,
            "target": self.target,
            "feature_names": self.feature_names,
            "categories": self.categories,
            "calibrator": self.calibrator.to_dict(),
            "expected_value": self.expected_value,
            "num_threads": self.num_threads,
            "info": self.info,
        }
        (path / META_FILE).write_text(json.dumps(meta, indent=2, allow_nan=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> PropensityModel:
        """Read a model that ``save`` wrote into folder ``path``."""
        path = Path(path)
        for name in (BOOSTER_FILE, META_FILE):
            if not (path / name).is_file():
                raise InputError(f"{path / name} not found: not a saved propensity model folder")
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
        if meta.get("format_version") != FORMAT_VERSION:
            raise InputError(
                f"{path / META_FILE} has format_version {meta.get('format_version')!r}; "
                f"this code reads version {FORMAT_VERSION}"
            )
        booster = lgb.Booster(model_str=(path / BOOSTER_FILE).read_text(encoding="utf-8"))
        return cls(
            target=meta["target"],
            feature_names=list(meta["feature_names"]),
            booster=booster,
            calibrator=Calibrator.from_dict(meta["calibrator"]),
            categories={k: list(v) for k, v in meta["categories"].items()},
            expected_value=float(meta["expected_value"]),
            num_threads=int(meta["num_threads"]),
            info=meta["info"],
        )


def train_propensity(
    X: pd.DataFrame,
    y: np.ndarray,
    target: str,
    settings: PropensityModelConfig,
    categorical: Sequence[str] = (),
    groups: Sequence[Any] | np.ndarray | None = None,
    seed: int = 0,
) -> PropensityModel:
    """Cross-validate the number of trees, train the booster on every row, calibrate out of fold.

    ``settings`` is the ``ml.propensity`` section (``cfg.ml.propensity``); ``seed`` draws the
    folds and the boosters' row and feature samples (``ml.training.seed``).

    ``groups`` (e.g. customer numbers) keeps each group's rows in one fold, so a customer seen at
    several cut-offs never validates a fold it also trained. Numeric features may hold NaN
    (LightGBM routes missing values itself); the ``categorical`` columns may hold any values,
    which are kept as strings in the model.
    """
    y = _binary_labels(y, target, len(X))
    positives = int(y.sum())
    negatives = int(len(y) - positives)
    if positives < settings.min_positives or negatives < settings.min_positives:
        which = "positive" if positives < settings.min_positives else "negative"
        raise NotEnoughPositives(
            f"model {target!r}: {positives} positive and {negatives} negative rows in {len(y)} training "
            f"rows; needs at least {settings.min_positives} {which} rows (ml.propensity.min_positives)"
        )
    feature_names = [str(c) for c in X.columns]
    unknown = [c for c in categorical if c not in X.columns]
    if unknown:
        raise InputError(f"model {target!r}: categorical columns {unknown} are not among the features")
    categories = {c: _category_values(X[c]) for c in categorical}
    matrix = _to_matrix(X, feature_names, categories, what=f"model {target!r}")
    splits = _folds(y, groups, settings.folds, seed)

    cat_index = [feature_names.index(c) for c in categorical]
    dataset = lgb.Dataset(
        matrix,
        label=y,
        feature_name=feature_names,
        categorical_feature=cat_index,
        # shapes differ in min_data_in_leaf: the bins must not be pre-filtered by the first one
        params={"verbosity": -1, "feature_pre_filter": False},
        free_raw_data=False,
    )
    shapes = [settings, *(settings.model_copy(update=shape.overrides()) for shape in settings.alternatives)]
    tried = [_cross_validate(_params(shape, seed), dataset, splits, settings) for shape in shapes]
    chosen = min(range(len(tried)), key=lambda k: (tried[k][1], k))  # lowest log-loss; first on ties
    params, logloss, trees, fold_boosters = tried[chosen]
    out_of_fold = np.empty(len(y))
    for (_, validate), fold_booster in zip(splits, fold_boosters, strict=True):
        out_of_fold[validate] = fold_booster.predict(
            matrix[validate], raw_score=True, num_iteration=trees, num_threads=settings.num_threads
        )
    booster = lgb.train(params, dataset, num_boost_round=trees)
    # keep exactly the trees that are used, so the saved text and the scoring agree
    booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=trees))

    calibrator = Calibrator.fit(settings.calibration, out_of_fold, y)
    contrib = cast(
        np.ndarray, booster.predict(matrix[:1], pred_contrib=True, num_threads=settings.num_threads)
    )
    expected = contrib[0, -1]
    info = {
        "rows": len(y),
        "positives": positives,
        "folds": len(splits),
        "grouped_folds": groups is not None,
        "cv_logloss": logloss,
        "shape": {k: params[LGB_NAMES.get(k, k)] for k in SHAPE_FIELDS if LGB_NAMES.get(k, k) in params},
        "shapes_tried": [round(t[1], 6) for t in tried],
        "trees": int(trees),
        "settings": settings.model_dump(),
        "seed": seed,
    }
    return PropensityModel(
        target=target,
        feature_names=feature_names,
        booster=booster,
        calibrator=calibrator,
        categories=categories,
        expected_value=float(expected),
        num_threads=settings.num_threads,
        info=info,
    )


LGB_NAMES = {"min_child_samples": "min_data_in_leaf"}


def _params(shape: PropensityModelConfig, seed: int) -> dict[str, Any]:
    params: dict[str, Any] = {
        "objective": "binary",
        "num_leaves": shape.num_leaves,
        "learning_rate": shape.learning_rate,
        "min_data_in_leaf": shape.min_child_samples,
        "feature_fraction": shape.feature_fraction,
        "lambda_l2": shape.lambda_l2,
        "seed": seed,
        "num_threads": shape.num_threads,
        "deterministic": True,
        "force_col_wise": True,
        "verbosity": -1,
    }
    if shape.bagging_fraction < 1.0:
        params.update(bagging_fraction=shape.bagging_fraction, bagging_freq=1)
    return params


def _cross_validate(
    params: dict[str, Any],
    dataset: lgb.Dataset,
    splits: list[tuple[np.ndarray, np.ndarray]],
    settings: PropensityModelConfig,
) -> tuple[dict[str, Any], float, int, list[lgb.Booster]]:
    """(params, mean validation log-loss at the chosen round, trees, the fold boosters)."""
    callbacks: list[Callable[..., Any]] = []
    if settings.early_stopping_rounds > 0:
        callbacks.append(lgb.early_stopping(settings.early_stopping_rounds, verbose=False))
    cv = lgb.cv(
        params,
        dataset,
        num_boost_round=settings.n_estimators,
        folds=splits,
        callbacks=callbacks,
        return_cvbooster=True,
    )
    # the result maps each metric to its per-round values, and "cvbooster" to the fold boosters
    losses = cast(list[float], cv["valid binary_logloss-mean"])  # cut at the best round when early stopping
    boosters = cast(lgb.CVBooster, cv["cvbooster"]).boosters
    return params, float(losses[-1]), len(losses), list(boosters)


def _folds(
    y: np.ndarray, groups: Sequence[Any] | np.ndarray | None, folds: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, validation rows) per fold: stratified, and by group when groups are given."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold  # training only

    rows = np.arange(len(y))
    if groups is None:
        splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
        return [(a, b) for a, b in splitter.split(rows, y)]
    groups = np.asarray(groups)
    if len(groups) != len(y):
        raise InputError(f"train_propensity: {len(y)} rows but {len(groups)} groups")
    distinct = len(np.unique(groups))
    if distinct < folds:
        raise InputError(
            f"train_propensity: {distinct} groups (customers) cannot fill ml.propensity.folds ({folds}) folds"
        )
    splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
    return [(a, b) for a, b in splitter.split(rows, y, groups)]


def evaluate(
    y: np.ndarray,
    p: np.ndarray,
    p_true: np.ndarray | None = None,
    clusters: Sequence[Any] | np.ndarray | None = None,
) -> dict[str, float]:
    """Holdout metrics of scores ``p`` for labels ``y``, ready for ``mlflow.log_metrics``.

    roc_auc, pr_auc (average precision), brier, top_decile_lift (positive rate among the 10% of
    rows with the highest p, ties broken by row order, over the base rate), positives, rows.
    With ``p_true`` (known true probabilities, synthetic data only): ceiling_auc, the ROC-AUC the
    true probabilities reach on the same labels, auc_gap = ceiling_auc - roc_auc, and
    auc_gap_low / auc_gap_high, its 95% bootstrap interval (``gap_interval``; pass ``clusters``,
    e.g. customer numbers, when a customer has several rows). Metrics that are undefined (one
    class only) are NaN.
    """
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=float)
    if y.shape != p.shape:
        raise InputError(f"evaluate: {len(y)} labels but {len(p)} scores")
    rows = len(y)
    positives = int(y.sum())
    both = 0 < positives < rows
    top = top_fraction_mask(p, 0.1)
    base_rate = positives / rows if rows else math.nan
    metrics = {
        "roc_auc": float(roc_auc_score(y, p)) if both else math.nan,
        "pr_auc": float(average_precision_score(y, p)) if both else math.nan,
        "brier": float(brier_score_loss(y, p)) if rows else math.nan,
        "top_decile_lift": float(y[top].mean() / base_rate) if positives else math.nan,
        "positives": float(positives),
        "rows": float(rows),
    }
    if p_true is not None:
        p_true = np.asarray(p_true, dtype=float)
        ceiling = float(roc_auc_score(y, p_true)) if both else math.nan
        metrics["ceiling_auc"] = ceiling
        metrics["auc_gap"] = ceiling - metrics["roc_auc"]
        low, high = gap_interval(y, p, p_true, clusters) if both else (math.nan, math.nan)
        metrics["auc_gap_low"], metrics["auc_gap_high"] = low, high
    return metrics


def gap_interval(
    y: np.ndarray,
    p: np.ndarray,
    p_true: np.ndarray,
    clusters: Sequence[Any] | np.ndarray | None = None,
    draws: int = GAP_DRAWS,
    seed: int = 0,
) -> tuple[float, float]:
    """95% interval of (ceiling AUC - model AUC): a paired bootstrap over the holdout.

    With a few dozen positives, an AUC moves by several hundredths from one holdout to another;
    the interval says whether a gap is the model's or the sample's. Both AUCs are computed on the
    same draw, so what they share cancels out.

    ``clusters`` (e.g. customer numbers) names the rows that are not independent of each other:
    a training set stacks cut-offs, so one customer who opens an account is a positive at every
    cut-off in the weeks before, and 69 positive rows were 23 customers. Resampling rows would
    treat them as 69 pieces of evidence and give an interval about sqrt(3) too narrow, so with
    ``clusters`` whole clusters are drawn with all their rows (``bootstrap_resampler``).
    """
    y = np.asarray(y).astype(int)
    p, p_true = np.asarray(p, dtype=float), np.asarray(p_true, dtype=float)
    draw_rows = bootstrap_resampler(y, clusters, np.random.default_rng(seed))
    gaps = np.empty(draws)
    for k in range(draws):
        rows = draw_rows()
        gaps[k] = _auc(y[rows], p_true[rows]) - _auc(y[rows], p[rows])
    low, high = np.percentile(gaps, [2.5, 97.5])
    return float(low), float(high)


def bootstrap_resampler(
    y: np.ndarray,
    clusters: Sequence[Any] | np.ndarray | None,
    rng: np.random.Generator,
    stratify: bool = True,
) -> Callable[[], np.ndarray]:
    """A function that draws one bootstrap sample of row indices, with replacement.

    Without ``clusters`` rows are drawn; with ``clusters`` (one value per row, e.g. the customer
    number) whole clusters are drawn, each with all its rows. ``stratify`` draws the positive
    and the negative units (a cluster is positive when any of its rows is) separately, so every
    draw keeps the sample's count of each; otherwise units are drawn from all of them at once.
    """
    y = np.asarray(y).astype(int)
    if clusters is None:
        codes = np.arange(len(y))
    else:
        codes = pd.factorize(pd.Series(np.asarray(clusters)), use_na_sentinel=False)[0]
        if len(codes) != len(y):
            raise InputError(f"bootstrap: {len(y)} labels but {len(codes)} cluster values")
    order = np.argsort(codes, kind="stable")  # rows grouped by unit
    sizes = np.bincount(codes, minlength=len(y) if clusters is None else 0)
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    positive = np.bincount(codes, weights=y, minlength=len(sizes)) > 0
    strata = (np.flatnonzero(positive), np.flatnonzero(~positive)) if stratify else (np.arange(len(sizes)),)

    def draw() -> np.ndarray:
        chosen = np.concatenate([rng.choice(units, len(units)) for units in strata])
        counts = sizes[chosen]
        # each chosen unit's rows: its start, start + 1, ..., start + size - 1
        within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        return order[np.repeat(starts[chosen], counts) + within]

    return draw


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC-AUC by the rank-sum (Mann-Whitney) formula, ties counted half: fast for the bootstrap."""
    from scipy.stats import rankdata

    ranks = rankdata(score)
    positives = y == 1
    n_pos = int(positives.sum())
    n_neg = len(y) - n_pos
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def top_fraction_mask(score: np.ndarray, fraction: float) -> np.ndarray:
    """True for the ceil(fraction * n) highest scores; ties broken by row order, NaN scores last."""
    score = np.asarray(score, dtype=float)
    k = min(len(score), math.ceil(fraction * len(score) - 1e-9))
    order = np.argsort(-score, kind="stable")  # NaN sorts last
    mask = np.zeros(len(score), dtype=bool)
    mask[order[:k]] = True
    return mask


# --- helpers -------------------------------------------------------------------------------


def _expit(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=float)))  # = 1 / (1 + exp(-z)), no overflow


def _fit_platt(margin: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Platt scaling by Newton's method, with Platt's smoothed targets; slope clamped to >= 0."""
    positives = float(y.sum())
    negatives = float(len(y) - positives)
    t = np.where(y == 1, (positives + 1.0) / (positives + 2.0), 1.0 / (negatives + 2.0))
    design = np.column_stack([margin, np.ones_like(margin)])

    def loss(w: np.ndarray) -> float:  # cross-entropy against the smoothed targets
        z = design @ w
        return float(np.sum(np.logaddexp(0.0, z) - t * z))

    w = np.array([1.0, 0.0])  # the margin is already log-odds: start from the identity
    current = loss(w)
    for _ in range(100):
        p = _expit(design @ w)
        grad = design.T @ (p - t)
        hess = (design * (p * (1.0 - p))[:, None]).T @ design + 1e-9 * len(t) * np.eye(2)
        step = np.linalg.solve(hess, grad)
        scale = 1.0
        while scale > 1e-6 and loss(w - scale * step) > current:  # backtrack: never go uphill
            scale *= 0.5
        w = w - scale * step
        improved = current - loss(w)
        current -= improved
        if np.abs(scale * step).max() < 1e-9 or improved < 1e-12 * len(t):
            break
    a, b = float(w[0]), float(w[1])
    if a < 0.0:  # the booster ranks worse than chance on held-back rows: a constant, not a reversal
        a, b = 0.0, float(np.log(t.mean() / (1.0 - t.mean())))
    return a, b


def _binary_labels(y: np.ndarray, target: str, rows: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != rows:
        raise InputError(f"model {target!r}: {rows} feature rows but labels of shape {y.shape}")
    if pd.isna(y).any() or not np.isin(y, (0, 1)).all():
        raise InputError(f"model {target!r}: labels must be 0 or 1 (no missing values)")
    return y.astype(np.int8)


def _category_values(column: pd.Series) -> list[str]:
    return sorted(column.dropna().astype(str).unique().tolist())


def _to_matrix(
    X: pd.DataFrame, feature_names: list[str], categories: dict[str, list[str]], what: str
) -> np.ndarray:
    missing = [f for f in feature_names if f not in X.columns]
    if missing:
        raise InputError(f"{what}: input lacks feature columns {missing}")
    columns = []
    for name in feature_names:
        col = X[name]
        if name in categories:
            codes = pd.Categorical(col.astype("string"), categories=categories[name]).codes
            columns.append(np.where(codes < 0, np.nan, codes).astype(float))  # unseen value = missing
        elif pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
            columns.append(col.to_numpy(dtype=float, na_value=np.nan))
        else:
            raise InputError(
                f"{what}: column {name!r} has dtype {col.dtype}; numeric expected (or categorical)"
            )
    if not columns:
        return np.empty((len(X), 0))
    return np.column_stack(columns)
