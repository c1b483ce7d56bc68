"""Life events that move intent: home buying, cash-flow stress, and churn risk after complaints.

Each event has an onset day; from then on the customer shows observable signals (property-page
views, failed payments, complaints and fees) and their true propensity for the fitting offer jumps
and decays over days. Multipliers are pure functions of (state, day) so the truth tables and the
closed loop compute exactly the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import personas as P
from . import rng as R
from .population import CARD, LOAN, MORTGAGE, N_PRODUCTS, Population

HOME_LIFT, HOME_DECAY_DAYS = 12.0, 12.0
STRESS_LIFT, STRESS_DECAY_DAYS = 6.0, 15.0
COMPLAINT_LIFT, COMPLAINT_DECAY_DAYS = 5.0, 10.0
FEE_DECAY = float(np.exp(-1 / 7))
DECLINE_DECAY = float(np.exp(-1 / 3))  # a declined payment is on the mind for a few days
NEVER = -(10**6)

FITTING_ACTION = {
    "home_buying": "offer_mortgage",
    "cash_flow_stress": "offer_personal_loan",
    "churn_risk": "retention_call",
}


@dataclass
class LifeState:
    """Onset days (day index within the run, ``NEVER`` if none) and recent-history counters."""

    home_onset: np.ndarray
    stress_onset: np.ndarray
    last_complaint: np.ndarray
    recent_fees: np.ndarray  # exponentially decayed count of fees (one-week time constant)
    recent_declines: np.ndarray  # the same for failed payments (three-day time constant)
    retained_until: np.ndarray  # a successful retention call calms churn risk until this day


def build_life_state(pop: Population, seed: int, days: int) -> LifeState:
    """Draw who meets which life event during the run, and when."""
    rng = R.stream(seed, R.LIFE_EVENTS)
    n = pop.n
    lo = 1 if days > 1 else 0
    onset_home = rng.integers(lo, max(days, lo + 1), n)
    onset_stress = rng.integers(lo, max(days, lo + 1), n)
    home = (rng.random(n) < P.HOME_BUYING_P[pop.persona]) & ~pop.holds[:, MORTGAGE]
    stress = rng.random(n) < P.CASH_STRESS_P[pop.persona]
    return LifeState(
        home_onset=np.where(home, onset_home, NEVER),
        stress_onset=np.where(stress, onset_stress, NEVER),
        last_complaint=np.full(n, NEVER, dtype=np.int64),
        recent_fees=np.zeros(n),
        recent_declines=np.zeros(n),
        retained_until=np.full(n, NEVER, dtype=np.int64),
    )


def _pulse(onset: np.ndarray, day: int, decay_days: float) -> np.ndarray:
    """1 on the onset day decaying exponentially after it; 0 before it."""
    since = day - onset
    return np.where((onset > NEVER) & (since >= 0), np.exp(-np.maximum(since, 0) / decay_days), 0.0)


def home_level(state: LifeState, day: int) -> np.ndarray:
    return _pulse(state.home_onset, day, HOME_DECAY_DAYS)


def stress_level(state: LifeState, day: int) -> np.ndarray:
    return _pulse(state.stress_onset, day, STRESS_DECAY_DAYS)


def intent_multiplier(state: LifeState, day: int) -> np.ndarray:
    """[n, products] multiplier of the base intent to apply."""
    mult = np.ones((len(state.home_onset), N_PRODUCTS))
    mult[:, MORTGAGE] += HOME_LIFT * home_level(state, day)
    s = STRESS_LIFT * stress_level(state, day)
    mult[:, LOAN] += s
    mult[:, CARD] += s
    return mult


def churn_multiplier(state: LifeState, day: int) -> np.ndarray:
    """Multiplier of the persona's base churn hazard: complaints, fees and stress raise it."""
    complaint = COMPLAINT_LIFT * _pulse(state.last_complaint, day, COMPLAINT_DECAY_DAYS)
    mult = (1 + complaint) * (1 + 0.15 * np.minimum(state.recent_fees, 6.0)) * (1 + stress_level(state, day))
    return np.where(state.retained_until >= day, np.minimum(mult, 1.0), mult)


def stressed(pop: Population, state: LifeState, day: int) -> np.ndarray:
    """Credit-stressed now: the persona, or an active cash-flow stress episode."""
    return (pop.persona == P.STRESSED) | (stress_level(state, day) > 0.3)
