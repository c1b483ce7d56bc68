"""Daily behaviour in event time: money movements, visits, calls, chats, digital sessions, consent.

Each function draws one day of one kind of behaviour for every active customer at once and
returns column arrays (``Events``) that the engine gives event ids, encodes and delivers.
Behaviour depends on the hidden persona and the life-event state, which is what makes personas
recoverable from data and intent visible before it is acted on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from pipelines.contracts import (
    APPLICATION_STEPS,
    CHAT_DIRECTIONS,
    CONSENT_CHANNELS,
    CONTACT_TOPICS,
    CONTACT_TYPES,
    DIGITAL_EVENT_TYPES,
    MERCHANT_CATEGORIES,
    PRODUCTS,
    REGIONS,
    TRANSACTION_TYPES,
    VISIT_TYPES,
)

from . import personas as P
from . import rng as R
from . import texts as T
from .codec import Cat, Coded, prefixed, quoted
from .identities import Identities
from .names import COUNTERPARTIES
from .population import CARD, CURRENT, LOAN, MORTGAGE, Population

HOUR = 3_600_000
MINUTE = 60_000
# hourly shape of when people do things (UTC)
DAYTIME = np.array([1, 0.5, 0.3, 0.2, 0.2, 0.5, 2, 4, 6, 6, 6, 6, 7, 6, 6, 6, 6, 7, 8, 9, 9, 7, 4, 2.0])
POSTING = np.array([3, 6, 8, 8, 6, 3] + [0.2] * 18)
OPENING = np.array([0] * 9 + [6, 8, 8, 8, 8, 7, 7, 6] + [0] * 7, dtype=float)
CALL_HOURS = np.array([0] * 8 + [6, 8, 8, 7, 6, 6, 7, 7, 6, 5, 4, 3] + [0] * 4, dtype=float)

TXN = {t: i for i, t in enumerate(TRANSACTION_TYPES)}
VISIT = {t: i for i, t in enumerate(VISIT_TYPES)}
MERCHANTS_PER_CATEGORY = 40
COUNTERPARTY_TABLE: tuple[str, ...] = tuple(
    [name for names in COUNTERPARTIES.values() for name in names]
    + [f"{c.upper()[:8]} {k:03d}" for c in MERCHANT_CATEGORIES for k in range(MERCHANTS_PER_CATEGORY)]
)
_CP_START: dict[str, int] = {}
_pos = 0
for _kind, _names in COUNTERPARTIES.items():
    _CP_START[_kind] = _pos
    _pos += len(_names)
MERCHANT_CP_START = _pos
ATMS_PER_REGION, BRANCHES_PER_REGION = 40, 10
LOCATION_TABLE: tuple[str, ...] = tuple(
    [f"ATM-{r[:3].upper()}-{k:03d}" for r in REGIONS for k in range(ATMS_PER_REGION)]
    + [f"BR-{r[:3].upper()}-{k:02d}" for r in REGIONS for k in range(BRANCHES_PER_REGION)]
)
AGENTS: tuple[str, ...] = tuple(f"AG{k:03d}" for k in range(120))
# extra contacts (calls, chats) per unit of daily churn hazard: people about to leave get in touch
LEAVING_CONTACTS_PER_HAZARD = 1.0
CHAT_ANSWER_P = 0.45  # share of chat sessions where the customer answers the bot
GENERAL_PAGES = ("/home", "/accounts", "/payments", "/cards", "/help", "/rates", "/offers", "/statements")
PAGE_TABLE: tuple[str, ...] = tuple(
    list(GENERAL_PAGES)
    + ["/property-search", "/search", "/login", "/logout"]
    + [f"/products/{p}" for p in PRODUCTS]
    + [f"/compare/{p}" for p in PRODUCTS]
    + [f"/calculators/{p}" for p in PRODUCTS]
    + [f"/apply/{p}/{s}" for p in PRODUCTS for s in APPLICATION_STEPS]
)
PG_PROPERTY, PG_SEARCH, PG_LOGIN, PG_LOGOUT = 8, 9, 10, 11
PG_PRODUCT, PG_COMPARE, PG_CALC, PG_APPLY = 12, 18, 24, 30
# digital event type codes (contracts.DIGITAL_EVENT_TYPES order)
EV_PAGE, EV_PRODUCT, EV_COMPARE, EV_CALC, EV_SEARCH, EV_LOGIN, EV_LOGOUT, EV_STEP = range(8)


@dataclass
class Events:
    """One day of one source: the person behind each row, its event time and contract columns."""

    person: np.ndarray
    t: np.ndarray
    cols: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.person)


def times_of_day(rng: np.random.Generator, day_ms: int, n: int, profile: np.ndarray) -> np.ndarray:
    """Event times on a day, drawn from an hourly profile, to the millisecond."""
    hour = rng.choice(24, size=n, p=profile / profile.sum())
    return day_ms + hour * HOUR + rng.integers(0, HOUR, n)


def per_person(rng: np.random.Generator, rates: np.ndarray) -> np.ndarray:
    """Person index repeated by a Poisson count drawn with each person's daily rate."""
    counts = rng.poisson(np.maximum(rates, 0.0))
    return np.repeat(np.arange(len(rates)), counts)


