"""Off-policy estimators recover a known target value; A/B uplift finds known differences."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from pipelines.nba.off_policy import ab_uplift, doubly_robust, ips, snips


@dataclass(frozen=True)
class Log:
    reward: np.ndarray
    logging_probability: np.ndarray
    target_probability: np.ndarray
    q_hat_logged: np.ndarray
    v_hat_target: np.ndarray
    true_target_value: float
    on_policy_mean: float


# true acceptance rate per (context, action): 3 customer contexts x 4 actions
RATES = np.array([[0.10, 0.30, 0.05, 0.20], [0.40, 0.10, 0.25, 0.05], [0.15, 0.15, 0.50, 0.30]])
CONTEXT_SHARE = np.array([0.5, 0.3, 0.2])
LOGGING = np.array([[0.4, 0.2, 0.2, 0.2], [0.25, 0.25, 0.25, 0.25], [0.1, 0.3, 0.3, 0.3]])
TARGET = np.array([[0.05, 0.8, 0.05, 0.1], [0.7, 0.1, 0.1, 0.1], [0.0, 0.1, 0.8, 0.1]])


def _simulate(n: int, seed: int, q_hat: np.ndarray = RATES) -> Log:
    """A logged bandit: contexts arrive, the logging policy picks, rewards are Bernoulli(RATES)."""
    rng = np.random.default_rng(seed)
    context = rng.choice(3, size=n, p=CONTEXT_SHARE)
    cumulative = LOGGING[context].cumsum(axis=1)
    action = (rng.random(n)[:, None] > cumulative).sum(axis=1)
    reward = (rng.random(n) < RATES[context, action]).astype(float)
    return Log(
        reward=reward,
        logging_probability=LOGGING[context, action],
        target_probability=TARGET[context, action],
        q_hat_logged=q_hat[context, action],
        v_hat_target=(TARGET[context] * q_hat[context]).sum(axis=1),
        true_target_value=float(CONTEXT_SHARE @ (TARGET * RATES).sum(axis=1)),
        on_policy_mean=float(reward.mean()),
    )


LOG = _simulate(20_000, seed=11)


def _assert_recovers(estimate, truth: float) -> None:
    assert estimate.ci_low <= truth <= estimate.ci_high
    assert estimate.value == pytest.approx(truth, rel=0.10)


def test_ips_recovers_the_target_policy_value() -> None:
    estimate = ips(LOG.reward, LOG.logging_probability, LOG.target_probability)
    _assert_recovers(estimate, LOG.true_target_value)
    assert estimate.n == 20_000
    assert 0 < estimate.effective_sample_size < estimate.n  # the target differs from the logger


def test_snips_recovers_the_target_policy_value() -> None:
    _assert_recovers(
        snips(LOG.reward, LOG.logging_probability, LOG.target_probability), LOG.true_target_value
    )


def test_doubly_robust_recovers_the_target_policy_value() -> None:
    estimate = doubly_robust(
        LOG.reward, LOG.logging_probability, LOG.target_probability, LOG.q_hat_logged, LOG.v_hat_target
    )
    _assert_recovers(estimate, LOG.true_target_value)


def test_doubly_robust_stays_unbiased_with_a_wrong_reward_model() -> None:
    log = _simulate(20_000, seed=12, q_hat=np.full_like(RATES, 0.5))
    estimate = doubly_robust(
        log.reward, log.logging_probability, log.target_probability, log.q_hat_logged, log.v_hat_target
    )
    _assert_recovers(estimate, log.true_target_value)


def test_target_policy_differs_enough_from_logging_policy_for_the_checks_to_bite() -> None:
    assert abs(LOG.true_target_value - LOG.on_policy_mean) > 0.05
    estimate = ips(LOG.reward, LOG.logging_probability, LOG.target_probability)
    assert not estimate.ci_low <= LOG.on_policy_mean <= estimate.ci_high


def test_doubly_robust_has_lower_variance_than_ips_with_a_good_reward_model() -> None:
    ips_values, dr_values = [], []
    for seed in range(200):  # the same logs for both: the comparison is paired
        log = _simulate(2_000, seed=100 + seed)
        ips_values.append(ips(log.reward, log.logging_probability, log.target_probability).value)
        dr = doubly_robust(
            log.reward, log.logging_probability, log.target_probability, log.q_hat_logged, log.v_hat_target
        )
        dr_values.append(dr.value)
    assert np.var(dr_values) < 0.85 * np.var(ips_values)  # about 0.71 in theory here
    one_ips = ips(LOG.reward, LOG.logging_probability, LOG.target_probability)
    one_dr = doubly_robust(
        LOG.reward, LOG.logging_probability, LOG.target_probability, LOG.q_hat_logged, LOG.v_hat_target
    )
    assert one_dr.ci_high - one_dr.ci_low < one_ips.ci_high - one_ips.ci_low


def test_evaluating_the_logging_policy_recovers_the_on_policy_mean() -> None:
    for estimator in (ips, snips):
        estimate = estimator(LOG.reward, LOG.logging_probability, LOG.logging_probability)
        assert estimate.value == pytest.approx(LOG.on_policy_mean)
        assert estimate.effective_sample_size == pytest.approx(len(LOG.reward))


def test_zero_logging_probability_raises_naming_the_row_count() -> None:
    p = LOG.logging_probability[:10].copy()
    p[[2, 5, 7]] = 0.0
    with pytest.raises(ValueError, match="<= 0 in 3 of 10 row"):
        ips(LOG.reward[:10], p, LOG.target_probability[:10])


def test_empty_log_raises() -> None:
    empty = np.array([])
    for estimator in (ips, snips):
        with pytest.raises(ValueError, match="empty"):
            estimator(empty, empty, empty)
    with pytest.raises(ValueError, match="empty"):
        doubly_robust(empty, empty, empty, empty, empty)


def test_misaligned_columns_raise() -> None:
    with pytest.raises(ValueError, match="target_probability has 3 rows; reward has 4"):
        ips(np.ones(4), np.full(4, 0.5), np.full(3, 0.5))


def test_snips_with_target_never_taking_a_logged_action_raises() -> None:
    with pytest.raises(ValueError, match="SNIPS is undefined"):
        snips(np.ones(4), np.full(4, 0.5), np.zeros(4))


def test_ab_uplift_detects_a_known_difference() -> None:
    rng = np.random.default_rng(5)
    treatment = (rng.random(20_000) < 0.12).astype(float)
    control = (rng.random(20_000) < 0.10).astype(float)
    result = ab_uplift(treatment, control)
    assert result.ci_low > 0
    assert result.ci_low <= 0.02 <= result.ci_high
    assert result.p_value < 0.001
    assert result.relative_lift == pytest.approx(result.difference / result.control_mean)
    assert (result.n_treatment, result.n_control) == (20_000, 20_000)


def test_ab_uplift_of_equal_groups_contains_zero() -> None:
    rng = np.random.default_rng(6)
    result = ab_uplift(rng.normal(50, 10, 5_000), rng.normal(50, 20, 3_000))
    assert result.ci_low < 0 < result.ci_high
    assert result.p_value > 0.05


def test_ab_uplift_needs_two_outcomes_per_group() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        ab_uplift(np.array([1.0]), np.array([0.0, 1.0]))
