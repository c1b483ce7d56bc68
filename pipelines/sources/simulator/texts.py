"""What customers say: their situation -> a BANKING77 intent -> an agent's note or a chat message.

A contact's *situation* comes from what the simulator knows about the person that day: a
declined payment, recent fees, a high churn hazard, a new card, an abandoned application (the
identity checks), cash machines, spending abroad. The situation draws the intent, the intent
draws one of BANKING77's real customer queries, and the agent's shorthand or the chat's
informality wraps it, with personal details the way people type them. The true intent, situation
and sentiment go to ``truth/utterances.parquet`` only; the landing record carries the words.

Only the part of BANKING77 kept for training and simulation (``banking77.split()[0]``) is used,
minus every query that holds a held-out query inside it (compared as lower-case words), and a
restyled query that would equal or hold one falls back to its original: no held-out query reaches
a landing file. Words are drawn from their own random streams (``rng.TEXT``), so changing how
people talk never changes what they do.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.contracts import CONTACT_TOPICS, CONTACT_TYPES
from pipelines.sources import banking77

from . import personas as P
from .codec import prefixed
from .names import (
    CHAT_ABBREVIATIONS,
    CHAT_BOT_FALLBACK,
    CHAT_BOT_REPLIES,
    CHAT_DETAILS,
    CHAT_FOLLOW_UPS,
    CHAT_GREETINGS,
    CHAT_MOODS,
    NOTE_ABBREVIATIONS,
    NOTE_ACTIONS,
    NOTE_CHECKS,
    NOTE_MOODS,
    NOTE_OPENINGS,
    NOTE_SAYS,
    NOTE_SEPARATORS,
)
from .population import Population

INTENTS: tuple[str, ...] = banking77.intents()
INTENT = {name: i for i, name in enumerate(INTENTS)}

SITUATIONS: tuple[str, ...] = (
    "everyday",  # questions anyone has (persona-flavoured)
    "declined_payment",  # a failed payment in the last days
    "fees",  # fees charged recently
    "leaving",  # a high churn hazard: closing the account, complaints, refunds
    "new_card",  # a credit card opened in the last two weeks
    "verification",  # an application abandoned (document upload) in the last week
    "cash",  # cash machines today
    "travel",  # card spending on travel today
    "security",  # a lost card or phone, a payment not recognised
    "service_failure",  # something the bank got wrong
)
EVERYDAY, DECLINED, FEES, LEAVING, NEW_CARD, VERIFICATION, CASH, TRAVEL, SECURITY, SERVICE_FAILURE = range(
    len(SITUATIONS)
)
CHAT = len(CONTACT_TYPES)  # the kind of a chat message, after the contact types (call, ...)

# the agent's coarse topic (contracts.CONTACT_TOPICS) each intent belongs to
INTENT_TOPIC: dict[str, str] = {
    **dict.fromkeys(
        (
            "card_arrival",
            "card_linking",
            "card_delivery_estimate",
            "card_not_working",
            "pin_blocked",
            "contactless_not_working",
            "getting_virtual_card",
            "card_acceptance",
            "get_physical_card",
            "visa_or_mastercard",
            "disposable_card_limits",
            "card_swallowed",
            "change_pin",
            "getting_spare_card",
            "order_physical_card",
            "virtual_card_not_working",
            "get_disposable_virtual_card",
            "activate_my_card",
            "card_about_to_expire",
            "apple_pay_or_google_pay",
            "supported_cards_and_currencies",
        ),
        "cards",
    ),
    **dict.fromkeys(
        (
            "card_payment_wrong_exchange_rate",
            "pending_cash_withdrawal",
            "automatic_top_up",
            "pending_top_up",
            "cancel_transfer",
            "top_up_limits",
            "transfer_not_received_by_recipient",
            "top_up_reverted",
            "balance_not_updated_after_cheque_or_cash_deposit",
            "topping_up_by_card",
            "declined_cash_withdrawal",
            "pending_card_payment",
            "declined_transfer",
            "declined_card_payment",
            "pending_transfer",
            "transfer_timing",
            "reverted_card_payment?",
            "beneficiary_not_allowed",
            "receiving_money",
            "failed_transfer",
            "transfer_into_account",
            "verify_top_up",
            "top_up_by_cash_or_cheque",
            "wrong_exchange_rate_for_cash_withdrawal",
            "top_up_failed",
            "balance_not_updated_after_bank_transfer",
            "atm_support",
        ),
        "payments",
    ),
    **dict.fromkeys(
        (
            "extra_charge_on_statement",
            "card_payment_fee_charged",
            "top_up_by_bank_transfer_charge",
            "transfer_fee_charged",
            "exchange_charge",
            "top_up_by_card_charge",
            "cash_withdrawal_charge",
        ),
        "fees",
    ),
    **dict.fromkeys(
        (
            "edit_personal_details",
            "why_verify_identity",
            "unable_to_verify_identity",
            "verify_my_identity",
            "verify_source_of_funds",
            "terminate_account",
            "age_limit",
            "passcode_forgotten",
        ),
        "account",
    ),
    **dict.fromkeys(
        (
            "lost_or_stolen_card",
            "compromised_card",
            "card_payment_not_recognised",
            "cash_withdrawal_not_recognised",
            "direct_debit_payment_not_recognised",
            "lost_or_stolen_phone",
        ),
        "security",
    ),
    **dict.fromkeys(
        (
            "request_refund",
            "Refund_not_showing_up",
            "transaction_charged_twice",
            "wrong_amount_of_cash_received",
        ),
        "complaint",
    ),
    **dict.fromkeys(
        ("exchange_rate", "fiat_currency_support", "exchange_via_app", "country_support"), "other"
    ),
}
assert set(INTENT_TOPIC) == set(INTENTS), "every BANKING77 intent needs a topic"
assert set(INTENT_TOPIC.values()) == set(CONTACT_TOPICS)
TOPIC_OF_INTENT = np.array([CONTACT_TOPICS.index(INTENT_TOPIC[i]) for i in INTENTS])
COMPLAINT_TOPIC = CONTACT_TOPICS.index("complaint")
# the intents of a customer who is leaving or complaining (what a churn model may read)
LEAVING_INTENTS: tuple[str, ...] = (
    "terminate_account",
    "request_refund",
    "Refund_not_showing_up",
    "transaction_charged_twice",
    "extra_charge_on_statement",
)

# intents each situation calls for (relative weights); "everyday" is every intent, see below
SITUATION_INTENTS: dict[int, dict[str, float]] = {
    DECLINED: {
        "declined_card_payment": 5,
        "card_not_working": 2,
        "declined_transfer": 1.5,
        "failed_transfer": 1,
        "reverted_card_payment?": 1,
        "pending_card_payment": 1,
        "declined_cash_withdrawal": 1,
        "top_up_failed": 0.5,
    },
    FEES: {
        "extra_charge_on_statement": 4,
        "card_payment_fee_charged": 2.5,
        "transfer_fee_charged": 1.5,
        "cash_withdrawal_charge": 1.5,
        "request_refund": 1.5,
        "transaction_charged_twice": 1,
        "exchange_charge": 0.7,
        "top_up_by_card_charge": 0.7,
        "top_up_by_bank_transfer_charge": 0.5,
    },
    LEAVING: {
        "terminate_account": 6,
        "request_refund": 1,
        "extra_charge_on_statement": 1,
        "Refund_not_showing_up": 1,
        "transaction_charged_twice": 0.5,
        "card_payment_fee_charged": 0.5,
        "transfer_not_received_by_recipient": 0.5,
    },
    NEW_CARD: {
        "card_arrival": 3,
        "activate_my_card": 3,
        "card_delivery_estimate": 2,
        "change_pin": 1.5,
        "pin_blocked": 1,
        "card_linking": 1,
        "apple_pay_or_google_pay": 1,
        "get_physical_card": 0.7,
        "order_physical_card": 0.5,
        "visa_or_mastercard": 0.5,
        "card_not_working": 0.5,
    },
    VERIFICATION: {
        "verify_my_identity": 3,
        "unable_to_verify_identity": 3,
        "why_verify_identity": 2,
        "verify_source_of_funds": 1.5,
        "edit_personal_details": 0.5,
        "age_limit": 0.3,
    },
    CASH: {
        "wrong_amount_of_cash_received": 2,
        "cash_withdrawal_charge": 2,
        "pending_cash_withdrawal": 1.5,
        "declined_cash_withdrawal": 1.5,
        "atm_support": 1.5,
        "card_swallowed": 1,
        "balance_not_updated_after_cheque_or_cash_deposit": 1,
        "cash_withdrawal_not_recognised": 0.5,
    },
    TRAVEL: {
        "exchange_rate": 2,
        "card_payment_wrong_exchange_rate": 2,
        "country_support": 1.5,
        "exchange_charge": 1.5,
        "fiat_currency_support": 1,
        "wrong_exchange_rate_for_cash_withdrawal": 1,
        "exchange_via_app": 1,
        "card_acceptance": 1,
        "supported_cards_and_currencies": 0.5,
        "card_payment_fee_charged": 0.5,
    },
    SECURITY: {
        "lost_or_stolen_card": 3,
        "compromised_card": 2.5,
        "card_payment_not_recognised": 2.5,
        "lost_or_stolen_phone": 1.5,
        "cash_withdrawal_not_recognised": 1,
        "direct_debit_payment_not_recognised": 1,
        "passcode_forgotten": 1,
        "pin_blocked": 0.5,
    },
    SERVICE_FAILURE: {
        "transfer_not_received_by_recipient": 2,
        "Refund_not_showing_up": 2,
        "pending_transfer": 1.5,
        "balance_not_updated_after_bank_transfer": 1.5,
        "transaction_charged_twice": 1.5,
        "request_refund": 1.5,
        "card_arrival": 1,
        "pending_top_up": 1,
        "top_up_reverted": 0.7,
        "wrong_amount_of_cash_received": 0.7,
        "pending_card_payment": 0.7,
        "card_not_working": 0.7,
    },
}
# an everyday question is any intent, the situational ones rarely (closing an account: very rarely)
EVERYDAY_DAMPED: dict[str, float] = {
    "terminate_account": 0.05,
    "declined_card_payment": 0.3,
    "extra_charge_on_statement": 0.3,
    "card_payment_fee_charged": 0.3,
    "transaction_charged_twice": 0.3,
    "lost_or_stolen_card": 0.3,
    "compromised_card": 0.3,
    "request_refund": 0.4,
    "Refund_not_showing_up": 0.4,
    "unable_to_verify_identity": 0.4,
}
# persona taste in everyday questions, per contracts.CONTACT_TOPICS (cards, payments, fees,
# account, security, complaint, other): the young use virtual cards and wallets, business owners
# move money, the affluent travel, the disengaged forget passcodes
PERSONA_TOPIC_TILT = np.array(
    [
        [1.4, 1.2, 0.8, 0.8, 1.0, 0.8, 1.2],
        [1.0, 1.2, 1.0, 1.0, 1.0, 1.0, 0.8],
        [0.8, 1.0, 0.8, 0.8, 1.0, 0.8, 2.0],
        [0.8, 1.8, 1.2, 1.2, 1.0, 1.0, 1.0],
        [1.0, 1.2, 1.5, 1.0, 1.0, 1.2, 0.6],
        [1.0, 0.8, 1.0, 1.5, 1.3, 1.0, 0.8],
    ]
)

# How likely each kind of contact (call, service request, complaint, chat) is in each situation
SITUATION_AFFINITY = np.array(
    [
        [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.5, 0.5],
        [1.0, 0.3, 0.5, 1.0, 1.5, 1.0, 0.5, 0.5, 1.0, 0.3],
        [0.05, 2.0, 3.0, 1.5, 0.2, 0.5, 1.0, 0.3, 0.3, 3.0],
        [1.0, 1.0, 1.0, 0.8, 1.2, 1.5, 0.7, 1.2, 0.8, 0.8],
    ]
)
LEAVING_PER_HAZARD = 100.0  # weight of "leaving" per unit of daily churn hazard (everyday weighs 1)

# True sentiment (-1 angry .. 1 delighted): the situation's, the kind's, the intent's (something
# went wrong, or a how-to question), the person's temper, noise
SITUATION_MOOD = np.array([0.1, -0.4, -0.45, -0.55, 0.1, -0.2, -0.25, 0.0, -0.35, -0.45])
KIND_MOOD = np.array([0.0, 0.05, -0.25, 0.0])
PROBLEM_WORDS = re.compile(
    r"declined|not_working|not_received|failed|reverted|not_recognised|lost_or_stolen|compromised|"
    r"swallowed|wrong|charge|pending|blocked|unable|twice|refund|not_updated|not_allowed"
)
INTENT_MOOD = np.array([-0.15 if PROBLEM_WORDS.search(i.lower()) else 0.05 for i in INTENTS])
TEMPER_MEAN = np.array([0.05, 0.0, 0.05, -0.05, -0.1, -0.1])
TEMPER_SD, MOOD_NOISE_SD = 0.12, 0.18
# Mood words: the sentiment as the writer perceives it (with noise) picks angry / unhappy /
# neutral / pleased, and the words show with these probabilities (neutral has none)
MOOD_EDGES = np.array([-0.55, -0.2, 0.35])
PERCEPTION_SD = 0.15
MOOD_SHOWN = np.array([0.7, 0.5, 0.0, 0.5])


# ------------------------------------------------------------------------------------ the corpus
def normalise(text: str) -> str:
    """Lower-case words only: how a generated text is compared with the held-out queries."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split())


