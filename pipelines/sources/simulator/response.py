"""The known response model: P(accept | state, offer, channel, recent contacts), complaints, churn.

One function computes the probabilities for both the bank's own campaigns inside the simulation
and the closed loop, so what the truth says and what the simulator does can never disagree.

- Base acceptance of a product offer rises with the customer's true daily intent to apply
  (``1 - exp(-ACCEPT_SCALE * intent)``); zero if the product is already held.
- The channel shifts the log-odds (a global effect plus the persona's affinity).
- Contact fatigue: each contact in the previous ``FATIGUE_DAYS`` days lowers the log-odds by
  ``FATIGUE`` and raises the complaint probability.
- Harmful conflict: a credit offer to a credit-stressed customer adds ``CONFLICT_COMPLAINT``.
- Contact without consent is a violation and adds ``VIOLATION_COMPLAINT``.
"""

from __future__ import annotations

import numpy as np

from pipelines.contracts import MARKETING_CHANNELS, OFFER_CHANNELS

from . import personas as P
from .actions import ACTION_CONTACT, ACTION_CREDIT, ACTION_IDS, ACTION_PRODUCT, HELP_FINISH, RETENTION

ACCEPT_SCALE = 40.0
RETENTION_SAVE = 0.4
HELP_FINISH_ACCEPT = 0.45
ABANDONED_DAYS = 7
FATIGUE = 0.45
FATIGUE_DAYS = 7
BASE_COMPLAINT = 0.003
FATIGUE_COMPLAINT = 0.012
CONFLICT_COMPLAINT = 0.12
VIOLATION_COMPLAINT = 0.10
CLICK_WITHOUT_ACCEPT = 0.08
# global log-odds effect per contracts.OFFER_CHANNELS: email, sms, push, phone, web, app, branch
CHANNEL_EFFECT = np.array([-0.6, -0.4, -0.3, 0.3, -0.2, 0.0, 0.5])
N_MARKETING = len(MARKETING_CHANNELS)
RESPONSES = ("impression", "click", "accept", "dismiss", "complaint")


def product_accept(intent: np.ndarray) -> np.ndarray:
    """Channel-neutral P(accept) of a product offer given the true daily intent to apply."""
    return 1.0 - np.exp(-ACCEPT_SCALE * intent)


def retention_accept(hazard: np.ndarray) -> np.ndarray:
    """P(a retention call keeps a customer who would otherwise leave within 30 days)."""
    return RETENTION_SAVE * (1.0 - np.exp(-30.0 * hazard))


def base_accept(intent: np.ndarray, hazard: np.ndarray, abandoned: np.ndarray) -> np.ndarray:
    """[n, actions] channel-neutral acceptance probability of every action, no fatigue."""
    n = len(hazard)
    out = np.zeros((n, len(ACTION_IDS)))
    for a, k in enumerate(ACTION_PRODUCT):
        if k >= 0:
            out[:, a] = product_accept(intent[:, k])
    out[:, RETENTION] = retention_accept(hazard)
    out[:, HELP_FINISH] = np.where(abandoned, HELP_FINISH_ACCEPT, 0.0)
    return out


def consent_ok(consent: np.ndarray, channel: np.ndarray) -> np.ndarray:
    """Whether contacting each row on ``channel`` is allowed.

    ``consent`` is [n, purposes, consent channels] (purposes: marketing, profiling; channels:
    email, sms, push, phone, any). Marketing channels need marketing consent for the channel and
    for ``any``; owned channels (web, app, branch) need profiling consent (``any``).
    """
    rows = np.arange(len(channel))
    ch = np.minimum(channel, N_MARKETING - 1)
    marketing = consent[rows, 0, ch] & consent[rows, 0, N_MARKETING]
    return np.where(channel < N_MARKETING, marketing, consent[rows, 1, N_MARKETING])


def offer_probabilities(
    base_p: np.ndarray,
    action: np.ndarray,
    channel: np.ndarray,
    persona: np.ndarray,
    recent_contacts: np.ndarray,
    allowed: np.ndarray,
    credit_stressed: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(P(accept), P(click), P(complaint)) per row; all arrays are aligned per decision."""
    p = np.clip(base_p, 0.0, 0.999)
    with np.errstate(divide="ignore"):
        logit = np.log(p) - np.log1p(-p)
    logit = logit + CHANNEL_EFFECT[channel] + P.CHANNEL_AFFINITY[persona, channel] - FATIGUE * recent_contacts
    p_accept = np.where(p > 0, 1.0 / (1.0 + np.exp(-logit)), 0.0)
    contact = ACTION_CONTACT[action]
    p_accept = np.where(contact, p_accept, 0.0)
    p_click = np.where(contact, p_accept + (1 - p_accept) * CLICK_WITHOUT_ACCEPT, 0.0)
    p_complaint = (
        BASE_COMPLAINT
        + FATIGUE_COMPLAINT * recent_contacts
        + CONFLICT_COMPLAINT * (ACTION_CREDIT[action] & credit_stressed)
        + VIOLATION_COMPLAINT * ~allowed
    )
    p_complaint = np.where(contact, np.clip(p_complaint, 0.0, 0.9), 0.0)
    return p_accept, p_click, p_complaint


def response_events(
    u: np.ndarray,
    decided_ms: np.ndarray,
    channel: np.ndarray,
    p_accept: np.ndarray,
    p_click: np.ndarray,
    p_complaint: np.ndarray,
    contact: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample the response events of each decision from uniforms ``u`` [n, 8].

    Returns (row, response code into ``RESPONSES``, event time ms). Impressions follow the
    decision by seconds (owned channels) to minutes; clicks by minutes; acceptances by hours (at
    most two days); complaints by hours.
    """
    n = len(decided_ms)
    owned = channel >= N_MARKETING
    delay_imp = np.where(owned, 1_000 + u[:, 0] * 20_000, 60_000 + u[:, 0] * 29 * 60_000).astype(np.int64)
    t_imp = decided_ms + delay_imp
    clicked = contact & (u[:, 1] < p_click)
    ratio = np.divide(p_accept, p_click, out=np.zeros(n), where=p_click > 0)
    accepted = clicked & (u[:, 2] < ratio)
    dismissed = contact & ~accepted & (u[:, 3] < 0.35)
    complained = contact & (u[:, 4] < p_complaint)
    t_click = t_imp + (-np.log1p(-u[:, 5]) * 20 * 60_000).astype(np.int64)
    t_accept = t_click + np.minimum(-np.log1p(-u[:, 6]) * 3 * 3_600_000, 48 * 3_600_000).astype(np.int64)
    t_dismiss = t_imp + (5_000 + u[:, 7] * 10 * 60_000).astype(np.int64)
    t_complaint = t_imp + (600_000 + u[:, 6] * 6 * 3_600_000).astype(np.int64)
    rows, codes, times = [], [], []
    for code, mask, t in (
        (0, contact, t_imp),
        (1, clicked, t_click),
        (2, accepted, t_accept),
        (3, dismissed, t_dismiss),
        (4, complained, t_complaint),
    ):
        idx = np.flatnonzero(mask)
        rows.append(idx)
        codes.append(np.full(len(idx), code, dtype=np.int8))
        times.append(t[idx])
    return np.concatenate(rows), np.concatenate(codes), np.concatenate(times)


def channel_index(names: np.ndarray) -> np.ndarray:
    """Channel names to indexes into contracts.OFFER_CHANNELS (-1 if unknown)."""
    lookup = {c: i for i, c in enumerate(OFFER_CHANNELS)}
    return np.array([lookup.get(str(c), -1) for c in names], dtype=np.int64)
