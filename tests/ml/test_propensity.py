"""Propensity models on generated customers whose true probabilities are known.

The generator's log-odds are linear in most features plus an interaction, with informative
missing values and a categorical segment, so a good model gets close to the ROC-AUC of the true
probabilities (the ceiling) and a calibrated one predicts the observed rates. No Spark.
"""

from __future__ import annotations

import math
import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from ml.propensity import (
    TIE_BREAK,
    Calibrator,
    NotEnoughPositives,
    PropensityModel,
    _folds,
    bootstrap_resampler,
    evaluate,
    gap_interval,
    train_propensity,
)
from ml.settings import PropensityModelConfig
from pipelines.config import load_config
from pipelines.errors import ConfigError, InputError


def make_customers(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Features (with NaN and a categorical column), labels and the true P(y = 1)."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "balance": rng.normal(size=n),
            "tenure_years": rng.gamma(2.0, 2.0, size=n),
            "fees_7d": rng.poisson(0.8, size=n).astype(float),
            "app_sessions_30d": rng.normal(size=n),
            "product_views_7d": rng.normal(size=n),
            "failed_payments_7d": rng.poisson(0.6, size=n).astype(float),
            "card_utilisation": rng.uniform(0.0, 1.0, size=n),
            "noise_1": rng.normal(size=n),
            "noise_2": rng.normal(size=n),
            "segment": rng.choice(["mass", "affluent", "young"], size=n, p=[0.6, 0.2, 0.2]),
        }
    )
    no_card = rng.random(n) < 0.2  # no credit card: utilisation unknown
    X.loc[no_card, "card_utilisation"] = np.nan
    logit = (
        -1.6
        + 1.0 * X["balance"]
        + 0.12 * X["tenure_years"]
        - 0.5 * X["fees_7d"]
        + 0.8 * X["app_sessions_30d"] * X["product_views_7d"]  # the interaction
        + 0.4 * X["failed_payments_7d"]
        + np.where(no_card, -0.6, 1.2 * X["card_utilisation"].fillna(0.0))
        + X["segment"].map({"mass": 0.0, "affluent": 0.7, "young": -0.4})
    ).to_numpy()
    p_true = 1.0 / (1.0 + np.exp(-logit))
    y = rng.binomial(1, p_true)
    return X, y, p_true


@pytest.fixture(scope="module")
def customers():
    return make_customers(20_000, seed=11)


@pytest.fixture(scope="module")
def holdout():
    return make_customers(10_000, seed=12)


@pytest.fixture(scope="module")
def model(customers) -> PropensityModel:
    X, y, _ = customers
    return train_propensity(X, y, "mortgage", PropensityModelConfig(), categorical=["segment"])


def test_holdout_auc_is_within_003_of_the_true_probability_ceiling(model, holdout):
    X, y, p_true = holdout
    metrics = evaluate(y, model.predict_proba(X), p_true)
    print(f"holdout AUC {metrics['roc_auc']:.4f}, ceiling {metrics['ceiling_auc']:.4f}")
    assert metrics["auc_gap"] < 0.03


def test_calibrated_probabilities_match_the_observed_rate_in_every_decile(model, holdout):
    X, y, _ = holdout
    p = model.predict_proba(X)
    deciles = np.array_split(np.argsort(p, kind="stable"), 10)
    gaps = [abs(p[rows].mean() - y[rows].mean()) for rows in deciles]
    assert np.mean(gaps) < 0.025
    assert max(gaps) < 0.06
    assert abs(p.mean() - y.mean()) < 0.01


@pytest.mark.parametrize("method", ["isotonic", "sigmoid"])
def test_calibration_gives_a_better_brier_score_than_an_overconfident_booster(customers, holdout, method):
    X, y, _ = customers
    overfit = PropensityModelConfig(
        calibration=method,
        early_stopping_rounds=0,
        learning_rate=0.3,
        num_leaves=63,
        min_child_samples=5,
        feature_fraction=1.0,
        bagging_fraction=1.0,
        lambda_l2=0.0,
        n_estimators=120,
        alternatives=(),  # this overconfident shape only
    )
    model = train_propensity(X.iloc[:10_000], y[:10_000], "mortgage", overfit, categorical=["segment"])
    X_hold, y_hold, _ = holdout
    raw = 1.0 / (1.0 + np.exp(-model.margin(X_hold)))
    calibrated = model.predict_proba(X_hold)
    assert evaluate(y_hold, calibrated)["brier"] < evaluate(y_hold, raw)["brier"] - 0.005


