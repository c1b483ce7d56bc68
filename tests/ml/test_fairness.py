"""The fairness report and gate on small hand-made examples and generated groups. No Spark."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ml.fairness import FairnessReport, fairness_gate, fairness_report

AGE_BANDS = ["18-24", "25-39", "40-64", "65+"]
REGIONS = ["north", "south", "east", "west"]


def make_population(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Labels, a group-blind score and groups assigned independently of both."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=n)
    y = rng.binomial(1, 1.0 / (1.0 + np.exp(-(signal - 1.5))))
    score = signal + rng.normal(scale=0.5, size=n)
    groups = pd.DataFrame({"age_band": rng.choice(AGE_BANDS, size=n), "region": rng.choice(REGIONS, size=n)})
    return y, score, groups


def test_a_hand_computed_example_gives_the_selection_and_true_positive_rates():
    y = np.array([1, 0, 1, 0, 1, 0, 0, 1, 0, 0])
    score = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
    groups = pd.DataFrame({"region": ["a", "a", "a", "a", "a", "b", "b", "b", "b", "b"]})
    report = fairness_report(y, score, groups, selection_rate=0.3, min_group_positives=1)
    # selected: the 3 highest scores, rows 0, 1, 2, all in group a
    by_group = report.by_group.set_index("group")
    assert by_group.loc["a", "selected"] == 3 and by_group.loc["b", "selected"] == 0
    assert by_group.loc["a", "selection_rate"] == pytest.approx(3 / 5)
    assert by_group.loc["a", "true_positive_rate"] == pytest.approx(2 / 3)  # rows 0, 2 of positives 0, 2, 4
    assert by_group.loc["b", "true_positive_rate"] == 0.0  # its one positive (row 7) is not selected
    summary = report.summary.loc["region"]
    assert summary["demographic_parity_difference"] == pytest.approx(0.6)
    assert summary["equal_opportunity_difference"] == pytest.approx(2 / 3)


def test_ties_at_the_cut_are_broken_by_row_order():
    groups = pd.DataFrame({"region": ["a"] * 5 + ["b"] * 5})
    report = fairness_report(np.ones(10, dtype=int), np.full(10, 0.5), groups, selection_rate=0.3)
    by_group = report.by_group.set_index("group")
    assert by_group.loc["a", "selected"] == 3 and by_group.loc["b", "selected"] == 0


def test_a_group_without_positives_has_no_true_positive_rate_and_is_left_out_of_equal_opportunity():
    y = np.array([1] * 20 + [0] * 20 + [1] * 3 + [0] * 7)
    score = np.linspace(1.0, 0.0, len(y))
    groups = pd.DataFrame({"age_band": ["18-24"] * 10 + ["40-64"] * 10 + ["25-39"] * 20 + ["65+"] * 10})
    report = fairness_report(y, score, groups, selection_rate=0.2, min_group_positives=10)
    by_group = report.by_group.set_index("group")
    assert math.isnan(by_group.loc["25-39", "true_positive_rate"])
    summary = report.summary.loc["age_band"]
    assert summary["groups_with_enough_positives"] == 2  # 18-24 and 40-64; 65+ has only 3
    assert summary["equal_opportunity_difference"] == pytest.approx(1.0)  # 18-24 all selected, 40-64 none


def test_a_score_that_depends_on_age_band_fails_the_gate_naming_the_attribute_and_setting():
    y, score, groups = make_population(20_000, seed=1)
    biased = score + 1.5 * (groups["age_band"] == "18-24").to_numpy()
    report = fairness_report(y, biased, groups, selection_rate=0.1)
    assert report.summary.loc["age_band", "demographic_parity_difference"] > 0.2
    violations = fairness_gate(report, max_dp_difference=0.05, max_eo_difference=0.1)
    dp = [v for v in violations if v.startswith("demographic parity difference by age_band")]
    assert len(dp) == 1
    assert "> 0.05 (ml.fairness.max_dp_difference)" in dp[0] and "18-24" in dp[0]
    assert not any("by region" in v for v in violations)


def test_a_group_blind_score_on_identically_distributed_groups_passes_the_gate():
    y, score, groups = make_population(20_000, seed=2)
    report = fairness_report(y, score, groups, selection_rate=0.1)
    assert fairness_gate(report, max_dp_difference=0.05, max_eo_difference=0.1) == []
    assert fairness_gate(report.summary, max_dp_difference=0.05, max_eo_difference=0.1) == []


def test_metrics_are_flat_per_attribute_for_mlflow():
    y, score, groups = make_population(5_000, seed=3)
    report = fairness_report(y, score, groups)
    metrics = report.metrics()
    assert set(metrics) == {"dp_diff_age_band", "eo_diff_age_band", "dp_diff_region", "eo_diff_region"}
    assert metrics["dp_diff_region"] == report.summary.loc["region", "demographic_parity_difference"]
    assert isinstance(report, FairnessReport)
    assert len(report.by_group) == len(AGE_BANDS) + len(REGIONS)


def _rare_positives(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """A holdout like a bank's: 3% positives, six age bands, about a dozen positives in each."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=n)
    y = rng.binomial(1, 1.0 / (1.0 + np.exp(-(1.5 * signal - 4.5))))
    score = signal + rng.normal(scale=0.7, size=n)  # group-blind
    bands = ["18-24", "25-34", "35-44", "45-54", "55-64", "65+"]
    return y, score, pd.DataFrame({"age_band": rng.choice(bands, size=n)})


def test_a_group_blind_score_on_small_groups_is_not_refused_for_its_noise():
    """Point estimates of max - min over six small groups "fail" half of such holdouts by chance."""
    point_failures = interval_failures = 0
    for seed in range(10):
        y, score, groups = _rare_positives(3000, seed)
        point = fairness_report(y, score, groups, 0.1, min_group_positives=10)
        with_interval = fairness_report(y, score, groups, 0.1, min_group_positives=10, draws=300, seed=seed)
        point_failures += bool(fairness_gate(point, max_dp_difference=0.25, max_eo_difference=0.35))
        interval_failures += bool(
            fairness_gate(with_interval, max_dp_difference=0.25, max_eo_difference=0.35)
        )
        summary = with_interval.summary.loc["age_band"]
        assert summary["eo_low"] <= summary["equal_opportunity_difference"] <= summary["eo_high"]
    assert point_failures >= 3
    assert interval_failures == 0


def test_a_biased_score_is_still_refused_when_intervals_are_used():
    y, score, groups = make_population(20_000, seed=1)
    biased = score + 1.5 * (groups["age_band"] == "18-24").to_numpy()
    report = fairness_report(y, biased, groups, selection_rate=0.1, draws=200)
    violations = fairness_gate(report, max_dp_difference=0.05, max_eo_difference=0.1)
    dp = [v for v in violations if v.startswith("demographic parity difference by age_band")]
    assert len(dp) == 1 and "95% interval" in dp[0]
    assert report.summary.loc["age_band", "dp_low"] > 0.05
    assert report.metrics()["dp_diff_low_age_band"] == pytest.approx(report.summary.loc["age_band", "dp_low"])
