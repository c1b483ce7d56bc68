"""Daily snapshot extracts (customers, accounts, CRM contacts, bureau) as column arrays.

The engine writes a full extract on the first day and only changed records afterwards, as banks
deliver them; each function returns the columns of the requested rows and their keys.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from pipelines.contracts import INCOME_BANDS, PRODUCTS, REGIONS

from .codec import categorical, iso_date
from .identities import CRM_FIELDS, Identities
from .population import CARD, DEBT_PRODUCTS, Population


def customers(pop: Population, idx: np.ndarray) -> tuple[dict[str, Any], pa.Array]:
    numbers = pa.array(pop.customer_number[idx].tolist(), pa.string())
    cols = {
        "customer_number": numbers,
        "login_id": pa.array(pop.login_id[idx].tolist(), pa.string()),
        "first_name": pa.array(pop.first_name[idx].tolist(), pa.string()),
        "last_name": pa.array(pop.last_name[idx].tolist(), pa.string()),
        "date_of_birth": pop.dob[idx],
        "email": pa.array(pop.email[idx].tolist(), pa.string()),
        "phone": pa.array(pop.phone[idx].tolist(), pa.string()),
        "address_line": pa.array(pop.address.line[idx].tolist(), pa.string()),
        "postcode": pa.array(pop.address.postcode[idx].tolist(), pa.string()),
        "city": pa.array(pop.address.city[idx].tolist(), pa.string()),
        "region": categorical(REGIONS, pop.region[idx].astype(np.int64)),
        "income_band": categorical(INCOME_BANDS, pop.income_band[idx].astype(np.int64)),
        "customer_since": pop.customer_since[idx],
        "status": categorical(("active", "closed"), pop.churned[idx].astype(np.int64)),
    }
    return cols, numbers


def accounts(pop: Population, persons: np.ndarray, products: np.ndarray) -> tuple[dict[str, Any], pa.Array]:
    ids = pa.array(pop.account_id[persons, products].tolist(), pa.string())
    limit = np.where(products == CARD, pop.credit_limit[persons], np.nan)
    cols = {
        "account_id": ids,
        "customer_number": pa.array(pop.customer_number[persons].tolist(), pa.string()),
        "product": categorical(PRODUCTS, products),
        "opened_date": pop.opened_day[persons, products],
        "status": categorical(("open", "closed"), pop.churned[persons].astype(np.int64)),
        "balance": np.round(pop.balance[persons, products], 2),
        "credit_limit": limit,
    }
    return cols, ids


def crm(ids: Identities, rows: list[int]) -> tuple[dict[str, Any], pa.Array]:
    recs = [ids.crm.rows[r] for r in rows]
    cols: dict[str, Any] = {
        f: pa.array([rec[f] for rec in recs], pa.string()) for f in CRM_FIELDS if f != "updated_at"
    }
    cols["updated_at"] = np.array([rec["updated_at"] for rec in recs], dtype=np.int64)
    return cols, cols["crm_contact_id"]


def bureau(pop: Population, idx: np.ndarray, day: int) -> tuple[dict[str, Any], pa.Array]:
    stamp = iso_date(day).replace("-", "")
    keys = pa.array([f"{c}-{stamp}" for c in pop.customer_number[idx]], pa.string())
    debt = -pop.balance[idx][:, list(DEBT_PRODUCTS)].sum(axis=1) + pop.external_debt[idx]
    limit = np.nan_to_num(pop.credit_limit[idx], nan=0.0)
    card = -pop.balance[idx, CARD]
    util = (np.maximum(card, 0) + 0.2 * pop.external_debt[idx]) / (
        limit + 0.2 * pop.external_debt[idx] + 500.0
    )
    cols = {
        "bureau_record_id": keys,
        "customer_number": pa.array(pop.customer_number[idx].tolist(), pa.string()),
        "bureau_score": pop.bureau_score[idx],
        "total_debt": np.round(debt, 2),
        "credit_utilisation": np.round(util, 4),
        "delinquencies_12m": pop.delinquencies[idx],
        "inquiries_6m": pop.inquiries[idx],
    }
    return cols, keys
