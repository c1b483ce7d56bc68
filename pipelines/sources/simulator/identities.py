"""Fragmented identities as banks have them: CRM contacts, logins, devices and cookies.

The core-banking customer number is the anchor; CRM records are typed by people (nicknames,
typos, old addresses, shared household email or phone, duplicates, customer number often
missing); devices and cookies are anonymous until a login links them. The truth of who is behind
every id is kept here and written to ``truth/identities.parquet``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from . import rng as R
from .codec import iso_date, quoted
from .names import NICKNAMES
from .population import Population

CRM_FIELDS = (
    "crm_contact_id",
    "customer_number",
    "first_name",
    "last_name",
    "email",
    "phone",
    "address_line",
    "postcode",
    "city",
    "date_of_birth",
    "updated_at",
)


def _typo(s: str, rng: np.random.Generator) -> str:
    """One keyboard slip: swap, drop, double or replace a character (never the first)."""
    if len(s) < 4:
        return s
    i = int(rng.integers(1, len(s) - 1))
    kind = int(rng.integers(4))
    if kind == 0:
        return s[:i] + s[i + 1] + s[i] + s[i + 2 :]
    if kind == 1:
        return s[:i] + s[i + 1 :]
    if kind == 2:
        return s[:i] + s[i] + s[i:]
    return s[:i] + "aeiou"[int(rng.integers(5))] + s[i + 1 :]


def _phone_variant(phone: str, rng: np.random.Generator) -> str:
    local = "0" + phone[3:]
    k = int(rng.integers(4))
    if k == 0:
        return phone
    if k == 1:
        return local
    if k == 2:
        return f"{local[:5]} {local[5:]}"
    return f"+44 {phone[3:7]} {phone[7:]}"


@dataclass
class CrmBook:
    """All CRM contact records (one row per record) and which ones changed since the last extract."""

    rows: list[dict] = field(default_factory=list)
    person: list[int] = field(default_factory=list)
    changed: set[int] = field(default_factory=set)
    by_person: dict[int, list[int]] = field(default_factory=dict)

    def add(self, record: dict, person: int) -> None:
        self.changed.add(len(self.rows))
        self.by_person.setdefault(person, []).append(len(self.rows))
        self.rows.append(record)
        self.person.append(person)


@dataclass
class Identities:
    """Devices, cookies and CRM records of every person, plus ids created during the run."""

    app_device: np.ndarray  # [n] device index or -1
    web_device: np.ndarray  # [n, 2] device index or -1
    cookie: np.ndarray  # [n, 2] current cookie index per web device, -1 without a device
    device_ids: list[str]
    device_person: list[int]
    cookie_ids: list[str]
    cookie_person: list[int]
    crm: CrmBook
    seed: int
    _device_table: pa.Array | None = None
    _login_table: pa.Array | None = None
    _cookie_chunks: list[pa.Array] = field(default_factory=list)
    _cookie_quoted: int = 0

    def cookie_table(self) -> pa.Array:
        """Cookie ids as JSON pieces indexed by cookie index, plus a final ``null``."""
        if self._cookie_quoted < len(self.cookie_ids):
            self._cookie_chunks.append(quoted(self.cookie_ids[self._cookie_quoted :]))
            self._cookie_quoted = len(self.cookie_ids)
        return pa.concat_arrays([*self._cookie_chunks, pa.array(["null"], pa.string())])

    def device_table(self) -> pa.Array:
        """Device ids as JSON pieces, indexed by device index."""
        if self._device_table is None or len(self._device_table) != len(self.device_ids):
            self._device_table = quoted(self.device_ids)
        return self._device_table

    def login_table(self, pop: Population) -> pa.Array:
        """Login ids as JSON pieces indexed by person, plus a final ``null``."""
        if self._login_table is None:
            self._login_table = quoted(list(pop.login_id) + [None])
        return self._login_table

    def new_cookies(self, persons: np.ndarray) -> np.ndarray:
        """Issue fresh cookie ids (a browser cleared its cookies) and return their indexes."""
        start = len(self.cookie_ids)
        codes = R.permuted_ids(np.arange(start, start + len(persons)), 1_000_000_000, self.seed, 7)
        self.cookie_ids.extend(f"K{c:09d}" for c in codes)
        self.cookie_person.extend(int(p) for p in persons)
        return np.arange(start, start + len(persons))


def crm_record(
    pop: Population, i: int, rng: np.random.Generator, crm_id: str, updated_at: int, *, use_old_address: bool
) -> dict:
    """One CRM record for person ``i``, typed by a person with the usual variation."""
    first = str(pop.first_name[i])
    u = rng.random(8)
    if u[0] < 0.15 and first in NICKNAMES:
        nicks = NICKNAMES[first]
        first_out: str | None = nicks[int(rng.integers(len(nicks)))]
    elif u[0] < 0.20:
        first_out = first.upper()
    elif u[0] < 0.24:
        first_out = _typo(first, rng)
    elif u[0] < 0.27:
        first_out = None
    else:
        first_out = first
    last = str(pop.last_name[i])
    last_out = _typo(last, rng) if u[1] < 0.05 else (last.upper() if u[1] < 0.10 else last)
    if u[2] < 0.55:
        email = str(pop.email[i]) if rng.random() < 0.85 else str(pop.email[i]).upper()
    elif u[2] < 0.65:
        email = str(pop.household_email[i])
    elif u[2] < 0.72:
        email = f"{first.lower()[0]}{last.lower()}{int(rng.integers(10, 99))}@workmail.co.uk"
    else:
        email = None
    if u[3] < 0.5:
        phone: str | None = _phone_variant(str(pop.phone[i]), rng)
    elif u[3] < 0.62:
        phone = str(pop.landline[i])
    else:
        phone = None
    addr = pop.prev_address if use_old_address else pop.address
    if u[4] < 0.08:
        line = postcode = city = None
    else:
        line = str(addr.short_line[i] if u[5] < 0.4 else addr.line[i])
        if u[5] > 0.9:
            line = line.upper()
        postcode = str(addr.postcode[i])
        if u[6] < 0.2:
            postcode = postcode.replace(" ", "")
        elif u[6] < 0.3:
            postcode = postcode.lower()
        city = str(addr.city[i])
    dob_day = int(pop.dob[i])
    if u[7] < 0.15:
        dob = None
    else:
        dob = iso_date(dob_day)
        if u[7] < 0.17 and int(dob[8:]) <= 12 and dob[5:7] != dob[8:]:
            dob = f"{dob[:5]}{dob[8:]}-{dob[5:7]}"  # day and month swapped
    return {
        "crm_contact_id": crm_id,
        "customer_number": str(pop.customer_number[i]) if rng.random() < 0.45 else None,
        "first_name": first_out,
        "last_name": last_out,
        "email": email,
        "phone": phone,
        "address_line": line,
        "postcode": postcode,
        "city": city,
        "date_of_birth": dob,
        "updated_at": updated_at,
    }


def crm_id(seed: int, k: int) -> str:
    a, b = R._affine(100_000_000, seed, 6)
    return f"CRM-{(k * a + b) % 100_000_000:08d}"


def build_identities(pop: Population, seed: int, start_ms: int) -> Identities:
    """Devices, cookies and the initial CRM book for ``pop``."""
    rng = R.stream(seed, R.IDENTITIES)
    from . import personas as P

    n = pop.n
    app_user = pop.registered & (rng.random(n) < P.APP_USER_P[pop.persona])
    n_web = np.where(rng.random(n) < 0.3, 2, 1)
    # device indexes: each person's app device (if any) then their browsers, person by person
    per_person = app_user.astype(np.int64) + n_web
    first = np.cumsum(per_person) - per_person
    app_device = np.where(app_user, first, -1)
    web_device = np.full((n, 2), -1, dtype=np.int64)
    web_device[:, 0] = first + app_user
    web_device[:, 1] = np.where(n_web == 2, first + app_user + 1, -1)
    device_person = np.repeat(np.arange(n), per_person).tolist()
    codes = R.permuted_ids(np.arange(len(device_person)), 1_000_000_000, seed, 8)
    ids = Identities(
        app_device=app_device,
        web_device=web_device,
        cookie=np.full((n, 2), -1, dtype=np.int64),
        device_ids=[f"D{c:09d}" for c in codes],
        device_person=device_person,
        cookie_ids=[],
        cookie_person=[],
        crm=CrmBook(),
        seed=seed,
    )
    has = web_device >= 0
    ids.cookie[has] = ids.new_cookies(np.nonzero(has)[0])

    n_crm = rng.choice(4, size=n, p=[0.12, 0.60, 0.22, 0.06])
    k = 0
    for i in range(n):
        for j in range(n_crm[i]):
            updated = start_ms - int(rng.integers(1, 3 * 365)) * 86_400_000 - int(rng.integers(86_400_000))
            record = crm_record(
                pop, i, rng, crm_id(seed, k), updated, use_old_address=(j > 0 and rng.random() < 0.5)
            )
            ids.crm.add(record, i)
            k += 1
    return ids


def touch_crm(
    ids: Identities, pop: Population, persons: np.ndarray, times: np.ndarray, rng: np.random.Generator
) -> None:
    """A contact updated the CRM: refresh a record, or (sometimes) an agent creates a duplicate."""
    for p, t in zip(persons.tolist(), times.tolist(), strict=True):
        recs = ids.crm.by_person.get(p, [])
        if not recs or rng.random() < 0.15:
            k = len(ids.crm.rows)
            ids.crm.add(crm_record(pop, p, rng, crm_id(ids.seed, k), int(t), use_old_address=False), p)
            continue
        r = recs[int(rng.integers(len(recs)))]
        row = ids.crm.rows[r]
        row["updated_at"] = int(t)
        if rng.random() < 0.5 and row["address_line"] is not None:
            row["address_line"] = str(pop.address.line[p])
            row["postcode"] = str(pop.address.postcode[p])
            row["city"] = str(pop.address.city[p])
        ids.crm.changed.add(r)


def identity_truth(ids: Identities, pop: Population) -> pa.Table:
    """Who is behind every id: one row per (id_type, id_value) -> person_id."""
    login = np.flatnonzero(pop.login_id != None)  # noqa: E711
    parts = [
        ("customer_number", pop.customer_number, np.arange(pop.n)),
        (
            "crm_contact_id",
            np.array([r["crm_contact_id"] for r in ids.crm.rows], dtype=object),
            np.array(ids.crm.person),
        ),
        ("login_id", pop.login_id[login], login),
        ("device_id", np.array(ids.device_ids, dtype=object), np.array(ids.device_person)),
        ("cookie_id", np.array(ids.cookie_ids, dtype=object), np.array(ids.cookie_person)),
    ]
    values = np.concatenate([v for _, v, _ in parts])
    persons = np.concatenate([p for _, _, p in parts]).astype(np.int64)
    kinds = np.repeat(np.arange(len(parts)), [len(v) for _, v, _ in parts])
    return pa.table(
        {
            "person_id": pa.array(pop.person_id[persons].tolist(), pa.string()),
            "id_type": pa.DictionaryArray.from_arrays(
                pa.array(kinds.astype(np.int32)), [k for k, _, _ in parts]
            ),
            "id_value": pa.array(values.tolist(), pa.string()),
        }
    )