def _normalised(texts: list[str], *, bare: bool = False) -> list[str]:
    """``normalise`` of many texts at once (``bare``: apostrophes dropped first, as chat does)."""
    arr = pa.array(texts, pa.string())
    if bare:
        arr = pc.replace_substring_regex(arr, "['\u2019]", "")
    arr = pc.replace_substring_regex(pc.utf8_lower(arr), "[^0-9a-z]+", " ")
    return pc.utf8_trim_whitespace(arr).to_pylist()


HEAD = 10  # characters of a held-out query that index it (every one is longer)
# a normalised text's characters as 6-bit codes (and a line break, which separates texts): ten
# of them make one int64 key
_CODE = np.zeros(256, dtype=np.int64)
for _k, _c in enumerate("0123456789abcdefghijklmnopqrstuvwxyz \n", start=1):
    _CODE[ord(_c)] = _k
_WEIGHTS = np.left_shift(1, 6 * np.arange(HEAD, dtype=np.int64))


def _keys(codes: np.ndarray) -> np.ndarray:
    """The key of every run of HEAD characters (codes), in order."""
    if len(codes) < HEAD:
        return np.zeros(0, dtype=np.int64)
    return np.lib.stride_tricks.sliding_window_view(codes, HEAD) @ _WEIGHTS