def test_predict_proba_is_monotone_non_decreasing_in_the_margin(model, holdout):
    X, _, _ = holdout
    margin, p = model.margin(X), model.predict_proba(X)
    order = np.argsort(margin, kind="stable")
    assert np.all(np.diff(p[order]) >= 0)
    assert np.all((p >= 0) & (p <= 1))


def test_isotonic_calibrator_clips_margins_outside_the_fitted_range():
    rng = np.random.default_rng(0)
    margin = rng.normal(size=2000)
    y = rng.binomial(1, 1 / (1 + np.exp(-margin)))
    calibrator = Calibrator.fit("isotonic", margin, y)
    far = calibrator.predict(np.array([-1e6, margin.min(), margin.max(), 1e6]))
    assert far[0] == pytest.approx(calibrator.y[0], abs=TIE_BREAK)
    assert far[1] == pytest.approx(calibrator.y[0], abs=TIE_BREAK)
    assert far[2] == pytest.approx(calibrator.y[-1], abs=TIE_BREAK)
    assert far[3] == pytest.approx(calibrator.y[-1], abs=TIE_BREAK)
    grid = calibrator.predict(np.linspace(-10, 10, 1001))
    assert np.all(np.diff(grid) > 0)


def test_isotonic_calibration_keeps_the_boosters_order_so_the_auc_is_the_margins():
    """Isotonic steps alone tie whole blocks of customers: with few positives, most of them.

    Found on a generated bank: an investments model ranked at AUC 0.761 by its margin scored
    0.528 once calibrated, because 13 calibration positives made 11 distinct probabilities.
    """
    rng = np.random.default_rng(5)
    margin = rng.normal(size=4000)
    y = rng.binomial(1, 1 / (1 + np.exp(-(margin - 4.0))))  # rare: a few dozen positives
    calibrator = Calibrator.fit("isotonic", margin[:2000], y[:2000])
    steps = np.interp(margin[2000:], np.asarray(calibrator.x), np.asarray(calibrator.y))
    p = calibrator.predict(margin[2000:])
    assert len(np.unique(steps)) < 100  # the isotonic fit alone: a few dozen values for 2,000 rows
    assert len(np.unique(p)) == 2000
    assert roc_auc_score(y[2000:], p) == roc_auc_score(y[2000:], margin[2000:])
    assert np.abs(p - steps).max() <= TIE_BREAK


def test_rows_with_missing_values_and_unseen_categories_get_a_probability(model):
    rows = pd.DataFrame({name: [np.nan, np.nan] for name in model.feature_names})
    rows["segment"] = [None, "a segment never seen in training"]
    p = model.predict_proba(rows)
    assert np.all(np.isfinite(p)) and p[0] == p[1]  # both count as missing


def test_training_twice_with_the_same_seed_gives_identical_models(customers):
    X, y, _ = customers
    small = PropensityModelConfig(n_estimators=60)
    first = train_propensity(X.iloc[:5000], y[:5000], "loan", small, categorical=["segment"], seed=3)
    second = train_propensity(X.iloc[:5000], y[:5000], "loan", small, categorical=["segment"], seed=3)
    assert first.booster.model_to_string() == second.booster.model_to_string()
    assert first.calibrator == second.calibrator


def test_too_few_positives_raises_not_enough_positives_naming_target_counts_and_setting(customers):
    X, _, _ = customers
    y = np.zeros(1000, dtype=int)
    y[:12] = 1
    with pytest.raises(NotEnoughPositives) as caught:
        train_propensity(X.iloc[:1000], y, "churn", PropensityModelConfig(min_positives=30))
    message = str(caught.value)
    for part in ("'churn'", "12 positive", "1000", "30", "ml.propensity.min_positives"):
        assert part in message
    assert isinstance(caught.value, ValueError)


