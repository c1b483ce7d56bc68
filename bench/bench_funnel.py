"""Benchmark: the decision funnel's time per request, with frames (run_funnel) and without (decide_one).

The decision API (issue 30) runs the funnel's per-customer core, ``decide_one``, per HTTP request;
the streaming jobs run ``run_funnel`` on a micro-batch of frames, which calls the same core per
customer. Measured in one run, on the same generated customers, the bank's own catalog
(conf/actions.yml) and decisioning settings, and a Thompson-sampling chooser with no evidence yet
(``--chooser greedy`` for the greedy one):

- ``run_funnel``, one request per call (frames in and out for one customer);
- ``run_funnel``, a batch of ``--batch`` requests per call, divided by the batch size;
- ``decide_one`` per request, on the same inputs already in plain values (what the API holds
  after reading the online store), for every channel as the streaming jobs decide, and for one
  channel (``--channel``) as the API decides when a channel asks for itself.

Each customer has a context (holdings, features, scores), full consent, a few contacts in the
last weeks and, for some, an action being served. Printed: median and p90 milliseconds per
request for each. No Spark, no home: nothing is written.

    .venv/bin/python bench/bench_funnel.py [--customers 300] [--batch 100] [--repeats 5]
        [--chooser thompson|greedy] [--seed 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.config import DecisioningConfig, load_config  # noqa: E402
from pipelines.contracts import PRODUCTS  # noqa: E402
from pipelines.nba.bandit import ThompsonChooser, empty_state  # noqa: E402
from pipelines.nba.catalog import ActionCatalog, load_catalog  # noqa: E402
from pipelines.nba.funnel import (  # noqa: E402
    CONTACT_COLUMNS,
    Chooser,
    ContactRow,
    DecisionRequest,
    decide_one,
    greedy_chooser,
    request_for,
    run_funnel,
)

NOW = pd.Timestamp("2026-03-02 12:00", tz="UTC")
TRIGGERS = ("salary", "product_view", "application_abandoned", "failed_payment", "complaint")
MARKETING = ("email", "sms", "push", "phone", "any")


def _customers(n: int, catalog: ActionCatalog, seed: int) -> list[dict[str, Any]]:
    """One customer each: a trigger row (the request), consent, contacts and serving rows."""
    rng = np.random.default_rng(seed)
    actions = [a for a in catalog.contacting]
    out = []
    for i in range(n):
        number = f"B{i:06d}"
        opened = rng.random() < 0.15
        product = str(rng.choice(PRODUCTS))
        request = {
            "customer_number": number,
            "trigger_event_id": f"e{i}",
            "trigger_type": str(rng.choice(TRIGGERS)),
            "trigger_product": product if rng.random() < 0.5 else None,
            "event_time": NOW - pd.Timedelta(seconds=int(rng.integers(1, 60))),
            "decided_at": NOW,
            "customer_status": "active" if rng.random() < 0.97 else "closed",
            **{f"holds_{p}": bool(p == "current_account" or rng.random() < 0.25) for p in PRODUCTS},
            "current_account_balance": float(rng.normal(2000, 1500)),
            "card_utilisation": float(rng.random()) if rng.random() < 0.5 else None,
            "failed_payments_7d": int(rng.random() < 0.05),
            "complaints_7d": int(rng.random() < 0.02),
            "open_application_id": f"A{i}" if opened else None,
            "open_application_product": product if opened else None,
            "open_application_last_step": "details" if opened else None,
            "salary_received_7d": bool(rng.random() < 0.4),
            "last_product_viewed": product,
            **{f"propensity_{p}": float(rng.beta(1, 20)) for p in PRODUCTS if p != "current_account"},
            "churn_risk": float(rng.beta(2, 8)),
            "segment_name": "everyday",
            "model_versions": {"propensity_savings": "3"},
        }
        consent = [(number, "marketing", ch, bool(rng.random() < 0.9)) for ch in MARKETING]
        consent.append((number, "profiling", "any", True))
        contacts: list[tuple[str, str, str, str, pd.Timestamp, str]] = []
        for _ in range(int(rng.integers(0, 6))):
            action = actions[int(rng.integers(len(actions)))]
            channel = str(rng.choice(action.channels))
            at = NOW - pd.Timedelta(hours=float(rng.uniform(1, 24 * 40)))
            decision = f"d{i}-{len(contacts)}"
            contacts.append((number, action.action_id, channel, decision, at, "decided"))
            if rng.random() < 0.5:
                answer = str(rng.choice(("impression", "click", "dismiss")))
                contacts.append(
                    (number, action.action_id, channel, decision, at + pd.Timedelta(hours=1), answer)
                )
        serving = []
        if rng.random() < 0.3:
            action = actions[int(rng.integers(len(actions)))]
            serving.append(
                {
                    "customer_number": number,
                    "channel": action.channels[0],
                    "action_id": action.action_id,
                    "expires_at": NOW + pd.Timedelta(hours=12),
                    "decision_id": f"s{i}",
                }
            )
        out.append({"request": request, "consent": consent, "contacts": contacts, "serving": serving})
    return out


def _frames(customers: list[dict[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    requests = pd.DataFrame([c["request"] for c in customers])
    consent = pd.DataFrame(
        [row for c in customers for row in c["consent"]],
        columns=["customer_number", "purpose", "channel", "granted"],
    )
    contacts = pd.DataFrame([row for c in customers for row in c["contacts"]], columns=list(CONTACT_COLUMNS))
    active = pd.DataFrame(
        [row for c in customers for row in c["serving"]],
        columns=["customer_number", "channel", "action_id", "expires_at", "decision_id"],
    )
    return requests, consent, contacts, active


def _plain(
    customer: dict[str, Any], policy: DecisioningConfig
) -> tuple[DecisionRequest, dict[tuple[str, str, str], bool], list[ContactRow], list[dict[str, Any]]]:
    """The customer's inputs as the decision API holds them: no frames."""
    number = customer["request"]["customer_number"]
    request = request_for(number, [customer["request"]], policy)
    granted = {(cn, purpose, channel): ok for cn, purpose, channel, ok in customer["consent"]}
    contacts = [ContactRow(a, ch, d, at, r) for _, a, ch, d, at, r in customer["contacts"]]
    return request, granted, contacts, customer["serving"]


