"""Off-policy evaluation of decision policies from the decision log, and A/B uplift.

A new policy (another bandit prior, other levers, a new model) is judged on the decisions the
live policy already made, before it reaches a customer. Every logged decision carries

* ``reward``: what the decision earned (value if accepted else 0, or accepted 0/1),
* ``logging_probability``: the probability with which the live policy chose the logged action
  (``ThompsonChooser`` logs it exactly),
* ``target_probability``: the probability the evaluated policy gives the logged action in the
  same context,
* for the doubly robust estimator, a reward model's ``q_hat_logged`` (predicted reward of the
  logged action) and ``v_hat_target`` (the predicted reward of the target policy in that
  context: sum over actions of target probability x predicted reward).

Estimators, with importance weight ``w = target_probability / logging_probability``:

* ``ips``: mean of ``w x reward``. Unbiased; high variance when weights are large.
* ``snips``: ``sum(w x reward) / sum(w)``. Slightly biased, much steadier when weights vary.
* ``doubly_robust``: mean of ``v_hat_target + w x (reward - q_hat_logged)``. Unbiased with the
  true logging probabilities whatever the reward model; the better the model, the lower the
  variance.

Confidence intervals use the normal approximation of the per-row terms (for ``snips`` of its
linearisation, the delta method), not a bootstrap: it is O(rows), deterministic and needs no
seed, and the rows are independent decisions. It is too narrow when a few rows carry very large
weights; ``effective_sample_size`` (Kish: ``sum(w)^2 / sum(w^2)``) says when: far below ``n``
means a few rows decide the answer and the interval should not be trusted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from numpy.typing import ArrayLike

from pipelines.errors import InputError


class OffPolicyInputError(InputError, ValueError):
    """The decision log or A/B samples cannot be evaluated (empty, misaligned, impossible rows).

    A ``ValueError`` too, so callers that catch ``ValueError`` for bad data catch it.
    """


@dataclass(frozen=True)
class Estimate:
    """An estimated policy value, its confidence interval and how much data really backs it."""

    value: float
    ci_low: float
    ci_high: float
    n: int
    effective_sample_size: float


@dataclass(frozen=True)
class Uplift:
    """Treatment minus control, with a Welch (unequal variances) normal-approximation interval."""

    treatment_mean: float
    control_mean: float
    difference: float
    ci_low: float
    ci_high: float
    relative_lift: float  # difference / control_mean; NaN when the control mean is 0
    n_treatment: int
    n_control: int
    p_value: float  # two-sided, for difference == 0


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise OffPolicyInputError(f"confidence is {confidence}; expected in (0, 1), e.g. 0.95")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def _column(values: ArrayLike, name: str, n: int | None) -> np.ndarray:
    array = np.asarray(values, dtype=float).reshape(-1)
    if n is not None and len(array) != n:
        raise OffPolicyInputError(f"{name} has {len(array)} rows; reward has {n}")
    missing = int((~np.isfinite(array)).sum())
    if missing:
        raise OffPolicyInputError(f"{name}: {missing} row(s) are missing or not finite")
    return array


def _weights(
    reward: ArrayLike, logging_probability: ArrayLike, target_probability: ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    """Rewards and importance weights, after checking the log can be evaluated at all."""
    r = _column(reward, "reward", None)
    n = len(r)
    if n == 0:
        raise OffPolicyInputError("the decision log is empty: no logged decisions to evaluate")
    p_log = _column(logging_probability, "logging_probability", n)
    p_target = _column(target_probability, "target_probability", n)
    zero = int((p_log <= 0).sum())
    if zero:
        raise OffPolicyInputError(
            f"logging_probability is <= 0 in {zero} of {n} row(s): the logging policy could not have "
            "taken those actions, so the log is wrong (or the probability was not logged)"
        )
    for name, p in (("logging_probability", p_log), ("target_probability", p_target)):
        outside = int(((p < 0) | (p > 1)).sum())
        if outside:
            raise OffPolicyInputError(f"{name} is outside [0, 1] in {outside} of {n} row(s)")
    return r, p_target / p_log


def _ess(w: np.ndarray) -> float:
    square_sum = float(np.sum(w * w))
    return float(np.sum(w)) ** 2 / square_sum if square_sum > 0 else 0.0


def _normal_estimate(terms: np.ndarray, value: float, w: np.ndarray, confidence: float) -> Estimate:
    """``terms`` are per-row contributions whose mean's standard error is the estimate's.

    With one row the spread is unknown, so the interval is unbounded rather than a false point.
    """
    z = _z(confidence)
    n = len(terms)
    if n < 2:
        low, high = -math.inf, math.inf
    else:
        half = z * float(np.std(terms, ddof=1)) / math.sqrt(n)
        low, high = value - half, value + half
    return Estimate(float(value), float(low), float(high), n, _ess(w))


def ips(
    reward: ArrayLike,
    logging_probability: ArrayLike,
    target_probability: ArrayLike,
    confidence: float = 0.95,
) -> Estimate:
    """Inverse propensity scoring: the mean of ``w x reward``, unbiased if the logged probabilities are."""
    r, w = _weights(reward, logging_probability, target_probability)
    terms = w * r
    return _normal_estimate(terms, float(terms.mean()), w, confidence)


def snips(
    reward: ArrayLike,
    logging_probability: ArrayLike,
    target_probability: ArrayLike,
    confidence: float = 0.95,
) -> Estimate:
    """Self-normalised IPS: ``sum(w x reward) / sum(w)``; trades a small bias for less variance.

    The interval is the delta method's: per-row terms ``w x (reward - value) / mean(w)``.
    """
    r, w = _weights(reward, logging_probability, target_probability)
    mean_w = float(w.mean())
    if mean_w <= 0:
        raise OffPolicyInputError(
            "target_probability is 0 for every logged action: the log says nothing about the target "
            "policy, so SNIPS is undefined"
        )
    value = float(np.sum(w * r) / np.sum(w))
    return _normal_estimate(w * (r - value) / mean_w, value, w, confidence)


def doubly_robust(
    reward: ArrayLike,
    logging_probability: ArrayLike,
    target_probability: ArrayLike,
    q_hat_logged: ArrayLike,
    v_hat_target: ArrayLike,
    confidence: float = 0.95,
) -> Estimate:
    """Doubly robust: the reward model's value of the target policy, corrected by IPS on its errors.

    Mean of ``v_hat_target + w x (reward - q_hat_logged)``. Unbiased with true logging
    probabilities even when the reward model is wrong; a good model shrinks the IPS correction
    and so the variance.
    """
    r, w = _weights(reward, logging_probability, target_probability)
    q = _column(q_hat_logged, "q_hat_logged", len(r))
    v = _column(v_hat_target, "v_hat_target", len(r))
    terms = v + w * (r - q)
    return _normal_estimate(terms, float(terms.mean()), w, confidence)


def ab_uplift(treatment: ArrayLike, control: ArrayLike, confidence: float = 0.95) -> Uplift:
    """Difference in mean outcome between a treatment and a control group, with its uncertainty.

    Uses Welch's normal approximation: the standard error is ``sqrt(var_t / n_t + var_c / n_c)``
    (sample variances, not pooled, so groups of different spread and size are fine) and the
    interval and two-sided p-value come from the standard normal, which is accurate for the group
    sizes of a marketing test (hundreds of customers or more), not for a handful.
    """
    t = _column(treatment, "treatment", None)
    c = _column(control, "control", None)
    if len(t) < 2 or len(c) < 2:
        raise OffPolicyInputError(
            f"ab_uplift needs at least 2 outcomes per group; treatment has {len(t)}, control {len(c)}"
        )
    z = _z(confidence)
    mean_t, mean_c = float(t.mean()), float(c.mean())
    difference = mean_t - mean_c
    se = math.sqrt(float(t.var(ddof=1)) / len(t) + float(c.var(ddof=1)) / len(c))
    if se > 0:
        p_value = 2.0 * NormalDist().cdf(-abs(difference) / se)  # the lower tail keeps precision
    else:  # both groups constant: the difference is known exactly
        p_value = 1.0 if difference == 0 else 0.0
    return Uplift(
        treatment_mean=mean_t,
        control_mean=mean_c,
        difference=difference,
        ci_low=difference - z * se,
        ci_high=difference + z * se,
        relative_lift=difference / mean_c if mean_c != 0 else math.nan,
        n_treatment=len(t),
        n_control=len(c),
        p_value=float(p_value),
    )
