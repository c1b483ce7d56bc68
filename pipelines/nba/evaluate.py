"""Policy evaluation from the decision log: off-policy estimates and the A/B uplift vs control.

Each logged model-policy choice (one decision x channel) is a bandit round: the candidates that
survived every rule (stage ``ranked`` or ``chosen``), the one chosen with its logged probability,
and the reward the customer's responses gave (the action's value if they accepted it, else 0).
Alternative policies are scored on the same rounds without being run:

- ``logged``: the policy that made the decisions (its estimate is the on-policy mean);
- ``greedy``: always the highest priority (no exploration);
- ``uniform``: a random surviving candidate (what exploration alone would earn);

with IPS, self-normalised IPS and doubly robust estimators (:mod:`pipelines.nba.off_policy`),
whose reward model is the model's own expected value of a candidate: propensity x value.
The A/B comparison is per decision: the model group's reward against the control group's
(which got the default policy through the same rules), with Welch's confidence interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipelines.config import Config
from pipelines.errors import InputError
from pipelines.nba.catalog import ActionCatalog
from pipelines.nba.off_policy import Estimate, Uplift, ab_uplift, doubly_robust, ips, snips
from pipelines.tables import Tables

POLICIES = ("logged", "greedy", "uniform")


@dataclass(frozen=True)
class PolicyReport:
    rounds: int
    estimates: dict[str, dict[str, Estimate]]  # policy -> estimator -> estimate
    uplift: Uplift | None


def rounds(log: pd.DataFrame, accepted: pd.DataFrame, catalog: ActionCatalog) -> pd.DataFrame:
    """Candidates of every model-policy round with the chosen one's reward (pandas, testable)."""
    alive = log[log["stage"].isin(["ranked", "chosen"]) & (log["policy"] == "model")].copy()
    value = {a.action_id: float(a.value) for a in catalog}
    alive["value"] = alive["action_id"].map(value).fillna(0.0)
    alive["q_hat"] = alive["propensity"].fillna(0.0) * alive["value"]
    keys = set(zip(accepted["decision_id"], accepted["action_id"], accepted["channel"], strict=True))
    alive["accepted"] = [
        (d, a, c) in keys
        for d, a, c in zip(alive["decision_id"], alive["action_id"], alive["channel"], strict=True)
    ]
    alive["reward"] = np.where(alive["accepted"] & (alive["stage"] == "chosen"), alive["value"], 0.0)
    return alive


def estimate(candidates: pd.DataFrame) -> dict[str, dict[str, Estimate]]:
    """IPS / SNIPS / DR of each policy in POLICIES over the rounds in ``candidates``."""
    out: dict[str, dict[str, Estimate]] = {}
    groups = candidates.groupby(["decision_id", "channel"], sort=False)
    n_alive = groups["action_id"].transform("size")
    best = groups["priority"].transform("max")
    target = {
        "logged": candidates["choice_probability"].fillna(0.0),
        "greedy": (candidates["priority"] == best).astype(float)
        / groups["priority"].transform(lambda p: (p == p.max()).sum()),
        "uniform": 1.0 / n_alive,
    }
    logged = candidates["stage"] == "chosen"
    for name, probability in target.items():
        frame = candidates.assign(_target=probability.to_numpy())
        v_hat = (
            (frame["_target"] * frame["q_hat"])
            .groupby([frame["decision_id"], frame["channel"]])
            .transform("sum")
        )
        rows = frame[logged]
        reward = rows["reward"].to_numpy()
        p_log = rows["choice_probability"].to_numpy()
        p_target = rows["_target"].to_numpy()
        out[name] = {
            "IPS": ips(reward, p_log, p_target),
            "SNIPS": snips(reward, p_log, p_target) if p_target.sum() > 0 else ips(reward, p_log, p_target),
            "DR": doubly_robust(reward, p_log, p_target, rows["q_hat"].to_numpy(), v_hat[logged].to_numpy()),
        }
    return out


def evaluate_policies(
    spark: SparkSession, cfg: Config, tables: Tables, catalog: ActionCatalog
) -> PolicyReport:
    """Read the decision log and responses and score the policies; a clear error if there is no log."""
    name = tables.gold("decision_log")
    if not spark.catalog.tableExists(name):
        raise InputError(f"{name} does not exist yet: run `journeylake decide` first")
    log: pd.DataFrame = spark.table(name).where(F.col("stage").isin("ranked", "chosen")).toPandas()
    accepted: pd.DataFrame = (
        spark.table(tables.silver("offer_responses"))
        .where(F.col("response") == "accept")
        .select("decision_id", "action_id", "channel")
        .distinct()
        .toPandas()
    )
    model_rounds = rounds(log, accepted, catalog)
    chosen = model_rounds[model_rounds["stage"] == "chosen"]
    if chosen.empty:
        raise InputError(f"{name} holds no model-policy decision yet: nothing to evaluate")
    estimates = estimate(model_rounds)
    uplift = None
    control = log[log["policy"] == "control"]
    if not control.empty:
        value = {a.action_id: float(a.value) for a in catalog}
        keys = set(zip(accepted["decision_id"], accepted["action_id"], accepted["channel"], strict=True))

        def per_decision(frame: pd.DataFrame) -> np.ndarray:
            picked = frame[frame["stage"] == "chosen"]
            reward = [
                value.get(a, 0.0) if (d, a, c) in keys else 0.0
                for d, a, c in zip(picked["decision_id"], picked["action_id"], picked["channel"], strict=True)
            ]
            return picked.assign(_r=reward).groupby("decision_id")["_r"].sum().to_numpy()

        treatment, ctrl = per_decision(log[log["policy"] == "model"]), per_decision(control)
        if len(treatment) > 1 and len(ctrl) > 1:
            uplift = ab_uplift(treatment, ctrl)
    return PolicyReport(rounds=len(chosen), estimates=estimates, uplift=uplift)


def format_report(report: PolicyReport) -> str:
    lines = [f"policy value per decision-channel, from {report.rounds:,} logged model-policy rounds"]
    lines.append(f"{'policy':<10}{'estimator':<8}{'value':>10}  {'95% CI':<24}{'ESS':>8}")
    for policy, by_estimator in report.estimates.items():
        for estimator, e in by_estimator.items():
            ci = f"[{e.ci_low:,.2f}, {e.ci_high:,.2f}]"
            lines.append(
                f"{policy:<10}{estimator:<8}{e.value:>10,.2f}  {ci:<24}{e.effective_sample_size:>8,.0f}"
            )
    u = report.uplift
    if u is None:
        lines.append("A/B vs control: not enough control decisions yet")
    else:
        lines.append(
            f"A/B vs control: model {u.treatment_mean:,.2f} vs control {u.control_mean:,.2f} per decision "
            f"(n {u.n_treatment:,} / {u.n_control:,}); difference {u.difference:,.2f} "
            f"[{u.ci_low:,.2f}, {u.ci_high:,.2f}], p = {u.p_value:.3f}"
        )
    return "\n".join(lines)
