"""The truth ceiling: probabilities known at the cut-off, never the realised days after it."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from ml.truth import true_probabilities

T = date(2026, 1, 15)


def _truth(folder, rows: list[tuple[str, int, str, bool, float]], hazards: dict[str, float]) -> None:
    """rows: (customer, day offset from T, product, held, p_open)."""
    frame = pd.DataFrame(rows, columns=["customer_number", "offset", "product", "held", "p_open"])
    frame["date"] = [T + timedelta(days=d) for d in frame.pop("offset")]
    frame.to_parquet(folder / "propensity.parquet", index=False)
    daily = pd.DataFrame(
        [(c, T + timedelta(days=d), h) for c, h in hazards.items() for d in range(3)],
        columns=["customer_number", "date", "churn_hazard"],
    )
    daily.to_parquet(folder / "daily_state.parquet", index=False)


def test_an_opening_in_the_window_does_not_lower_the_probability_known_at_the_cutoff(tmp_path):
    _truth(
        tmp_path,
        [
            # A opens savings on day T+1: from then on it holds it and its daily p_open is 0
            ("A", 0, "savings", False, 0.1),
            ("A", 1, "savings", True, 0.0),
            ("A", 2, "savings", True, 0.0),
            # B never opens; same state at the cut-off
            ("B", 0, "savings", False, 0.1),
            ("B", 1, "savings", False, 0.1),
            ("B", 2, "savings", False, 0.1),
            # C's account opens on the cut-off day itself (approved the day before): certain
            ("C", 0, "savings", True, 0.0),
        ],
        {"A": 0.01, "B": 0.0, "C": 0.02},
    )
    p = true_probabilities(tmp_path, [T], horizon_days=3).set_index("customer_number")
    expected = 1 - 0.9**3
    assert p.loc["A", "p_opened_savings"] == pytest.approx(expected)
    assert p.loc["B", "p_opened_savings"] == pytest.approx(expected)
    assert p.loc["C", "p_opened_savings"] == 1.0
    assert p.loc["A", "p_churned"] == pytest.approx(1 - 0.99**3)
    assert p.loc["B", "p_churned"] == 0.0
    assert (p["as_of_date"] == T).all()
    assert np.isfinite(p["p_opened_savings"]).all()


def test_openings_through_the_banks_campaigns_count_towards_the_truth(tmp_path):
    _truth(tmp_path, [("A", 0, "savings", False, 0.1), ("B", 0, "savings", False, 0.1)], {"A": 0.0, "B": 0.0})
    frame = pd.read_parquet(tmp_path / "propensity.parquet")
    frame["p_open_campaign"] = [0.05, 0.0]  # A is likelier to accept a campaign's offer
    frame.to_parquet(tmp_path / "propensity.parquet", index=False)
    p = true_probabilities(tmp_path, [T], horizon_days=3).set_index("customer_number")
    assert p.loc["A", "p_opened_savings"] == pytest.approx(1 - (0.9 * 0.95) ** 3)
    assert p.loc["B", "p_opened_savings"] == pytest.approx(1 - 0.9**3)