class HeldOut:
    """Normalised held-out queries, found inside texts by the keys of their first and last
    characters (an index), then confirmed character by character."""

    def __init__(self, queries: list[str]) -> None:
        self.queries = sorted(set(queries))
        if min(map(len, self.queries), default=HEAD) < HEAD:
            raise ValueError(f"banking77: a held-out query is shorter than {HEAD} characters")
        ends = [(q[:HEAD], q[-HEAD:]) for q in self.queries]
        grid = np.frombuffer("".join(h + t for h, t in ends).encode(), dtype=np.uint8)
        keys = _CODE[grid.reshape(-1, 2, HEAD)] @ _WEIGHTS
        order = np.argsort(keys[:, 0], kind="stable")
        self.queries = [self.queries[k] for k in order]
        self.head, self.tail = keys[order, 0], keys[order, 1]
        self.length = np.array([len(q) for q in self.queries], dtype=np.int64)

    def found(self, norms: list[str]) -> np.ndarray:
        """Per normalised text, whether it holds one of the queries (all texts in one pass)."""
        out = np.zeros(len(norms), dtype=bool)
        joined = "\n".join(norms)
        keys = _keys(_CODE[np.frombuffer(joined.encode(), dtype=np.uint8)])
        first = np.searchsorted(self.head, keys, side="left")
        count = np.searchsorted(self.head, keys, side="right") - first
        at = np.flatnonzero(count)
        # every (position, query with that head) pair whose tail is where the query would end
        n_pairs = count[at]
        pos = np.repeat(at, n_pairs)
        query = (
            np.repeat(first[at], n_pairs)
            + np.arange(len(pos))
            - np.repeat(np.cumsum(n_pairs) - n_pairs, n_pairs)
        )
        end = pos + self.length[query] - HEAD
        inside = end < len(keys)
        pos, query, end = pos[inside], query[inside], end[inside]
        maybe = keys[end] == self.tail[query]
        pos, query = pos[maybe], query[maybe]
        text_of = np.searchsorted(np.cumsum([len(t) + 1 for t in norms]), pos, side="right")
        for a, q, k in zip(pos.tolist(), query.tolist(), text_of.tolist(), strict=True):
            if not out[k] and joined.startswith(self.queries[q], a):
                out[k] = True
        return out


