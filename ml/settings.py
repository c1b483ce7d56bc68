"""The models' settings: the ``ml`` section of ``conf/base.yml``, with its one set of defaults.

``pipelines.config.Config`` composes :class:`MlConfig` as ``cfg.ml``; the model code takes these
sections as they are (``train_propensity(..., cfg.ml.propensity)``,
``fit_segmentation(..., cfg.ml.segmentation)``), so a setting is named, defaulted and checked
here only. Loaded from YAML, a bad value is a ConfigError naming the file and the dotted key
(``conf/base.yml: ml.propensity.folds: ...``); built in code (tests, benchmarks, notebooks), it is
pydantic's ValidationError naming the field.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from pipelines.config_section import ConfigSection
from pipelines.contracts import ScoredProduct

PropensityTarget = Literal[ScoredProduct, "churn"]  # a model per scored product, and churn
PROPENSITY_TARGETS: tuple[PropensityTarget, ...] = get_args(PropensityTarget)
Calibration = Literal["isotonic", "sigmoid"]
NoiseMode = Literal["nearest", "unsegmented"]


class TrainingConfig(ConfigSection):
    """How point-in-time training sets are cut: features as of T, labels from (T, T + horizon]."""

    horizon_days: int = Field(14, ge=1)
    # Cut-offs per training set, the latest one horizon_days before the data ends. Openings are
    # rare: cut-offs a few days apart see each customer in several states (before, during and
    # after a signal), which gave the models more to learn from than one cut-off a week.
    cutoffs: int = Field(8, ge=1)
    cutoff_step_days: int = Field(3, ge=1)
    min_history_days: int = Field(14, ge=0)  # no cut-off earlier than this after the data starts
    holdout_fraction: float = Field(
        0.25, gt=0, lt=1
    )  # customers (all their cut-offs) kept out for evaluation
    seed: int = 0  # the holdout, the models' folds and boosters, and the segmentation's subsample


class TreeShape(ConfigSection):
    """One alternative tree shape for the propensity models: overrides of :class:`PropensityModelConfig`'s."""

    num_leaves: int | None = Field(None, ge=2)
    learning_rate: float | None = Field(None, gt=0)
    min_child_samples: int | None = Field(None, ge=1)
    feature_fraction: float | None = Field(None, gt=0, le=1)
    bagging_fraction: float | None = Field(None, gt=0, le=1)
    lambda_l2: float | None = Field(None, ge=0)

    def overrides(self) -> dict[str, float | int]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


SHAPE_FIELDS: tuple[str, ...] = tuple(TreeShape.model_fields)


class PropensityModelConfig(ConfigSection):
    """LightGBM settings shared by every propensity and churn model (ml.propensity)."""

    targets: list[PropensityTarget] = Field(default_factory=lambda: list(PROPENSITY_TARGETS))
    # Small, strongly regularised trees: openings are rare, and a bank's training set may hold a
    # few dozen positives. The number of trees is chosen by cross-validation (at most n_estimators).
    num_leaves: int = Field(4, ge=2)
    learning_rate: float = Field(0.02, gt=0)
    n_estimators: int = Field(1000, ge=1)
    min_child_samples: int = Field(30, ge=1)
    feature_fraction: float = Field(0.3, gt=0, le=1)  # share of the features each tree may split on
    bagging_fraction: float = Field(0.7, gt=0, le=1)  # share of the rows each tree is grown on (1: all)
    lambda_l2: float = Field(20.0, ge=0)
    # Other tree shapes (overrides of the six settings above) that cross-validation may choose: it
    # keeps the shape with the lowest log-loss. Small regularised trees win when positives are
    # few; this larger shape wins when there are thousands of them.
    alternatives: list[TreeShape] = Field(
        default_factory=lambda: [
            TreeShape(
                num_leaves=15, learning_rate=0.05, min_child_samples=20, feature_fraction=0.8, lambda_l2=1.0
            )
        ]
    )
    early_stopping_rounds: int = Field(50, ge=0)  # 0: no early stopping, all n_estimators trees kept
    calibration: Calibration = "isotonic"
    # what customers said (intents and sentiment read by the text model: ml.features.TEXT_FEATURES);
    # false trains without them, to measure what they add (bench/bench_ml.py prints both)
    text_features: bool = True
    min_positives: int = Field(30, ge=1)  # fewer in the training set: the model is not trained
    folds: int = Field(5, ge=2)  # cross-validation folds (by customer): trees and calibration
    # The ceiling target (AUC within 0.03 of the truth) applies from this many customers with a
    # positive in the training set: generated banks close the gap about there
    # (bench/bench_ml_ceiling.py). Fewer, and a clear miss is reported as "missed: few positives".
    enough_positive_customers: int = Field(250, ge=1)
    num_threads: int = Field(2, ge=1)

    @field_validator("folds")
    @classmethod
    def _every_fold_holds_positives(cls, folds: int, info: ValidationInfo) -> int:
        min_positives = info.data.get("min_positives")  # absent when it failed its own check
        if min_positives is not None and folds > min_positives:
            raise PydanticCustomError(
                "folds_over_positives",
                "expected at most min_positives ({min_positives}) folds, so that every fold holds positives",
                {"min_positives": min_positives},
            )
        return folds


