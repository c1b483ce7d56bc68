"""Thompson sampling over the decision funnel's ranking, with truthful logged choice probabilities.

The funnel ranks one customer's surviving candidates (action x channel) by ``priority`` = model
propensity x value x business lever x context weight. Exploring by ignoring that ranking would
throw away what the per-customer model knows, so the bandit learns something smaller: a per-arm
multiplicative *calibration lift* ``lambda`` on the model's propensity. An arm is
``(action_id, channel)``; its state is

* ``contacts``: decisions delivered on the arm,
* ``accepts``: how many of those the customer accepted,
* ``expected_accepts``: the sum of the model propensities of those contacts (what the model
  predicted).

With a Gamma prior the posterior is conjugate (accepts are roughly Poisson with mean
``lambda x expected_accepts``)::

    lambda_arm ~ Gamma(shape = prior_shape + accepts, rate = prior_rate + expected_accepts)

With ``prior_shape == prior_rate`` the prior mean is 1: with no data the bandit explores around
the model's own ranking, and arms whose customers accept more often than the model predicts rise.
``no_action`` is an arm with lambda fixed at 1: it is the baseline, not something to learn about.

Learning every arm on its own evidence (``lift="arm"``) is slow: seven actions on seven channels
are 49 arms, and a week of contacts leaves most with a handful. The default (``lift=
"action_channel"``) factorises ``lambda = alpha_action x gamma_channel``: how far the action's
model under- or over-predicts acceptance (a propensity model predicts opening a product, not
answering an offer; a service action has a configured constant), times how well the channel
converts. Every contact then informs its action's factor and its channel's, 13 numbers instead of
49. Accepts are Poisson with mean ``alpha x gamma x expected``; the posterior of the factors is
approximated mean-field (the standard variational solution of this Gamma-Poisson factor model)::

    alpha_a ~ Gamma(prior_shape + accepts_a, prior_rate + sum_c expected_ac x E[gamma_c])
    gamma_c ~ Gamma(prior_shape + accepts_c, prior_rate + sum_a expected_ac x E[alpha_a])

iterated to a fixed point. Within one channel the channel factor scales every candidate alike, so
a choice draws the action factors only; which channel chooses first is the funnel's business
(:meth:`ThompsonChooser.expected_lift` gives it ``E[alpha] x E[gamma]``).

Each decision draws ``draws`` independent lambda vectors; in every draw the candidate with the
largest ``priority x lambda`` wins. The chosen candidate is the winner of the first draw and the
logged probability of each candidate is its share of wins over all draws (the first included).
Because the draws are exchangeable, the first draw's winner is, given the set of draws, the winner
of a uniformly random draw: the logged share is *exactly* the probability with which the choice
was made, not an estimate of it. That is what inverse-propensity off-policy evaluation
(``pipelines.nba.off_policy``) needs, so no floor or smoothing is added: a floor would log a
probability the choice was not made with. A candidate with share 0 could not have been chosen.

Randomness is seeded from ``sha256(seed, decision_id, channel)`` and candidates are put in a
canonical order before drawing, so replaying a decision after a crash makes the same choice and
logs the same probabilities, whatever order the funnel's rows came in.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from pipelines.errors import InputError

NO_ACTION = "no_action"  # the "do nothing" arm: lambda fixed at 1, never explores
LIFT_MODELS = ("action_channel", "arm")
_FACTOR_ITERATIONS = 50  # mean-field updates; the factors settle in far fewer

STATE_COLUMNS = ("action_id", "channel", "contacts", "accepts", "expected_accepts")
OUTCOME_COLUMNS = ("action_id", "channel", "propensity", "accepted")

_ARM = ["action_id", "channel"]


def _require_columns(df: pd.DataFrame, columns: tuple[str, ...] | list[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(f"{what}: missing column(s) {missing}; has {list(df.columns)}")


def _check_prior(prior_shape: float, prior_rate: float) -> None:
    if not (prior_shape > 0 and prior_rate > 0):
        raise InputError(
            f"bandit prior: prior_shape {prior_shape} and prior_rate {prior_rate} must both be > 0 "
            "(a Gamma prior; equal values give prior mean lift 1)"
        )


def empty_state() -> pd.DataFrame:
    """A state with no arms: every arm starts at the prior."""
    return pd.DataFrame(
        {
            "action_id": pd.Series(dtype=object),
            "channel": pd.Series(dtype=object),
            "contacts": pd.Series(dtype="int64"),
            "accepts": pd.Series(dtype="int64"),
            "expected_accepts": pd.Series(dtype="float64"),
        }
    )


def _decision_rng(seed: int, decision_id: str, channel: str) -> np.random.Generator:
    """A generator that depends only on (seed, decision_id, channel), never on process state.

    A unit separator between the parts keeps ("a", "bc") and ("ab", "c") apart.
    """
    key = f"{seed}\x1f{decision_id}\x1f{channel}".encode()
    return np.random.default_rng(int.from_bytes(hashlib.sha256(key).digest(), "big"))


class ThompsonChooser:
    """Chooses one candidate per decision by Thompson sampling on the calibration lift.

    Called as ``chooser(decision_id, channel, candidates)`` with ``candidates`` holding
    ``action_id`` and ``priority`` (>= 0) for one customer on one channel; returns the position
    (row number in ``candidates``) chosen and each candidate's probability of being chosen, which
    is what the decision log must record as the logging propensity.

    Ties within a draw (equal sampled priorities: in practice only zero priorities, or
    ``no_action`` against a candidate with equal priority and lambda exactly 1) go to
    ``no_action`` when it is among them, since doing nothing is the safe default when nothing is
    better; otherwise uniformly at random among the tied candidates. So ``no_action`` at priority
    0 is never chosen over a candidate with positive priority (lambda > 0), and when every
    priority is 0 it is chosen with probability 1.
    """

    def __init__(
        self,
        state: pd.DataFrame,
        prior_shape: float,
        prior_rate: float,
        draws: int = 500,
        seed: int = 0,
        lift: str = "action_channel",
    ) -> None:
        _check_prior(prior_shape, prior_rate)
        if draws < 1:
            raise InputError(f"ThompsonChooser: draws is {draws}; expected >= 1")
        if lift not in LIFT_MODELS:
            raise InputError(f"ThompsonChooser: lift is {lift!r}; expected one of {', '.join(LIFT_MODELS)}")
        _require_columns(state, STATE_COLUMNS, "bandit state")
        self.prior_shape = float(prior_shape)
        self.prior_rate = float(prior_rate)
        self.draws = int(draws)
        self.seed = int(seed)
        self.lift = lift
        # dict lookups keep a decision O(candidates), not O(arms)
        self._posterior: dict[tuple[str, str], tuple[float, float]] = {}
        self._actions: dict[str, tuple[float, float]] = {}
        self._channels: dict[str, tuple[float, float]] = {}
        if lift == "arm":
            shapes = self.prior_shape + state["accepts"].to_numpy(dtype=float)
            rates = self.prior_rate + state["expected_accepts"].to_numpy(dtype=float)
            self._posterior = {
                (str(a), str(c)): (float(s), float(r))
                for a, c, s, r in zip(state["action_id"], state["channel"], shapes, rates, strict=True)
            }
        else:
            self._actions, self._channels = factor_posteriors(state, self.prior_shape, self.prior_rate)

    def posterior(self, action_id: str, channel: str) -> tuple[float, float]:
        """The (shape, rate) of the lift posterior a choice on ``channel`` draws ``action_id``'s lift
        from: the arm's (``lift="arm"``) or the action factor's; the prior when never contacted."""
        prior = (self.prior_shape, self.prior_rate)
        if self.lift == "arm":
            return self._posterior.get((str(action_id), str(channel)), prior)
        return self._actions.get(str(action_id), prior)

    def expected_lift(self, action_id: str, channel: str) -> float:
        """Posterior mean lift of an arm (``no_action``: 1); what the funnel orders channels by."""
        if str(action_id) == NO_ACTION:
            return 1.0
        shape, rate = self.posterior(action_id, channel)
        if self.lift == "arm":
            return shape / rate
        c_shape, c_rate = self._channels.get(str(channel), (self.prior_shape, self.prior_rate))
        return (shape / rate) * (c_shape / c_rate)

    def __call__(self, decision_id: str, channel: str, candidates: pd.DataFrame) -> tuple[int, np.ndarray]:
        _require_columns(candidates, ["action_id", "priority"], f"candidates for decision {decision_id}")
        return self.choose_arrays(
            decision_id,
            channel,
            candidates["action_id"].astype(str).to_numpy(),
            candidates["priority"].to_numpy(dtype=float),
        )

    def choose_arrays(
        self, decision_id: str, channel: str, action_ids: np.ndarray, priority: np.ndarray
    ) -> tuple[int, np.ndarray]:
        """The choice of ``__call__`` from the candidates' action ids and priorities alone.

        What the funnel calls: building a candidates frame for every decision and channel took
        more of a live micro-batch than the draws themselves.
        """
        k = len(action_ids)
        if k == 0:
            raise InputError(f"candidates for decision {decision_id} on {channel}: no rows to choose from")
        priority = np.asarray(priority, dtype=float)
        bad = ~np.isfinite(priority) | (priority < 0)
        if bad.any():
            raise InputError(
                f"candidates for decision {decision_id} on {channel}: {int(bad.sum())} priority value(s) "
                f"are negative or not finite ({priority[bad][:3].tolist()}); expected >= 0"
            )
        if k == 1:
            return 0, np.ones(1)

        action_ids = np.asarray(action_ids, dtype=str)
        # canonical order, so a replay with the rows in another order draws the same numbers
        order = np.argsort(action_ids, kind="stable")
        actions = action_ids[order]
        prio = priority[order]
        is_no_action = actions == NO_ACTION
        params = np.array([self.posterior(a, channel) for a in actions])

        rng = _decision_rng(self.seed, decision_id, channel)
        # gamma(shape, scale) is standard_gamma(shape) * scale, draw for draw (the same numbers):
        # drawing the standard form and scaling after skips broadcasting a second parameter
        lift = rng.standard_gamma(params[:, 0], size=(self.draws, k)) * (1.0 / params[:, 1])
        lift[:, is_no_action] = 1.0
        sampled = prio * lift
        top = sampled == sampled.max(axis=1, keepdims=True)
        if np.count_nonzero(top) > self.draws:  # some draw has a tie: broken at random
            tie_break = rng.random((self.draws, k))
            tie_break[:, is_no_action] = 2.0  # beats any uniform key: no_action wins the ties it is in
            winners = np.argmax(np.where(top, tie_break, -1.0), axis=1)
        else:  # one top per draw, which the tie-break would pick too: the same choice, undrawn
            winners = np.argmax(top, axis=1)

        shares = np.bincount(winners, minlength=k) / self.draws
        probabilities = np.empty(k)
        probabilities[order] = shares
        return int(order[winners[0]]), probabilities


def factor_posteriors(
    state: pd.DataFrame, prior_shape: float, prior_rate: float
) -> tuple[dict[str, tuple[float, float]], dict[str, tuple[float, float]]]:
    """Mean-field (shape, rate) of every action factor and every channel factor of the lift.

    Alternates the two conjugate updates (each factor's rate uses the other's posterior mean)
    until they stop moving. ``no_action`` rows carry no evidence and are ignored.
    """
    _check_prior(prior_shape, prior_rate)
    _require_columns(state, STATE_COLUMNS, "bandit state")
    rows = state[state["action_id"].astype(str) != NO_ACTION]
    actions = sorted({str(a) for a in rows["action_id"]})
    channels = sorted({str(c) for c in rows["channel"]})
    if not actions:
        return {}, {}
    a_pos = {a: i for i, a in enumerate(actions)}
    c_pos = {c: i for i, c in enumerate(channels)}
    a_idx = np.array([a_pos[str(a)] for a in rows["action_id"]], dtype=np.int64)
    c_idx = np.array([c_pos[str(c)] for c in rows["channel"]], dtype=np.int64)
    accepts = rows["accepts"].to_numpy(dtype=float)
    expected = rows["expected_accepts"].to_numpy(dtype=float)
    a_shape = prior_shape + np.bincount(a_idx, accepts, len(actions))
    c_shape = prior_shape + np.bincount(c_idx, accepts, len(channels))

    def action_rate(c_mean: np.ndarray) -> np.ndarray:
        return prior_rate + np.bincount(a_idx, expected * c_mean[c_idx], len(actions))

    def channel_rate(a_mean: np.ndarray) -> np.ndarray:
        return prior_rate + np.bincount(c_idx, expected * a_mean[a_idx], len(channels))

    c_mean = np.ones(len(channels))
    for _ in range(_FACTOR_ITERATIONS):
        new_mean = c_shape / channel_rate(a_shape / action_rate(c_mean))
        settled = np.abs(new_mean - c_mean).max() < 1e-9
        c_mean = new_mean
        if settled:
            break
    a_rate = action_rate(c_mean)
    c_rate = channel_rate(a_shape / a_rate)
    return (
        {a: (float(s), float(r)) for a, s, r in zip(actions, a_shape, a_rate, strict=True)},
        {c: (float(s), float(r)) for c, s, r in zip(channels, c_shape, c_rate, strict=True)},
    )


def update_state(state: pd.DataFrame, outcomes: pd.DataFrame) -> pd.DataFrame:
    """The state after adding delivered decisions' outcomes; arms seen for the first time are added.

    ``outcomes`` has one row per delivered decision: ``action_id``, ``channel``, ``propensity``
    (the model score the decision used, in [0, 1]) and ``accepted`` (bool). ``no_action`` rows are
    left out: its lift is fixed at 1, so there is nothing to learn. The result is sorted by arm.
    """
    _require_columns(state, STATE_COLUMNS, "bandit state")
    _require_columns(outcomes, OUTCOME_COLUMNS, "bandit outcomes")
    rows = outcomes.loc[outcomes["action_id"].astype(str) != NO_ACTION, list(OUTCOME_COLUMNS)]
    propensity = rows["propensity"].to_numpy(dtype=float)
    bad = ~np.isfinite(propensity) | (propensity < 0) | (propensity > 1)
    if bad.any():
        raise InputError(
            f"bandit outcomes: {int(bad.sum())} propensity value(s) outside [0, 1] or missing "
            f"({propensity[bad][:3].tolist()})"
        )
    if rows["accepted"].isna().any():
        raise InputError(f"bandit outcomes: {int(rows['accepted'].isna().sum())} missing accepted value(s)")

    new = (
        pd.DataFrame(
            {
                "action_id": rows["action_id"].astype(str),
                "channel": rows["channel"].astype(str),
                "contacts": 1,
                "accepts": rows["accepted"].astype(bool).astype("int64"),
                "expected_accepts": propensity,
            }
        )
        .groupby(_ARM, as_index=False)
        .sum()
    )
    old = state[list(STATE_COLUMNS)].astype({"action_id": str, "channel": str})
    merged = pd.concat([old, new], ignore_index=True).groupby(_ARM, as_index=False).sum()
    return merged.astype({"contacts": "int64", "accepts": "int64", "expected_accepts": "float64"})[
        list(STATE_COLUMNS)
    ].reset_index(drop=True)


def state_from_history(outcomes: pd.DataFrame) -> pd.DataFrame:
    """The state built from scratch from every delivered decision's outcome."""
    return update_state(empty_state(), outcomes)


