"""Reason codes and SHAP importance on a model of generated customers with known effects.

In the generator the score rises with ``balance`` and ``failed_payments_7d`` and falls with
``app_sessions_30d``; ``age`` and ``region`` matter too but are protected. No Spark. (Reason codes
per second are measured by bench/bench_ml.py at 100,000 customers, not here.)
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from ml.explain import global_importance, importance_plot, reason_codes
from ml.propensity import PropensityModel, train_propensity
from ml.settings import PropensityModelConfig

PROTECTED = {"age", "region"}
DESCRIPTIONS = {
    "balance": "current account balance",
    "failed_payments_7d": "{value} failed payments in the last 7 days",
    "app_sessions_30d": "{value} app sessions in the last 30 days",
    "card_utilisation": "credit card utilisation of {value:.0%}",
    "age": "age",
    "region": "region",
}


def make_customers(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "balance": rng.normal(size=n),
            "failed_payments_7d": rng.poisson(0.7, size=n).astype(float),
            "app_sessions_30d": rng.poisson(3.0, size=n).astype(float),
            "card_utilisation": rng.uniform(0.0, 1.0, size=n),
            "age": rng.integers(18, 80, size=n).astype(float),
            "region": rng.choice(["north", "south", "east", "west"], size=n),
            **{f"noise_{i}": rng.normal(size=n) for i in range(4)},
        }
    )
    X.loc[rng.random(n) < 0.15, "card_utilisation"] = np.nan
    logit = (
        -1.0
        + 1.2 * X["balance"]
        + 0.6 * X["failed_payments_7d"]
        - 0.35 * X["app_sessions_30d"]
        + 0.8 * X["card_utilisation"].fillna(0.5)
        + 0.02 * (X["age"] - 45)
        + X["region"].map({"north": 0.4, "south": 0.0, "east": -0.3, "west": 0.1})
    ).to_numpy()
    y = rng.binomial(1, 1.0 / (1.0 + np.exp(-logit)))
    return X, y


@pytest.fixture(scope="module")
def data():
    return make_customers(12_000, seed=5)


@pytest.fixture(scope="module")
def model(data) -> PropensityModel:
    X, y = data
    return train_propensity(X, y, "loan", PropensityModelConfig(), categorical=["region"])


@pytest.fixture(scope="module")
def sample(data) -> pd.DataFrame:
    X, _ = data
    return X.iloc[:1500]


@pytest.fixture(scope="module")
def codes(model, sample) -> pd.DataFrame:
    return reason_codes(model, sample, DESCRIPTIONS, PROTECTED)


def test_every_row_gets_exactly_top_k_reasons_when_the_model_has_enough_features(codes, sample):
    assert list(codes.columns) == [
        f"{kind}_{rank}" for kind in ("reason", "reason_feature", "reason_shap") for rank in range(1, 5)
    ]
    assert codes.index.equals(sample.index)
    for rank in range(1, 5):
        assert codes[f"reason_{rank}"].notna().all()
        assert codes[f"reason_feature_{rank}"].notna().all()


def test_reasons_are_the_largest_positive_contributions_then_the_most_negative(model, sample, codes):
    shap = codes[[f"reason_shap_{rank}" for rank in range(1, 5)]].to_numpy()
    allowed = [i for i, f in enumerate(model.feature_names) if f not in PROTECTED]
    contrib = model.contributions(sample)[:, allowed]
    positives = (contrib > 0).sum(axis=1)
    for row in range(len(shap)):
        up = np.sort(contrib[row][contrib[row] > 0])[::-1]
        down = np.sort(contrib[row][contrib[row] < 0])
        assert np.allclose(shap[row], np.concatenate([up, down])[:4])
    assert (positives < 4).any(), "the sample should include rows that need 'lower' reasons"


def test_the_words_say_raise_for_positive_and_lower_for_negative_contributions(codes):
    for rank in range(1, 5):
        text, shap = codes[f"reason_{rank}"], codes[f"reason_shap_{rank}"]
        assert text[shap > 0].str.contains("raise").all()
        assert text[shap < 0].str.contains("lower").all()


def test_a_reason_names_the_feature_value_in_plain_words(model):
    rows = pd.DataFrame(
        {
            "balance": [3.0, -3.0],
            "failed_payments_7d": [3.0, 0.0],
            "app_sessions_30d": [0.0, 12.0],
            "card_utilisation": [0.95, np.nan],
            "age": [40.0, 40.0],
            "region": ["south", "south"],
            **{f"noise_{i}": [0.0, 0.0] for i in range(4)},
        }
    )
    texts = set(reason_codes(model, rows, DESCRIPTIONS, PROTECTED).iloc[:, :4].to_numpy().ravel()) - {None}
    assert "current account balance: 3 (raises the score)" in texts
    assert "3 failed payments in the last 7 days raise the score" in texts
    assert "no app sessions in the last 30 days raise the score" in texts
    assert "credit card utilisation of 95% raises the score" in texts
    assert "12 app sessions in the last 30 days lower the score" in texts


def test_a_missing_value_is_worded_as_unknown(model, sample):
    row = sample.iloc[:1].assign(card_utilisation=np.nan)
    only_card = set(model.feature_names) - {"card_utilisation"}
    reason = reason_codes(model, row, DESCRIPTIONS, only_card, top_k=1)["reason_1"].iloc[0]
    assert reason in {
        "credit card utilisation: unknown (raises the score)",
        "credit card utilisation: unknown (lowers the score)",
    }


def test_lowering_the_top_reason_feature_lowers_the_score_when_its_effect_is_increasing(model, sample, codes):
    rows = sample[codes["reason_feature_1"] == "balance"]  # balance raises the score most
    assert len(rows) > 100
    lowered = rows.assign(balance=sample["balance"].quantile(0.05))
    change = model.predict_proba(lowered) - model.predict_proba(rows)
    assert (change < 0).mean() > 0.95


def test_raising_a_lower_reason_feature_raises_the_score_when_its_effect_is_increasing(model, sample, codes):
    low = np.zeros(len(sample), dtype=bool)
    for rank in range(1, 5):  # balance given as a reason that lowers the score
        low |= (codes[f"reason_feature_{rank}"] == "balance") & (codes[f"reason_shap_{rank}"] < 0)
    rows = sample[low]
    assert len(rows) > 50
    raised = rows.assign(balance=sample["balance"].quantile(0.95))
    change = model.predict_proba(raised) - model.predict_proba(rows)
    assert (change > 0).mean() > 0.95


def test_protected_features_never_appear_as_reasons_even_when_the_model_uses_them(model, sample, codes):
    importance = global_importance(model, sample)
    assert importance["age"] > 0 and importance["region"] > 0
    used = set(codes[[f"reason_feature_{rank}" for rank in range(1, 5)]].to_numpy().ravel())
    assert not used & PROTECTED
    assert not codes[[f"reason_{rank}" for rank in range(1, 5)]].stack().str.contains("age|region").any()


def test_with_fewer_allowed_features_than_top_k_the_remaining_reasons_are_none(model, sample):
    protected = set(model.feature_names) - {"balance", "failed_payments_7d"}
    codes = reason_codes(model, sample.iloc[:50], DESCRIPTIONS, protected, top_k=4)
    assert codes[["reason_1", "reason_2"]].notna().all().all()
    for rank in (3, 4):
        assert codes[f"reason_{rank}"].isna().all() and codes[f"reason_feature_{rank}"].isna().all()
        assert codes[f"reason_shap_{rank}"].isna().all()


def test_top_k_sets_the_number_of_reasons(model, sample):
    codes = reason_codes(model, sample.iloc[:20], DESCRIPTIONS, PROTECTED, top_k=2)
    assert [c for c in codes.columns if c.startswith("reason_shap_")] == ["reason_shap_1", "reason_shap_2"]


def test_global_importance_ranks_the_strongest_feature_first_and_noise_last(model, sample):
    importance = global_importance(model, sample)
    assert importance.index[0] == "balance"
    assert set(importance.index[-4:]) == {f"noise_{i}" for i in range(4)}
    assert importance.is_monotonic_decreasing


def test_importance_plot_returns_a_figure_and_leaves_no_pyplot_figure_open(model, sample, tmp_path):
    before = plt.get_fignums()
    figure = importance_plot(model, sample, DESCRIPTIONS, max_features=6)
    assert isinstance(figure, Figure)
    assert plt.get_fignums() == before
    figure.savefig(tmp_path / "importance.png")
    assert (tmp_path / "importance.png").stat().st_size > 1000
    labels = [t.get_text() for t in figure.axes[0].get_yticklabels()]
    assert "current account balance" in labels