class SegmentationModelConfig(ConfigSection):
    """HDBSCAN segmentation (ml.segmentation)."""

    # The smallest segment HDBSCAN may call one: the larger of min_cluster_size and
    # min_cluster_share of the customers it fits (at most max_fit_rows); see min_cluster_size_for.
    min_cluster_size: int = Field(20, ge=2)
    min_cluster_share: float = Field(0.013, ge=0, lt=1)
    # null: equal to the smallest segment; lower: fewer customers end up as noise
    min_samples: int | None = Field(5, ge=1)
    # Variance kept (float) or components (int), after scaling; null: no PCA. A share of the variance
    # kept 24 components of the ~60 features, mostly noise, and HDBSCAN split or merged personas
    # (ARI 0.77 on a 6,000-customer bank, 0.73 +- 0.03 on 1,200-customer samples, 0.0 at some
    # cut-offs); 5 to 9 components gave 0.91-0.93 with six segments and stabler segments across
    # seeds. Chosen on generated banks against their personas: re-check on a bank's own data
    # (stability ARI).
    pca_components: float | int | None = 7
    noise: NoiseMode = "nearest"  # noise customers: the segment of their nearest neighbours, or -1
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])  # the subsamples stability compares
    max_fit_rows: int = Field(20000, ge=100)  # HDBSCAN is ~O(n^2): it fits a subsample of this many
    features: list[str] | None = None  # None: every non-protected feature

    @field_validator("pca_components")
    @classmethod
    def _share_or_count(cls, value: float | int | None) -> float | int | None:
        if value is None or (isinstance(value, float) and 0.0 < value < 1.0):
            return value
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
        raise PydanticCustomError(
            "pca_components",
            "expected a share of the variance in (0, 1), a number of components >= 1, or null",
        )

    @field_validator("max_fit_rows")
    @classmethod
    def _room_for_two_segments(cls, rows: int, info: ValidationInfo) -> int:
        smallest = info.data.get("min_cluster_size")
        if smallest is not None and rows < 2 * smallest:
            raise PydanticCustomError(
                "max_fit_rows_too_small",
                "expected at least twice min_cluster_size ({smallest}), room for two segments",
                {"smallest": smallest},
            )
        return rows

    def min_cluster_size_for(self, customers: int) -> int:
        """The smallest segment when ``customers`` customers are segmented (HDBSCAN sees at most
        ``max_fit_rows`` of them): a fixed size alone splits a big bank into slivers."""
        return max(self.min_cluster_size, round(self.min_cluster_share * min(customers, self.max_fit_rows)))


class FairnessConfig(ConfigSection):
    """The promotion gate: a model over either limit is not registered as champion."""

    attributes: list[str] = Field(default_factory=lambda: ["age_band", "region"])
    selection_rate: float = Field(0.1, gt=0, le=1)  # "selected" = top share by score
    max_dp_difference: float = Field(0.25, ge=0, le=1)  # demographic parity difference
    max_eo_difference: float = Field(0.35, ge=0, le=1)  # equal opportunity difference
    min_group_positives: int = Field(10, ge=1)
    # bootstrap draws for each difference's 95% interval: a model is refused when the interval's
    # low end is above the limit (0: the point estimates decide, however few the positives)
    bootstrap_draws: int = Field(300, ge=0)


NgramRange = tuple[int, int]


class TextModelConfig(ConfigSection):
    """The intent and sentiment model of what customers say (ml.text; ml/text.py).

    The intent classifier is TF-IDF over word and character n-grams with a linear SVM, its
    decision scores turned into a confidence by a softmax whose temperature is fitted on
    out-of-fold scores (bench/bench_text.py compares it with the alternatives).
    """

    # The top intent is reported only when its confidence reaches this; below, the text is
    # labelled unrecognised_label (kept, never dropped). 0.4 recognised 96.9% of BANKING77's
    # held-out queries (8.8% of them wrong, against 10.7% of all) and refused 85% of
    # bench/bench_text.py's off-topic and gibberish texts; 0.5: 94.8%, 7.8% and 90%.
    min_confidence: float = Field(0.4, ge=0, le=1)
    unrecognised_label: str = Field("unrecognised", min_length=1)
    word_ngrams: NgramRange = (1, 2)
    char_ngrams: NgramRange = (2, 5)  # within word boundaries (char_wb): robust to typos and shorthand
    min_df: int = Field(2, ge=1)  # an n-gram seen in fewer training texts is not a feature
    svm_c: float = Field(0.5, gt=0)  # the linear SVM's C (inverse regularisation)
    calibration_folds: int = Field(3, ge=2)  # out-of-fold scores the confidence's temperature is fitted on

    @field_validator("word_ngrams", "char_ngrams")
    @classmethod
    def _ngram_range(cls, value: NgramRange) -> NgramRange:
        low, high = value
        if not 1 <= low <= high:
            raise PydanticCustomError("ngram_range", "expected [low, high] with 1 <= low <= high")
        return value

    @field_validator("unrecognised_label")
    @classmethod
    def _not_an_intent(cls, label: str) -> str:
        from pipelines.sources import banking77

        if label in banking77.intents():
            raise PydanticCustomError(
                "label_is_an_intent",
                "expected a label that is not one of the intents ({label})",
                {"label": label},
            )
        return label


class MlConfig(ConfigSection):
    """Models: tracking, training sets, propensity, segmentation, text, explanations and fairness."""

    tracking_uri: str | None = None  # None: a sqlite store under paths.mlflow; a server URI for teams
    # registered models: <prefix>_propensity_<target>, <prefix>_segmentation, <prefix>_text_intent
    model_prefix: str = "journeylake"
    champion_metric: Literal["roc_auc", "pr_auc"] = "roc_auc"
    reason_codes: int = Field(4, ge=1, le=10)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    propensity: PropensityModelConfig = Field(default_factory=PropensityModelConfig)
    segmentation: SegmentationModelConfig = Field(default_factory=SegmentationModelConfig)
    text: TextModelConfig = Field(default_factory=TextModelConfig)
    fairness: FairnessConfig = Field(default_factory=FairnessConfig)
