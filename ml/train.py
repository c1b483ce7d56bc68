"""``journeylake train``: segmentation and propensity models, measured, explained, gated, registered.

For every target in ``ml.propensity.targets`` (a product, or ``churn``):
1. the point-in-time training set (``ml.training_set``), rows where the target is defined;
2. LightGBM, trees chosen by cross-validation by customer, calibrated out of fold;
3. holdout metrics, next to the **ceiling** (the AUC of the simulator's true probabilities on
   the same rows) when a truth folder is given;
4. SHAP global importance (a plot and a table) logged with the run;
5. the fairness gate (``ml.fairness``): a difference whose 95% interval lies over the limit
   keeps the model out of the registry (with the truth, the true probabilities' own
   differences are logged beside the model's);
6. registration, and ``@champion`` only when it beats the current champion on this holdout.

Segmentation is fitted on the latest cut-off (one row per customer) and compared with the
hidden personas when the truth is known. A target with too few positives is skipped with a
message that says how many it had; nothing is registered for it.
"""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient
from pyspark.sql import SparkSession
from sklearn.metrics import roc_auc_score

from ml import registry
from ml.features import DESCRIPTIONS, FEATURE_NAMES, MONEY_FEATURES, PROTECTED, TEXT_FEATURES
from ml.training_set import TrainingSet, build_training_set, eligible, label_column
from pipelines.config import Config
from pipelines.tables import Tables

DEFAULT_FAIRNESS_NOTE = "fairness measured on the holdout; selected = top share by score"


@dataclass
class ModelReport:
    """What one trained model achieved and what happened to it in the registry."""

    family: str
    target: str
    rows: int = 0
    positives: int = 0
    positive_customers: int = 0  # distinct customers among the training positives (rows repeat them)
    metrics: dict[str, float] = field(default_factory=dict)
    fairness: dict[str, float] = field(default_factory=dict)
    registered: str = ""  # version, empty if not registered
    champion: bool = False
    outcome: str = ""  # promotion decision or why it was skipped
    seconds: float = 0.0


def segmentation_features(cfg: Config) -> list[str]:
    chosen = cfg.ml.segmentation.features
    return list(chosen) if chosen else [f for f in FEATURE_NAMES if f not in PROTECTED]


def propensity_features(cfg: Config) -> list[str]:
    """The propensity and churn models' inputs: every feature, or all but what customers said
    (``ml.propensity.text_features: false``)."""
    if cfg.ml.propensity.text_features:
        return list(FEATURE_NAMES)
    return [f for f in FEATURE_NAMES if f not in TEXT_FEATURES]


def log_scaled_features(columns: list[str]) -> tuple[str, ...]:
    """The money amounts among the segmentation's ``columns``: their heavy tails are logged."""
    return tuple(f for f in MONEY_FEATURES if f in columns)


def ceiling_column(target: str) -> str:
    return "p_churned" if target == "churn" else f"p_opened_{target}"


def with_truth(ts: TrainingSet, truth_dir: Path | None) -> pd.DataFrame:
    from ml import truth

    if not truth.has_truth(truth_dir):
        return ts.frame
    probabilities = truth.true_probabilities(truth_dir, ts.cutoffs, ts.horizon_days)
    return ts.frame.merge(probabilities, on=["customer_number", "as_of_date"], how="left")


def _log_figure(figure: Any, name: str) -> None:
    import matplotlib.pyplot as plt

    mlflow.log_figure(figure, name)
    plt.close(figure)


