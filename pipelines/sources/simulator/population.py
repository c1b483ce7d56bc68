"""The bank's customers: hidden persona, demographics, products, balances and credit.

Everything about a person lives in one ``Population`` of column arrays (index = person), so the
daily behaviour can be generated for all customers at once. Arrays that change during the run
(products, balances, churn, life events) are updated in place by the engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.contracts import INCOME_BANDS, PRODUCTS, REGIONS

from . import personas as P
from . import rng as R
from .config import SimConfig
from .names import CITIES, EMAIL_DOMAINS, FIRST_NAMES, POSTCODE_AREAS, STREET_TYPES, STREETS, SURNAMES

N_PRODUCTS = len(PRODUCTS)
CURRENT, SAVINGS, CARD, MORTGAGE, LOAN, INVEST = range(N_PRODUCTS)
DEBT_PRODUCTS = (CARD, MORTGAGE, LOAN)
_LETTERS = np.array(list("ABDEFGHJLNPQRSTUWXYZ"))


@dataclass
class Address:
    """One postal address per person (current or previous)."""

    line: np.ndarray  # "12 High Street"
    short_line: np.ndarray  # "12 High St", how CRM staff often type it
    postcode: np.ndarray
    city: np.ndarray


@dataclass
class Population:
    """All customers as column arrays; see the module docstring."""

    n: int
    person_id: np.ndarray
    customer_number: np.ndarray
    unknown_numbers: np.ndarray  # well-formed customer numbers that belong to nobody
    persona: np.ndarray
    age_band: np.ndarray
    region: np.ndarray
    income_band: np.ndarray
    monthly_income: np.ndarray
    dob: np.ndarray  # day number
    customer_since: np.ndarray  # day number
    first_name: np.ndarray
    last_name: np.ndarray
    household: np.ndarray
    address: Address
    prev_address: Address
    email: np.ndarray
    household_email: np.ndarray
    phone: np.ndarray
    landline: np.ndarray
    registered: np.ndarray
    login_id: np.ndarray  # object array, None if not registered
    holds: np.ndarray  # [n, products] bool
    opened_day: np.ndarray  # [n, products] day number, -1 if never held
    account_id: np.ndarray  # [n, products] object, None if never held
    account_num: np.ndarray  # [n, products] the number inside account_id, -1 if never held
    balance: np.ndarray  # [n, products] signed: debts negative
    credit_limit: np.ndarray  # nan without a card
    bureau_score: np.ndarray
    delinquencies: np.ndarray
    inquiries: np.ndarray
    external_debt: np.ndarray
    payday: np.ndarray  # day of month salary lands
    renter: np.ndarray
    rent: np.ndarray
    bureau_refresh_day: np.ndarray  # day of month the bureau record is refreshed
    # mutable state
    churned: np.ndarray
    churn_day: np.ndarray
    moved: np.ndarray  # moved house during the run (customers has the new address, CRM may not)
    account_counter: int = 0

    def products_held(self) -> int:
        return int(self.holds.sum())


def _choice_rows(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One categorical draw per row of ``probs`` (rows sum to 1)."""
    cum = np.cumsum(probs, axis=1)
    u = rng.random(len(probs))[:, None]
    return np.minimum((u > cum).sum(axis=1), probs.shape[1] - 1)


def _addresses(rng: np.random.Generator, region: np.ndarray) -> Address:
    n = len(region)
    n_cities = np.array([len(c) for c in CITIES])[region]
    n_areas = np.array([len(a) for a in POSTCODE_AREAS])[region]
    city_idx = (rng.random(n) * n_cities).astype(np.int64)
    area_idx = (rng.random(n) * n_areas).astype(np.int64)
    house = rng.integers(1, 180, n)
    street = rng.integers(len(STREETS), size=n)
    stype = rng.integers(len(STREET_TYPES), size=n)
    district = rng.integers(1, 29, n)
    sector = rng.integers(1, 10, n)
    unit = _LETTERS[rng.integers(len(_LETTERS), size=(n, 2))]
    line, short, postcode, city = [], [], [], []
    for i in range(n):
        r = region[i]
        line.append(f"{house[i]} {STREETS[street[i]]} {STREET_TYPES[stype[i]][0]}")
        short.append(f"{house[i]} {STREETS[street[i]]} {STREET_TYPES[stype[i]][1]}")
        postcode.append(f"{POSTCODE_AREAS[r][area_idx[i]]}{district[i]} {sector[i]}{unit[i, 0]}{unit[i, 1]}")
        city.append(CITIES[r][city_idx[i] % len(CITIES[r])])
    return Address(
        np.array(line, dtype=object),
        np.array(short, dtype=object),
        np.array(postcode, dtype=object),
        np.array(city, dtype=object),
    )