@dataclass(frozen=True)
class Corpus:
    """The queries the simulator may say, grouped by intent, and the held-out ones it must not."""

    texts: pa.Array  # whitespace tidied, grouped by intent in INTENTS order
    start: np.ndarray  # [intents] first row of each intent
    count: np.ndarray  # [intents]
    held_out: HeldOut  # as written, normalised
    held_out_bare: HeldOut  # with apostrophes dropped first (chat writes "hasnt"), normalised

    def hold_held_out(self, texts: list[str]) -> np.ndarray:
        """Per text, whether it holds a held-out query (as lower-case words, apostrophes or not)."""
        return self.held_out.found(_normalised(texts)) | self.held_out_bare.found(
            _normalised(texts, bare=True)
        )


@functools.cache
def corpus() -> Corpus:
    usable, held = banking77.split()
    held_texts = [q.text for q in held]
    held_out = HeldOut(_normalised(held_texts))
    held_out_bare = HeldOut(_normalised(held_texts, bare=True))
    texts = [" ".join(q.text.split()) for q in usable]  # no line breaks or runs of spaces
    holds = held_out.found(_normalised(texts)) | held_out_bare.found(_normalised(texts, bare=True))
    rows = sorted((INTENT[usable[k].intent], k) for k, t in enumerate(texts) if t and not holds[k])
    intent_of = np.array([i for i, _ in rows], dtype=np.int64)
    count = np.bincount(intent_of, minlength=len(INTENTS))
    if (count == 0).any():
        raise ValueError("banking77: an intent has no query left for the simulator")
    return Corpus(
        texts=pa.array([texts[k] for _, k in rows], pa.string()),
        start=np.cumsum(count) - count,
        count=count,
        held_out=held_out,
        held_out_bare=held_out_bare,
    )