def test_save_and_load_round_trip_gives_identical_predictions_without_pickle(model, holdout, tmp_path):
    X, _, _ = holdout
    model.save(tmp_path / "mortgage")
    loaded = PropensityModel.load(tmp_path / "mortgage")
    files = sorted(p.name for p in (tmp_path / "mortgage").iterdir())
    assert files == ["booster.txt", "model.json"]
    for path in (tmp_path / "mortgage").iterdir():
        assert path.read_bytes()[:1] != pickle.PROTO  # the opcode every pickle starts with
    assert np.array_equal(loaded.predict_proba(X), model.predict_proba(X))
    assert np.array_equal(loaded.contributions(X.iloc[:500]), model.contributions(X.iloc[:500]))
    assert loaded.expected_value == model.expected_value


def test_contributions_add_up_to_the_margin(model, holdout):
    X, _, _ = holdout
    contributions = model.contributions(X.iloc[:1000])
    assert contributions.shape == (1000, len(model.feature_names))
    total = contributions.sum(axis=1) + model.expected_value
    assert np.allclose(total, model.margin(X.iloc[:1000]), atol=1e-9)


def test_a_missing_feature_column_is_named_in_the_error(model, holdout):
    X, _, _ = holdout
    with pytest.raises(InputError, match="failed_payments_7d"):
        model.predict_proba(X.drop(columns=["failed_payments_7d"]))


