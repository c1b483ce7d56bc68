"""The simulator's hidden truth, read for evaluation only: true probabilities and personas.

A model's AUC means little alone. The simulator knows every customer's true daily probability of
opening each product and of churning, so the AUC those true probabilities reach on the same
holdout rows is the **ceiling** no model can beat on average; the gap to it is what is left to
win. Personas are the ground truth segmentation is compared with (ARI, NMI). Nothing here is
ever a model input: a bank's own data has no truth folder, and training runs without one.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from ml.features import PROPENSITY_PRODUCTS


def has_truth(truth_dir: Path | None) -> bool:
    return truth_dir is not None and (truth_dir / "propensity.parquet").exists()


def true_probabilities(truth_dir: Path, cutoffs: list[date], horizon_days: int) -> pd.DataFrame:
    """Per customer and cut-off: the true probability of each label in the horizon after it.

    An account opened on day d+1 comes from an application approved on day d, so P(opened in
    (D, D + h]) combines the daily ``p_open`` of days D .. D + h - 1; churn at the end of day d
    shows in that day's profile, so P(churned) combines ``churn_hazard`` over the same days.
    Columns: customer_number, as_of_date, p_opened_<product>, p_churned.
    """
    propensity = pd.read_parquet(
        truth_dir / "propensity.parquet", columns=["date", "customer_number", "product", "p_open"]
    )
    daily = pd.read_parquet(
        truth_dir / "daily_state.parquet", columns=["date", "customer_number", "churn_hazard"]
    )
    propensity["date"] = pd.to_datetime(propensity["date"]).dt.date
    daily["date"] = pd.to_datetime(daily["date"]).dt.date
    frames = []
    for cutoff in cutoffs:
        days = (propensity["date"] >= cutoff) & (propensity["date"] < cutoff + timedelta(days=horizon_days))
        window = propensity[days & propensity["product"].isin(PROPENSITY_PRODUCTS)]
        log_none = np.log1p(-np.minimum(window["p_open"].to_numpy(np.float64), 0.999999))
        opened = (
            window.assign(_log_none=log_none)
            .groupby(["customer_number", "product"])["_log_none"]
            .sum()
            .unstack("product")
        )
        opened = -np.expm1(opened).add_prefix("p_opened_")
        hazard_days = (daily["date"] >= cutoff) & (daily["date"] < cutoff + timedelta(days=horizon_days))
        churn = daily[hazard_days].assign(
            _log_none=np.log1p(
                -np.minimum(daily.loc[hazard_days, "churn_hazard"].to_numpy(np.float64), 0.999999)
            )
        )
        p_churn = -np.expm1(churn.groupby("customer_number")["_log_none"].sum()).rename("p_churned")
        frame = opened.join(p_churn, how="outer").reset_index()
        frame["as_of_date"] = cutoff
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def personas(truth_dir: Path) -> pd.DataFrame:
    """customer_number -> persona (the segmentation's ground truth)."""
    persons = pd.read_parquet(truth_dir / "persons.parquet", columns=["customer_number", "persona"])
    return persons.dropna(subset=["customer_number"])
