"""Fairness gate: does a model select customers at similar rates across protected groups?

A model is used to pick the customers an action goes to: the top ``selection_rate`` of its
score. For each protected attribute (age band, region, ...) the report compares groups on

* selection rate (demographic parity): the share of the group that is selected, and
* true positive rate (equal opportunity): the share of the group's positives that is selected,
  compared only across groups with at least ``min_group_positives`` positives (fewer make the
  rate noise).

The gate turns the per-attribute differences (max - min across groups) into readable violations
against the configured limits ``ml.fairness.max_dp_difference`` / ``max_eo_difference``.

A holdout's groups are small: with ten positives in a group, its true positive rate alone is
uncertain by about +-0.15, and the largest minus the smallest of six such rates is large even
when the groups are treated alike. Measured on generated banks, the simulator's own true
probabilities "failed" a gate on the point estimates. So with ``draws`` > 0 each difference
gets a 95% bootstrap interval, and the gate refuses a model when the data show the limit is
exceeded: when the interval's low end is above it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ml.propensity import bootstrap_resampler, top_fraction_mask
from pipelines.errors import InputError


@dataclass(frozen=True)
class FairnessReport:
    """``by_group``: one row per attribute x group value; ``summary``: one row per attribute."""

    by_group: pd.DataFrame  # attribute, group, rows, selected, selection_rate, positives, true_positive_rate
    summary: pd.DataFrame  # indexed by attribute; the differences and which groups are at the ends

    def metrics(self) -> dict[str, float]:
        """The differences as flat metrics for MLflow: dp_diff_<attribute>, eo_diff_<attribute>.

        An equal-opportunity difference that cannot be measured (fewer than two groups with
        enough positives) is left out.
        """
        out: dict[str, float] = {}
        for attribute, row in self.summary.iterrows():
            for prefix, column in (
                ("dp_diff", "demographic_parity_difference"),
                ("eo_diff", "equal_opportunity_difference"),
            ):
                value = float(row[column])
                if not math.isnan(value):
                    out[f"{prefix}_{attribute}"] = value
                    low = float(row.get(f"{prefix[:2]}_low", math.nan))
                    if not math.isnan(low):
                        out[f"{prefix}_low_{attribute}"] = low
        return out


def fairness_report(
    y_true: np.ndarray,
    score: np.ndarray,
    groups: pd.DataFrame,
    selection_rate: float = 0.1,
    min_group_positives: int = 10,
    draws: int = 0,
    seed: int = 0,
    clusters: Sequence[Any] | np.ndarray | None = None,
) -> FairnessReport:
    """Selection and true positive rates per group of every column of ``groups``.

    Selected = among the ceil(selection_rate * rows) highest scores; ties are broken by row
    order (the earlier row is selected), NaN scores are never selected. A missing group value
    is a group of its own. ``draws`` > 0 adds the 95% bootstrap interval of each difference
    (``dp_low``/``dp_high``, ``eo_low``/``eo_high``; rows resampled, the selection redone on each
    draw). With ``clusters`` (e.g. customer numbers, when a customer has a row per cut-off) whole
    clusters are resampled with all their rows, as rows of one customer are not independent.
    """
    y_true = np.asarray(y_true).astype(int)
    score = np.asarray(score, dtype=float)
    if not (len(y_true) == len(score) == len(groups)):
        raise InputError(
            f"fairness_report: {len(y_true)} labels, {len(score)} scores and {len(groups)} group rows"
        )
    if not 0.0 < selection_rate <= 1.0:
        raise InputError(f"fairness_report: selection_rate is {selection_rate}; expected 0 < rate <= 1")
    frame = pd.DataFrame(
        {
            "selected": top_fraction_mask(score, selection_rate).astype(int),
            "positive": y_true,
        }
    )
    frame["selected_positive"] = frame["selected"] * frame["positive"]

    parts = []
    summary_rows = []
    for attribute in groups.columns:
        stats = (
            frame.groupby(groups[attribute].to_numpy(), dropna=False, sort=True)
            .agg(
                rows=("selected", "size"),
                selected=("selected", "sum"),
                positives=("positive", "sum"),
                selected_positives=("selected_positive", "sum"),
            )
            .rename_axis("group")
            .reset_index()
        )
        stats["selection_rate"] = stats["selected"] / stats["rows"]
        stats["true_positive_rate"] = stats["selected_positives"] / stats["positives"].where(
            stats["positives"] > 0
        )
        stats.insert(0, "attribute", str(attribute))
        parts.append(stats)

        dp_max, dp_min = _ends(stats, "selection_rate")
        eligible = stats[stats["positives"] >= min_group_positives]
        eo_max, eo_min = _ends(eligible, "true_positive_rate") if len(eligible) >= 2 else (None, None)
        summary_rows.append(
            {
                "attribute": str(attribute),
                "groups": len(stats),
                "demographic_parity_difference": _diff(stats, "selection_rate", dp_max, dp_min),
                "dp_max_group": _group(stats, dp_max),
                "dp_max_rate": _rate(stats, "selection_rate", dp_max),
                "dp_min_group": _group(stats, dp_min),
                "dp_min_rate": _rate(stats, "selection_rate", dp_min),
                "groups_with_enough_positives": len(eligible),
                "equal_opportunity_difference": _diff(stats, "true_positive_rate", eo_max, eo_min),
                "eo_max_group": _group(stats, eo_max),
                "eo_max_rate": _rate(stats, "true_positive_rate", eo_max),
                "eo_min_group": _group(stats, eo_min),
                "eo_min_rate": _rate(stats, "true_positive_rate", eo_min),
            }
        )
    columns = [
        "attribute",
        "group",
        "rows",
        "selected",
        "selection_rate",
        "positives",
        "selected_positives",
        "true_positive_rate",
    ]
    by_group = pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)
    summary = pd.DataFrame(summary_rows).set_index("attribute") if summary_rows else pd.DataFrame()
    if draws > 0 and len(summary):
        for attribute in groups.columns:
            codes = pd.factorize(groups[attribute].astype("object"), use_na_sentinel=False)[0]
            bounds = _bootstrap_differences(
                y_true, score, codes, selection_rate, min_group_positives, draws, seed, clusters
            )
            for name, value in bounds.items():
                summary.loc[str(attribute), name] = value
    return FairnessReport(by_group=by_group, summary=summary)


def _bootstrap_differences(
    y: np.ndarray,
    score: np.ndarray,
    codes: np.ndarray,
    selection_rate: float,
    min_group_positives: int,
    draws: int,
    seed: int,
    clusters: Sequence[Any] | np.ndarray | None = None,
) -> dict[str, float]:
    """2.5% and 97.5% percentiles of the DP and EO differences over bootstrap draws of the rows
    (or of the ``clusters``, each drawn with all its rows)."""
    rng = np.random.default_rng(seed)
    k = int(codes.max()) + 1 if len(codes) else 0
    draw_rows = bootstrap_resampler(y, clusters, rng, stratify=False)
    dp, eo = np.full(draws, np.nan), np.full(draws, np.nan)
    for d in range(draws):
        rows = draw_rows()
        selected = top_fraction_mask(score[rows], selection_rate)
        group, positive = codes[rows], y[rows] == 1
        size = np.bincount(group, minlength=k)
        picked = np.bincount(group, weights=selected, minlength=k)
        positives = np.bincount(group, weights=positive, minlength=k)
        hits = np.bincount(group, weights=selected & positive, minlength=k)
        present = size > 0
        rates = picked[present] / size[present]
        dp[d] = rates.max() - rates.min()
        enough = positives >= min_group_positives
        if enough.sum() >= 2:
            tpr = hits[enough] / positives[enough]
            eo[d] = tpr.max() - tpr.min()
    out = {}
    for name, values in (("dp", dp), ("eo", eo)):
        finite = values[~np.isnan(values)]
        low, high = np.percentile(finite, [2.5, 97.5]) if len(finite) else (math.nan, math.nan)
        out[f"{name}_low"], out[f"{name}_high"] = float(low), float(high)
    return out


def fairness_gate(
    summary: FairnessReport | pd.DataFrame, max_dp_difference: float, max_eo_difference: float
) -> list[str]:
    """Readable violations of the limits; an empty list means the model passes.

    An attribute whose equal-opportunity difference cannot be measured (fewer than two groups
    with enough positives) is not a violation. Where the report has bootstrap intervals, a
    difference is a violation only when the interval's low end is above the limit too (the
    holdout shows the limit is exceeded, not just a noisy estimate above it).
    """
    if isinstance(summary, FairnessReport):
        summary = summary.summary
    violations = []
    for attribute, row in summary.iterrows():
        for short, label, rate, limit in (
            ("dp", "demographic parity", "selection rate", max_dp_difference),
            ("eo", "equal opportunity", "true positive rate", max_eo_difference),
        ):
            column = "demographic_parity_difference" if short == "dp" else "equal_opportunity_difference"
            value = float(row[column])
            low_end = float(row.get(f"{short}_low", math.nan))
            if math.isnan(value) or value <= limit or low_end <= limit:
                continue  # NaN <= limit is False: no interval, the point estimate decides
            high = f"{row[f'{short}_max_rate']:.2f} for {row[f'{short}_max_group']}"
            low = f"{row[f'{short}_min_rate']:.2f} for {row[f'{short}_min_group']}"
            interval = (
                f" (95% interval {low_end:.2f}-{float(row[f'{short}_high']):.2f})"
                if not math.isnan(low_end)
                else ""
            )
            violations.append(
                f"{label} difference by {attribute} is {value:.2f}{interval} > {limit:.2f} "
                f"(ml.fairness.max_{short}_difference): {rate} {high} vs {low}"
            )
    return violations


def _ends(stats: pd.DataFrame, column: str) -> tuple[int | None, int | None]:
    """Row labels of the highest and the lowest value (first one on ties); None if all NaN."""
    values = stats[column]
    if values.notna().sum() == 0:
        return None, None
    return values.idxmax(), values.idxmin()


def _diff(stats: pd.DataFrame, column: str, high: int | None, low: int | None) -> float:
    if high is None or low is None:
        return math.nan
    return float(stats.at[high, column] - stats.at[low, column])


def _group(stats: pd.DataFrame, label: int | None) -> str | None:
    return None if label is None else str(stats.at[label, "group"])


def _rate(stats: pd.DataFrame, column: str, label: int | None) -> float:
    return math.nan if label is None else float(stats.at[label, column])
