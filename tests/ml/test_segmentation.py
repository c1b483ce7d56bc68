"""ml.segmentation on small synthetic customers: five well-separated groups, no Spark.

The groups are Gaussian blobs in 8 features; two features are heavy-tailed money amounts (the
blobs live in their log) and 2% of all values are missing, as in a real feature table.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml.segmentation import (
    SegmentationError,
    SegmentationModel,
    agreement,
    fit_segmentation,
    stability,
)
from ml.settings import SegmentationModelConfig

FEATURES = [
    "savings_balance",
    "card_spend_30d",
    "app_sessions_30d",
    "branch_visits_90d",
    "products_held",
    "tenure_years",
    "contact_centre_calls_90d",
    "offers_accepted_12m",
]
DESCRIPTIONS = {
    "savings_balance": "savings balance",
    "card_spend_30d": "card spend in the last 30 days",
    "app_sessions_30d": "app sessions in the last 30 days",
    "branch_visits_90d": "branch visits in the last 90 days",
    "products_held": "products held",
    "tenure_years": "years as a customer",
    "contact_centre_calls_90d": "contact centre calls in the last 90 days",
    "offers_accepted_12m": "offers accepted in the last 12 months",
}
MONEY = ("savings_balance", "card_spend_30d")
# What these small groups were tuned with: HDBSCAN's own min_samples (= min_cluster_size), PCA
# keeping 90% of the variance of the 8 features, and a fixed smallest segment.
TUNED = {"min_cluster_size": 30, "min_samples": None, "pca_components": 0.9, "min_cluster_share": 0.0}
SETTINGS = SegmentationModelConfig(**TUNED)


def make_customers(per_group: int = 150, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Five groups of customers with known labels; money columns heavy-tailed; 2% NaN."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-6, 6, size=(5, len(FEATURES)))
    values = np.vstack([rng.normal(centre, 1.0, size=(per_group, len(FEATURES))) for centre in centres])
    truth = np.repeat(np.arange(5), per_group)
    customers = pd.DataFrame(values, columns=FEATURES)
    for name in MONEY:  # the blob is in log space: amounts from cents to hundreds of thousands
        customers[name] = np.sign(customers[name]) * np.expm1(customers[name].abs()) * 100
    customers = customers.mask(rng.random(customers.shape) < 0.02)
    return customers, truth


def with_uniform_noise(customers: pd.DataFrame, rows: int = 100, seed: int = 1) -> pd.DataFrame:
    """The customers plus ``rows`` customers spread uniformly over the same ranges (fit no group)."""
    rng = np.random.default_rng(seed)
    low, high = customers.quantile(0.01), customers.quantile(0.99)
    noise = pd.DataFrame(rng.uniform(low, high, size=(rows, len(FEATURES))), columns=FEATURES)
    return pd.concat([customers, noise], ignore_index=True)


@pytest.fixture(scope="module")
def customers() -> tuple[pd.DataFrame, np.ndarray]:
    return make_customers()


@pytest.fixture(scope="module")
def fitted(customers) -> tuple[SegmentationModel, np.ndarray]:
    X, _truth = customers
    return fit_segmentation(X, DESCRIPTIONS, SETTINGS, seed=0, log_features=MONEY)


def test_segments_recover_the_known_groups(customers, fitted):
    _X, truth = customers
    _model, labels = fitted
    scores = agreement(labels, truth)
    assert scores["ari"] >= 0.9, scores
    assert scores["nmi"] >= 0.9, scores


def test_nearest_noise_leaves_every_customer_in_a_segment(customers):
    X = with_uniform_noise(customers[0])
    settings = SegmentationModelConfig(**TUNED, noise="nearest")
    model, labels = fit_segmentation(X, DESCRIPTIONS, settings, log_features=MONEY)
    assert (labels >= 0).all()
    assert -1 not in model.segment_names


def test_unsegmented_noise_keeps_noise_customers_as_minus_one(customers):
    X = with_uniform_noise(customers[0])
    settings = SegmentationModelConfig(**TUNED, noise="unsegmented")
    model, labels = fit_segmentation(X, DESCRIPTIONS, settings, log_features=MONEY)
    assert (labels[-100:] == -1).sum() >= 50  # most of the uniform customers fit no group
    assert (labels[:-100] == -1).mean() < 0.1  # and few of the grouped ones are left out
    assert model.segment_names[-1] == "unsegmented"
    assert model.profiles.set_index("segment_id").loc[-1, "name"] == "unsegmented"


def test_segment_names_are_unique_and_use_feature_descriptions(fitted):
    model, labels = fitted
    names = list(model.segment_names.values())
    assert sorted(model.segment_names) == sorted(set(labels.tolist()))
    assert len(set(names)) == len(names)
    for name in names:
        assert any(words in name.lower() for words in DESCRIPTIONS.values()), name
        assert name.split()[0] in ("High", "Low"), name


def test_profiles_have_one_row_per_segment_with_sizes_and_defining_features(customers, fitted):
    X, _truth = customers
    model, labels = fitted
    profiles = model.profiles.set_index("segment_id")
    assert sorted(profiles.index) == sorted(set(labels.tolist()))
    assert profiles["size"].sum() == len(X)
    assert profiles["share"].sum() == pytest.approx(1.0)
    assert set(profiles["name"]) == set(model.segment_names.values())
    assert all(text.startswith(("high ", "low ")) for text in profiles["defining_features"])
    assert {f"median_{name}" for name in FEATURES} <= set(profiles.columns)


def test_defining_feature_direction_matches_the_segment_medians(customers, fitted):
    X, _truth = customers
    model, _labels = fitted
    description_to_feature = {words: name for name, words in DESCRIPTIONS.items()}
    for row in model.profiles.itertuples():
        direction, words = row.defining_features.split(", ")[0].split(" ", 1)
        feature = description_to_feature[words]
        above = getattr(row, f"median_{feature}") > X[feature].median()
        assert above == (direction == "high"), (row.name, feature)


def test_predict_on_training_customers_agrees_with_fitted_labels(customers, fitted):
    X, _truth = customers
    model, labels = fitted
    assert (model.predict(X) == labels).mean() >= 0.95
    assert model.surrogate_accuracy >= 0.9


def test_saved_model_loads_and_predicts_identically_without_pickle(customers, fitted, tmp_path: Path):
    X, _truth = customers
    model, _labels = fitted
    model.save(tmp_path / "segmentation")
    loaded = SegmentationModel.load(tmp_path / "segmentation")
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert loaded.segment_names == model.segment_names
    assert loaded.surrogate_accuracy == model.surrogate_accuracy
    pd.testing.assert_frame_equal(loaded.profiles, model.profiles)
    for file in (tmp_path / "segmentation").rglob("*"):
        assert file.suffix not in (".pkl", ".pickle", ".joblib"), file
        assert not file.read_bytes().startswith(b"\x80"), f"{file} looks like a pickle"


def test_a_model_saved_with_its_fit_inside_the_settings_still_loads(customers, fitted, tmp_path: Path):
    # models registered before the settings were the ml.segmentation section kept the smallest
    # segment and the logged columns among the settings
    X, _truth = customers
    model, _labels = fitted
    model.save(tmp_path / "segmentation")
    path = tmp_path / "segmentation" / "segmentation.json"
    document = json.loads(path.read_text())
    document["settings"]["log_features"] = document.pop("log_features")
    document["settings"]["min_cluster_size"] = document.pop("min_cluster_size")
    del document["settings"]["min_cluster_share"], document["settings"]["features"]
    path.write_text(json.dumps(document))
    loaded = SegmentationModel.load(tmp_path / "segmentation")
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert loaded.log_features == MONEY and loaded.min_cluster_size == 30


def test_smallest_segment_is_min_cluster_share_of_the_customers_fitted_when_larger():
    settings = SegmentationModelConfig(min_cluster_size=20, min_cluster_share=0.01, max_fit_rows=20000)
    assert settings.min_cluster_size_for(1000) == 20
    assert settings.min_cluster_size_for(5000) == 50
    assert settings.min_cluster_size_for(100_000) == 200  # HDBSCAN sees max_fit_rows of them


def test_too_few_customers_for_the_share_raises_naming_min_cluster_share(customers):
    X, _truth = customers
    settings = SegmentationModelConfig(**{**TUNED, "min_cluster_share": 0.6})
    with pytest.raises(
        SegmentationError, match=r"450 customers need 900.*ml\.segmentation\.min_cluster_share"
    ):
        fit_segmentation(X, DESCRIPTIONS, settings, log_features=MONEY)


def test_subsampled_fit_labels_the_rest_with_the_surrogate(customers):
    X, truth = customers
    settings = SegmentationModelConfig(**TUNED, max_fit_rows=400)
    _model, labels = fit_segmentation(X, DESCRIPTIONS, settings, seed=1, log_features=MONEY)
    assert len(labels) == len(X)
    assert agreement(labels, truth)["ari"] >= 0.9


def test_stability_on_well_separated_groups_is_high(customers):
    X, _truth = customers
    assert stability(X, SETTINGS, log_features=MONEY) >= 0.9


def test_agreement_ignores_how_segments_are_numbered():
    truth = np.array([0, 0, 1, 1, 2, 2])
    assert agreement(np.array([5, 5, 3, 3, 9, 9]), truth) == {"ari": 1.0, "nmi": 1.0}


def test_too_few_customers_raises_naming_min_cluster_size(customers):
    X, _truth = customers
    with pytest.raises(SegmentationError, match=r"ml\.segmentation\.min_cluster_size"):
        fit_segmentation(X.head(50), DESCRIPTIONS, SETTINGS, log_features=MONEY)


def test_customers_that_form_no_groups_raise_naming_min_cluster_size():
    rng = np.random.default_rng(3)
    uniform = pd.DataFrame(rng.uniform(size=(300, 4)), columns=FEATURES[:4])
    with pytest.raises(SegmentationError, match=r"found no segment.*ml\.segmentation\.min_cluster_size"):
        fit_segmentation(uniform, DESCRIPTIONS, SETTINGS)


def test_all_missing_column_raises_naming_the_column(customers):
    X = customers[0].assign(products_held=np.nan)
    with pytest.raises(SegmentationError, match="products_held"):
        fit_segmentation(X, DESCRIPTIONS, SETTINGS, log_features=MONEY)