@functools.cache
def _intent_table() -> np.ndarray:
    """[situations x personas, intents] cumulative probabilities of the intent."""
    table = np.zeros((len(SITUATIONS), len(P.PERSONAS), len(INTENTS)))
    everyday = np.array([EVERYDAY_DAMPED.get(i, 1.0) for i in INTENTS])
    table[EVERYDAY] = everyday * PERSONA_TOPIC_TILT[:, TOPIC_OF_INTENT]
    for s, weights in SITUATION_INTENTS.items():
        for name, w in weights.items():
            table[s, :, INTENT[name]] = w
    table /= table.sum(axis=2, keepdims=True)
    return np.cumsum(table, axis=2).reshape(len(SITUATIONS) * len(P.PERSONAS), len(INTENTS))


def _draw(rng: np.random.Generator, cumulative: np.ndarray) -> np.ndarray:
    """One category per row of a [rows, k] cumulative table (rows summing to 1 or more)."""
    u = rng.random(len(cumulative)) * cumulative[:, -1]
    return np.minimum((u[:, None] >= cumulative).sum(axis=1), cumulative.shape[1] - 1)


# ------------------------------------------------------------------------------------ who is saying what
@dataclass(frozen=True)
class Speakers:
    """What stays with a person whatever they talk about: their temper and their card's digits."""

    temper: np.ndarray  # [n] added to every sentiment
    card_last4: np.ndarray  # [n] 0..9999


def speakers(pop: Population, rng: np.random.Generator) -> Speakers:
    return Speakers(
        temper=TEMPER_MEAN[pop.persona] + rng.normal(0.0, TEMPER_SD, pop.n),
        card_last4=rng.integers(0, 10_000, pop.n),
    )


@dataclass(frozen=True)
class DayState:
    """What the simulator knows about everyone today that gives them something to say ([n] each)."""

    hazard: np.ndarray  # true daily churn hazard
    stress: np.ndarray  # cash-flow stress level 0..1
    fees: np.ndarray  # recent fees (decayed count)
    declines: np.ndarray  # recent failed payments (decayed count)
    new_card: np.ndarray  # a credit card opened in the last two weeks
    abandoned: np.ndarray  # an application abandoned in the last week
    cash: np.ndarray  # cash-machine visits today
    travel: np.ndarray  # card payments on travel today


@dataclass(frozen=True)
class Said:
    """The truth of what each customer message says: situation and intent (codes), sentiment."""

    situation: np.ndarray
    intent: np.ndarray
    sentiment: np.ndarray

    def take(self, idx: np.ndarray) -> Said:
        return Said(self.situation[idx], self.intent[idx], self.sentiment[idx])