def _choice_rows(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    cum = np.cumsum(probs, axis=1)
    u = rng.random(len(probs))[:, None] * cum[:, -1:]
    return np.minimum((u > cum).sum(axis=1), probs.shape[1] - 1)


def _group_cumsum(values: np.ndarray, group_starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Cumulative sum restarting at each group (rows sorted by group)."""
    c = np.cumsum(values)
    before = np.repeat(c[group_starts] - values[group_starts], counts)
    return c - before


@dataclass
class Visits:
    events: Events
    cash_person: np.ndarray  # ATM withdrawals and branch deposits, for the matching postings
    cash_t: np.ndarray
    cash_amount: np.ndarray


def visits(
    rng: np.random.Generator, pop: Population, active: np.ndarray, day_ms: int, branch_apps: np.ndarray
) -> Visits:
    """ATM and branch visits; branch applications are advice appointments."""
    atm = per_person(rng, P.ATM_VISITS[pop.persona] * active)
    branch = per_person(rng, P.BRANCH_VISITS[pop.persona] * active)
    n_atm, n_br = len(atm), len(branch)
    atm_type = np.where(rng.random(n_atm) < 0.85, VISIT["cash_withdrawal"], VISIT["balance_enquiry"])
    br_codes = np.array(
        [VISIT["deposit"], VISIT["service"], VISIT["balance_enquiry"], VISIT["advice_appointment"]]
    )
    br_p = np.where(pop.persona[branch, None] == P.BUSINESS, [[0.6, 0.2, 0.1, 0.1]], [[0.3, 0.35, 0.15, 0.2]])
    br_type = br_codes[_choice_rows(rng, br_p)] if n_br else np.zeros(0, dtype=np.int64)
    persons = np.concatenate([atm, branch, branch_apps])
    vtype = np.concatenate([atm_type, br_type, np.full(len(branch_apps), VISIT["advice_appointment"])])
    is_atm = np.arange(len(persons)) < n_atm
    t = np.concatenate(
        [
            times_of_day(rng, day_ms, n_atm, DAYTIME),
            times_of_day(rng, day_ms, n_br + len(branch_apps), OPENING),
        ]
    )
    region = pop.region[persons].astype(np.int64)
    away = rng.random(len(persons)) < 0.1
    region = np.where(away, rng.integers(len(REGIONS), size=len(persons)), region)
    loc = np.where(
        is_atm,
        region * ATMS_PER_REGION + rng.integers(ATMS_PER_REGION, size=len(persons)),
        len(REGIONS) * ATMS_PER_REGION
        + region * BRANCHES_PER_REGION
        + rng.integers(BRANCHES_PER_REGION, size=len(persons)),
    )
    cash = vtype == VISIT["cash_withdrawal"]
    dep = vtype == VISIT["deposit"]
    amount = np.full(len(persons), np.nan)
    amount[cash] = rng.choice(np.array([20.0, 40, 50, 100, 150, 200, 250, 300]), size=int(cash.sum()))
    dep_scale = np.where(pop.persona[persons[dep]] == P.BUSINESS, 1500.0, 250.0)
    amount[dep] = np.round(dep_scale * rng.lognormal(0, 0.6, int(dep.sum())), 2)
    ev = Events(
        persons,
        t,
        {
            "channel": Cat(("atm", "branch"), (~is_atm).astype(np.int64)),
            "location_id": Cat(LOCATION_TABLE, loc),
            "visit_type": Cat(VISIT_TYPES, vtype),
            "amount": amount,
        },
    )
    money = cash | dep
    signed = np.where(cash, -amount, amount)
    return Visits(ev, persons[money], t[money] + rng.integers(2_000, 60_000, int(money.sum())), signed[money])


@dataclass
class Postings:
    events: Events
    fee_person: np.ndarray
    balance_product: np.ndarray  # product index each row posted to


def transactions(
    rng: np.random.Generator,
    pop: Population,
    active: np.ndarray,
    day_ms: int,
    day_of_month: int,
    stress: np.ndarray,
    cash: Visits,
) -> Postings:
    """One day of postings; ``balance_after`` is computed per account in time order."""
    persona = pop.persona
    parts: list[tuple[np.ndarray, np.ndarray, int | np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def add(
        persons: np.ndarray,
        t: np.ndarray,
        ttype: int | np.ndarray,
        amount: np.ndarray,
        cp: np.ndarray | None = None,
        mcc: np.ndarray | None = None,
    ) -> None:
        n = len(persons)
        parts.append(
            (
                persons,
                t,
                np.broadcast_to(np.asarray(ttype), (n,)),
                amount,
                np.full(n, -1) if cp is None else cp,
                np.full(n, -1) if mcc is None else mcc,
            )
        )

    def cp_of(kind: str, n: int) -> np.ndarray:
        return _CP_START[kind] + rng.integers(len(COUNTERPARTIES[kind]), size=n)

    def lognormal(median: np.ndarray, sigma: float) -> np.ndarray:
        return np.round(median * rng.lognormal(0, sigma, len(median)), 2)

    paid = np.flatnonzero(active & (pop.payday == day_of_month) & (persona != P.BUSINESS))
    add(
        paid,
        times_of_day(rng, day_ms, len(paid), POSTING),
        TXN["salary"],
        pop.monthly_income[paid],
        cp_of("salary", len(paid)),
    )
    rent_day = pop.payday % 28 + 1
    renters = np.flatnonzero(active & pop.renter & (rent_day == day_of_month))
    add(
        renters,
        times_of_day(rng, day_ms, len(renters), POSTING),
        TXN["rent"],
        -pop.rent[renters],
        cp_of("rent", len(renters)),
    )
    mort = np.flatnonzero(active & pop.holds[:, MORTGAGE] & (day_of_month == 1))
    add(
        mort,
        times_of_day(rng, day_ms, len(mort), POSTING),
        TXN["mortgage_payment"],
        np.round(pop.balance[mort, MORTGAGE] * 0.006, 2),
    )
    loan = np.flatnonzero(active & pop.holds[:, LOAN] & (day_of_month == 5))
    add(
        loan,
        times_of_day(rng, day_ms, len(loan), POSTING),
        TXN["loan_repayment"],
        np.round(pop.balance[loan, LOAN] * 0.03, 2),
    )

    bills = per_person(rng, P.BILLS[persona] * active)
    add(
        bills,
        times_of_day(rng, day_ms, len(bills), POSTING),
        TXN["bill"],
        -lognormal(np.full(len(bills), 60.0), 0.5),
        cp_of("bill", len(bills)),
        np.full(len(bills), MERCHANT_CATEGORIES.index("utilities")),
    )
    spend = per_person(rng, P.CARD_SPEND[persona] * active)
    mcc = _choice_rows(rng, P.MERCHANT_MIX[persona[spend]]) if len(spend) else np.zeros(0, dtype=np.int64)
    add(
        spend,
        times_of_day(rng, day_ms, len(spend), DAYTIME),
        TXN["card_spend"],
        -lognormal(P.MERCHANT_AMOUNT[mcc] * P.SPEND_SCALE[persona[spend]], 0.7),
        MERCHANT_CP_START
        + mcc * MERCHANTS_PER_CATEGORY
        + rng.integers(MERCHANTS_PER_CATEGORY, size=len(spend)),
        mcc,
    )
    tin = per_person(rng, P.TRANSFER_IN[persona] * active)
    add(
        tin,
        times_of_day(rng, day_ms, len(tin), DAYTIME),
        TXN["transfer_in"],
        lognormal(np.where(persona[tin] == P.BUSINESS, 900.0, 150.0), 0.8),
        cp_of("transfer_in", len(tin)),
    )
    tout = per_person(rng, P.TRANSFER_OUT[persona] * active)
    add(
        tout,
        times_of_day(rng, day_ms, len(tout), DAYTIME),
        TXN["transfer_out"],
        -lognormal(np.where(persona[tout] == P.BUSINESS, 700.0, 120.0), 0.8),
        cp_of("transfer_out", len(tout)),
    )
    failed = per_person(rng, (P.FAILED_PAYMENTS[persona] + 0.35 * stress) * active)
    t_failed = times_of_day(rng, day_ms, len(failed), POSTING)
    add(
        failed,
        t_failed,
        TXN["failed_payment"],
        -lognormal(np.full(len(failed), 120.0), 0.6),
        cp_of("bill", len(failed)),
    )
    charged = rng.random(len(failed)) < 0.9
    fee_after = failed[charged]
    add(
        fee_after,
        t_failed[charged] + rng.integers(HOUR, 6 * HOUR, len(fee_after)),
        TXN["fee"],
        np.full(len(fee_after), -25.0),
        np.full(len(fee_after), _CP_START["fee"] + 1),
    )
    other_fees = per_person(rng, P.FEES[persona] * active)
    add(
        other_fees,
        times_of_day(rng, day_ms, len(other_fees), POSTING),
        TXN["fee"],
        -rng.choice(np.array([5.0, 8.0, 12.0, 15.0]), size=len(other_fees)),
        cp_of("fee", len(other_fees)),
    )
    is_atm = cash.cash_amount < 0
    add(
        cash.cash_person,
        cash.cash_t,
        np.where(is_atm, TXN["atm_withdrawal"], TXN["deposit"]),
        cash.cash_amount,
    )

    persons = np.concatenate([p[0] for p in parts])
    t = np.concatenate([p[1] for p in parts])
    ttype = np.concatenate([p[2] for p in parts]).astype(np.int64)
    amount = np.round(np.concatenate([p[3] for p in parts]).astype(np.float64), 2)
    cp = np.concatenate([p[4] for p in parts])
    mcc_all = np.concatenate([p[5] for p in parts])

    product = np.full(len(persons), CURRENT)
    on_card = (ttype == TXN["card_spend"]) & pop.holds[persons, CARD] & (rng.random(len(persons)) < 0.6)
    product[on_card] = CARD
    # running balance per account, in event-time order
    moves = np.where(ttype == TXN["failed_payment"], 0.0, amount)
    acct = persons * pop.holds.shape[1] + product
    order = np.lexsort((t, acct))
    acct_sorted = acct[order]
    starts = (
        np.flatnonzero(np.r_[True, acct_sorted[1:] != acct_sorted[:-1]])
        if len(order)
        else np.zeros(0, np.int64)
    )
    counts = np.diff(np.r_[starts, len(order)])
    running = _group_cumsum(moves[order], starts, counts)
    flat_balance = pop.balance.reshape(-1)
    after = np.empty(len(order))
    after[order] = np.round(flat_balance[acct_sorted] + running, 2)
    np.add.at(flat_balance, acct, moves)
    np.round(flat_balance, 2, out=flat_balance)

    account_ids = Coded(
        prefixed("AC", np.maximum(pop.account_num.reshape(-1), 0), 9, quote=True),
        persons * pop.account_num.shape[1] + product,
    )
    ev = Events(
        persons,
        t,
        {
            "account_id": account_ids,
            "txn_type": Cat(TRANSACTION_TYPES, ttype),
            "amount": amount,
            "currency": "GBP",
            "merchant_category": Cat(MERCHANT_CATEGORIES, mcc_all),
            "counterparty": Cat(COUNTERPARTY_TABLE, cp),
            "balance_after": after,
        },
    )
    fee_person = persons[ttype == TXN["fee"]]
    return Postings(ev, fee_person, product)


@dataclass
class Talk:
    """One day of one talking source: its events, and for each customer message the truth of it."""

    events: Events
    said_rows: np.ndarray  # rows of ``events`` that are customer messages (the others: the bot)
    said: T.Said  # per said row
    states_intent: np.ndarray  # per said row: the words are a query of the intent (not a follow-up)
    topic_correct: np.ndarray | None = None  # per said row: the agent's topic is right (contact centre)


def contact_centre(
    rng: np.random.Generator,
    words: np.random.Generator,
    pop: Population,
    active: np.ndarray,
    day_ms: int,
    state: T.DayState,
    people: T.Speakers,
    topic_error_rate: float,
) -> Talk:
    """Calls, service requests and complaints, written up by agents (``words`` draws the text).

    Stress brings calls and complaints, fees bring complaints, and a customer thinking of leaving
    calls more (to ask how to close the account, or to complain on the way out)."""
    persona = pop.persona
    call_rate = P.CALLS[persona] * (1 + 2 * state.stress) + LEAVING_CONTACTS_PER_HAZARD * state.hazard
    calls = per_person(rng, call_rate * active)
    service = per_person(rng, P.SERVICE_REQUESTS[persona] * active)
    complaint_rate = (
        P.COMPLAINTS[persona] * (1 + 3 * state.stress) * (1 + 0.5 * np.minimum(state.fees, 4)) * active
    )
    complaints = per_person(rng, complaint_rate)
    persons = np.concatenate([calls, service, complaints])
    itype = np.repeat(np.arange(3), [len(calls), len(service), len(complaints)])
    t = times_of_day(rng, day_ms, len(persons), CALL_HOURS)
    agent = rng.integers(len(AGENTS), size=len(persons))
    said = T.what_is_said(words, persons, itype, pop, state, people)
    topic, right = T.agent_topics(words, said.intent, itype, topic_error_rate)
    note = T.agent_notes(words, said, itype, topic, T.details(words, pop, people, persons))
    events = Events(
        persons,
        t,
        {
            "interaction_type": Cat(CONTACT_TYPES, itype),
            "topic": Cat(CONTACT_TOPICS, topic),
            "note": note,
            "agent_id": Cat(AGENTS, agent),
        },
    )
    every = np.arange(len(persons))
    return Talk(events, every, said, np.ones(len(persons), dtype=bool), right)


def app_chat(
    rng: np.random.Generator,
    words: np.random.Generator,
    pop: Population,
    ids: Identities,
    active: np.ndarray,
    day_ms: int,
    state: T.DayState,
    people: T.Speakers,
    session_counter: int,
) -> tuple[Talk, int]:
    """The app's chat: a signed-in customer writes, the bot answers, the customer sometimes
    answers back. Only app users chat; the same situations as calls give them something to say."""
    has_app = ids.app_device >= 0
    rate = P.CHATS[pop.persona] * (1 + 2 * state.stress) + LEAVING_CONTACTS_PER_HAZARD * state.hazard
    who = per_person(rng, rate * (active & has_app))
    m = len(who)
    start = times_of_day(rng, day_ms, m, DAYTIME)
    bot_at = start + rng.integers(2_000, 9_000, m)
    answer_at = start + rng.integers(30_000, 300_000, m)
    answers = np.flatnonzero(rng.random(m) < CHAT_ANSWER_P)
    said = T.what_is_said(words, who, np.full(m, T.CHAT), pop, state, people)
    opening = T.chat_openings(words, said, T.details(words, pop, people, who))
    reply = T.bot_replies(words, said.intent)
    answer = T.follow_ups(words, said.sentiment).take(pa.array(answers, pa.int64()))
    # rows: each session's opening, the bot's reply, the customer's answer (ids in that order)
    sess = np.concatenate([np.arange(m), np.arange(m), answers])
    step = np.repeat(np.arange(3), [m, m, len(answers)])
    order = np.lexsort((step, sess))
    sess, step = sess[order], step[order]
    t = np.concatenate([start, bot_at, answer_at[answers]])[order]
    message = pa.concat_arrays([opening, reply, answer]).take(pa.array(order, pa.int64()))
    person = who[sess]
    session_codes = R.permuted_ids(
        np.arange(session_counter, session_counter + m), 3_000_000_000, ids.seed, 11
    )
    events = Events(
        person,
        t,
        {
            "login_id": Coded(ids.login_table(pop), person),
            "device_id": Coded(ids.device_table(), ids.app_device[person]),
            "chat_session_id": Coded(prefixed("CS", session_codes, 10, quote=True), sess),
            "direction": Cat(CHAT_DIRECTIONS, (step == 1).astype(np.int64)),
            "message": message,
        },
    )
    said_rows = np.flatnonzero(step != 1)
    return Talk(events, said_rows, said.take(sess[said_rows]), step[said_rows] == 0), session_counter + m


CONSENT_PAIRS = [(0, c) for c in range(len(CONSENT_CHANNELS))] + [(1, len(CONSENT_CHANNELS) - 1)]
CAPTURED_VIA = ("initial_load", "app", "web", "branch", "phone")


def initial_consent(pop: Population, rng: np.random.Generator) -> np.ndarray:
    """[n, purposes, channels] consent at the start of the run."""
    n = pop.n
    consent = np.zeros((n, 2, len(CONSENT_CHANNELS)), dtype=bool)
    consent[:, 0, :4] = rng.random((n, 4)) < P.CONSENT_MARKETING_P[pop.persona]
    consent[:, 0, 4] = rng.random(n) < P.CONSENT_MARKETING_ANY_P[pop.persona]
    consent[:, 1, 4] = rng.random(n) < P.CONSENT_PROFILING_P[pop.persona]
    consent[:, 1, :4] = consent[:, 1, 4:5]
    return consent


def consent_events(
    rng: np.random.Generator,
    consent: np.ndarray,
    active: np.ndarray,
    day_ms: int,
    first_day: bool,
    complained: np.ndarray,
) -> Events:
    """Consent grants and revocations; the first day loads everybody's current state."""
    n = len(active)
    parts_p, parts_pair, parts_via, parts_t = [], [], [], []
    if first_day:
        persons = np.repeat(np.arange(n), len(CONSENT_PAIRS))
        pair = np.tile(np.arange(len(CONSENT_PAIRS)), n)
        parts_p.append(persons)
        parts_pair.append(pair)
        parts_via.append(np.zeros(len(persons), dtype=np.int64))
        parts_t.append(day_ms + rng.integers(0, HOUR, len(persons)))
    rate = (0.003 + 0.3 * complained) * active
    change = per_person(rng, rate)
    pair = rng.integers(len(CONSENT_PAIRS), size=len(change))
    # a change flips the current value; after a complaint, revoke marketing
    parts_p.append(change)
    parts_pair.append(pair)
    parts_via.append(rng.integers(1, len(CAPTURED_VIA), size=len(change)))
    parts_t.append(times_of_day(rng, day_ms, len(change), DAYTIME))
    persons = np.concatenate(parts_p)
    pair = np.concatenate(parts_pair)
    via = np.concatenate(parts_via)
    t = np.concatenate(parts_t)
    purpose = np.array([CONSENT_PAIRS[k][0] for k in range(len(CONSENT_PAIRS))])[pair]
    channel = np.array([CONSENT_PAIRS[k][1] for k in range(len(CONSENT_PAIRS))])[pair]
    order = np.lexsort((t,))
    persons, purpose, channel, via, t = persons[order], purpose[order], channel[order], via[order], t[order]
    granted = consent[persons, purpose, channel].copy()
    changing = via > 0
    # apply changes in time order (a person may change twice in a day)
    for r in np.flatnonzero(changing):
        i, pu, ch = persons[r], purpose[r], channel[r]
        new = False if complained[i] and pu == 0 else not consent[i, pu, ch]
        consent[i, pu, ch] = new
        if pu == 1 and ch == len(CONSENT_CHANNELS) - 1:
            consent[i, 1, :] = new
        granted[r] = new
    return Events(
        persons,
        t,
        {
            "purpose": Cat(("marketing", "profiling"), purpose),
            "channel": Cat(CONSENT_CHANNELS, channel),
            "granted": granted,
            "captured_via": Cat(CAPTURED_VIA, via),
        },
    )


@dataclass
class DigitalApps:
    """Applications started digitally today (one session each)."""

    person: np.ndarray
    product: np.ndarray
    reached: np.ndarray  # index of the last step reached
    application_id: np.ndarray  # object array of ids


def digital(
    rng: np.random.Generator,
    pop: Population,
    ids: Identities,
    active: np.ndarray,
    day_ms: int,
    home: np.ndarray,
    stress: np.ndarray,
    apps: DigitalApps,
    session_counter: int,
) -> tuple[Events, int]:
    """Web and app sessions: anonymous until login, then product research and applications."""
    persona = pop.persona
    has_app = ids.app_device >= 0
    web_p = per_person(rng, P.WEB_SESSIONS[persona] * (1 + 2 * home) * active)
    app_p = per_person(rng, P.APP_SESSIONS[persona] * (1 + home) * (active & has_app))
    n_browse = len(web_p) + len(app_p)
    s_person = np.concatenate([web_p, app_p, apps.person])
    s_app = np.concatenate([np.zeros(len(web_p), bool), np.ones(len(app_p), bool), has_app[apps.person]])
    s_is_apply = np.arange(len(s_person)) >= n_browse
    n_s = len(s_person)
    # devices and cookies (a browser sometimes clears its cookies: a new anonymous cookie)
    slot = np.where((ids.web_device[s_person, 1] >= 0) & (rng.random(n_s) < 0.3), 1, 0)
    device = np.where(s_app, ids.app_device[s_person], ids.web_device[s_person, slot])
    reset = ~s_app & (rng.random(n_s) < 0.03)
    if reset.any():
        fresh = ids.new_cookies(s_person[reset])
        ids.cookie[s_person[reset], slot[reset]] = fresh
    cookie = np.where(s_app, -1, ids.cookie[s_person, slot])
    logs_in = pop.registered[s_person] & (
        s_is_apply | (rng.random(n_s) < np.where(s_app, P.APP_LOGIN_P, P.WEB_LOGIN_P))
    )
    n_pre = np.where(
        logs_in,
        np.where(s_app, 0, rng.poisson(1.0, n_s)),
        1 + rng.poisson(np.maximum(P.SESSION_EVENTS_MEAN[persona[s_person]] - 1, 0)),
    )
    n_post = np.where(logs_in & ~s_is_apply, rng.poisson(P.SESSION_EVENTS_MEAN[persona[s_person]]), 0)
    n_post = np.where(s_is_apply, 1, n_post)  # a product view before applying
    n_steps = np.zeros(n_s, dtype=np.int64)
    n_steps[s_is_apply] = apps.reached + 1
    logout = logs_in & (rng.random(n_s) < 0.3)
    total = n_pre + logs_in + n_post + n_steps + logout
    start = times_of_day(rng, day_ms, n_s, DAYTIME)

    sess = np.repeat(np.arange(n_s), total)
    first = np.cumsum(total) - total
    pos = np.arange(len(sess)) - first[sess]
    pre, li, post, steps = n_pre[sess], logs_in[sess], n_post[sess], n_steps[sess]
    is_pre = pos < pre
    is_login = li & (pos == pre)
    is_post = (pos > pre - 1 + li) & (pos < pre + li + post) & ~is_pre & ~is_login
    step_idx = pos - pre - li - post
    is_step = (step_idx >= 0) & (step_idx < steps)
    is_logout = ~is_pre & ~is_login & ~is_post & ~is_step
    browse = is_pre | is_post
    person = s_person[sess]
    n_ev = len(sess)

    etype = np.full(n_ev, EV_PAGE)
    etype[is_login] = EV_LOGIN
    etype[is_logout] = EV_LOGOUT
    etype[is_step] = EV_STEP
    bidx = np.flatnonzero(browse)
    btype = (
        _choice_rows(rng, P.DIGITAL_MIX[persona[person[bidx]]]) if len(bidx) else np.zeros(0, dtype=np.int64)
    )
    btype = np.where(pos[bidx] == 0, EV_PAGE, btype)  # a session starts on a page
    etype[bidx] = btype
    apply_sess = s_is_apply[sess]
    view_before_apply = apply_sess & is_post
    etype[view_before_apply] = EV_PRODUCT

    # products of interest: persona taste, lifted by a home-buying or cash-stress episode
    interest = P.BROWSE_INTEREST[persona[person]].copy()
    interest[:, MORTGAGE] += 1.5 * home[person]
    interest[:, LOAN] += 0.5 * stress[person]
    product = _choice_rows(rng, interest) if n_ev else np.zeros(0, dtype=np.int64)
    app_of_sess = np.full(n_s, -1)
    app_of_sess[s_is_apply] = np.arange(len(apps.person))
    app_row = app_of_sess[sess]
    product = np.where(
        apply_sess, apps.product[np.maximum(app_row, 0)] if len(apps.person) else product, product
    )
    has_product = np.isin(etype, (EV_PRODUCT, EV_COMPARE, EV_CALC, EV_STEP))

    page = rng.integers(len(GENERAL_PAGES), size=n_ev)
    property_view = (etype == EV_PAGE) & (rng.random(n_ev) < 0.6 * home[person])
    page[property_view] = PG_PROPERTY
    page[etype == EV_SEARCH] = PG_SEARCH
    page[etype == EV_LOGIN] = PG_LOGIN
    page[etype == EV_LOGOUT] = PG_LOGOUT
    page = np.where(etype == EV_PRODUCT, PG_PRODUCT + product, page)
    page = np.where(etype == EV_COMPARE, PG_COMPARE + product, page)
    page = np.where(etype == EV_CALC, PG_CALC + product, page)
    page = np.where(
        etype == EV_STEP, PG_APPLY + product * len(APPLICATION_STEPS) + np.maximum(step_idx, 0), page
    )

    gaps = (2_000 + rng.exponential(40_000, n_ev)).astype(np.int64)
    gaps[first] = 0
    t = start[sess] + _group_cumsum(gaps, first, total)

    logged = li & (pos >= pre)
    login_table = ids.login_table(pop)
    login = Coded(login_table, np.where(logged, person, len(login_table) - 1))
    session_codes = R.permuted_ids(
        np.arange(session_counter, session_counter + n_s), 3_000_000_000, ids.seed, 9
    )
    session = Coded(prefixed("S", session_codes, 10, quote=True), sess)
    cookie_table = ids.cookie_table()
    app_table = quoted(list(apps.application_id) + [None])
    app_pick = np.where(is_step & (app_row >= 0), app_row, len(app_table) - 1)
    ev = Events(
        person,
        t,
        {
            "channel": Cat(("web", "app"), s_app[sess].astype(np.int64)),
            "session_id": session,
            "device_id": Coded(ids.device_table(), device[sess]),
            "cookie_id": Coded(cookie_table, np.where(cookie[sess] < 0, len(cookie_table) - 1, cookie[sess])),
            "login_id": login,
            "event_type": Cat(DIGITAL_EVENT_TYPES, etype),
            "page": Cat(PAGE_TABLE, page),
            "product": Cat(PRODUCTS, np.where(has_product, product, -1)),
            "application_id": Coded(app_table, app_pick),
            "step": Cat(APPLICATION_STEPS, np.where(is_step, step_idx, -1)),
            "step_index": np.where(is_step, step_idx, np.nan),
        },
    )
    return ev, session_counter + n_s