def test_evaluate_matches_a_hand_computed_example():
    y = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.3, 0.5, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    p_true = np.array([0.8, 0.7, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2])
    metrics = evaluate(y, p, p_true)
    # positive 0.9 beats all 8 negatives, positive 0.3 beats 7 of them: 15 of 16 pairs
    assert metrics["roc_auc"] == pytest.approx(15 / 16)
    # ranked: 0.9 (pos), 0.5 (neg), 0.3 (pos): precision 1 at recall 1/2, 2/3 at recall 1
    assert metrics["pr_auc"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert metrics["brier"] == pytest.approx((0.1**2 + 0.7**2 + 0.5**2 + 7 * 0.1**2) / 10)
    # top 10% = the single highest score, a positive: rate 1 over the base rate 0.2
    assert metrics["top_decile_lift"] == pytest.approx(5.0)
    assert (metrics["positives"], metrics["rows"]) == (2.0, 10.0)
    assert metrics["ceiling_auc"] == pytest.approx(1.0)
    assert metrics["auc_gap"] == pytest.approx(1.0 - 15 / 16)


def test_evaluate_gives_nan_auc_when_only_one_class_is_present():
    metrics = evaluate(np.zeros(5, dtype=int), np.linspace(0.1, 0.5, 5))
    assert math.isnan(metrics["roc_auc"]) and math.isnan(metrics["top_decile_lift"])
    assert metrics["brier"] == pytest.approx(np.mean(np.linspace(0.1, 0.5, 5) ** 2))


def test_gap_interval_covers_the_sampling_noise_of_a_small_holdout_and_shrinks_with_positives():
    """A model as good as the truth has gap 0 in expectation; the interval must say so."""
    rng = np.random.default_rng(8)

    def holdout(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p_true = 1 / (1 + np.exp(-(rng.normal(size=n) * 1.5 - 4.0)))
        y = rng.binomial(1, p_true)
        p_model = np.minimum(p_true * np.exp(rng.normal(scale=0.3, size=n)), 1.0)  # truth plus noise
        return y, p_model, p_true

    y, p, p_true = holdout(2_000)
    low, high = gap_interval(y, p, p_true)
    assert low < 0.0 < high or low <= evaluate(y, p, p_true)["auc_gap"] <= high
    small_width = high - low
    y, p, p_true = holdout(40_000)
    low, high = gap_interval(y, p, p_true)
    assert high - low < small_width / 2
    metrics = evaluate(y, p, p_true)
    assert metrics["auc_gap_low"] <= metrics["auc_gap"] <= metrics["auc_gap_high"]


def test_gap_interval_by_customer_counts_a_customer_seen_at_several_cut_offs_once():
    """Four copies of each customer's row are one customer's evidence, not four customers'."""
    rng = np.random.default_rng(11)
    n = 1_500
    p_true = 1 / (1 + np.exp(-(rng.normal(size=n) * 1.5 - 3.0)))
    y = rng.binomial(1, p_true)
    p = np.minimum(p_true * np.exp(rng.normal(scale=0.8, size=n)), 1.0)
    once_low, once_high = gap_interval(y, p, p_true)

    customers = np.repeat(np.arange(n), 4)  # the same customer at four cut-offs
    y4, p4, t4 = y[customers], p[customers], p_true[customers]
    rows_low, rows_high = gap_interval(y4, p4, t4)
    by_customer_low, by_customer_high = gap_interval(y4, p4, t4, clusters=customers)

    once, rows, by_customer = once_high - once_low, rows_high - rows_low, by_customer_high - by_customer_low
    assert rows < 0.7 * once  # rows as if independent: about half as wide, overconfident
    assert 0.8 * once < by_customer < 1.25 * once  # whole customers drawn: as wide as the customers warrant
    metrics = evaluate(y4, p4, t4, clusters=customers)
    assert (metrics["auc_gap_low"], metrics["auc_gap_high"]) == (by_customer_low, by_customer_high)


def test_resampling_by_customer_keeps_whole_customers_and_the_count_of_customers_with_a_positive():
    y = np.array([0, 1, 1, 0, 0, 0, 1, 0, 0])
    customers = np.array(["c", "a", "a", "b", "b", "d", "e", "e", "f"])  # positives: a (2 rows), e
    draw = bootstrap_resampler(y, customers, np.random.default_rng(0))
    per_customer = {"a": 2, "b": 2, "c": 1, "d": 1, "e": 2, "f": 1}
    for _ in range(50):
        sizes = pd.Series(customers[draw()]).value_counts()
        assert all(sizes[c] % per_customer[c] == 0 for c in sizes.index)  # every row of a drawn customer
        draws = {c: sizes.get(c, 0) // per_customer[c] for c in per_customer}
        assert draws["a"] + draws["e"] == 2  # the customers with a positive, drawn as often as they are
        assert draws["b"] + draws["c"] + draws["d"] + draws["f"] == 4


def test_folds_keep_every_customer_in_one_fold_and_positives_in_each(customers):
    _, y, _ = customers
    groups = np.arange(len(y)) // 4  # each customer at four cut-offs
    splits = _folds(y, groups, folds=5, seed=0)
    assert len(splits) == 5
    seen = np.zeros(len(y), dtype=int)
    for fit_rows, validate_rows in splits:
        assert not set(groups[fit_rows]) & set(groups[validate_rows])
        assert y[validate_rows].sum() > 0
        seen[validate_rows] += 1
    assert np.all(seen == 1)  # every row validated exactly once: the calibrator sees every row


def test_cross_validation_keeps_the_tree_shape_with_the_lowest_log_loss(customers):
    X, y, _ = customers
    timid = {"num_leaves": 2, "learning_rate": 0.001, "feature_fraction": 0.3}
    settings = PropensityModelConfig(n_estimators=80, alternatives=(timid,))
    model = train_propensity(X.iloc[:6000], y[:6000], "savings", settings, categorical=["segment"], seed=1)
    tried = model.info["shapes_tried"]
    assert len(tried) == 2 and tried[0] < tried[1]  # 80 trees at rate 0.001 barely move off the base rate
    assert model.info["shape"]["num_leaves"] == settings.num_leaves
    reversed_order = PropensityModelConfig(
        n_estimators=80, alternatives=({"num_leaves": 4, "learning_rate": 0.02},), **timid
    )
    model = train_propensity(
        X.iloc[:6000], y[:6000], "savings", reversed_order, categorical=["segment"], seed=1
    )
    assert model.info["shape"]["num_leaves"] == 4 and model.info["shape"]["learning_rate"] == 0.02


def test_settings_refuse_more_folds_than_positives_and_unknown_shape_keys():
    # the settings are the configuration's ml.propensity section: checked when it is loaded
    with pytest.raises(ConfigError, match="ml.propensity.folds"):
        load_config("local", overrides={"ml.propensity": {"folds": 40, "min_positives": 30}})
    with pytest.raises(ConfigError, match="num_leafs"):
        load_config("local", overrides={"ml.propensity": {"alternatives": [{"num_leafs": 3}]}})