def what_is_said(
    rng: np.random.Generator,
    persons: np.ndarray,
    kind: np.ndarray,
    pop: Population,
    state: DayState,
    people: Speakers,
) -> Said:
    """Situation, intent and true sentiment of each contact (``kind``: contact type or CHAT)."""
    n = len(persons)
    if not n:
        empty = np.zeros(0, dtype=np.int64)
        return Said(empty, empty, np.zeros(0))
    w = np.empty((n, len(SITUATIONS)))
    w[:, EVERYDAY] = 1.0
    w[:, DECLINED] = 2.5 * np.minimum(state.declines[persons], 3.0)
    w[:, FEES] = 1.2 * np.minimum(state.fees[persons], 4.0)
    w[:, LEAVING] = LEAVING_PER_HAZARD * state.hazard[persons]
    w[:, NEW_CARD] = 2.0 * state.new_card[persons]
    w[:, VERIFICATION] = 2.0 * state.abandoned[persons]
    w[:, CASH] = 0.6 * np.minimum(state.cash[persons], 2)
    w[:, TRAVEL] = 0.4 * np.minimum(state.travel[persons], 3)
    w[:, SECURITY] = 0.06
    w[:, SERVICE_FAILURE] = 0.1 + 0.5 * state.stress[persons]
    w *= SITUATION_AFFINITY[kind]
    situation = _draw(rng, np.cumsum(w, axis=1))
    intent = _draw(rng, _intent_table()[situation * len(P.PERSONAS) + pop.persona[persons]])
    mood = (
        SITUATION_MOOD[situation]
        + KIND_MOOD[kind]
        + INTENT_MOOD[intent]
        + people.temper[persons]
        + rng.normal(0.0, MOOD_NOISE_SD, n)
    )
    return Said(situation, intent, np.round(np.clip(mood, -1.0, 1.0), 2))


def agent_topics(
    rng: np.random.Generator, intent: np.ndarray, kind: np.ndarray, error_rate: float
) -> tuple[np.ndarray, np.ndarray]:
    """The agent's wrap-up code (contracts.CONTACT_TOPICS) and whether it is the right one.

    A wrong code is "complaint" for most complaints (the agent codes the call by its type),
    else any other topic."""
    n = len(intent)
    right = TOPIC_OF_INTENT[intent]
    u = rng.random((n, 3))
    wrong = u[:, 0] < error_rate
    other = (right + 1 + (u[:, 1] * (len(CONTACT_TOPICS) - 1)).astype(np.int64)) % len(CONTACT_TOPICS)
    by_type = (kind == CONTACT_TYPES.index("complaint")) & (right != COMPLAINT_TOPIC) & (u[:, 2] < 0.6)
    other = np.where(by_type, COMPLAINT_TOPIC, other)
    topic = np.where(wrong, other, right)
    return topic, topic == right


# ------------------------------------------------------------------------------------ the words
def _table(values: tuple[str, ...]) -> pa.Array:
    return pa.array(values, pa.string())


def _pick(values: tuple[str, ...], codes: np.ndarray) -> pa.Array:
    return _table(values).take(pa.array(codes, pa.int64()))


def _nested_pick(
    rng: np.random.Generator, groups: tuple[tuple[str, ...], ...], group: np.ndarray
) -> pa.Array:
    """One string per row from the row's group (an empty group gives some other group's string:
    mask those rows)."""
    flat = tuple(s for g in groups for s in g) or ("",)
    sizes = np.array([len(g) for g in groups])
    starts = np.cumsum(sizes) - sizes
    k = (rng.random(len(group)) * np.maximum(sizes[group], 1)).astype(np.int64)
    return _pick(flat, np.minimum(starts[group] + k, len(flat) - 1))


def _blank(n: int) -> pa.Array:
    return pa.repeat(pa.scalar("", pa.string()), n)


def _when(mask: np.ndarray, value: pa.Array | str, otherwise: pa.Array | str = "") -> pa.Array:
    return pc.if_else(pa.array(mask, pa.bool_()), value, otherwise)


def _join(*parts: pa.Array | str) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def _rewrite(texts: pa.Array, mask: np.ndarray, rules: tuple[tuple[str, str], ...]) -> pa.Array:
    if not mask.any():
        return texts
    out = texts
    for pattern, replacement in rules:
        out = pc.replace_substring_regex(out, pattern=pattern, replacement=replacement)
    return _when(mask, out, texts)