def train_propensity_target(
    cfg: Config, client: MlflowClient, frame: pd.DataFrame, target: str, truth_known: bool
) -> ModelReport:
    from ml.explain import global_importance, importance_plot
    from ml.fairness import fairness_gate, fairness_report
    from ml.propensity import NotEnoughPositives, evaluate, train_propensity

    started = time.perf_counter()
    report = ModelReport("propensity", target)
    label = label_column(target)
    rows = frame[eligible(frame, target) & frame["label_complete"].fillna(False).astype(bool)]
    train, hold = rows[~rows["holdout"]], rows[rows["holdout"]]
    y_train = train[label].to_numpy(dtype=int)
    y_hold = hold[label].to_numpy(dtype=int)
    report.rows, report.positives = len(rows), int(rows[label].sum())
    report.positive_customers = int(train.loc[train[label] == 1, "customer_number"].nunique())
    try:
        model = train_propensity(
            train[propensity_features(cfg)],
            y_train,
            target,
            cfg.ml.propensity,
            groups=train["customer_number"],
            seed=cfg.ml.training.seed,
        )
    except NotEnoughPositives as exc:
        report.outcome = f"skipped: {exc}"
        return report
    if y_hold.sum() == 0 or y_hold.sum() == len(y_hold):
        report.outcome = f"skipped: the holdout has {int(y_hold.sum())} positives of {len(y_hold)} rows"
        return report
    x_hold = hold[propensity_features(cfg)]
    p_hold = model.predict_proba(x_hold)
    ceiling = hold[ceiling_column(target)].to_numpy() if truth_known else None
    if ceiling is not None and np.isnan(ceiling).any():
        ceiling = None
    report.metrics = {
        k: float(v) for k, v in evaluate(y_hold, p_hold, ceiling, clusters=hold["customer_number"]).items()
    }
    fairness = cfg.ml.fairness
    groups = hold[list(fairness.attributes)].reset_index(drop=True)
    fair = fairness_report(
        y_hold,
        p_hold,
        groups,
        fairness.selection_rate,
        fairness.min_group_positives,
        draws=fairness.bootstrap_draws,
        seed=cfg.ml.training.seed,
        clusters=hold["customer_number"],
    )
    report.fairness = fair.metrics()
    violations = fairness_gate(fair, fairness.max_dp_difference, fairness.max_eo_difference)
    truth_fairness: dict[str, float] = {}
    if ceiling is not None:
        # what the simulator's true probabilities show on the same rows: how much of a difference
        # is the population's own, which no model that ranks well can remove
        truth_fairness = {
            f"truth_{k}": v
            for k, v in fairness_report(
                y_hold, ceiling, groups, fairness.selection_rate, fairness.min_group_positives
            )
            .metrics()
            .items()
        }

    registry.experiment(cfg, "propensity")
    with mlflow.start_run(run_name=f"propensity_{target}"):
        mlflow.set_tags({"target": target, "label": label, "holdout": "customers by hash"})
        mlflow.log_params(
            {
                **{f"lgbm_{k}": v for k, v in cfg.ml.propensity.model_dump(exclude={"targets"}).items()},
                "lgbm_seed": cfg.ml.training.seed,
                "horizon_days": cfg.ml.training.horizon_days,
                "cutoffs": ",".join(str(d) for d in sorted(frame["as_of_date"].unique())),
                "features": len(FEATURE_NAMES),
                "train_rows": len(train),
                "train_positives": int(y_train.sum()),
                "train_positive_customers": report.positive_customers,
            }
        )
        mlflow.log_metrics({**report.metrics, **report.fairness, **truth_fairness})
        importance = global_importance(model, x_hold)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "global_importance.csv"
            importance.rename("mean_abs_shap").to_csv(path, index_label="feature")
            mlflow.log_artifact(str(path))
        _log_figure(importance_plot(model, x_hold, DESCRIPTIONS), "shap_importance.png")
        if violations:
            mlflow.set_tag("fairness_gate", "failed: " + "; ".join(violations))
        uri = registry.log_model(model, "propensity", x_hold)
        metric = cfg.ml.champion_metric

        def champion_score(champion: str) -> float:
            try:
                old, _ = registry.load_champion("propensity", champion.split("/")[1].split("@")[0])
                p_old = old.predict_proba(hold[old.feature_names])
            except (KeyError, ValueError):
                return float("-inf")  # an older feature set: the new model replaces it
            if metric == "pr_auc":
                from sklearn.metrics import average_precision_score

                return float(average_precision_score(y_hold, p_old))
            return float(roc_auc_score(y_hold, p_old))

        outcome = registry.register(
            client,
            registry.model_name(cfg, "propensity", target),
            uri,
            report.metrics[metric],
            champion_score,
            metric,
            blocked=violations,
        )
        mlflow.set_tag("registry", outcome.reason)
    report.registered, report.champion, report.outcome = outcome.version, outcome.champion, outcome.reason
    report.seconds = time.perf_counter() - started
    return report