def posterior_summary(
    state: pd.DataFrame, prior_shape: float, prior_rate: float, credibility: float = 0.9
) -> pd.DataFrame:
    """Per arm: the evidence, the posterior mean lift and an equal-tailed credible interval.

    Columns: the state's, ``observed_lift`` (accepts / expected_accepts; NaN before any expected
    accept), ``lift_mean``, ``lift_low``, ``lift_high`` (the ``credibility`` interval, 90% by
    default). For reports: an interval well above 1 says the model under-predicts that arm.
    """
    from scipy import stats  # reports only: keeps scipy's import time off the decision path

    _check_prior(prior_shape, prior_rate)
    if not 0 < credibility < 1:
        raise InputError(f"posterior_summary: credibility is {credibility}; expected in (0, 1)")
    _require_columns(state, STATE_COLUMNS, "bandit state")
    out = state[list(STATE_COLUMNS)].reset_index(drop=True).copy()
    shape = prior_shape + out["accepts"].to_numpy(dtype=float)
    rate = prior_rate + out["expected_accepts"].to_numpy(dtype=float)
    expected = out["expected_accepts"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["observed_lift"] = np.where(expected > 0, out["accepts"].to_numpy(dtype=float) / expected, np.nan)
    tail = (1.0 - credibility) / 2.0
    out["lift_mean"] = shape / rate
    out["lift_low"] = stats.gamma.ppf(tail, shape, scale=1.0 / rate)
    out["lift_high"] = stats.gamma.ppf(1.0 - tail, shape, scale=1.0 / rate)
    return out