def _slip(word: str, k: int, at: float) -> str:
    """One keyboard slip inside a word: swap two letters, drop one or double one."""
    i = 1 + int(at * (len(word) - 2))
    if k == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if k == 1:
        return word[:i] + word[i + 1 :]
    return word[:i] + word[i] + word[i:]


def _typos(rng: np.random.Generator, texts: pa.Array, mask: np.ndarray) -> pa.Array:
    """A slip in one longer word of the masked rows (few rows: plain Python)."""
    rows = np.flatnonzero(mask)
    if not len(rows):
        return texts
    u = rng.random((len(rows), 3))
    values = texts.to_pylist()
    for r, (a, b, c) in zip(rows.tolist(), u.tolist(), strict=True):
        words = values[r].split(" ")
        long = [j for j, w in enumerate(words) if len(w) >= 5 and w.isalpha()]
        if long:
            j = long[int(a * len(long))]
            words[j] = _slip(words[j], int(b * 3), c)
            values[r] = " ".join(words)
    return pa.array(values, pa.string())


def _restyle(
    rng: np.random.Generator,
    base: pa.Array,
    *,
    lower: float,
    shorthand: float,
    rules: tuple[tuple[str, str], ...],
    unpunctuate: float,
    typo: float,
) -> pa.Array:
    """The query as written down: lower-cased, abbreviated, end punctuation dropped, a slip."""
    n = len(base)
    u = rng.random((n, 4))
    text = _when(u[:, 0] < lower, pc.utf8_lower(base), base)
    text = _rewrite(text, u[:, 1] < shorthand, rules)
    text = _when(u[:, 2] < unpunctuate, pc.replace_substring_regex(text, r"[.!]+$", ""), text)
    text = _typos(rng, text, u[:, 3] < typo)
    # a query that an abbreviation or a slip made hold a held-out one is written as it was (case
    # and end punctuation do not count: the comparison ignores them)
    reworded = np.flatnonzero((u[:, 1] < shorthand) | (u[:, 3] < typo))
    back = reworded[corpus().hold_held_out(text.take(pa.array(reworded, pa.int64())).to_pylist())]
    if len(back):
        mask = np.zeros(n, dtype=bool)
        mask[back] = True
        text = _when(mask, base, text)
    return text


def queries(rng: np.random.Generator, intent: np.ndarray) -> pa.Array:
    """One real customer query per row, of the row's intent."""
    c = corpus()
    k = (rng.random(len(intent)) * c.count[intent]).astype(np.int64)
    return c.texts.take(pa.array(c.start[intent] + k))


@dataclass(frozen=True)
class Details:
    """Personal details of the rows' people, typed the way people type them."""

    first: pa.Array
    full: pa.Array
    phone: pa.Array
    postcode: pa.Array
    email: pa.Array
    card_last4: pa.Array

    def pick(self, kind: np.ndarray) -> pa.Array:
        """The detail named by ``kind`` (0 none, 1 phone, 2 postcode, 3 email, 4 card digits)."""
        return pc.choose(
            pa.array(kind, pa.int8()),
            _blank(len(kind)),
            self.phone,
            self.postcode,
            self.email,
            self.card_last4,
        )


def details(rng: np.random.Generator, pop: Population, people: Speakers, persons: np.ndarray) -> Details:
    n = len(persons)
    phone = pa.array(pop.phone[persons].tolist(), pa.string())  # +447700900123
    national = pc.utf8_slice_codeunits(phone, 3)
    local = _join("0", national)
    spaced = _join(pc.utf8_slice_codeunits(local, 0, 5), " ", pc.utf8_slice_codeunits(local, 5))
    international = _join(
        "+44 ", pc.utf8_slice_codeunits(national, 0, 4), " ", pc.utf8_slice_codeunits(national, 4)
    )
    style = pa.array(rng.integers(0, 3, n), pa.int8())
    first = pa.array(pop.first_name[persons].tolist(), pa.string())
    return Details(
        first=first,
        full=_join(first, " ", pa.array(pop.last_name[persons].tolist(), pa.string())),
        phone=pc.choose(style, spaced, local, international),
        postcode=pa.array(pop.address.postcode[persons].tolist(), pa.string()),
        email=pa.array(pop.email[persons].tolist(), pa.string()),
        card_last4=prefixed("", people.card_last4[persons], 4),
    )


