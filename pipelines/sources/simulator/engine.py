"""The day loop: population -> daily behaviour -> faults -> landing files, with truth beside it.

Memory stays bounded: each simulated day is generated, delivered and recorded before the next
one starts; only the events due in a later micro-batch (late events, duplicates, sessions past
midnight) are carried over.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from pipelines.contracts import (
    CONTACT_TOPICS,
    CONTRACTS,
    OFFER_CHANNELS,
    PRODUCTS,
    SCHEMA_DRIFT_FIELD,
    SNAPSHOT_SOURCES,
    STREAM_SOURCES,
)

from . import applications as AP
from . import behaviour as B
from . import faults as F
from . import life_events as L
from . import personas as P
from . import rng as R
from . import snapshots as S
from . import texts as T
from .actions import ACTION_IDS, ACTION_PRODUCT, HELP_FINISH, RETENTION
from .codec import Cat, Coded, Fixed, Raw, categorical, encode, fixed_ids, iso_date, line_bytes, quoted
from .config import DAY_MS, SimConfig
from .identities import build_identities, identity_truth, touch_crm
from .population import CARD, N_PRODUCTS, Population, _addresses, build_population, open_accounts
from .response import (
    ABANDONED_DAYS,
    RESPONSES,
    base_accept,
    consent_ok,
    offer_probabilities,
    product_accept,
    response_events,
)
from .truth import TS, TruthWriter
from .writers import Delivery, Writer, ledger_table

ID_PREFIX = {
    "transactions": "TX",
    "digital": "DG",
    "visits": "VS",
    "contact_centre": "CC",
    "consent": "CN",
    "offer_responses": "OR",
    "app_chat": "CH",
}
CAMPAIGN_CHANNELS = np.array([0, 1, 2, 4, 5])  # email, sms, push, web, app
CAMPAIGN_REDRAWS, CAMPAIGN_REDRAW_P = 4, 0.97  # the campaign tool re-draws a channel without consent
RING = 8  # days of contact history kept (fatigue looks back 7 days)
APP_VERSION = ("2026.1-web", "7.4.1")  # the drift field's value on web / app events


@dataclass
class RunStats:
    """What a run wrote: lines per source (incl. faulty lines and duplicates) and timing."""

    lines: dict[str, int] = field(default_factory=dict)
    files: dict[str, int] = field(default_factory=dict)
    events: int = 0
    seconds: float = 0.0

    @property
    def total_lines(self) -> int:
        return sum(self.lines.values())

    @property
    def rate(self) -> float:
        return self.total_lines / self.seconds if self.seconds else 0.0


class Simulation:
    """One simulated bank: call ``run()`` once."""

    def __init__(self, config: SimConfig, writer: Writer, truth: TruthWriter) -> None:
        self.cfg = config
        self.writer = writer
        self.truth = truth
        self.pop: Population = build_population(config)
        self.ids = build_identities(self.pop, config.seed, config.start_ms)
        self.life = L.build_life_state(self.pop, config.seed, config.days)
        self.consent = B.initial_consent(self.pop, R.stream(config.seed, R.IDENTITIES, 1))
        self.people = T.speakers(self.pop, R.stream(config.seed, R.TEXT))
        n = self.pop.n
        self.cust_arrow = pa.array(self.pop.customer_number.tolist(), pa.string())
        self.person_arrow = pa.array(self.pop.person_id.tolist(), pa.string())
        self.cust_quoted = quoted(self.pop.customer_number.tolist())
        self.complete_p = AP.completion_probability(self.pop)
        self.contacts = np.zeros((n, RING), dtype=np.int16)
        self.abandoned_day = np.full(n, L.NEVER, dtype=np.int64)
        self.abandoned_product = np.full(n, -1, dtype=np.int64)
        self.pending_opens: list[tuple[np.ndarray, np.ndarray]] = []
        self.counters = {s: 0 for s in STREAM_SOURCES}
        self.session_counter = 0
        self.chat_counter = 0
        self.app_counter = 0
        self.campaign_counter = 0
        self.deliveries = {s: Delivery(s, writer, self._ledger) for s in STREAM_SOURCES}
        self.snapshot_lines = {s: 0 for s in SNAPSHOT_SOURCES}
        self._crm_seen = 0
        self.seen_accounts = np.zeros((n, N_PRODUCTS), dtype=bool)
        self.changed_accounts = np.zeros((n, N_PRODUCTS), dtype=bool)
        self.changed_customers = np.zeros(n, dtype=bool)
        self.initial_holds = self.pop.holds.copy()
        self.initial_score = self.pop.bureau_score.copy()
        w = config.label_window
        self.window = (config.days - w, config.days)
        self.log_no_open = np.zeros((n, N_PRODUCTS))
        self.log_no_churn = np.zeros(n)
        self.opened_in_window = np.zeros((n, N_PRODUCTS), dtype=bool)
        self.churned_in_window = np.zeros(n, dtype=bool)
        self.active_at_window = np.zeros(n, dtype=bool)

    # ------------------------------------------------------------------ helpers
    def _ledger(self, table: pa.Table) -> None:
        self.truth.append("records", table)

    def _dates(self, d: int, n: int) -> pa.Array:
        return pa.array(np.full(n, self.cfg.start_day + d, dtype=np.int32), pa.date32())

    def _persons(self, idx: np.ndarray) -> tuple[pa.Array, pa.Array]:
        take = pa.array(np.asarray(idx, dtype=np.int64))
        return self.person_arrow.take(take), self.cust_arrow.take(take)

    # ------------------------------------------------------------------ run
    def run(self, progress: Callable[[int, int], None] | None = None) -> RunStats:
        started = time.perf_counter()
        for d in range(self.cfg.days):
            self._day(d)
            if progress:
                progress(d + 1, self.cfg.days)
        for delivery in self.deliveries.values():
            delivery.flush(None)
        self._finish()
        stats = RunStats(seconds=time.perf_counter() - started)
        for s, dl in self.deliveries.items():
            stats.lines[s] = dl.lines_written
            stats.files[s] = dl.files_written
        for s in SNAPSHOT_SOURCES:
            stats.lines[s] = self.snapshot_lines[s]
            stats.files[s] = self.cfg.days
        stats.events = stats.total_lines
        return stats

    def _day(self, d: int) -> None:
        cfg, pop, life = self.cfg, self.pop, self.life
        rng = R.stream(cfg.seed, R.DAY, d)
        day_ms = cfg.start_ms + d * DAY_MS
        abs_day = cfg.start_day + d
        date = dt.date(1970, 1, 1) + dt.timedelta(days=abs_day)
        self.changed_accounts[:] = False
        self.changed_customers[:] = False
        self._open_pending(abs_day)
        active = ~pop.churned
        self.contacts[:, d % RING] = 0

        home = L.home_level(life, d)
        stress = L.stress_level(life, d)
        intent = P.BASE_INTENT[pop.persona] * L.intent_multiplier(life, d) * ~pop.holds * active[:, None]
        hazard = P.CHURN_HAZARD[pop.persona] * L.churn_multiplier(life, d) * active
        if cfg.demand_scale != 1.0 or cfg.churn_scale != 1.0:  # test banks with busier demand
            intent = np.minimum(intent * cfg.demand_scale, 0.5)
            hazard = np.minimum(hazard * cfg.churn_scale, 0.5)
        approve = AP.approval_probability(pop)
        p_open = intent * self.complete_p[:, None] * approve
        abandoned = (self.abandoned_day >= d - ABANDONED_DAYS) & (self.abandoned_product >= 0)
        abandoned &= ~pop.holds[np.arange(pop.n), np.maximum(self.abandoned_product, 0)]
        credit_stressed = L.stressed(pop, life, d)
        base = base_accept(intent, hazard, abandoned & active)
        p_campaign = self._campaign_open_probability(d, active, base, credit_stressed, approve)
        self._truth_day(
            d, intent, p_open, p_campaign, hazard, home, stress, credit_stressed, abandoned, base, active
        )
        in_window = self.window[0] <= d < self.window[1]
        if d == self.window[0]:
            self.active_at_window = active.copy()
        if in_window:
            self.log_no_open += np.log1p(-np.minimum(p_open, 0.999999))
            self.log_no_churn += np.log1p(-np.minimum(hazard, 0.999999))

        # product applications started today: digital for most registered customers, else branch
        start = rng.random((pop.n, N_PRODUCTS)) < intent
        a_person, a_product = np.nonzero(start)
        digital_path = pop.registered[a_person] & (rng.random(len(a_person)) < 0.9)
        reached = np.where(digital_path, AP.run_funnel(rng, pop.persona[a_person]), 0)
        submitted = np.where(
            digital_path, reached == AP.N_STEPS - 1, rng.random(len(a_person)) < P.BRANCH_COMPLETE_P
        )
        reached = np.where(~digital_path & submitted, AP.N_STEPS - 1, reached)
        approved = submitted & (rng.random(len(a_person)) < approve[a_person, a_product])
        self._schedule_open(a_person[approved], a_product[approved], in_window)
        gave_up = digital_path & ~submitted
        self.abandoned_day[a_person[gave_up]] = d
        self.abandoned_product[a_person[gave_up]] = a_product[gave_up]
        app_ids = np.array(
            [
                f"APP{c:09d}"
                for c in R.permuted_ids(
                    np.arange(self.app_counter, self.app_counter + len(a_person)), 1_000_000_000, cfg.seed, 10
                )
            ],
            dtype=object,
        )
        self.app_counter += len(a_person)
        dig = np.flatnonzero(digital_path)
        self._applications_truth(d, a_person, a_product, app_ids, digital_path, reached, submitted, approved)
        apps = B.DigitalApps(a_person[dig], a_product[dig], reached[dig], app_ids[dig])

        visits = B.visits(rng, pop, active, day_ms, a_person[~digital_path])
        postings = B.transactions(rng, pop, active, day_ms, date.day, stress, visits)
        life.recent_fees = life.recent_fees * L.FEE_DECAY + np.bincount(postings.fee_person, minlength=pop.n)
        touched = np.unique(postings.events.person * N_PRODUCTS + postings.balance_product)
        self.changed_accounts.reshape(-1)[touched] = True
        today = self._day_state(abs_day, postings, visits, hazard, stress, abandoned & active)
        contact = B.contact_centre(
            rng,
            self._words(d, "contact_centre"),
            pop,
            active,
            day_ms,
            today,
            self.people,
            cfg.topic_error_rate,
        )
        complained = np.zeros(pop.n, dtype=bool)
        is_complaint = contact.events.cols["interaction_type"].is_("complaint")
        complained[contact.events.person[is_complaint]] = True
        dig_ev, self.session_counter = B.digital(
            rng, pop, self.ids, active, day_ms, home, stress, apps, self.session_counter
        )
        chat, self.chat_counter = B.app_chat(
            rng,
            self._words(d, "app_chat"),
            pop,
            self.ids,
            active,
            day_ms,
            today,
            self.people,
            self.chat_counter,
        )
        offers, offer_complaints = self._campaigns(
            rng, d, day_ms, active, base, credit_stressed, approve, in_window
        )
        complained |= offer_complaints
        life.last_complaint[complained] = d
        consent = B.consent_events(rng, self.consent, active, day_ms, d == 0, complained)
        in_branch = visits.events.cols["channel"].is_("branch")
        crm_touch = np.concatenate([contact.events.person, visits.events.person[in_branch]])
        crm_t = np.concatenate([contact.events.t, visits.events.t[in_branch]])
        touch_crm(self.ids, pop, crm_touch, crm_t, rng)

        # life-event truth: onsets today, and complaints (churn risk)
        rows = []
        for name, who in (
            ("home_buying", np.flatnonzero(life.home_onset == d)),
            ("cash_flow_stress", np.flatnonzero(life.stress_onset == d)),
            ("churn_risk", np.flatnonzero(complained)),
        ):
            rows.append((name, who))
        self._life_truth(d, rows)

        # churn at the end of the day
        churn = active & (rng.random(pop.n) < hazard)
        pop.churned |= churn
        pop.churn_day[churn] = abs_day
        self.changed_customers |= churn
        self.changed_accounts |= churn[:, None] & (pop.account_id != None)  # noqa: E711
        if in_window:
            self.churned_in_window |= churn
        self._moves(rng, active)
        self._consent_truth(consent)

        # deliver streams (due micro-batches only) and write the day's snapshot extracts
        talks = {"contact_centre": contact, "app_chat": chat}
        for source, ev in (
            ("transactions", postings.events),
            ("visits", visits.events),
            ("contact_centre", contact.events),
            ("digital", dig_ev),
            ("consent", consent),
            ("offer_responses", offers),
            ("app_chat", chat.events),
        ):
            first_id = self.counters[source]
            self._emit(source, ev, d)
            if source in talks:
                self._utterance_truth(source, first_id, talks[source])
        for delivery in self.deliveries.values():
            delivery.flush(day_ms + DAY_MS)
        self._snapshots(d, abs_day, date)

    # ------------------------------------------------------------------ what people say
    def _words(self, d: int, source: str) -> np.random.Generator:
        """The random stream of a talking source's words on day ``d`` (apart from behaviour)."""
        return R.stream(self.cfg.seed, R.TEXT, d, STREAM_SOURCES.index(source))

    def _day_state(
        self,
        abs_day: int,
        postings: B.Postings,
        visits: B.Visits,
        hazard: np.ndarray,
        stress: np.ndarray,
        abandoned: np.ndarray,
    ) -> T.DayState:
        """What gives each person something to say today (see ``texts.what_is_said``)."""
        pop, life, n = self.pop, self.life, self.pop.n
        ev = postings.events
        txn = ev.cols["txn_type"]
        failed = ev.person[txn.is_("failed_payment")]
        life.recent_declines = life.recent_declines * L.DECLINE_DECAY + np.bincount(failed, minlength=n)
        travel = ev.person[txn.is_("card_spend") & ev.cols["merchant_category"].is_("travel")]
        return T.DayState(
            hazard=hazard,
            stress=stress,
            fees=life.recent_fees,
            declines=life.recent_declines,
            new_card=pop.holds[:, CARD] & (pop.opened_day[:, CARD] >= abs_day - 14),
            abandoned=abandoned,
            cash=np.bincount(visits.cash_person[visits.cash_amount < 0], minlength=n),
            travel=np.bincount(travel, minlength=n),
        )

    # ------------------------------------------------------------------ state changes
    def _schedule_open(self, persons: np.ndarray, products: np.ndarray, in_window: bool) -> None:
        if len(persons):
            self.pending_opens.append((persons, products))
            if in_window:
                self.opened_in_window[persons, products] = True

    def _open_pending(self, abs_day: int) -> None:
        pop = self.pop
        for persons, products in self.pending_opens:
            for k in range(N_PRODUCTS):
                who = np.unique(persons[products == k])
                who = who[~pop.holds[who, k] & ~pop.churned[who]]
                if not len(who):
                    continue
                pop.holds[who, k] = True
                pop.opened_day[who, k] = abs_day
                open_accounts(pop, who, k, self.cfg.seed)
                opening = {1: 500.0, 2: 0.0, 3: -150000.0, 4: -8000.0, 5: 2000.0}.get(k, 0.0)
                pop.balance[who, k] = opening
                if k == 2:
                    pop.credit_limit[who] = 2000.0
                self.changed_accounts[who, k] = True
        self.pending_opens = []

    def _moves(self, rng: np.random.Generator, active: np.ndarray) -> None:
        movers = np.flatnonzero(active & (rng.random(self.pop.n) < 0.0005))
        if not len(movers):
            return
        new = _addresses(rng, self.pop.region[movers])
        for attr in ("line", "short_line", "postcode", "city"):
            getattr(self.pop.prev_address, attr)[movers] = getattr(self.pop.address, attr)[movers]
            getattr(self.pop.address, attr)[movers] = getattr(new, attr)
        self.pop.moved[movers] = True
        self.changed_customers[movers] = True

    # ------------------------------------------------------------------ campaigns
    def _campaign_weights(self, who: np.ndarray, base: np.ndarray) -> np.ndarray:
        """[len(who), actions] relative odds of each action when a campaign picks these customers."""
        weights = np.zeros((len(who), len(ACTION_IDS)))
        for a, k in enumerate(ACTION_PRODUCT):
            if k >= 0:
                weights[:, a] = ~self.pop.holds[who, k]
        weights[:, RETENTION] = 0.3
        weights[:, HELP_FINISH] = np.where(base[who, HELP_FINISH] > 0, 2.0, 0.0)
        return weights

    def _campaign_open_probability(
        self, d: int, active: np.ndarray, base: np.ndarray, credit_stressed: np.ndarray, approve: np.ndarray
    ) -> np.ndarray:
        """[n, products] P(an account opens through today's campaigns): ex ante, before the draws.

        The bank's campaigns open products too (an accepted, approved offer), about as often as
        applications do when demand is low, so a truth without them would not bound a model
        that sees who was recently contacted. Mirrors ``_campaigns``: P(picked) x P(action |
        its weights) x E[P(accept) over the channel the consent re-draws end on] x P(approved);
        help-to-finish opens the abandoned application's product.
        """
        pop, n = self.pop, self.pop.n
        everyone = np.arange(n)
        weights = self._campaign_weights(everyone, base)
        total = weights.sum(axis=1, keepdims=True)
        share = np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)
        # where the channel ends after the re-draws: a first draw among all campaign channels,
        # then each re-draw (with P = CAMPAIGN_REDRAW_P) of a channel without consent
        allowed = np.stack(
            [consent_ok(self.consent, np.full(n, c)) for c in CAMPAIGN_CHANNELS], axis=1
        ).astype(float)
        q = allowed.mean(axis=1)
        stay_bad = (1 - CAMPAIGN_REDRAW_P) + CAMPAIGN_REDRAW_P * (1 - q)
        p_bad = (1 - q) * stay_bad**CAMPAIGN_REDRAWS
        n_ok, n_bad = allowed.sum(axis=1), (1 - allowed).sum(axis=1)
        channel_p = np.where(
            allowed > 0,
            ((1 - p_bad) / np.maximum(n_ok, 1))[:, None],
            (p_bad / np.maximum(n_bad, 1))[:, None],
        )
        recent = self.contacts.sum(axis=1) - self.contacts[:, d % RING]
        out = np.zeros((n, N_PRODUCTS))
        for a, k in enumerate(ACTION_PRODUCT):
            if a != HELP_FINISH and k < 0:
                continue
            accept = np.zeros(n)
            for j, c in enumerate(CAMPAIGN_CHANNELS):
                p_acc, _, _ = offer_probabilities(
                    base[:, a],
                    np.full(n, a),
                    np.full(n, c),
                    pop.persona,
                    recent,
                    allowed[:, j] > 0,
                    credit_stressed,
                )
                accept += channel_p[:, j] * p_acc
            product = np.maximum(self.abandoned_product, 0) if a == HELP_FINISH else np.full(n, k)
            opens = share[:, a] * accept * approve[everyone, product]
            np.add.at(out, (everyone, product), opens)
        return np.minimum(out * self.cfg.campaign_rate * active[:, None] * ~pop.holds, 1.0)

    def _campaigns(
        self,
        rng: np.random.Generator,
        d: int,
        day_ms: int,
        active: np.ndarray,
        base: np.ndarray,
        credit_stressed: np.ndarray,
        approve: np.ndarray,
        in_window: bool,
    ) -> tuple[B.Events, np.ndarray]:
        """The bank's own campaigns: the contacts that fatigue customers and feed offer_responses."""
        pop = self.pop
        who = np.flatnonzero(active & (rng.random(pop.n) < self.cfg.campaign_rate))
        m = len(who)
        weights = self._campaign_weights(who, base)
        action = B._choice_rows(rng, weights) if m else np.zeros(0, dtype=np.int64)
        channel = CAMPAIGN_CHANNELS[rng.integers(len(CAMPAIGN_CHANNELS), size=m)]
        # the campaign tool mostly respects consent: re-draw a permitted channel where one exists
        for _ in range(CAMPAIGN_REDRAWS):
            bad = ~consent_ok(self.consent[who], channel)
            redraw = bad & (rng.random(m) < CAMPAIGN_REDRAW_P)
            channel = np.where(
                redraw, CAMPAIGN_CHANNELS[rng.integers(len(CAMPAIGN_CHANNELS), size=m)], channel
            )
        allowed = consent_ok(self.consent[who], channel)
        recent = self.contacts[who].sum(axis=1) - self.contacts[who, d % RING]
        p_acc, p_click, p_comp = offer_probabilities(
            base[who, action], action, channel, pop.persona[who], recent, allowed, credit_stressed[who]
        )
        decided = day_ms + rng.integers(8 * 3_600_000, 18 * 3_600_000, m)
        u = rng.random((m, 8))
        rows, codes, times = response_events(u, decided, channel, p_acc, p_click, p_comp, np.ones(m, bool))
        accepted = np.zeros(m, dtype=bool)
        accepted[rows[codes == 2]] = True
        complained_row = np.zeros(m, dtype=bool)
        complained_row[rows[codes == 4]] = True
        self.contacts[who, d % RING] += 1
        ids = [
            f"CMP-{iso_date(self.cfg.start_day + d).replace('-', '')}-{self.campaign_counter + i:06d}"
            for i in range(m)
        ]
        self.campaign_counter += m

        # consequences: accepted offers open products (if approved), retention calms churn risk
        product = ACTION_PRODUCT[action]
        help_finish = action == HELP_FINISH
        product = np.where(help_finish, self.abandoned_product[who], product)
        sells = accepted & (product >= 0)
        ok = sells & (rng.random(m) < approve[who, np.maximum(product, 0)])
        self._schedule_open(who[ok], product[ok], in_window)
        if in_window:
            p_prod = p_acc * approve[who, np.maximum(product, 0)]
            np.add.at(
                self.log_no_open,
                (who[product >= 0], product[product >= 0]),
                np.log1p(-np.minimum(p_prod[product >= 0], 0.999999)),
            )
        self.life.retained_until[who[accepted & (action == RETENTION)]] = d + 30
        self.abandoned_day[who[accepted & help_finish]] = L.NEVER

        person_ids, numbers = self._persons(who)
        self.truth.append(
            "contacts",
            pa.table(
                {
                    "decision_id": pa.array(ids, pa.string()),
                    "person_id": person_ids,
                    "customer_number": numbers,
                    "decided_at": pa.array(decided, TS),
                    "action_id": pa.array(np.array(ACTION_IDS)[action].tolist()),
                    "channel": pa.array([OFFER_CHANNELS[c] for c in channel], pa.string()),
                    "origin": pa.array(["campaign"] * m, pa.string()),
                    "consent_ok": pa.array(allowed),
                    "contacts_7d": pa.array(recent.astype(np.int32)),
                    "p_accept": pa.array(p_acc),
                    "p_click": pa.array(p_click),
                    "p_complaint": pa.array(p_comp),
                    "accepted": pa.array(accepted),
                    "complained": pa.array(complained_row),
                }
            ),
        )
        complained = np.zeros(pop.n, dtype=bool)
        complained[who[complained_row]] = True
        ev = B.Events(
            who[rows],
            times,
            {
                "decision_id": Raw(quoted(ids).take(pa.array(rows))),
                "action_id": Cat(ACTION_IDS, action[rows]),
                "channel": Cat(OFFER_CHANNELS, channel[rows]),  # channel codes index OFFER_CHANNELS
                "response": Cat(RESPONSES, codes.astype(np.int64)),
            },
        )
        return ev, complained

    # ------------------------------------------------------------------ emitting
    def _emit(self, source: str, ev: B.Events, d: int) -> None:
        """Give events ids, faults and a delivery slot; encode them in delivery order; queue them."""
        n = len(ev)
        if n == 0:
            return
        contract = CONTRACTS[source]
        rng = R.stream(self.cfg.seed, R.FAULTS, d, STREAM_SOURCES.index(source))
        codes = F.assign(rng.random(n), self.cfg.faults.stream_rates(), contract)
        cols = dict(ev.cols)
        first_id = self.counters[source]
        self.counters[source] += n
        cols["event_time"] = ev.t
        cols["schema_version"] = contract.version
        if contract.customer_key:
            codes_c = np.asarray(ev.person, dtype=np.int64).copy()
            table = self.cust_quoted
            unknown = np.flatnonzero(codes == F.CODE["unknown_customer"])
            if len(unknown):
                pool = self.pop.unknown_numbers
                fake = pool[rng.integers(len(pool), size=len(unknown))]
                table = pa.concat_arrays([table, quoted(fake.tolist())])
                codes_c[unknown] = self.pop.n + np.arange(len(unknown))
            cols[contract.customer_key] = Coded(table, codes_c)
        # a duplicated event is itself clean; its copy carries the label
        dup_src = np.flatnonzero(codes == F.CODE["duplicate"])
        codes[dup_src] = 0
        drift = np.zeros(n, dtype=bool)
        if source == "digital" and self.cfg.drift_ms is not None:
            drift = ev.t >= self.cfg.drift_ms
            codes[drift & (codes == 0)] = F.CODE["schema_drift"]
        batch, key = F.schedule(ev.t, codes, rng)
        dbatch, dkey = F.duplicate_schedule(ev.t[dup_src], rng)
        src = np.r_[np.arange(n), dup_src]
        is_copy = np.r_[np.zeros(n, dtype=bool), np.ones(len(dup_src), dtype=bool)]
        all_batch, all_key = np.r_[batch, dbatch], np.r_[key, dkey]
        order = np.lexsort((is_copy, all_key, all_batch))
        rows = src[order]
        row_codes = np.where(is_copy[order], F.CODE["duplicate"], codes[rows]).astype(np.int8)
        row_drift = drift[rows]
        cols = {k: _take(v, rows) for k, v in cols.items()}
        event_ids = fixed_ids(ID_PREFIX[source], first_id + rows, 12)
        record_keys = event_ids.strings(strip=1)
        cols["event_id"] = event_ids
        tail = None
        if row_drift.any():
            pieces = [
                "",
                f',"{SCHEMA_DRIFT_FIELD}":"{APP_VERSION[0]}"',
                f',"{SCHEMA_DRIFT_FIELD}":"{APP_VERSION[1]}"',
            ]
            which = np.where(row_drift, 1 + cols["channel"].is_("app"), 0)
            tail = pa.array(pieces, pa.string()).take(pa.array(which))
        lines = F.apply_line_faults(encode(contract, cols, tail=tail), row_codes, contract, rng)
        self.deliveries[source].add(
            lines, all_batch[order], all_key[order], record_keys, row_codes, row_drift
        )

    def _emit_snapshot(
        self, source: str, d: int, abs_day: int, cols: dict[str, Any], keys: pa.Array, is_update: np.ndarray
    ) -> None:
        n = len(keys)
        if n == 0:
            return
        contract = CONTRACTS[source]
        rng = R.stream(self.cfg.seed, R.SNAPSHOT_FAULTS, d, SNAPSHOT_SOURCES.index(source))
        f = self.cfg.faults
        u = rng.random(n)
        codes = np.zeros(n, dtype=np.int8)
        codes[is_update & (u < f.snapshot_malformed_json)] = F.CODE["malformed_json"]
        lo, hi = f.snapshot_malformed_json, f.snapshot_malformed_json + f.snapshot_missing_required
        codes[is_update & (u >= lo) & (u < hi)] = F.CODE["missing_required"]
        cols = dict(cols)
        cols[contract.event_time] = (abs_day + 1) * DAY_MS - 1
        cols["schema_version"] = contract.version
        lines = F.apply_line_faults(encode(contract, cols), codes, contract, rng)
        data, _ = line_bytes(lines)
        file = self.writer.write_batch(source, iso_date(abs_day), data)
        self._ledger(ledger_table(source, [file], [n], keys, codes, np.zeros(n, dtype=bool)))
        self.snapshot_lines[source] += n

    def _snapshots(self, d: int, abs_day: int, date: dt.date) -> None:
        pop = self.pop
        first = d == 0
        idx = np.arange(pop.n) if first else np.flatnonzero(self.changed_customers)
        cols, keys = S.customers(pop, idx)
        self._emit_snapshot("customers", d, abs_day, cols, keys, np.full(len(idx), not first))

        has = pop.account_id != None  # noqa: E711
        want = has if first else (has & self.changed_accounts)
        persons, products = np.nonzero(want)
        cols, keys = S.accounts(pop, persons, products)
        self._emit_snapshot("accounts", d, abs_day, cols, keys, self.seen_accounts[persons, products])
        self.seen_accounts[persons, products] = True

        book = self.ids.crm
        rows = sorted(book.changed)
        cols, keys = S.crm(self.ids, rows)
        is_update = np.array([not first and r < self._crm_seen for r in rows], dtype=bool)
        self._emit_snapshot("crm_contacts", d, abs_day, cols, keys, is_update)
        self._crm_seen = len(book.rows)
        book.changed.clear()

        if first:
            idx = np.arange(pop.n)
        else:
            idx = np.flatnonzero(~pop.churned & (pop.bureau_refresh_day == date.day))
            r = R.stream(self.cfg.seed, R.DAY, d, 7)
            lvl = L.stress_level(self.life, d)[idx]
            pop.bureau_score[idx] = np.clip(
                pop.bureau_score[idx] + r.normal(0, 6, len(idx)) - 30 * lvl, 300, 850
            ).astype(np.int64)
            pop.delinquencies[idx] += (self.life.recent_fees[idx] > 1.5).astype(np.int64)
            pop.inquiries[idx] = r.poisson(np.where(pop.persona[idx] == P.STRESSED, 2.0, 0.5))
        cols, keys = S.bureau(pop, idx, abs_day)
        self._emit_snapshot("bureau", d, abs_day, cols, keys, np.zeros(len(idx), dtype=bool))

    # ------------------------------------------------------------------ truth
    def _truth_day(
        self,
        d: int,
        intent: np.ndarray,
        p_open: np.ndarray,
        p_campaign: np.ndarray,
        hazard: np.ndarray,
        home: np.ndarray,
        stress: np.ndarray,
        credit_stressed: np.ndarray,
        abandoned: np.ndarray,
        base: np.ndarray,
        active: np.ndarray,
    ) -> None:
        pop = self.pop
        n = pop.n
        pid, num = self.person_arrow, self.cust_arrow
        rep = pa.array(np.repeat(np.arange(n), N_PRODUCTS))
        self.truth.append(
            "propensity",
            pa.table(
                {
                    "date": self._dates(d, n * N_PRODUCTS),
                    "person_id": pid.take(rep),
                    "customer_number": num.take(rep),
                    "product": pa.array(list(PRODUCTS) * n, pa.string()),
                    "held": pa.array(pop.holds.reshape(-1)),
                    "p_apply": pa.array(intent.reshape(-1)),
                    "p_open": pa.array(p_open.reshape(-1)),
                    "p_open_campaign": pa.array(p_campaign.reshape(-1)),
                    "p_accept": pa.array(product_accept(intent).reshape(-1)),
                }
            ),
        )
        self.truth.append(
            "daily_state",
            pa.table(
                {
                    "date": self._dates(d, n),
                    "person_id": pid,
                    "customer_number": num,
                    "active": pa.array(active),
                    "churn_hazard": pa.array(hazard),
                    "home_buying": pa.array(home),
                    "cash_stress": pa.array(stress),
                    "credit_stressed": pa.array(credit_stressed),
                    "abandoned_application": pa.array(abandoned & active),
                    "contacts_7d": pa.array(
                        (self.contacts.sum(axis=1) - self.contacts[:, d % RING]).astype(np.int32)
                    ),
                    "p_accept_retention_call": pa.array(base[:, RETENTION]),
                    "p_accept_help_finish_application": pa.array(base[:, HELP_FINISH]),
                }
            ),
        )

    def _applications_truth(
        self,
        d: int,
        person: np.ndarray,
        product: np.ndarray,
        app_ids: np.ndarray,
        digital_path: np.ndarray,
        reached: np.ndarray,
        submitted: np.ndarray,
        approved: np.ndarray,
    ) -> None:
        from pipelines.contracts import APPLICATION_STEPS

        has_app = self.ids.app_device[person] >= 0
        channel = np.where(digital_path, np.where(has_app, "app", "web"), "branch")
        pid, num = self._persons(person)
        self.truth.append(
            "applications",
            pa.table(
                {
                    "application_id": pa.array(app_ids.tolist(), pa.string()),
                    "person_id": pid,
                    "customer_number": num,
                    "product": pa.array(np.array(PRODUCTS)[product].tolist(), pa.string()),
                    "channel": pa.array(channel.tolist(), pa.string()),
                    "date": self._dates(d, len(person)),
                    "last_step": pa.array(np.array(APPLICATION_STEPS)[reached].tolist(), pa.string()),
                    "submitted": pa.array(submitted),
                    "approved": pa.array(approved),
                }
            ),
        )

    def _utterance_truth(self, source: str, first_id: int, talk: B.Talk) -> None:
        """What each customer message truly says; event ids as ``_emit`` gave them."""
        rows = talk.said_rows
        if not len(rows):
            return
        said = talk.said
        pid, num = self._persons(talk.events.person[rows])
        correct = talk.topic_correct
        self.truth.append(
            "utterances",
            pa.table(
                {
                    "event_id": fixed_ids(ID_PREFIX[source], first_id + rows, 12).strings(strip=1),
                    "source": pa.array([source] * len(rows), pa.string()),
                    "person_id": pid,
                    "customer_number": num,
                    "event_time": pa.array(talk.events.t[rows], TS),
                    "situation": categorical(T.SITUATIONS, said.situation),
                    "true_intent": categorical(T.INTENTS, said.intent),
                    "true_topic": categorical(CONTACT_TOPICS, T.TOPIC_OF_INTENT[said.intent]),
                    "true_sentiment": pa.array(said.sentiment),
                    "states_intent": pa.array(talk.states_intent),
                    "topic_correct": pa.nulls(len(rows), pa.bool_())
                    if correct is None
                    else pa.array(correct),
                }
            ),
        )

    def _life_truth(self, d: int, rows: list[tuple[str, np.ndarray]]) -> None:
        from .life_events import FITTING_ACTION

        who = np.concatenate([w for _, w in rows])
        names = [name for name, w in rows for _ in range(len(w))]
        pid, num = self._persons(who)
        self.truth.append(
            "life_events",
            pa.table(
                {
                    "person_id": pid,
                    "customer_number": num,
                    "event": pa.array(names, pa.string()),
                    "date": self._dates(d, len(who)),
                    "fitting_action": pa.array([FITTING_ACTION[x] for x in names], pa.string()),
                }
            ),
        )

    def _consent_truth(self, ev: B.Events) -> None:
        pid, num = self._persons(ev.person)
        self.truth.append(
            "consent",
            pa.table(
                {
                    "person_id": pid,
                    "customer_number": num,
                    "event_time": pa.array(ev.t, TS),
                    "purpose": ev.cols["purpose"].strings(),
                    "channel": ev.cols["channel"].strings(),
                    "granted": pa.array(ev.cols["granted"]),
                }
            ),
        )

    def _finish(self) -> None:
        pop, cfg = self.pop, self.cfg
        self.truth.write("identities", identity_truth(self.ids, pop))
        from pipelines.contracts import INCOME_BANDS, REGIONS

        persons: dict[str, Any] = {
            "person_id": self.person_arrow,
            "customer_number": self.cust_arrow,
            "persona": pa.array(np.array(P.PERSONAS)[pop.persona].tolist()),
            "age_band": pa.array(np.array(P.AGE_BANDS)[pop.age_band].tolist()),
            "region": pa.array(np.array(REGIONS)[pop.region].tolist()),
            "income_band": pa.array(np.array(INCOME_BANDS)[pop.income_band].tolist()),
            "household_id": pa.array(pop.household),
            "registered": pa.array(pop.registered),
            "customer_since": pa.array(pop.customer_since.astype(np.int32), pa.date32()),
            "bureau_score_start": pa.array(self.initial_score),
            "home_buying_day": pa.array(
                np.where(self.life.home_onset >= 0, self.life.home_onset + cfg.start_day, 0).astype(np.int32),
                pa.date32(),
                mask=self.life.home_onset < 0,
            ),
            "cash_stress_day": pa.array(
                np.where(self.life.stress_onset >= 0, self.life.stress_onset + cfg.start_day, 0).astype(
                    np.int32
                ),
                pa.date32(),
                mask=self.life.stress_onset < 0,
            ),
            "moved": pa.array(pop.moved),
            "churned": pa.array(pop.churned),
            "churn_date": pa.array(
                np.maximum(pop.churn_day, 0).astype(np.int32), pa.date32(), mask=pop.churn_day < 0
            ),
        }
        for k, p in enumerate(PRODUCTS):
            persons[f"held_{p}_at_start"] = pa.array(self.initial_holds[:, k])
        self.truth.write("persons", pa.table(persons))

        w0, w1 = self.window
        labels: dict[str, Any] = {
            "person_id": self.person_arrow,
            "customer_number": self.cust_arrow,
            "window_start": self._dates(w0, pop.n),
            "window_end": self._dates(w1 - 1, pop.n),
            "active_at_window_start": pa.array(self.active_at_window),
            "churned": pa.array(self.churned_in_window),
            "p_churn": pa.array(-np.expm1(self.log_no_churn)),
        }
        for k, p in enumerate(PRODUCTS):
            labels[f"opened_{p}"] = pa.array(self.opened_in_window[:, k])
            labels[f"p_open_{p}"] = pa.array(-np.expm1(self.log_no_open[:, k]))
        self.truth.write("labels", pa.table(labels))


def _take(value: Any, idx: np.ndarray) -> Any:
    if isinstance(value, (Raw, Cat, Coded, Fixed)):
        return value.take(idx)
    if isinstance(value, (pa.Array, pa.ChunkedArray)):
        return value.take(pa.array(idx))
    if isinstance(value, np.ndarray):
        return value[idx]
    return value
