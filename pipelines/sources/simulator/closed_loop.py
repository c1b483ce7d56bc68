"""Closed loop: answer a policy's decisions with the responses the known model implies.

Given decisions (customer_number, action_id, channel, decided_at, decision_id), the simulator
reads the hidden state of a finished run from ``<out>/truth`` and

- ``expected_value`` scores them exactly: sum of P(accept) x action value minus complaint cost x
  P(complaint), with contacts that break consent counted separately as violations;
- ``respond`` samples impressions, clicks, acceptances, dismissals and complaints (with
  realistic delays) and delivers them as new ``offer_responses`` landing files, deterministically
  for a seed and independent of the order or company of the decisions;
- ``random_policy``, ``static_rule_policy`` and ``oracle_policy`` are the reference policies any
  learned policy is compared with.

Decisions after the last simulated day use the last day's hidden state.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.contracts import CONSENT_CHANNELS, CONTRACTS, OFFER_CHANNELS, PRODUCTS
from pipelines.errors import InputError

from . import personas as P
from . import rng as R
from .actions import (
    ACTION_CONTACT,
    ACTION_IDS,
    ACTION_PRODUCT,
    ACTION_VALUE,
    COMPLAINT_COST,
    HELP_FINISH,
    RETENTION_LIKE,
)
from .codec import Cat, Raw, encode, quoted
from .config import DAY_MS, HOUR_MS
from .response import FATIGUE_DAYS, RESPONSES, consent_ok, offer_probabilities, response_events
from .truth import SCHEMAS
from .writers import Delivery, FileWriter, Writer

DECISION_COLUMNS = ("customer_number", "action_id", "channel", "decided_at", "decision_id")
_SHIFT = 2**40  # person index * _SHIFT + relative ms: one sortable int64 key per contact


@dataclass
class World:
    """The hidden state of a finished run, as the closed loop needs it."""

    out: Path
    seed: int
    start_ms: int
    days: int
    customer_numbers: np.ndarray
    index: dict[str, int]
    persona: np.ndarray
    age_band: np.ndarray  # observable (from the date of birth): static rules may use it
    p_accept: np.ndarray  # [days, n, products] channel-neutral, 0 when held
    p_retention: np.ndarray  # [days, n]
    p_help: np.ndarray  # [days, n]
    stressed: np.ndarray  # [days, n]
    active: np.ndarray  # [days, n]
    held: np.ndarray  # [days, n, products]
    consent_initial: np.ndarray  # [n, purposes, channels] at the start of the run
    consent_changes: pd.DataFrame  # person, t, purpose, channel, granted (time order)
    contact_keys: np.ndarray  # sorted person*_SHIFT + (ms - start_ms + window) of past contacts

    @property
    def n(self) -> int:
        return len(self.persona)

    @classmethod
    def load(cls, out: str | os.PathLike[str]) -> World:
        """Read the truth of the run in ``out``."""
        import json

        root = Path(out) / "truth"
        if not (root / "manifest.json").exists():
            raise InputError(f"{root} has no manifest.json: run 'journeylake generate --out {out}' first")
        manifest = json.loads((root / "manifest.json").read_text())
        persons = pq.read_table(
            root / "persons.parquet", columns=["person_id", "customer_number", "persona", "age_band"]
        )
        n = persons.num_rows
        numbers = np.array(persons["customer_number"].to_pylist(), dtype=object)
        days = int(manifest["days"])
        start_day = (pd.Timestamp(manifest["start"]) - pd.Timestamp("1970-01-01")).days
        start_ms = start_day * DAY_MS

        def person_idx(col: pa.ChunkedArray) -> np.ndarray:
            return pc.cast(pc.utf8_slice_codeunits(col, 1), pa.int64()).to_numpy()

        def day_idx(col: pa.ChunkedArray) -> np.ndarray:
            return pc.cast(col, pa.int32()).to_numpy().astype(np.int64) - start_day

        prop = pq.read_table(
            root / "propensity.parquet", columns=["date", "person_id", "product", "held", "p_accept"]
        )
        d, i = day_idx(prop["date"]), person_idx(prop["person_id"])
        k = pc.index_in(prop["product"], pa.array(PRODUCTS)).to_numpy()
        p_accept = np.zeros((days, n, len(PRODUCTS)))
        held = np.zeros((days, n, len(PRODUCTS)), dtype=bool)
        p_accept[d, i, k] = prop["p_accept"].to_numpy()
        held[d, i, k] = prop["held"].to_numpy()
        state = pq.read_table(root / "daily_state.parquet")
        d, i = day_idx(state["date"]), person_idx(state["person_id"])
        grids = {}
        for name, dtype in (
            ("p_accept_retention_call", float),
            ("p_accept_help_finish_application", float),
            ("credit_stressed", bool),
            ("active", bool),
        ):
            grid = np.zeros((days, n), dtype=dtype)
            grid[d, i] = state[name].to_numpy()
            grids[name] = grid

        consent = pq.read_table(root / "consent.parquet").to_pandas()
        consent["person"] = consent["person_id"].str[1:].astype(np.int64)
        consent["t"] = (
            consent["event_time"].astype("int64") // 1_000_000
            if str(consent["event_time"].dtype).startswith("datetime64[ns")
            else consent["event_time"].astype("datetime64[ms, UTC]").astype("int64")
        )
        consent["purpose_i"] = consent["purpose"].map({"marketing": 0, "profiling": 1}).astype(np.int64)
        consent["channel_i"] = (
            consent["channel"].map({c: j for j, c in enumerate(CONSENT_CHANNELS)}).astype(np.int64)
        )
        consent = consent.sort_values(["t", "person"], kind="stable")
        initial = np.zeros((n, 2, len(CONSENT_CHANNELS)), dtype=bool)
        first = consent[consent["t"] < start_ms + HOUR_MS]
        initial[first["person"], first["purpose_i"], first["channel_i"]] = first["granted"].to_numpy()
        initial[:, 1, :] = initial[:, 1, -1:]
        changes = consent[consent["t"] >= start_ms + HOUR_MS][
            ["person", "t", "purpose_i", "channel_i", "granted"]
        ]

        world = cls(
            out=Path(out),
            seed=int(manifest["seed"]),
            start_ms=start_ms,
            days=days,
            customer_numbers=numbers,
            index={c: j for j, c in enumerate(numbers)},
            persona=pc.index_in(persons["persona"], pa.array(P.PERSONAS)).to_numpy().astype(np.int64),
            age_band=pc.index_in(persons["age_band"], pa.array(P.AGE_BANDS)).to_numpy().astype(np.int64),
            p_accept=p_accept,
            p_retention=grids["p_accept_retention_call"],
            p_help=grids["p_accept_help_finish_application"],
            stressed=grids["credit_stressed"],
            active=grids["active"],
            held=held,
            consent_initial=initial,
            consent_changes=changes.reset_index(drop=True),
            contact_keys=np.zeros(0, dtype=np.int64),
        )
        contacts = [root / "contacts.parquet", *sorted((root / "closed_loop").glob("contacts-*.parquet"))]
        keys = []
        for path in contacts:
            if path.exists():
                tbl = pq.read_table(path, columns=["person_id", "decided_at", "action_id"])
                ms = pc.cast(tbl["decided_at"], pa.int64()).to_numpy()
                contact = np.isin(
                    np.array(tbl["action_id"].to_pylist(), dtype=object), ["no_action"], invert=True
                )
                keys.append(world._key(person_idx(tbl["person_id"])[contact], ms[contact]))
        world.contact_keys = np.sort(np.concatenate(keys)) if keys else np.zeros(0, dtype=np.int64)
        return world

    def _key(self, person: np.ndarray, ms: np.ndarray) -> np.ndarray:
        rel = np.asarray(ms, dtype=np.int64) - self.start_ms + FATIGUE_DAYS * DAY_MS
        return np.asarray(person, dtype=np.int64) * _SHIFT + np.clip(rel, 0, _SHIFT - 1)

    def day_of(self, ms: np.ndarray) -> np.ndarray:
        """Index of the simulated day whose hidden state applies at ``ms`` (clamped to the run)."""
        return np.clip((np.asarray(ms, dtype=np.int64) - self.start_ms) // DAY_MS, 0, self.days - 1)

    def consent_at(self, person: np.ndarray, ms: np.ndarray) -> np.ndarray:
        """[m, purposes, channels] consent of each person at each time."""
        out = self.consent_initial[person].copy()
        ch = self.consent_changes
        if len(ch) == 0 or len(person) == 0:
            return out
        rows_of: dict[int, list[int]] = {}
        for r, p in enumerate(person.tolist()):
            rows_of.setdefault(p, []).append(r)
        cp, ct = ch["person"].to_numpy(), ch["t"].to_numpy()
        pu, cc, g = ch["purpose_i"].to_numpy(), ch["channel_i"].to_numpy(), ch["granted"].to_numpy()
        for j in np.flatnonzero(np.isin(cp, person)):
            for r in rows_of[int(cp[j])]:
                if ct[j] <= ms[r]:
                    out[r, pu[j], cc[j]] = g[j]
                    if pu[j] == 1 and cc[j] == len(CONSENT_CHANNELS) - 1:
                        out[r, 1, :] = g[j]
        return out

    def recent_contacts(
        self, person: np.ndarray, ms: np.ndarray, extra_keys: np.ndarray | None = None
    ) -> np.ndarray:
        """Contacts of each person in the ``FATIGUE_DAYS`` days before ``ms``."""
        keys = self.contact_keys if extra_keys is None else np.sort(np.r_[self.contact_keys, extra_keys])
        hi = self._key(person, ms)
        lo = self._key(person, np.asarray(ms) - FATIGUE_DAYS * DAY_MS)
        return np.searchsorted(keys, hi, side="left") - np.searchsorted(keys, lo, side="left")

    def base_accept(self, day: np.ndarray, person: np.ndarray, action: np.ndarray) -> np.ndarray:
        """Channel-neutral P(accept) of ``action`` for ``person`` on ``day`` (0 if inactive)."""
        k = ACTION_PRODUCT[action]
        base = np.where(k >= 0, self.p_accept[day, person, np.maximum(k, 0)], 0.0)
        base = np.where(np.isin(action, RETENTION_LIKE), self.p_retention[day, person], base)
        base = np.where(action == HELP_FINISH, self.p_help[day, person], base)
        return np.where(self.active[day, person], base, 0.0)


@dataclass(frozen=True)
class PolicyValue:
    """Exact expected outcome of a set of decisions under the true model."""

    value: float
    expected_accepts: float
    expected_complaints: float
    violations: int
    decisions: int
    contacts: int
    unknown_customers: int


def load_decisions(decisions: pd.DataFrame | str | os.PathLike[str]) -> pd.DataFrame:
    """Decisions from a DataFrame or a Parquet / JSON / JSON-lines file, validated."""
    if not isinstance(decisions, pd.DataFrame):
        path = Path(decisions)
        if not path.exists():
            raise InputError(f"decisions file {path} does not exist")
        if path.suffix == ".parquet":
            decisions = pd.read_parquet(path)
        elif path.suffix in (".jsonl", ".ndjson"):
            decisions = pd.read_json(path, lines=True, dtype=False)
        elif path.suffix == ".json":
            decisions = pd.read_json(path, dtype=False)
        else:
            raise InputError(f"decisions file {path}: use .parquet, .json or .jsonl")
    missing = [c for c in DECISION_COLUMNS if c not in decisions.columns]
    if missing:
        raise InputError(f"decisions are missing column(s): {', '.join(missing)}")
    df = decisions[list(DECISION_COLUMNS)].copy()
    bad_action = sorted(set(df["action_id"]) - set(ACTION_IDS))
    if bad_action:
        raise InputError(f"decisions: unknown action_id {bad_action[0]!r}; known: {', '.join(ACTION_IDS)}")
    bad_channel = sorted(set(df["channel"]) - set(OFFER_CHANNELS))
    if bad_channel:
        raise InputError(f"decisions: unknown channel {bad_channel[0]!r}; known: {', '.join(OFFER_CHANNELS)}")
    if df["decision_id"].isna().any() or df["decision_id"].duplicated().any():
        raise InputError("decisions: decision_id must be present and unique")
    try:
        decided = pd.to_datetime(df["decided_at"], utc=True)
    except (ValueError, TypeError) as exc:
        raise InputError(f"decisions: decided_at is not a timestamp ({exc})") from None
    df["decided_ms"] = decided.astype("datetime64[ms, UTC]").astype("int64")
    df["decision_id"] = df["decision_id"].astype(str)
    df["customer_number"] = df["customer_number"].astype(str)
    return df.reset_index(drop=True)


def score_decisions(world: World, decisions: pd.DataFrame | str | os.PathLike[str]) -> pd.DataFrame:
    """Per-decision true probabilities: p_accept, p_click, p_complaint, consent_ok, expected_value."""
    df = load_decisions(decisions)
    person = np.array([world.index.get(c, -1) for c in df["customer_number"]], dtype=np.int64)
    known = person >= 0
    p = np.where(known, person, 0)
    action = np.array([ACTION_IDS.index(a) for a in df["action_id"]], dtype=np.int64)
    channel = np.array([OFFER_CHANNELS.index(c) for c in df["channel"]], dtype=np.int64)
    ms = df["decided_ms"].to_numpy()
    day = world.day_of(ms)
    contact = ACTION_CONTACT[action] & known & world.active[day, p]
    # contacts earlier in this same set tire the customer too
    own = world._key(p[contact], ms[contact])
    recent = world.recent_contacts(p, ms, own)
    allowed = consent_ok(world.consent_at(p, ms), channel)
    p_acc, p_click, p_comp = offer_probabilities(
        world.base_accept(day, p, action),
        action,
        channel,
        world.persona[p],
        recent,
        allowed,
        world.stressed[day, p],
    )
    p_acc, p_click, p_comp = (np.where(contact, x, 0.0) for x in (p_acc, p_click, p_comp))
    df["known_customer"] = known
    df["contact"] = contact
    df["contacts_7d"] = recent
    df["consent_ok"] = allowed | ~contact
    df["p_accept"] = p_acc
    df["p_click"] = p_click
    df["p_complaint"] = p_comp
    df["expected_value"] = p_acc * ACTION_VALUE[action] - COMPLAINT_COST * p_comp
    return df


def expected_value(world: World, decisions: pd.DataFrame | str | os.PathLike[str]) -> PolicyValue:
    """The exact expected value of ``decisions`` under the true response model."""
    df = score_decisions(world, decisions)
    return PolicyValue(
        value=float(df["expected_value"].sum()),
        expected_accepts=float(df["p_accept"].sum()),
        expected_complaints=float(df["p_complaint"].sum()),
        violations=int((df["contact"] & ~df["consent_ok"]).sum()),
        decisions=len(df),
        contacts=int(df["contact"].sum()),
        unknown_customers=int((~df["known_customer"]).sum()),
    )


def respond(
    world: World,
    decisions: pd.DataFrame | str | os.PathLike[str],
    *,
    seed: int | None = None,
    writer: Writer | None = None,
) -> pd.DataFrame:
    """Sample the responses to ``decisions`` and deliver them as ``offer_responses`` landing files.

    Each decision's responses depend only on (seed, decision_id) and its true probabilities, so
    the same decisions give the same responses whatever else is submitted with them. Returns
    the response events (contract columns). Written lines are added to the truth ledger.
    """
    df = score_decisions(world, decisions)
    seed = world.seed if seed is None else seed
    hashes = R.stable_hash64(df["decision_id"].tolist())
    u = (
        np.column_stack([R.hash_uniform(seed, hashes, salt) for salt in range(8)])
        if len(df)
        else np.zeros((0, 8))
    )
    channel = np.array([OFFER_CHANNELS.index(c) for c in df["channel"]], dtype=np.int64)
    rows, codes, times = response_events(
        u,
        df["decided_ms"].to_numpy(),
        channel,
        df["p_accept"].to_numpy(),
        df["p_click"].to_numpy(),
        df["p_complaint"].to_numpy(),
        df["contact"].to_numpy(),
    )
    order = np.lexsort((codes, hashes[rows], times))  # independent of the decisions' order
    rows, codes, times = rows[order], codes[order], times[order]
    event_ids = [f"ORL{hashes[r]:020d}{c}" for r, c in zip(rows.tolist(), codes.tolist(), strict=True)]
    events = pd.DataFrame(
        {
            "event_id": event_ids,
            "event_time": pd.to_datetime(times, unit="ms", utc=True),
            "schema_version": CONTRACTS["offer_responses"].version,
            "customer_number": df["customer_number"].to_numpy()[rows],
            "decision_id": df["decision_id"].to_numpy()[rows],
            "action_id": df["action_id"].to_numpy()[rows],
            "channel": df["channel"].to_numpy()[rows],
            "response": np.array(RESPONSES, dtype=object)[codes],
        }
    )
    _deliver(world, writer or FileWriter(world.out), df, events, rows, codes, times)
    return events


def _deliver(
    world: World,
    writer: Writer,
    df: pd.DataFrame,
    events: pd.DataFrame,
    rows: np.ndarray,
    codes: np.ndarray,
    times: np.ndarray,
) -> None:
    root = world.out / "truth"
    folder = world.out / "landing" / "offer_responses"
    existing = sorted(folder.glob("*.jsonl")) if folder.exists() else []
    first_seq = max((int(p.stem.rsplit("_", 1)[-1]) for p in existing), default=0) + 1
    (root / "records").mkdir(parents=True, exist_ok=True)
    (root / "closed_loop").mkdir(parents=True, exist_ok=True)
    part = len(list((root / "closed_loop").glob("contacts-*.parquet")))
    ledger_parts: list[pa.Table] = []
    delivery = Delivery("offer_responses", writer, ledger_parts.append, first_seq=first_seq)
    if len(events):
        contract = CONTRACTS["offer_responses"]
        cols = {
            "event_id": quoted(events["event_id"].tolist()),
            "event_time": times,
            "schema_version": contract.version,
            "customer_number": quoted(events["customer_number"].tolist()),
            "decision_id": quoted(events["decision_id"].tolist()),
            "action_id": Cat(ACTION_IDS, np.array([ACTION_IDS.index(a) for a in events["action_id"]])),
            "channel": Cat(OFFER_CHANNELS, np.array([OFFER_CHANNELS.index(c) for c in events["channel"]])),
            "response": Cat(RESPONSES, codes.astype(np.int64)),
        }
        cols = {k: Raw(v) if isinstance(v, pa.Array) else v for k, v in cols.items()}
        lines = encode(contract, cols)
        n = len(events)
        delivery.add(
            lines,
            times // HOUR_MS * HOUR_MS,
            times,
            pa.array(events["event_id"].tolist(), pa.string()),
            np.zeros(n, dtype=np.int8),
            np.zeros(n, dtype=bool),
        )
        delivery.flush(None)
    ledger = pa.concat_tables(ledger_parts) if ledger_parts else SCHEMAS["records"].empty_table()
    pq.write_table(ledger, root / "records" / f"closed-loop-{part:05d}.parquet")
    person = np.array([world.index.get(c, 0) for c in df["customer_number"]], dtype=np.int64)
    accepted = np.zeros(len(df), dtype=bool)
    accepted[rows[codes == 2]] = True
    complained = np.zeros(len(df), dtype=bool)
    complained[rows[codes == 4]] = True
    contacts = pa.table(
        {
            "decision_id": pa.array(df["decision_id"].tolist(), pa.string()),
            "person_id": pa.array([f"P{p:07d}" for p in person], pa.string()),
            "customer_number": pa.array(df["customer_number"].tolist(), pa.string()),
            "decided_at": pa.array(df["decided_ms"].to_numpy(), pa.timestamp("ms", tz="UTC")),
            "action_id": pa.array(df["action_id"].tolist(), pa.string()),
            "channel": pa.array(df["channel"].tolist(), pa.string()),
            "origin": pa.array(["closed_loop"] * len(df), pa.string()),
            "consent_ok": pa.array(df["consent_ok"].to_numpy()),
            "contacts_7d": pa.array(df["contacts_7d"].to_numpy().astype(np.int32)),
            "p_accept": pa.array(df["p_accept"].to_numpy()),
            "p_click": pa.array(df["p_click"].to_numpy()),
            "p_complaint": pa.array(df["p_complaint"].to_numpy()),
            "accepted": pa.array(accepted),
            "complained": pa.array(complained),
        }
    )
    known = df["known_customer"].to_numpy()
    pq.write_table(contacts.filter(pa.array(known)), root / "closed_loop" / f"contacts-{part:05d}.parquet")
    new_keys = world._key(
        person[known & df["contact"].to_numpy()],
        df["decided_ms"].to_numpy()[known & df["contact"].to_numpy()],
    )
    world.contact_keys = np.sort(np.r_[world.contact_keys, new_keys])


# ---------------------------------------------------------------------------- reference policies
def _targets(
    world: World, at: pd.Timestamp | str | None, customers: list[str] | None
) -> tuple[np.ndarray, int]:
    ms = world.start_ms + world.days * DAY_MS if at is None else int(pd.Timestamp(at).value // 1_000_000)
    if customers is None:
        person = np.flatnonzero(world.active[world.day_of(np.array([ms]))[0]])
    else:
        person = np.array([world.index[c] for c in customers if c in world.index], dtype=np.int64)
    return person, ms


def _frame(
    world: World, person: np.ndarray, action: np.ndarray, channel: np.ndarray, ms: int, name: str
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_number": world.customer_numbers[person],
            "action_id": np.array(ACTION_IDS, dtype=object)[action],
            "channel": np.array(OFFER_CHANNELS, dtype=object)[channel],
            "decided_at": pd.to_datetime(np.full(len(person), ms), unit="ms", utc=True),
            "decision_id": [f"{name}-{ms}-{c}" for c in world.customer_numbers[person]],
        }
    )


def random_policy(
    world: World, *, at: pd.Timestamp | str | None = None, customers: list[str] | None = None, seed: int = 0
) -> pd.DataFrame:
    """One random action on a random channel per customer (never ``no_action``)."""
    person, ms = _targets(world, at, customers)
    rng = R.stream(seed, R.POLICY, 1)
    contact_actions = np.flatnonzero(ACTION_CONTACT)
    action = contact_actions[rng.integers(len(contact_actions), size=len(person))]
    channel = rng.integers(len(OFFER_CHANNELS), size=len(person))
    return _frame(world, person, action, channel, ms, "random")


def static_rule_policy(
    world: World, *, at: pd.Timestamp | str | None = None, customers: list[str] | None = None
) -> pd.DataFrame:
    """A bank's usual rules: a mortgage to 25-44 year-olds without one, else the first product not
    held (card, savings, investments, loan), on the first channel the customer consented to
    (email, app, sms, push); nothing if no channel is allowed."""
    person, ms = _targets(world, at, customers)
    day = int(world.day_of(np.array([ms]))[0])
    held = world.held[day, person]
    ladder = ["offer_credit_card", "offer_savings", "offer_investments", "offer_personal_loan"]
    action = np.full(len(person), ACTION_IDS.index("no_action"))
    for a in reversed(ladder):
        action = np.where(~held[:, PRODUCTS.index(ACTIONS_PRODUCT_NAME[a])], ACTION_IDS.index(a), action)
    young_adult = np.isin(world.age_band[person], (1, 2)) & ~held[:, PRODUCTS.index("mortgage")]
    action = np.where(young_adult, ACTION_IDS.index("offer_mortgage"), action)
    consent = world.consent_at(person, np.full(len(person), ms))
    channel = np.full(len(person), -1)
    for name in reversed(("email", "app", "sms", "push")):
        c = OFFER_CHANNELS.index(name)
        channel = np.where(consent_ok(consent, np.full(len(person), c)), c, channel)
    action = np.where(channel < 0, ACTION_IDS.index("no_action"), action)
    return _frame(world, person, action, np.maximum(channel, 0), ms, "static")


ACTIONS_PRODUCT_NAME = {a: PRODUCTS[k] for a, k in zip(ACTION_IDS, ACTION_PRODUCT, strict=True) if k >= 0}


def oracle_policy(
    world: World, *, at: pd.Timestamp | str | None = None, customers: list[str] | None = None
) -> pd.DataFrame:
    """The best single action and channel per customer under the true model (consent respected)."""
    person, ms = _targets(world, at, customers)
    m = len(person)
    times = np.full(m, ms)
    day = world.day_of(times)
    recent = world.recent_contacts(person, times)
    consent = world.consent_at(person, times)
    best_value = np.zeros(m)
    best_action = np.full(m, ACTION_IDS.index("no_action"))
    best_channel = np.zeros(m, dtype=np.int64)
    for a in np.flatnonzero(ACTION_CONTACT):
        action = np.full(m, a)
        base = world.base_accept(day, person, action)
        for c in range(len(OFFER_CHANNELS)):
            channel = np.full(m, c)
            allowed = consent_ok(consent, channel)
            p_acc, _, p_comp = offer_probabilities(
                base, action, channel, world.persona[person], recent, allowed, world.stressed[day, person]
            )
            value = np.where(allowed, p_acc * ACTION_VALUE[a] - COMPLAINT_COST * p_comp, -np.inf)
            better = value > best_value
            best_value = np.where(better, value, best_value)
            best_action = np.where(better, a, best_action)
            best_channel = np.where(better, c, best_channel)
    return _frame(world, person, best_action, best_channel, ms, "oracle")


# ------------------------------------------------------------- reference policies within the rules
STATIC_CHANNEL_ORDER = ("email", "app", "sms", "push")  # the static rules' channel preference


def option_values(world: World, options: pd.DataFrame) -> np.ndarray:
    """True expected value of each allowed option on its own (no fatigue from the other options)."""
    if options.empty:
        return np.zeros(0)
    frame = options[["customer_number", "action_id", "channel", "decided_at"]].copy()
    frame["decision_id"] = [f"option-{i}" for i in range(len(frame))]
    return score_decisions(world, frame)["expected_value"].to_numpy()


def policies_within_rules(
    world: World,
    options: pd.DataFrame,
    *,
    default_rank: dict[str, int] | None = None,
    seed: int = 0,
) -> dict[str, pd.DataFrame]:
    """The reference policies restricted to what a bank's own rules allowed at each decision.

    ``options`` has one row per (decision_id, action_id, channel) the decision funnel let through
    (eligible, suitable, consented, within the contact policies), with ``customer_number`` and
    ``decided_at``. Each policy picks at most one per decision:

    - ``random``: a uniformly random option;
    - ``static_rules``: the static rules' ladder (a mortgage to 25-44 year-olds, else credit card,
      savings, investments, personal loan) on its channel order (email, app, sms, push, then the
      rest); nothing when none of its offers is allowed;
    - ``default_rank``: the lowest ``default_rank`` (the catalog's default policy), first channel;
    - ``oracle``: the option with the highest true expected value, nothing if none is positive.

    Comparing a learned policy with these on the same options measures its choices, not the cost
    of the rules (the unrestricted policies above measure that).
    """
    columns = list(DECISION_COLUMNS)
    if options.empty:
        names = ("random", "static_rules", *(("default_rank",) if default_rank is not None else ()), "oracle")
        return {name: pd.DataFrame(columns=columns) for name in names}
    df = options.reset_index(drop=True).copy()
    df["decided_at"] = pd.to_datetime(df["decided_at"], utc=True)
    df["_value"] = option_values(world, df)
    channel_pos: dict[str, int] = {}
    for c in (*STATIC_CHANNEL_ORDER, *OFFER_CHANNELS):  # its own order first, then the others
        channel_pos.setdefault(c, len(channel_pos))
    df["_channel_pos"] = df["channel"].map(channel_pos).fillna(99)
    df["_offer_pos"] = df["channel"].map({c: i for i, c in enumerate(OFFER_CHANNELS)}).fillna(99)
    person = np.array([world.index.get(c, -1) for c in df["customer_number"]], dtype=np.int64)
    young = np.where(person >= 0, np.isin(world.age_band[np.maximum(person, 0)], (1, 2)), False)
    ladder = {
        a: i + 1
        for i, a in enumerate(
            ("offer_credit_card", "offer_savings", "offer_investments", "offer_personal_loan")
        )
    }
    static = df["action_id"].map(ladder).fillna(np.inf).to_numpy()
    df["_static"] = np.where(young & (df["action_id"] == "offer_mortgage").to_numpy(), 0, static)
    rng = R.stream(seed, R.POLICY, 2)
    df["_random"] = rng.random(len(df))

    def first(sort: list[str], keep: pd.Series | None = None) -> pd.DataFrame:
        rows = df if keep is None else df[keep]
        return rows.sort_values(["decision_id", *sort], kind="stable").groupby("decision_id").head(1)[columns]

    df["_minus_value"] = -df["_value"]
    out = {
        "random": first(["_random"]),
        "static_rules": first(["_static", "_channel_pos"], pd.Series(np.isfinite(df["_static"]))),
    }
    if default_rank is not None:
        df["_rank"] = df["action_id"].map(default_rank).fillna(np.inf)
        out["default_rank"] = first(["_rank", "_offer_pos"])
    out["oracle"] = first(["_minus_value"], df["_value"] > 0)
    return {name: frame.reset_index(drop=True) for name, frame in out.items()}