def train_segmentation(
    cfg: Config, client: MlflowClient, frame: pd.DataFrame, truth_dir: Path | None
) -> ModelReport:
    from ml import truth
    from ml.segmentation import SegmentationError, agreement, fit_segmentation, stability

    started = time.perf_counter()
    report = ModelReport("segmentation", "segments")
    latest = frame[frame["as_of_date"] == frame["as_of_date"].max()].reset_index(drop=True)
    columns = segmentation_features(cfg)
    settings, logged = cfg.ml.segmentation, log_scaled_features(columns)
    report.rows = len(latest)
    with warnings.catch_warnings():  # per-segment medians of a feature a segment never has are NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            model, fitted = fit_segmentation(
                latest[columns], DESCRIPTIONS, settings, seed=cfg.ml.training.seed, log_features=logged
            )
        except SegmentationError as exc:
            report.outcome = f"skipped: {exc}"
            return report
        report.metrics = {
            "segments": float(len(set(fitted.tolist()) - {-1})),
            "unsegmented_share": float(np.mean(fitted == -1)),
            "stability_ari": float(stability(latest[columns], settings, log_features=logged)),
            "surrogate_accuracy": float(model.surrogate_accuracy),
        }
    if truth.has_truth(truth_dir):
        known = latest[["customer_number"]].merge(truth.personas(truth_dir), on="customer_number", how="left")
        mask = known["persona"].notna().to_numpy()
        scores = agreement(fitted[mask], known["persona"].to_numpy()[mask])
        report.metrics.update({f"persona_{k}": float(v) for k, v in scores.items()})

    registry.experiment(cfg, "segmentation")
    with mlflow.start_run(run_name="segmentation"):
        used = {"min_cluster_size_used": model.min_cluster_size, "log_features": ",".join(logged)}
        params = {**settings.model_dump(exclude={"features"}), **used}
        mlflow.log_params({**{k: str(v) for k, v in params.items()}, "features": len(columns)})
        mlflow.log_metrics(report.metrics)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "segment_profiles.csv"
            model.profiles.to_csv(path, index=False)
            mlflow.log_artifact(str(path))
            names = Path(tmp) / "segment_names.json"
            names.write_text(json.dumps({str(k): v for k, v in model.segment_names.items()}, indent=2))
            mlflow.log_artifact(str(names))
        uri = registry.log_model(model, "segmentation", latest[columns])
        outcome = registry.register(
            client,
            registry.model_name(cfg, "segmentation"),
            uri,
            report.metrics["stability_ari"],
            _segmentation_champion_score,
            "stability_ari",
        )
        mlflow.set_tag("registry", outcome.reason)
    report.registered, report.champion, report.outcome = outcome.version, outcome.champion, outcome.reason
    report.seconds = time.perf_counter() - started
    return report


def _segmentation_champion_score(uri: str) -> float:
    """The champion segmentation's stability, taken from its run (a clustering has no holdout labels)."""
    name = uri.split("/")[1].split("@")[0]
    version = registry.MlflowClient().get_model_version_by_alias(name, registry.CHAMPION)
    if version.run_id is None:  # registered outside a run: no stability to beat, as without the metric
        return float("-inf")
    run = registry.MlflowClient().get_run(version.run_id)
    return float(run.data.metrics.get("stability_ari", float("-inf")))


def train_all(
    spark: SparkSession,
    cfg: Config,
    tables: Tables,
    truth_dir: Path | None = None,
    targets: list[str] | None = None,
    segmentation: bool = True,
    progress: Callable[[str], None] = print,
    training: TrainingSet | None = None,
) -> list[ModelReport]:
    """Build the training set once (unless given), then train every model; one report per model."""
    from ml import truth

    client = registry.configure(cfg)
    if training is None:
        from ml.training_set import FEATURE_INPUTS
        from pipelines.services.spark import require_tables

        require_tables(
            spark,
            [tables.silver(source) for source in FEATURE_INPUTS],
            "run `journeylake ingest` first (models train on silver's history)",
        )
        progress("train: building point-in-time training sets from silver ...")
    ts = training or build_training_set(spark, tables, cfg)
    frame = with_truth(ts, truth_dir)
    truth_known = truth.has_truth(truth_dir)
    progress(
        f"train: {len(frame):,} rows = customers x cut-offs {', '.join(str(d) for d in ts.cutoffs)}, "
        f"horizon {ts.horizon_days} days, holdout {frame['holdout'].mean():.0%} of customers"
    )
    reports = []
    if segmentation:
        progress("train: segmentation (HDBSCAN) ...")
        reports.append(train_segmentation(cfg, client, frame, truth_dir))
    for target in targets or list(cfg.ml.propensity.targets):
        progress(f"train: propensity {target} ...")
        reports.append(train_propensity_target(cfg, client, frame, target, truth_known))
    return reports


CEILING_TARGET = 0.03  # issue target: every model within this AUC of the truth ceiling
FEW_POSITIVES = "missed: few positives"


def ceiling_verdict(
    metrics: dict[str, float], positive_customers: int = 0, enough_positive_customers: int = 0
) -> str:
    """``met``, ``unclear``, ``missed``, or ``missed: few positives``.

    ``met``: the gap is at most the target. ``unclear``: the gap is above the target but its 95%
    interval reaches below it; the holdout has too few positives to tell the model's shortfall
    from the sample's. Otherwise the model missed; ``missed: few positives`` when the training
    set had fewer than ``enough_positive_customers`` customers with a positive
    (``ml.propensity.enough_positive_customers``): measured on generated banks
    (``bench/bench_ml_ceiling.py``), the same models close the gap once they learn from about
    that many, so the cure is more history or more customers, not another model.
    """
    gap, low = metrics.get("auc_gap", np.nan), metrics.get("auc_gap_low", np.nan)
    if np.isnan(gap):
        return ""
    if gap <= CEILING_TARGET:
        return "met"
    if not np.isnan(low) and low <= CEILING_TARGET:
        return "unclear"
    return FEW_POSITIVES if positive_customers < enough_positive_customers else "missed"


