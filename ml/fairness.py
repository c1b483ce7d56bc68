"""Fairness gate: does a model select customers at similar rates across protected groups?

A model is used to pick the customers an action goes to: the top ``selection_rate`` of its
score. For each protected attribute (age band, region, ...) the report compares groups on

* selection rate (demographic parity): the share of the group that is selected, and
* true positive rate (equal opportunity): the share of the group's positives that is selected,
  compared only across groups with at least ``min_group_positives`` positives (fewer make the
  rate noise).

The gate turns the per-attribute differences (max - min across groups) into readable violations
against the configured limits ``ml.fairness.max_dp_difference`` / ``max_eo_difference``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ml.propensity import top_fraction_mask
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
        return out


def fairness_report(
    y_true: np.ndarray,
    score: np.ndarray,
    groups: pd.DataFrame,
    selection_rate: float = 0.1,
    min_group_positives: int = 10,
) -> FairnessReport:
    """Selection and true positive rates per group of every column of ``groups``.

    Selected = among the ceil(selection_rate * rows) highest scores; ties are broken by row
    order (the earlier row is selected), NaN scores are never selected. A missing group value
    is a group of its own.
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
    return FairnessReport(by_group=by_group, summary=summary)


def fairness_gate(
    summary: FairnessReport | pd.DataFrame, max_dp_difference: float, max_eo_difference: float
) -> list[str]:
    """Readable violations of the limits; an empty list means the model passes.

    An attribute whose equal-opportunity difference cannot be measured (fewer than two groups
    with enough positives) is not a violation.
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
            if not math.isnan(value) and value > limit:
                high = f"{row[f'{short}_max_rate']:.2f} for {row[f'{short}_max_group']}"
                low = f"{row[f'{short}_min_rate']:.2f} for {row[f'{short}_min_group']}"
                violations.append(
                    f"{label} difference by {attribute} is {value:.2f} > {limit:.2f} "
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
