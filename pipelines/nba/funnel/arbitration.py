"""The arbitration stage: priorities, then channels one at a time, each choosing one candidate.

priority = propensity x value x business_lever x context weight. Channels choose in order of their
best priority x the chooser's expected lift, each picking one (the model's chooser, or the control
group's default policy: the lowest default rank); a decision never holds one action on two
channels, two mutually exclusive actions, or more than max_actions_per_decision contacts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np
import pandas as pd

from pipelines.config import DecisioningConfig
from pipelines.contracts import OFFER_CHANNELS
from pipelines.nba.catalog import NO_ACTION, Action, ActionCatalog, missing
from pipelines.nba.catalog import plain_number as num
from pipelines.nba.funnel.candidates import Candidate
from pipelines.nba.funnel.requests import DecisionRequest


class Chooser(Protocol):
    """Picks one candidate on one channel: (position chosen, probability of each candidate).

    ``candidates`` holds at least ``action_id`` and ``priority`` (best first). The probabilities
    must be the ones the choice was really made with: the log records them for off-policy
    evaluation. ``pipelines.nba.bandit`` provides a Thompson-sampling chooser.
    """

    def __call__(
        self, decision_id: str, channel: str, candidates: pd.DataFrame
    ) -> tuple[int, np.ndarray]: ...


def greedy_chooser(decision_id: str, channel: str, candidates: pd.DataFrame) -> tuple[int, np.ndarray]:
    """The highest priority, with certainty; on a tie no_action wins (doing nothing is the safe default)."""
    return _greedy(candidates["action_id"].tolist(), candidates["priority"].to_numpy(dtype=float))


def _greedy(action_ids: list[str], priority: np.ndarray) -> tuple[int, np.ndarray]:
    top = np.flatnonzero(priority == priority.max())
    is_none = np.array([action_ids[i] == NO_ACTION for i in top])
    position = int(top[np.argmax(is_none)]) if is_none.any() else int(top[0])
    probabilities = np.zeros(len(action_ids))
    probabilities[position] = 1.0
    return position, probabilities


def _propensity(action: Action, request: DecisionRequest, policy: DecisioningConfig) -> tuple[float, str]:
    """The probability the customer takes the action, and where it came from (for the trace)."""
    arb = policy.arbitration
    context = request.context
    if action.kind == "none":
        return 0.0, "no_action: nothing to take up"
    if action.kind == "service":
        product = context.get("open_application_product")
        if not missing(product) and product in request.trigger_products:
            value = min(1.0, arb.service_propensity * arb.service_match_boost)
            return value, (
                f"service propensity {num(arb.service_propensity)} x {num(arb.service_match_boost)} "
                f"(a trigger is about the open {product} application) = {num(value)}"
            )
        return (
            arb.service_propensity,
            f"service propensity {num(arb.service_propensity)} (configured)",
        )
    column = "churn_risk" if action.kind == "retention" else f"propensity_{action.product}"
    score: Any = context.get(column)  # a number, or None/NaN/pd.NA: missing() tells
    if missing(score):
        return arb.fallback_propensity, (
            f"{column} is missing (no champion model): fallback propensity {num(arb.fallback_propensity)}"
        )
    model = "propensity_churn" if column == "churn_risk" else column
    version = _model_versions(context.get("model_versions")).get(model)
    return float(score), f"{column} = {float(score):.4g}" + (
        f" (model {model} v{version})" if version else ""
    )


def _model_versions(value: Any) -> dict[str, str]:
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    if isinstance(value, str) and value:
        try:
            parsed = json.loads(value)
        except ValueError:
            return {}
        return {str(k): str(v) for k, v in parsed.items()} if isinstance(parsed, dict) else {}
    if isinstance(value, list | tuple):  # a Spark map arrives as a list of (key, value) pairs
        return {str(k): str(v) for k, v in value}
    return {}


def arbitration_stage(
    request: DecisionRequest,
    candidates: list[Candidate],
    catalog: ActionCatalog,
    policy: DecisioningConfig,
    choose: Chooser,
) -> None:
    """Priorities, then channels one at a time, best first, each choosing among what is left.

    After every choice the candidates it rules out on the remaining channels are removed (the same
    action, a mutually exclusive one, or any contact once max_actions_per_decision is reached), so
    the channel order is re-evaluated with what is still possible.
    """
    arb = policy.arbitration
    control = request.policy == "control"
    lift = _expected_lift(choose)
    for c in candidates:
        if c.alive:
            c.propensity, c.propensity_note = _propensity(c.action, request, policy)
            c.priority = c.propensity * c.action.value * c.action.business_lever * request.context_weight

    pending = {ch: [c for c in candidates if c.channel == ch and c.alive] for ch in catalog.channels}
    pending = {ch: cands for ch, cands in pending.items() if cands}  # channels not asked about
    chosen: list[Candidate] = []
    while pending:
        for cands in pending.values():
            for c in cands:
                if c.alive and c.action.contact:
                    _prune(c, chosen, catalog, arb.max_actions_per_decision)
        channel = min(pending, key=lambda ch: _channel_order(ch, pending[ch], control, lift))
        left = [c for c in pending.pop(channel) if c.alive]
        pick = _choose_default(left) if control else _choose_model(request, channel, left, choose)
        if pick.action.contact:
            chosen.append(pick)


def _expected_lift(choose: Chooser) -> Callable[[str, str], float]:
    """The chooser's posterior mean lift of an arm, or 1 for a chooser that learns none (greedy)."""
    method = getattr(choose, "expected_lift", None)
    return method if callable(method) else (lambda _action, _channel: 1.0)