def _households(rng: np.random.Generator, n: int, persona: np.ndarray) -> np.ndarray:
    """Household id per person: families live in 1-3 person households, others mostly alone."""
    order = rng.permutation(n)
    family = persona[order] == P.FAMILY
    size = np.where(
        family, rng.choice([1, 2, 3], size=n, p=[0.3, 0.5, 0.2]), rng.choice([1, 2], size=n, p=[0.75, 0.25])
    )
    # walk the shuffled people: a household starts at each head and takes the next size-1 people
    household = np.empty(n, dtype=np.int64)
    heads = []
    pos = 0
    while pos < n:  # number of households, not people: cheap
        heads.append(pos)
        pos += int(size[pos])
    heads_arr = np.array(heads)
    lengths = np.diff(np.r_[heads_arr, n])
    household[order] = np.repeat(np.arange(len(heads_arr)), lengths)
    return household


def build_population(config: SimConfig) -> Population:
    """Draw the population for ``config`` (deterministic for its seed)."""
    rng = R.stream(config.seed, R.POPULATION)
    n = config.customers
    persona = rng.choice(len(P.PERSONAS), size=n, p=P.SHARE).astype(np.int8)
    if n >= len(P.PERSONAS):  # every persona present, even in tiny populations
        persona[: len(P.PERSONAS)] = np.arange(len(P.PERSONAS))
        persona = persona[rng.permutation(n)]
    age_band = _choice_rows(rng, P.AGE_MIX[persona]).astype(np.int8)
    region = _choice_rows(rng, P.REGION_MIX[persona]).astype(np.int8)
    income_band = _choice_rows(rng, P.INCOME_MIX[persona]).astype(np.int8)
    monthly_income = np.round(P.MONTHLY_INCOME[income_band] * rng.lognormal(0, 0.15, n), 2)

    lo = np.array([r[0] for r in P.AGE_BAND_RANGES])[age_band]
    hi = np.array([r[1] for r in P.AGE_BAND_RANGES])[age_band]
    age_days = (rng.uniform(lo, hi + 1) * 365.25).astype(np.int64)
    dob = config.start_day - age_days
    tenure_days = np.minimum(rng.exponential(P.TENURE_YEARS_MEAN[persona]) * 365.25, (age_days - 18 * 365))
    customer_since = config.start_day - np.maximum(30, tenure_days).astype(np.int64)

    codes = R.permuted_ids(np.arange(n + max(100, n // 10)), 100_000_000, config.seed, 1)
    numbers = np.array([f"C{c:08d}" for c in codes], dtype=object)
    household = _households(rng, n, persona)

    first = rng.integers(len(FIRST_NAMES), size=n)
    last = rng.integers(len(SURNAMES), size=n)
    # household members share the address and (mostly) the surname of the household's first member
    head = np.full(household.max() + 1, -1, dtype=np.int64)
    for i in range(n):
        if head[household[i]] < 0:
            head[household[i]] = i
    hh_head = head[household]
    share_surname = rng.random(n) < 0.7
    last = np.where(share_surname, last[hh_head], last)
    addr_all = _addresses(rng, region)
    region = region[hh_head]
    address = Address(*(getattr(addr_all, f)[hh_head] for f in ("line", "short_line", "postcode", "city")))
    prev_address = _addresses(rng, region)

    first_names = np.array(FIRST_NAMES, dtype=object)[first]
    last_names = np.array(SURNAMES, dtype=object)[last]
    domain = rng.integers(len(EMAIL_DOMAINS), size=n)
    email_no = rng.integers(1, 10_000, n)
    email = np.array(
        [
            f"{f.lower()}.{s.lower()}{k}@{EMAIL_DOMAINS[d]}"
            for f, s, k, d in zip(first_names, last_names, email_no, domain, strict=True)
        ],
        dtype=object,
    )
    hh_no = rng.integers(1, 100, n)
    household_email = np.array(
        [f"the{last_names[h].lower()}s{hh_no[h]}@{EMAIL_DOMAINS[domain[h]]}" for h in hh_head], dtype=object
    )
    phone_codes = R.permuted_ids(np.arange(n), 1_000_000_000, config.seed, 2)
    phone = np.array([f"+447{c:09d}" for c in phone_codes], dtype=object)
    land_codes = R.permuted_ids(np.arange(n), 100_000_000, config.seed, 3)
    landline = np.array([f"+441{land_codes[h]:08d}" for h in hh_head], dtype=object)

    registered = rng.random(n) < P.REGISTERED_P[persona]
    login_codes = R.permuted_ids(np.arange(n), 1_000_000_000, config.seed, 4)
    login_id = np.array(
        [f"ob{c:09d}" if r else None for c, r in zip(login_codes, registered, strict=True)], dtype=object
    )

    holds = rng.random((n, N_PRODUCTS)) < P.HOLD_P[persona]
    holds[:, CURRENT] = True
    renter = (rng.random(n) < P.RENTER_P[persona]) & ~holds[:, MORTGAGE]
    opened_day = np.where(
        holds,
        customer_since[:, None]
        + (rng.random((n, N_PRODUCTS)) * (config.start_day - customer_since)[:, None]).astype(np.int64),
        -1,
    )
    opened_day[:, CURRENT] = np.where(holds[:, CURRENT], customer_since, -1)

    balance = np.round(P.BALANCE_MEDIAN[persona] * rng.lognormal(0, 0.5, (n, N_PRODUCTS)), 2)
    credit_limit = np.round(P.CREDIT_LIMIT_MEDIAN[persona] * rng.lognormal(0, 0.3, n), -2)
    utilisation = np.clip(rng.normal(P.UTILISATION_MEAN[persona], 0.1), 0.0, 1.05)
    balance[:, CARD] = np.round(credit_limit * utilisation, 2)
    balance[:, list(DEBT_PRODUCTS)] *= -1
    balance[:, CURRENT] = np.where(persona == P.STRESSED, balance[:, CURRENT] - 300, balance[:, CURRENT])
    balance = np.where(holds, balance, 0.0)
    credit_limit = np.where(holds[:, CARD], credit_limit, np.nan)

    bureau = np.clip(rng.normal(P.BUREAU_MEAN[persona], 40), 300, 850).astype(np.int64)
    delinquencies = rng.poisson(np.where(persona == P.STRESSED, 1.5, 0.1))
    inquiries = rng.poisson(np.where(persona == P.STRESSED, 2.0, 0.5))
    external_debt = np.round(rng.exponential(np.where(persona == P.STRESSED, 6000, 1500)), 2)

    pop = Population(
        n=n,
        person_id=np.array([f"P{i:07d}" for i in range(n)], dtype=object),
        customer_number=numbers[:n],
        unknown_numbers=numbers[n:],
        persona=persona,
        age_band=age_band,
        region=region,
        income_band=income_band,
        monthly_income=monthly_income,
        dob=dob,
        customer_since=customer_since,
        first_name=first_names,
        last_name=last_names,
        household=household,
        address=address,
        prev_address=prev_address,
        email=email,
        household_email=household_email,
        phone=phone,
        landline=landline,
        registered=registered,
        login_id=login_id,
        holds=holds,
        opened_day=opened_day,
        account_id=np.full((n, N_PRODUCTS), None, dtype=object),
        account_num=np.full((n, N_PRODUCTS), -1, dtype=np.int64),
        balance=balance,
        credit_limit=credit_limit,
        bureau_score=bureau,
        delinquencies=delinquencies,
        inquiries=inquiries,
        external_debt=external_debt,
        payday=rng.choice(np.array([1, 15, 25, 28]), size=n),
        renter=renter,
        rent=np.round(np.where(renter, monthly_income * rng.uniform(0.25, 0.4, n), 0.0), -1),
        bureau_refresh_day=rng.integers(1, 29, n),
        churned=np.zeros(n, dtype=bool),
        churn_day=np.full(n, -1, dtype=np.int64),
        moved=np.zeros(n, dtype=bool),
    )
    for k in range(N_PRODUCTS):
        idx = np.flatnonzero(holds[:, k])
        open_accounts(pop, idx, k, config.seed)
    return pop


def open_accounts(pop: Population, idx: np.ndarray, product: int, seed: int) -> None:
    """Give each person in ``idx`` a new account id for ``product`` (ids never reused)."""
    if len(idx) == 0:
        return
    counter = np.arange(pop.account_counter, pop.account_counter + len(idx))
    pop.account_counter += len(idx)
    codes = R.permuted_ids(counter, 1_000_000_000, seed, 5)
    pop.account_num[idx, product] = codes
    pop.account_id[idx, product] = np.array([f"AC{c:09d}" for c in codes], dtype=object)


def income_band_name(code: int) -> str:
    return INCOME_BANDS[code]


def region_name(code: int) -> str:
    return REGIONS[code]