def format_reports(reports: list[ModelReport], enough_positive_customers: int = 0) -> str:
    """The table ``journeylake train`` prints: metrics next to the ceiling, and registry outcomes.

    ``pos`` counts training and holdout rows with a positive label, ``cust+`` the distinct
    customers among the training positives (a customer is a row at every cut-off). The text
    model's line gives its held-out accuracy next to the majority baseline (ml/text.py).
    """
    lines = []
    header = (
        f"{'model':<26}{'rows':>8}{'pos':>6}{'cust+':>6}{'AUC':>8}{'ceiling':>9}{'gap':>7}"
        f"{'(95% interval)':>17}{'PR-AUC':>8}{'Brier':>8}{'lift10':>8}  target"
    )
    if any(r.family == "propensity" for r in reports):
        lines.append(header)
    any_ceiling = False
    for r in reports:
        if r.family != "propensity":
            continue
        m = r.metrics
        if not m:
            counts = f"{r.rows:>8}{r.positives:>6}{r.positive_customers:>6}"
            lines.append(f"{'propensity ' + r.target:<26}{counts}  {r.outcome}")
            continue
        ceiling = f"{m['ceiling_auc']:.3f}" if "ceiling_auc" in m else "n/a"
        gap = f"{m['auc_gap']:+.3f}" if "auc_gap" in m else ""
        interval = (
            f"({m['auc_gap_low']:+.3f}, {m['auc_gap_high']:+.3f})"
            if not np.isnan(m.get("auc_gap_low", np.nan))
            else ""
        )
        any_ceiling = any_ceiling or bool(gap)
        name = f"propensity {r.target}"
        lines.append(
            f"{name:<26}{r.rows:>8}{r.positives:>6}{r.positive_customers:>6}{m['roc_auc']:>8.3f}{ceiling:>9}"
            f"{gap:>7}{interval:>17}{m['pr_auc']:>8.3f}{m['brier']:>8.4f}{m['top_decile_lift']:>8.2f}  "
            f"{ceiling_verdict(m, r.positive_customers, enough_positive_customers)}"
        )
    if any_ceiling:
        lines.append(
            f"target: AUC within {CEILING_TARGET} of the ceiling (the simulator's true probabilities on the "
            "same holdout rows); unclear = the gap's 95% bootstrap interval (by customer) reaches below the "
            "target, too few holdout positives to tell"
            + (
                f"; few positives = fewer than {enough_positive_customers} customers with a positive in "
                "training, where the gap closes (bench/bench_ml_ceiling.py): add history or customers"
                if enough_positive_customers
                else ""
            )
        )
    for r in reports:
        if r.family == "segmentation":
            m = r.metrics
            if not m:
                lines.append(f"segmentation: {r.outcome}")
                continue
            persona = (
                f", vs personas ARI {m['persona_ari']:.3f} NMI {m['persona_nmi']:.3f}"
                if "persona_ari" in m
                else ""
            )
            lines.append(
                f"segmentation: {int(m['segments'])} segments over {r.rows:,} customers, stability ARI "
                f"{m['stability_ari']:.3f}, surrogate accuracy {m['surrogate_accuracy']:.3f}{persona}"
            )
    for r in reports:
        if r.family == "text":
            lines.append(format_text_report(r))
    lines.append("registry:")
    for r in reports:
        fairness = ", ".join(f"{k} {v:.3f}" for k, v in r.fairness.items())
        lines.append(f"  {r.family} {r.target}: {r.outcome}" + (f" [{fairness}]" if fairness else ""))
    return "\n".join(lines)


def format_text_report(report: ModelReport) -> str:
    """One line: the text model's held-out accuracy and macro-F1 next to the majority baseline,
    how much its confidence floor recognises, its speed and training time."""
    m = report.metrics
    if not m:
        return f"text {report.target}: {report.outcome}"
    return (
        f"text {report.target}: accuracy {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f} on "
        f"{int(m['held_out_queries']):,} held-out BANKING77 queries (majority baseline "
        f"{m['majority_baseline']:.3f}); {m['recognised_share']:.1%} recognised, accuracy "
        f"{m['accuracy_recognised']:.3f} among them; sentiment problem vs how-to "
        f"{m['sentiment_problem_mean']:+.3f} vs {m['sentiment_how_to_mean']:+.3f}; "
        f"{m['texts_per_second']:,.0f} texts/s on one core; trained on {report.rows:,} queries in "
        f"{m['train_seconds']:.1f} s"
    )
