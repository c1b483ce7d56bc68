"""Product application journeys: start -> ... -> submit, with step-specific abandonment.

``document_upload`` is the designed friction step: more people give up there than at any other
step. A submitted, approved application opens the product the next day.
"""

from __future__ import annotations

import numpy as np

from . import personas as P
from .population import CARD, LOAN, MORTGAGE, Population

N_STEPS = len(P.FUNNEL_CONTINUE) + 1  # contracts.APPLICATION_STEPS


def continue_probabilities(persona: np.ndarray) -> np.ndarray:
    """[n, steps-1] P(moving on from each step), shifted in log-odds by persona."""
    base = P.FUNNEL_CONTINUE[None, :]
    logit = np.log(base / (1 - base)) + P.FUNNEL_PERSONA_SHIFT[persona][:, None]
    return 1.0 / (1.0 + np.exp(-logit))


def completion_probability(pop: Population) -> np.ndarray:
    """[n] P(an application once started is submitted), digital or in branch."""
    digital = continue_probabilities(pop.persona).prod(axis=1)
    return np.where(pop.registered, digital, P.BRANCH_COMPLETE_P)


def approval_probability(pop: Population) -> np.ndarray:
    """[n, products] P(the bank approves a submitted application): credit depends on the score."""
    credit = 1.0 / (1.0 + np.exp(-(pop.bureau_score - 600.0) / 35.0))
    out = np.full((pop.n, pop.holds.shape[1]), 0.98)
    for k in (CARD, MORTGAGE, LOAN):
        out[:, k] = credit
    return out


def run_funnel(rng: np.random.Generator, persona: np.ndarray) -> np.ndarray:
    """Index of the last step each application reaches (``N_STEPS - 1`` = submitted)."""
    cont = continue_probabilities(persona)
    goes_on = rng.random(cont.shape) < cont
    # number of consecutive successes from the first step
    return np.cumprod(goes_on, axis=1).sum(axis=1)