def _channel_order(
    channel: str, candidates: list[Candidate], control: bool, lift: Callable[[str, str], float]
) -> tuple:
    """Which channel chooses next: the best remaining priority x the arm's expected lift (how well
    the chooser has seen that action convert on that channel); control: the lowest default rank.

    Deterministic given the bandit state, so the choice probabilities logged within a channel stay
    exact: the exploration is in which action a channel picks, not in which channel picks first.
    """
    left = [c for c in candidates if c.alive]
    position = OFFER_CHANNELS.index(channel)
    if control:
        contacting = [c.action.default_rank for c in left if c.action.contact]
        return (0, min(contacting), position) if contacting else (1, 0, position)
    best = max((c.priority or 0.0) * lift(c.action.action_id, channel) for c in left)
    return (-best, position)


def _prune(c: Candidate, chosen: list[Candidate], catalog: ActionCatalog, max_actions: int) -> None:
    for other in chosen:
        if other.action.action_id == c.action.action_id:
            c.remove(
                "arbitration",
                f"conflict:{other.action.action_id}",
                f"{other.action.action_id} already chosen on {other.channel}: one channel per action",
            )
            return
        if catalog.excluded(c.action.action_id, other.action.action_id):
            c.remove(
                "arbitration",
                f"conflict:{other.action.action_id}",
                f"mutually exclusive with {other.action.action_id}, chosen on {other.channel}",
            )
            return
    if len(chosen) >= max_actions:
        names = ", ".join(f"{o.action.action_id} on {o.channel}" for o in chosen)
        c.remove(
            "arbitration",
            "max_actions_per_decision",
            f"at most {max_actions} contacting action(s) per decision: {names} chosen",
        )


def _choose_model(
    request: DecisionRequest, channel: str, left: list[Candidate], choose: Chooser
) -> Candidate:
    """The chooser picks among the channel's candidates, best priority first."""
    left.sort(key=lambda c: (-(c.priority or 0.0), c.action.default_rank, c.action.action_id))
    if len(left) == 1:  # only no_action: no choice to make
        position, probabilities = 0, np.ones(1)
    elif choose is greedy_chooser:  # the same choice without building a frame (most of the time taken)
        position, probabilities = _greedy(
            [c.action.action_id for c in left], np.array([c.priority or 0.0 for c in left])
        )
    elif callable(choose_arrays := getattr(choose, "choose_arrays", None)):  # the same, frame-free
        position, probabilities = choose_arrays(
            request.decision_id,
            channel,
            np.array([c.action.action_id for c in left], dtype=str),
            np.array([float(c.priority or 0.0) for c in left]),
        )
        probabilities = _check_choice(request.decision_id, channel, len(left), position, probabilities)
    else:
        frame = pd.DataFrame(
            {
                "action_id": [c.action.action_id for c in left],
                "channel": channel,
                "kind": [c.action.kind for c in left],
                "product": [c.action.product for c in left],
                "priority": [float(c.priority or 0.0) for c in left],
                "propensity": [float(c.propensity or 0.0) for c in left],
                "value": [c.action.value for c in left],
                "business_lever": [c.action.business_lever for c in left],
                "context_weight": request.context_weight,
                "default_rank": [c.action.default_rank for c in left],
                "customer_number": request.customer_number,
            }
        )
        position, probabilities = choose(request.decision_id, channel, frame)
        probabilities = _check_choice(request.decision_id, channel, len(left), position, probabilities)
    pick = left[position]
    for rank, c in enumerate(left, start=1):
        c.choice_probability = float(probabilities[rank - 1])
        if c is pick:
            words = "no contact" if not c.action.contact else f"priority {num(c.priority or 0.0)}"
            c.remove(
                "chosen",
                "model_policy",
                f"rank {rank} of {len(left)} on {channel} ({words}), chosen with probability "
                f"{c.choice_probability:.3g}",
            )
        else:
            c.remove(
                "ranked",
                "not_chosen",
                f"rank {rank} of {len(left)} on {channel} (priority {num(c.priority or 0.0)}); "
                f"{pick.action.action_id} chosen",
            )
    return pick


def _choose_default(left: list[Candidate]) -> Candidate:
    """The control group's default policy: the lowest default_rank among contacting survivors."""
    left.sort(key=lambda c: (not c.action.contact, c.action.default_rank, c.action.action_id))
    pick = left[0]
    for c in left:
        c.choice_probability = 1.0 if c is pick else 0.0
        if c is pick:
            c.remove(
                "chosen", "default_policy", f"lowest default rank ({c.action.default_rank}) on {c.channel}"
            )
        else:
            c.remove(
                "ranked",
                "not_chosen",
                f"default rank {c.action.default_rank}; {pick.action.action_id} ranks first",
            )
    return pick


def _check_choice(decision_id: str, channel: str, n: int, position: Any, probabilities: Any) -> np.ndarray:
    """A chooser's answer must be a valid position and a probability for every candidate."""
    p = np.asarray(probabilities, dtype=float)
    ok = (
        isinstance(position, int | np.integer)
        and 0 <= int(position) < n
        and p.shape == (n,)
        and bool(np.isfinite(p).all())
        and bool((p >= 0).all())
        and abs(float(p.sum()) - 1.0) < 1e-6
        and p[int(position)] > 0
    )
    if not ok:
        raise ValueError(
            f"chooser for decision {decision_id} on {channel}: position {position!r} and probabilities "
            f"{p.tolist()} do not describe a choice among {n} candidates"
        )
    return p
