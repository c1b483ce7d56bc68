"""SHAP explanations of propensity models: reason codes per customer and global importance.

Reason codes are data, written next to each decision so an auditor can ask why a customer got
an action. They come from LightGBM's own TreeSHAP (``PropensityModel.contributions``) and are
picked with array operations over the whole contribution matrix, so explaining every customer
that is acted on stays cheap.

Wording: a feature description is either a noun phrase (``"card utilisation"`` gives
``"card utilisation: 0.85 (raises the score)"``) or a template with ``{value}`` (format specs
allowed: ``"{value} failed payments in the last 7 days"`` gives ``"3 failed payments in the last
7 days raise the score"``; a template that starts with ``{value}`` says ``"no ..."`` for 0; a
missing value reads ``"<description>: unknown (...)"``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ml.propensity import PropensityModel
from pipelines.errors import InputError

if TYPE_CHECKING:  # matplotlib and shap load only when a plot is drawn (not in scoring jobs)
    from matplotlib.figure import Figure

_PLACEHOLDER = re.compile(r"\{value(?::([^}]*))?\}")  # {value} or {value:.0%}
_PLURAL_START = re.compile(r"^(no |\d[\d,]*(\.\d+)? )")  # "no app sessions", "3 failed payments"


def reason_codes(
    model: PropensityModel,
    X: pd.DataFrame,
    descriptions: Mapping[str, str],
    protected: set[str] | frozenset[str] = frozenset(),
    top_k: int = 4,
) -> pd.DataFrame:
    """The top_k reasons behind each row's score, one output row per input row (same index).

    Columns, for rank i = 1..top_k: ``reason_i`` (plain words), ``reason_feature_i`` (feature
    name) and ``reason_shap_i`` (its contribution in log-odds). Reasons are the features that
    push this row's score up most; when fewer than top_k do, the ones that pull it down most
    follow (worded "lower"); beyond that None (NaN for reason_shap_i). Features in ``protected``
    (age band, region, ...) are never given as a reason, even when the model uses them.
    """
    if top_k < 1:
        raise InputError(f"reason_codes: top_k is {top_k}; expected >= 1")
    features = model.feature_names
    allowed = np.array([i for i, f in enumerate(features) if f not in protected], dtype=np.intp)
    n = len(X)
    contrib = model.contributions(X)[:, allowed] if n else np.empty((0, len(allowed)))
    k = min(top_k, len(allowed))

    # one sort key per cell: positives first (largest first), then negatives (most negative
    # first), then zeros; a stable sort breaks ties by feature order, so reasons are repeatable
    bound = float(np.abs(contrib).max()) * 2.0 + 1.0 if contrib.size else 1.0
    key = np.where(contrib > 0, -contrib, np.where(contrib < 0, bound + contrib, np.inf))
    order = np.argsort(key, axis=1, kind="stable")[:, :k]
    shap_top = np.take_along_axis(contrib, order, axis=1)
    feature_top = allowed[order]  # column index into model.feature_names

    out: dict[str, object] = {}
    columns_cache: dict[str, np.ndarray] = {}
    for rank in range(top_k):
        texts = np.full(n, None, dtype=object)
        names = np.full(n, None, dtype=object)
        values = np.full(n, np.nan)
        if rank < k:
            shap_rank = shap_top[:, rank]
            used = shap_rank != 0
            values[used] = shap_rank[used]
            feature_rank = feature_top[:, rank]
            for j in np.unique(feature_rank[used]):
                rows = np.flatnonzero(used & (feature_rank == j))
                name = features[j]
                if name not in columns_cache:
                    columns_cache[name] = X[name].to_numpy()
                names[rows] = name
                texts[rows] = _sentences(
                    columns_cache[name][rows], shap_rank[rows] > 0, descriptions.get(name, name)
                )
        out[f"reason_{rank + 1}"] = texts
        out[f"reason_feature_{rank + 1}"] = names
        out[f"reason_shap_{rank + 1}"] = values
    columns = [f"{c}_{i}" for c in ("reason", "reason_feature", "reason_shap") for i in range(1, top_k + 1)]
    return pd.DataFrame(out, index=X.index)[columns]


def global_importance(model: PropensityModel, X: pd.DataFrame) -> pd.Series:
    """Mean |SHAP| (log-odds) per feature over the rows of X, largest first."""
    contrib = model.contributions(X)
    importance = pd.Series(np.abs(contrib).mean(axis=0), index=model.feature_names, name="mean_abs_shap")
    return importance.sort_values(ascending=False, kind="stable")


def importance_plot(
    model: PropensityModel,
    X: pd.DataFrame,
    descriptions: Mapping[str, str],
    max_features: int = 20,
    max_rows: int = 5000,
    seed: int = 0,
) -> Figure:
    """A SHAP summary (beeswarm) of the model over (a sample of at most max_rows of) X.

    Features are labelled with their descriptions (templates without the ``{value}`` part).
    The figure renders with Agg and is not left open in pyplot: save it or log it to MLflow.
    """
    import matplotlib.pyplot as plt
    import shap
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if len(X) > max_rows:
        X = X.sample(n=max_rows, random_state=seed)
    contrib = model.contributions(X)
    labels = [_label(descriptions.get(f, f)) for f in model.feature_names]
    values = pd.DataFrame(model.matrix(X), columns=labels)  # categories as codes: colourable
    fig = plt.figure()
    try:
        shap.summary_plot(
            contrib, features=values, feature_names=labels, max_display=max_features, show=False
        )
        fig.axes[0].set_title(f"{model.target}: SHAP values (log-odds)")
        fig.tight_layout()
    finally:
        plt.close(fig)  # pyplot forgets it: never shown, no figures pile up in long jobs
    FigureCanvasAgg(fig)  # renders with Agg whatever pyplot's backend is
    return fig


# --- wording -------------------------------------------------------------------------------


def _sentences(values: np.ndarray, up: np.ndarray, description: str) -> list[str]:
    """Reason sentences for one feature: its values and whether each raises the score."""
    template = _PLACEHOLDER.search(description) is not None
    cache: dict[tuple[object, bool], str] = {}  # counts and categories repeat a lot
    result = []
    for value, raises in zip(values.tolist(), up.tolist(), strict=True):
        key = ("<missing>" if _missing(value) else value, raises) if _hashable(value) else None
        text = cache.get(key) if key is not None else None
        if text is None:
            text = _sentence(value, raises, description, template)
            if key is not None:
                cache[key] = text
        result.append(text)
    return result


def _sentence(value: object, raises: bool, description: str, template: bool) -> str:
    if not template or _missing(value):  # "card utilisation: unknown (raises the score)"
        label = _label(description) if template else description
        return f"{label}: {_format_value(value)} ({'raises' if raises else 'lowers'} the score)"
    if description.startswith("{value") and _is_number(value) and value == 0:
        phrase = "no" + _PLACEHOLDER.sub("", description, count=1)  # "no app sessions in ..."
    else:
        phrase = _PLACEHOLDER.sub(lambda m: _format_value(value, m.group(1)), description)
    plural = _PLURAL_START.match(phrase) is not None and not re.match(r"^1(\.0+)? ", phrase)
    verb = ("raise" if raises else "lower") if plural else ("raises" if raises else "lowers")
    return f"{phrase} {verb} the score"


def _format_value(value: object, spec: str | None = None) -> str:
    if _missing(value):
        return "unknown"
    if spec:
        try:
            return format(value, spec)
        except (ValueError, TypeError):  # a format spec that does not fit this value
            pass
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if _is_number(value):
        number = float(value)  # type: ignore[arg-type]
        if number.is_integer() and abs(number) < 1e15:
            return f"{int(number):,}" if abs(number) >= 10_000 else str(int(number))
        if abs(number) >= 1000:
            return f"{number:,.0f}"
        return f"{number:.3g}"
    return str(value)


def _label(description: str) -> str:
    """A description as an axis label: a template loses its {value} part."""
    label = re.sub(r"\s+", " ", _PLACEHOLDER.sub("", description)).strip()
    return re.sub(r"\s+(of|at|is|=)$", "", label)  # "card utilisation of {value:.0%}" -> "card utilisation"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True
