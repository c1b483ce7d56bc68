"""Per-product propensity and churn models: a LightGBM booster plus a calibrator.

One model per target (``propensity_mortgage``, ``churn_90d``, ...). The booster learns a ranking
in log-odds; a calibrator fitted on held-back rows turns its margin into a probability that
means what it says (of 1,000 customers scored 0.12, about 120 respond), which the
next-best-action step needs to compare offers. The calibrator is monotone, so it never changes
the ranking the booster learned.

A saved model is two plain files, no pickle: ``booster.txt`` (LightGBM's own text format) and
``model.json`` (features, categories, calibrator numbers, training facts). The MLflow registry
and the Spark scoring around these models live elsewhere; this module is pure pandas / numpy.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# LightGBM's OpenMP threads spin while they wait by default. Next to Spark on a few cores that
# makes a 2-thread training 10-40x slower than 1 thread; passive waiting avoids it. It only
# takes effect if set before LightGBM's OpenMP runtime loads, and an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import lightgbm as lgb  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from pipelines.errors import InputError, JourneylakeError  # noqa: E402

FORMAT_VERSION = 1
BOOSTER_FILE = "booster.txt"
META_FILE = "model.json"
CALIBRATIONS = ("isotonic", "sigmoid")


@dataclass(frozen=True)
class PropensitySettings:
    """How a propensity model is trained (``ml.propensity.*`` in the configuration)."""

    num_leaves: int = 15
    learning_rate: float = 0.05
    n_estimators: int = 300
    min_child_samples: int = 40
    early_stopping_rounds: int = 30  # 0: no early stopping, all n_estimators trees are kept
    calibration: str = "isotonic"  # "isotonic" | "sigmoid"
    # share of the training rows held back to fit the calibrator (and for early stopping)
    calibration_fraction: float = 0.25
    min_positives: int = 30  # below this in the training set: NotEnoughPositives
    seed: int = 0
    num_threads: int = 2

    def __post_init__(self) -> None:
        if self.calibration not in CALIBRATIONS:
            raise InputError(
                f"ml.propensity.calibration is {self.calibration!r}; "
                f"expected one of {', '.join(CALIBRATIONS)}"
            )
        if not 0.0 < self.calibration_fraction < 1.0:
            raise InputError(
                f"ml.propensity.calibration_fraction is {self.calibration_fraction}; "
                "expected 0 < fraction < 1"
            )
        for name in ("num_leaves", "n_estimators", "min_child_samples", "num_threads"):
            if getattr(self, name) < 1:
                raise InputError(f"ml.propensity.{name} is {getattr(self, name)}; expected >= 1")
        if self.early_stopping_rounds < 0 or self.min_positives < 1:
            raise InputError("ml.propensity.early_stopping_rounds must be >= 0 and min_positives >= 1")


class NotEnoughPositives(JourneylakeError, ValueError):
    """The training set has too few positive (or negative) rows to learn and calibrate a model."""


@dataclass(frozen=True)
class Calibrator:
    """Maps booster margins (log-odds) to probabilities; monotone non-decreasing.

    ``isotonic``: piecewise-linear through the points (x, y), clipped to the end values outside
    [x[0], x[-1]]. ``sigmoid`` (Platt): 1 / (1 + exp(-(a * margin + b))) with a >= 0.
    """

    method: str
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    a: float = 1.0
    b: float = 0.0

    def predict(self, margin: np.ndarray) -> np.ndarray:
        margin = np.asarray(margin, dtype=float)
        if self.method == "isotonic":
            return np.interp(margin, np.asarray(self.x), np.asarray(self.y))  # clips out of range
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
        return self.booster.predict(self.matrix(X), raw_score=True, num_threads=self.num_threads)

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
    settings: PropensitySettings,
    categorical: Sequence[str] = (),
) -> PropensityModel:
    """Train the booster on (1 - calibration_fraction) of the rows, calibrate it on the rest.

    The held-back rows (a stratified split, so they hold positives too) also decide early
    stopping. Numeric features may hold NaN (LightGBM routes missing values itself); the
    ``categorical`` columns may hold any values, which are kept as strings in the model.
    """
    from sklearn.model_selection import train_test_split  # training only: scoring stays light

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

    fit_rows, cal_rows = train_test_split(
        np.arange(len(y)), test_size=settings.calibration_fraction, stratify=y, random_state=settings.seed
    )
    fit_rows.sort()
    cal_rows.sort()
    params = {
        "objective": "binary",
        "num_leaves": settings.num_leaves,
        "learning_rate": settings.learning_rate,
        "min_data_in_leaf": settings.min_child_samples,
        "seed": settings.seed,
        "num_threads": settings.num_threads,
        "deterministic": True,
        "force_col_wise": True,
        "verbosity": -1,
    }
    cat_index = [feature_names.index(c) for c in categorical]
    train_set = lgb.Dataset(
        matrix[fit_rows],
        label=y[fit_rows],
        feature_name=feature_names,
        categorical_feature=cat_index,
        params={"verbosity": -1},
    )
    valid_set = lgb.Dataset(matrix[cal_rows], label=y[cal_rows], reference=train_set)
    callbacks = []
    if settings.early_stopping_rounds > 0:
        callbacks.append(lgb.early_stopping(settings.early_stopping_rounds, verbose=False))
    booster = lgb.train(
        params,
        train_set,
        num_boost_round=settings.n_estimators,
        valid_sets=[valid_set],
        valid_names=["calibration"],
        callbacks=callbacks,
    )
    trees = booster.best_iteration if booster.best_iteration > 0 else booster.current_iteration()
    # keep exactly the trees that are used, so the saved text and the scoring agree
    booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=trees))

    cal_margin = booster.predict(matrix[cal_rows], raw_score=True, num_threads=settings.num_threads)
    calibrator = Calibrator.fit(settings.calibration, cal_margin, y[cal_rows])
    expected = booster.predict(matrix[:1], pred_contrib=True, num_threads=settings.num_threads)[0, -1]
    info = {
        "rows": len(y),
        "positives": positives,
        "training_rows": len(fit_rows),
        "calibration_rows": len(cal_rows),
        "calibration_positives": int(y[cal_rows].sum()),
        "trees": int(trees),
        "settings": asdict(settings),
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


def evaluate(y: np.ndarray, p: np.ndarray, p_true: np.ndarray | None = None) -> dict[str, float]:
    """Holdout metrics of scores ``p`` for labels ``y``, ready for ``mlflow.log_metrics``.

    roc_auc, pr_auc (average precision), brier, top_decile_lift (positive rate among the 10% of
    rows with the highest p, ties broken by row order, over the base rate), positives, rows.
    With ``p_true`` (known true probabilities, synthetic data only): ceiling_auc, the ROC-AUC the
    true probabilities reach on the same labels, and auc_gap = ceiling_auc - roc_auc.
    Metrics that are undefined (one class only) are NaN.
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
        ceiling = float(roc_auc_score(y, np.asarray(p_true, dtype=float))) if both else math.nan
        metrics["ceiling_auc"] = ceiling
        metrics["auc_gap"] = ceiling - metrics["roc_auc"]
    return metrics


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
