"""Policy evaluation over decision-log rounds (pandas only): rewards, target policies, estimates."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.config import conf_dir
from pipelines.nba.catalog import load_catalog_file


def _log(n: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """n rounds of two candidates (savings, investments) on email, chosen 30/70 at random."""
    rng = np.random.default_rng(seed)
    rows, accepted = [], []
    for i in range(n):
        pick_investments = rng.random() < 0.7
        for action, priority, p_choice, propensity in (
            ("offer_savings", 1.0, 0.3, 0.2),
            ("offer_investments", 2.0, 0.7, 0.1),
        ):
            chosen = (action == "offer_investments") == pick_investments
            rows.append(
                {
                    "decision_id": f"d{i}",
                    "customer_number": f"C{i}",
                    "action_id": action,
                    "channel": "email",
                    "stage": "chosen" if chosen else "ranked",
                    "priority": priority,
                    "propensity": propensity,
                    "choice_probability": p_choice,
                    "policy": "model",
                }
            )
            if chosen and rng.random() < propensity:
                accepted.append({"decision_id": f"d{i}", "action_id": action, "channel": "email"})
    return pd.DataFrame(rows), pd.DataFrame(accepted, columns=["decision_id", "action_id", "channel"])


def test_only_the_chosen_and_accepted_action_earns_its_value():
    from pipelines.nba.evaluate import rounds

    catalog = load_catalog_file(conf_dir() / "actions.yml")
    log, accepted = _log(200)
    r = rounds(log, accepted, catalog)
    earned = r[r["reward"] > 0]
    assert len(earned) == len(accepted)
    assert (earned["stage"] == "chosen").all()
    assert set(earned["reward"]) <= {catalog["offer_savings"].value, catalog["offer_investments"].value}


def test_the_logged_policy_estimate_is_the_on_policy_mean_and_greedy_is_close_to_the_truth():
    from pipelines.nba.evaluate import estimate, rounds

    catalog = load_catalog_file(conf_dir() / "actions.yml")
    log, accepted = _log(6000, seed=1)
    r = rounds(log, accepted, catalog)
    estimates = estimate(r)
    on_policy = r.loc[r["stage"] == "chosen", "reward"].mean()
    assert np.isclose(estimates["logged"]["IPS"].value, on_policy)
    # greedy always takes investments (priority 2): true value 0.1 x its value
    truth = 0.1 * catalog["offer_investments"].value
    for name in ("IPS", "SNIPS", "DR"):
        e = estimates["greedy"][name]
        assert e.ci_low <= truth <= e.ci_high, (name, e)
