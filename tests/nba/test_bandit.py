"""Thompson sampling on the calibration lift: replayable choices and truthful logged probabilities."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.errors import InputError
from pipelines.nba.bandit import (
    ThompsonChooser,
    empty_state,
    factor_posteriors,
    posterior_summary,
    state_from_history,
    update_state,
)


def _candidates(priorities: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame({"action_id": list(priorities), "priority": list(priorities.values())})


def _state(rows: list[tuple[str, str, int, int, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["action_id", "channel", "contacts", "accepts", "expected_accepts"])


CLOSE = _candidates({"card_upgrade": 0.30, "savings_nudge": 0.25, "loan_offer": 0.20, "no_action": 0.0})


def test_same_seed_decision_and_channel_replay_the_same_choice() -> None:
    first = ThompsonChooser(empty_state(), 2.0, 2.0, draws=200, seed=7)("d-42", "email", CLOSE)
    replay = ThompsonChooser(empty_state(), 2.0, 2.0, draws=200, seed=7)("d-42", "email", CLOSE)
    assert first[0] == replay[0]
    np.testing.assert_array_equal(first[1], replay[1])


def test_choices_are_the_gamma_draws_of_the_logged_decisions_unchanged() -> None:
    """Decisions already logged replay to the same choice and probabilities: the draws are
    numpy's gamma(shape, 1 / rate) from the decision's own generator, however they are taken,
    then a uniform tie-break key per draw and candidate (drawn only when some draw has a tie)."""
    from pipelines.nba.bandit import _decision_rng

    state = _state([("card_upgrade", "email", 40, 9, 6.0), ("loan_offer", "email", 30, 2, 4.0)])
    chooser = ThompsonChooser(state, 2.0, 2.0, draws=300, seed=7, lift="arm")
    actions = np.array(sorted(CLOSE["action_id"]))
    ranked = CLOSE.set_index("action_id").loc[actions, "priority"].to_numpy()
    tied = np.zeros(len(actions))  # every draw a tie (continuous lifts tie only at priority 0)
    for n, priority in [(n, p) for n in range(25) for p in (ranked, tied)]:
        chosen, probabilities = chooser.choose_arrays(f"d-{n}", "email", actions, priority)
        params = np.array([chooser.posterior(a, "email") for a in actions])
        rng = _decision_rng(7, f"d-{n}", "email")
        lift = rng.gamma(shape=params[:, 0], scale=1.0 / params[:, 1], size=(300, len(actions)))
        lift[:, actions == "no_action"] = 1.0
        sampled = priority * lift
        tie_break = rng.random((300, len(actions)))
        tie_break[:, actions == "no_action"] = 2.0
        top = sampled == sampled.max(axis=1, keepdims=True)
        winners = np.argmax(np.where(top, tie_break, -1.0), axis=1)
        assert chosen == winners[0]
        np.testing.assert_array_equal(probabilities, np.bincount(winners, minlength=len(actions)) / 300)


def test_replay_with_candidate_rows_in_another_order_chooses_the_same_action() -> None:
    chooser = ThompsonChooser(empty_state(), 2.0, 2.0, draws=200, seed=7)
    shuffled = CLOSE.iloc[[2, 0, 3, 1]].reset_index(drop=True)
    for decision in ("d-1", "d-2", "d-3"):
        pos, probs = chooser(decision, "email", CLOSE)
        pos_s, probs_s = chooser(decision, "email", shuffled)
        assert CLOSE["action_id"][pos] == shuffled["action_id"][pos_s]
        by_action = dict(zip(shuffled["action_id"], probs_s, strict=True))
        np.testing.assert_allclose(probs, [by_action[a] for a in CLOSE["action_id"]])


def test_different_decision_ids_make_different_choices() -> None:
    chooser = ThompsonChooser(empty_state(), 2.0, 2.0, draws=50, seed=0)
    chosen = {chooser(f"d-{i}", "email", CLOSE)[0] for i in range(60)}
    assert len(chosen) >= 3  # the three close actions all get explored


def test_probabilities_sum_to_one_and_match_how_often_each_candidate_is_chosen() -> None:
    """The logged propensity must be the probability the choice was made with (IPS depends on it)."""
    state = _state([("card_upgrade", "email", 40, 10, 12.0), ("loan_offer", "email", 40, 14, 8.0)])
    chooser = ThompsonChooser(state, 2.0, 2.0, draws=100, seed=3)
    n = 2000
    counts = np.zeros(len(CLOSE))
    mean_probs = np.zeros(len(CLOSE))
    for i in range(n):
        pos, probs = chooser(f"d-{i}", "email", CLOSE)
        assert probs.sum() == pytest.approx(1.0)
        assert (probs >= 0).all()
        assert probs[pos] > 0
        counts[pos] += 1
        mean_probs += probs / n
    np.testing.assert_allclose(counts / n, mean_probs, atol=0.035)  # about 3 standard errors
    assert mean_probs.min() < 0.2 < mean_probs.max()  # a non-trivial split, so the check can fail


def test_arm_with_strong_evidence_of_high_lift_is_chosen_more() -> None:
    """lift="arm": each (action, channel) learns from its own contacts only."""
    equal = _candidates({"card_upgrade": 0.2, "loan_offer": 0.2})
    prior_only = ThompsonChooser(empty_state(), 2.0, 2.0, draws=400, seed=0)
    learned = ThompsonChooser(
        _state([("card_upgrade", "app", 500, 50, 100.0), ("loan_offer", "app", 500, 200, 100.0)]),
        2.0,
        2.0,
        draws=400,
        seed=0,
        lift="arm",
    )
    assert prior_only("d-1", "app", equal)[1] == pytest.approx([0.5, 0.5], abs=0.08)
    assert learned("d-1", "app", equal)[1][1] > 0.99
    # the evidence is per channel: on another channel the arms are back at the prior
    assert learned("d-1", "email", equal)[1] == pytest.approx([0.5, 0.5], abs=0.08)


def test_without_history_the_model_ranking_leads() -> None:
    chooser = ThompsonChooser(empty_state(), 2.0, 2.0, draws=500, seed=0)
    _, probs = chooser("d-1", "sms", _candidates({"low": 0.05, "high": 0.30}))
    assert probs[1] > 0.85


def test_zero_priority_no_action_is_never_chosen_over_a_positive_candidate() -> None:
    chooser = ThompsonChooser(empty_state(), 2.0, 2.0, draws=200, seed=0)
    candidates = _candidates({"no_action": 0.0, "tiny": 1e-9})
    for i in range(50):
        pos, probs = chooser(f"d-{i}", "email", candidates)
        assert pos == 1
        assert probs.tolist() == [0.0, 1.0]


def test_all_zero_priorities_choose_no_action_when_present_else_uniformly() -> None:
    chooser = ThompsonChooser(empty_state(), 2.0, 2.0, draws=400, seed=0)
    pos, probs = chooser("d-1", "email", _candidates({"a": 0.0, "no_action": 0.0, "b": 0.0}))
    assert pos == 1
    assert probs.tolist() == [0.0, 1.0, 0.0]
    _, probs = chooser("d-1", "email", _candidates({"a": 0.0, "b": 0.0, "c": 0.0}))
    assert probs.sum() == pytest.approx(1.0)
    assert probs == pytest.approx([1 / 3] * 3, abs=0.08)


def test_single_candidate_is_chosen_with_probability_one() -> None:
    pos, probs = ThompsonChooser(empty_state(), 2.0, 2.0)("d-1", "email", _candidates({"card": 0.4}))
    assert pos == 0
    assert probs.tolist() == [1.0]


def test_bad_candidates_raise_naming_the_decision() -> None:
    chooser = ThompsonChooser(empty_state(), 2.0, 2.0)
    with pytest.raises(InputError, match="d-9.*negative"):
        chooser("d-9", "email", _candidates({"a": 0.2, "b": -0.1}))
    with pytest.raises(InputError, match="no rows"):
        chooser("d-9", "email", _candidates({}))


def test_update_state_adds_counts_and_new_arms_and_skips_no_action() -> None:
    state = _state([("card", "email", 10, 2, 1.5)])
    outcomes = pd.DataFrame(
        {
            "action_id": ["card", "card", "loan", "no_action"],
            "channel": ["email", "email", "app", "email"],
            "propensity": [0.2, 0.3, 0.1, 0.0],
            "accepted": [True, False, True, False],
        }
    )
    new = update_state(state, outcomes).set_index(["action_id", "channel"])
    assert new.loc[("card", "email")].tolist() == pytest.approx([12, 3, 2.0])
    assert new.loc[("loan", "app")].tolist() == pytest.approx([1, 1, 0.1])
    assert len(new) == 2
    assert str(new["contacts"].dtype) == "int64"
    pd.testing.assert_frame_equal(state_from_history(outcomes), update_state(empty_state(), outcomes))


def test_update_state_rejects_propensities_outside_zero_one() -> None:
    bad = pd.DataFrame({"action_id": ["a"], "channel": ["email"], "propensity": [1.5], "accepted": [True]})
    with pytest.raises(InputError, match="propensity"):
        update_state(empty_state(), bad)


def test_posterior_summary_mean_and_interval_narrow_with_evidence() -> None:
    state = _state([("a", "email", 20, 4, 2.0), ("b", "email", 2000, 400, 200.0)])
    summary = posterior_summary(state, 2.0, 2.0).set_index("action_id")
    assert summary.loc["a", "lift_mean"] == pytest.approx(6 / 4)
    assert summary.loc["b", "lift_mean"] == pytest.approx(402 / 202)
    assert summary.loc["b", "observed_lift"] == pytest.approx(2.0)
    for arm in ("a", "b"):
        assert summary.loc[arm, "lift_low"] < summary.loc[arm, "lift_mean"] < summary.loc[arm, "lift_high"]
    width = summary["lift_high"] - summary["lift_low"]
    assert width["b"] < width["a"] / 5
    assert summary.loc["b", "lift_low"] > 1.0  # strong evidence the model under-predicts b


def test_factored_lift_carries_an_actions_evidence_to_every_channel() -> None:
    """The default lift model: what loan_offer did on app says something about it on email too."""
    state = _state([("card_upgrade", "app", 500, 50, 100.0), ("loan_offer", "app", 500, 200, 100.0)])
    chooser = ThompsonChooser(state, 2.0, 2.0, draws=400, seed=0)
    equal = _candidates({"card_upgrade": 0.2, "loan_offer": 0.2})
    assert chooser("d-1", "app", equal)[1][1] > 0.99
    assert chooser("d-1", "email", equal)[1][1] > 0.99  # never contacted on email, still learnt
    # the logged probabilities stay those the choice is made with
    counts = np.zeros(2)
    mean = np.zeros(2)
    for i in range(400):
        pos, probs = chooser(f"d-{i}", "sms", _candidates({"card_upgrade": 0.8, "loan_offer": 0.2}))
        counts[pos] += 1
        mean += probs / 400
    np.testing.assert_allclose(counts / 400, mean, atol=0.08)


def test_factor_posteriors_recover_action_and_channel_effects() -> None:
    """Accepts generated as alpha_action x gamma_channel x expected: the fit finds the ratios."""
    alpha = {"mortgage": 3.0, "help": 0.3}
    gamma = {"branch": 1.5, "email": 0.75}
    rows = [(a, c, 10_000, round(alpha[a] * gamma[c] * 1_000.0), 1_000.0) for a in alpha for c in gamma]
    actions, channels = factor_posteriors(_state(rows), 1.0, 1.0)
    mean_a = {a: s / r for a, (s, r) in actions.items()}
    mean_c = {c: s / r for c, (s, r) in channels.items()}
    assert mean_a["mortgage"] / mean_a["help"] == pytest.approx(10.0, rel=0.02)
    assert mean_c["branch"] / mean_c["email"] == pytest.approx(2.0, rel=0.02)
    for a in alpha:  # the product (what decides) is identified, whatever the split between factors
        for c in gamma:
            assert mean_a[a] * mean_c[c] == pytest.approx(alpha[a] * gamma[c], rel=0.02)
    chooser = ThompsonChooser(_state(rows), 1.0, 1.0)
    assert chooser.expected_lift("mortgage", "branch") == pytest.approx(4.5, rel=0.02)
    assert chooser.expected_lift("no_action", "branch") == 1.0
    assert chooser.expected_lift("never_seen", "branch") == pytest.approx(mean_c["branch"])


def test_unknown_lift_model_is_refused() -> None:
    with pytest.raises(InputError, match="lift"):
        ThompsonChooser(empty_state(), 1.0, 1.0, lift="per_customer")