def _ms(samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"median {statistics.median(ordered):7.3f} ms   p90 {p90:7.3f} ms   ({len(ordered)} samples)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=300, help="generated customers (requests)")
    parser.add_argument(
        "--batch", type=int, default=100, help="requests per run_funnel call in the batch case"
    )
    parser.add_argument("--repeats", type=int, default=5, help="passes over the customers per case")
    parser.add_argument("--chooser", choices=("thompson", "greedy"), default="thompson")
    parser.add_argument("--channel", default="email", help="the asking channel of the one-channel case")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    cfg = load_config()
    policy = cfg.decisioning
    catalog = load_catalog(cfg)
    e = policy.exploration
    chooser: Chooser = (
        ThompsonChooser(empty_state(), e.prior_shape, e.prior_rate, draws=e.draws, seed=e.seed, lift=e.lift)
        if args.chooser == "thompson"
        else greedy_chooser
    )
    customers = _customers(args.customers, catalog, args.seed)
    singles = [_frames([c]) for c in customers]
    batches = [_frames(customers[i : i + args.batch]) for i in range(0, len(customers), args.batch)]
    plain = [_plain(c, policy) for c in customers]
    print(
        f"{len(customers)} customers, {len(catalog)} actions on {len(catalog.channels)} channels, "
        f"chooser {args.chooser}" + (f" ({e.draws} draws)" if args.chooser == "thompson" else "")
    )

    # warm-up: imports, caches and the first pandas calls are not what a request pays
    run_funnel(*singles[0], catalog, policy, chooser)
    request, granted, contacts, serving = plain[0]
    decide_one(request, catalog, policy, granted, contacts, serving, chooser)

    one: list[float] = []
    batched: list[float] = []
    core: list[float] = []
    asked: list[float] = []
    channel = (args.channel,)
    served = 0
    for _ in range(args.repeats):
        for frames in singles:
            started = time.perf_counter()
            run_funnel(*frames, catalog, policy, chooser)
            one.append((time.perf_counter() - started) * 1000)
        for frames in batches:
            started = time.perf_counter()
            run_funnel(*frames, catalog, policy, chooser)
            batched.append((time.perf_counter() - started) * 1000 / len(frames[0]))
        for request, granted, contacts, serving in plain:
            started = time.perf_counter()
            outcome = decide_one(request, catalog, policy, granted, contacts, serving, chooser)
            core.append((time.perf_counter() - started) * 1000)
            served += len(outcome.decisions)
        for request, granted, contacts, serving in plain:
            started = time.perf_counter()
            decide_one(request, catalog, policy, granted, contacts, serving, chooser, channel)
            asked.append((time.perf_counter() - started) * 1000)

    print(f"run_funnel, 1 request per call:         {_ms(one)}")
    print(f"run_funnel, {args.batch} requests per call:      {_ms(batched)}  (per request)")
    print(f"decide_one, per request, every channel: {_ms(core)}")
    print(f"decide_one, per request, {args.channel + ' only:':14s} {_ms(asked)}")
    print(f"({served / args.repeats:.0f} of {len(customers)} customers served an action per pass)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