def _moods(rng: np.random.Generator, sentiment: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mood bucket as the writer perceives it, and whether it shows in the words."""
    perceived = sentiment + rng.normal(0.0, PERCEPTION_SD, len(sentiment))
    bucket = np.digitize(perceived, MOOD_EDGES)
    return bucket, rng.random(len(sentiment)) < MOOD_SHOWN[bucket]


def agent_notes(
    rng: np.random.Generator,
    said: Said,
    kind: np.ndarray,
    topic: np.ndarray,
    who: Details,
) -> pa.Array:
    """An agent's note: opening (maybe the name), what the customer said, what the agent did,
    the mood and a security check or contact detail, in agents' shorthand."""
    n = len(kind)
    base = queries(rng, said.intent)
    words = _restyle(
        rng, base, lower=0.45, shorthand=0.35, rules=NOTE_ABBREVIATIONS, unpunctuate=0.3, typo=0.12
    )
    openings = tuple(o for group in NOTE_OPENINGS for o in group)
    sizes = np.array([len(g) for g in NOTE_OPENINGS])
    o = np.cumsum(sizes)[kind] - sizes[kind] + (rng.random(n) * sizes[kind]).astype(np.int64)
    name_kind = np.array([x[1] for x in openings])[o]
    name = pc.choose(pa.array(name_kind, pa.int8()), _blank(n), who.first, who.full)
    opening = _join(_pick(tuple(x[0] for x in openings), o), name, _pick(tuple(x[2] for x in openings), o))
    says = _pick(NOTE_SAYS, rng.integers(len(NOTE_SAYS), size=n))
    u = rng.random((n, 3))
    sep = _pick(NOTE_SEPARATORS, rng.integers(len(NOTE_SEPARATORS), size=(3, n)).reshape(-1))
    sep1, sep2, sep3 = sep.slice(0, n), sep.slice(n, n), sep.slice(2 * n, n)
    action = _when(u[:, 0] < 0.7, _join(sep1, _nested_pick(rng, NOTE_ACTIONS, topic)))
    bucket, shown = _moods(rng, said.sentiment)
    mood = _when(shown, _join(sep2, _nested_pick(rng, NOTE_MOODS, bucket)))
    check = rng.integers(len(NOTE_CHECKS), size=n)
    check_kind = np.array([c[1] for c in NOTE_CHECKS])[check]
    tail = _when(
        u[:, 1] < 0.55, _join(sep3, _pick(tuple(c[0] for c in NOTE_CHECKS), check), who.pick(check_kind))
    )
    return _join(opening, says, words, action, mood, tail)


def chat_openings(rng: np.random.Generator, said: Said, who: Details) -> pa.Array:
    """A customer's first chat message: short, informal, sometimes card digits or an email."""
    n = len(said.intent)
    base = queries(rng, said.intent)
    words = _restyle(
        rng, base, lower=0.6, shorthand=0.4, rules=CHAT_ABBREVIATIONS, unpunctuate=0.5, typo=0.15
    )
    u = rng.random((n, 2))
    greeting = _when(u[:, 0] < 0.3, _pick(CHAT_GREETINGS, rng.integers(len(CHAT_GREETINGS), size=n)))
    detail = rng.integers(len(CHAT_DETAILS), size=n)
    detail_kind = np.array([d[1] for d in CHAT_DETAILS])[detail]
    extra = _when(
        u[:, 1] < 0.15, _join(_pick(tuple(d[0] for d in CHAT_DETAILS), detail), who.pick(detail_kind))
    )
    bucket, shown = _moods(rng, said.sentiment)
    mood = _when(shown, _nested_pick(rng, CHAT_MOODS, bucket))
    return _join(greeting, words, extra, mood)


def bot_replies(rng: np.random.Generator, intent: np.ndarray) -> pa.Array:
    """The bot's answer: about the right topic most of the time, else a hand-over."""
    reply = _nested_pick(rng, CHAT_BOT_REPLIES, TOPIC_OF_INTENT[intent])
    return _when(rng.random(len(intent)) < 0.8, reply, CHAT_BOT_FALLBACK)


def follow_ups(rng: np.random.Generator, sentiment: np.ndarray) -> pa.Array:
    """What a customer answers the bot, by their mood as they feel it."""
    perceived = sentiment + rng.normal(0.0, PERCEPTION_SD, len(sentiment))
    return _nested_pick(rng, CHAT_FOLLOW_UPS, np.digitize(perceived, MOOD_EDGES))
