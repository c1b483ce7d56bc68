"""The simulator's hidden truth, read for evaluation only: true probabilities and personas.

A model's AUC means little alone. The simulator knows every customer's true daily probability of
opening each product and of churning, so the AUC those true probabilities reach on the same
holdout rows is the **ceiling** no model can beat on average; the gap to it is what is left to
win. Personas are the ground truth segmentation is compared with (ARI, NMI). Nothing here is
ever a model input: a bank's own data has no truth folder, and training runs without one.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TypeGuard

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ml.features import PROPENSITY_PRODUCTS

CAMPAIGN_COLUMN = "p_open_campaign"


def has_truth(truth_dir: Path | None) -> TypeGuard[Path]:  # True: a Path (holding the truth)
    return truth_dir is not None and (truth_dir / "propensity.parquet").exists()


def true_probabilities(truth_dir: Path, cutoffs: list[date], horizon_days: int) -> pd.DataFrame:
    """Per customer and cut-off: the true probability, known at the cut-off, of each label.

    Ex ante, from the hidden state on the cut-off day: ``1 - (1 - p)^horizon`` of that day's
    daily probability of an opening, through an application (``p_open``) or through an accepted
    offer of the bank's own campaigns (``p_open_campaign``, when the truth folder has it; an
    older one does not), and of ``churn_hazard`` for churn. The realised days after the cut-off
    must not be used: once an account opens, that product's daily ``p_open`` drops to 0 (it is held), so
    combining the days that followed would lower exactly the positives' probabilities, and the
    "ceiling" would sit below chance for products that open often. An account opened on the
    cut-off day itself comes from an application approved the day before: on that day's state
    the product is already held, and the opening in the label window is certain (p = 1).
    Columns: customer_number, as_of_date, p_opened_<product>, p_churned.
    """
    path = truth_dir / "propensity.parquet"
    columns = ["date", "customer_number", "product", "held", "p_open"]
    with_campaigns = CAMPAIGN_COLUMN in pq.read_schema(path).names
    propensity = pd.read_parquet(path, columns=columns + ([CAMPAIGN_COLUMN] if with_campaigns else []))
    if with_campaigns:  # either way opens the account: 1 - P(neither)
        propensity["p_open"] = 1.0 - (1.0 - propensity["p_open"].astype(np.float64)) * (
            1.0 - propensity[CAMPAIGN_COLUMN].astype(np.float64)
        )
    daily = pd.read_parquet(
        truth_dir / "daily_state.parquet", columns=["date", "customer_number", "churn_hazard"]
    )
    propensity["date"] = pd.to_datetime(propensity["date"]).dt.date
    daily["date"] = pd.to_datetime(daily["date"]).dt.date
    frames = []
    for cutoff in cutoffs:
        state = propensity[(propensity["date"] == cutoff) & propensity["product"].isin(PROPENSITY_PRODUCTS)]
        p_open = np.minimum(state["p_open"].to_numpy(np.float64), 1.0)
        within = -np.expm1(horizon_days * np.log1p(-np.minimum(p_open, 0.999999)))
        opened = (
            state.assign(_p=np.where(state["held"].to_numpy(bool), 1.0, within))
            .pivot_table(index="customer_number", columns="product", values="_p", aggfunc="max")
            .add_prefix("p_opened_")
        )
        hazard = daily.loc[daily["date"] == cutoff].set_index("customer_number")["churn_hazard"]
        p_churn = pd.Series(
            -np.expm1(horizon_days * np.log1p(-np.minimum(hazard.to_numpy(np.float64), 0.999999))),
            index=hazard.index,
            name="p_churned",
        )
        frame = opened.join(p_churn, how="outer").reset_index()
        frame["as_of_date"] = cutoff
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def personas(truth_dir: Path) -> pd.DataFrame:
    """customer_number -> persona (the segmentation's ground truth)."""
    persons = pd.read_parquet(truth_dir / "persons.parquet", columns=["customer_number", "persona"])
    return persons.dropna(subset=["customer_number"])
