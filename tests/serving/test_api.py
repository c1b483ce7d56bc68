"""The decision API against a real redis-server and a real HTTP server (`journeylake serve`)."""

from __future__ import annotations

import asyncio
import json
import socket
from datetime import UTC, datetime
from typing import Any

import httpx
import pandas as pd
import pytest

from pipelines.contracts import PRODUCTS
from pipelines.nba.funnel import CONTACT_COLUMNS, run_funnel

pytestmark = pytest.mark.slow  # starts the store and an API server

TOKEN = "test-token-0123456789abcdef"
ALL_CONSENT = [
    (purpose, channel, True)
    for purpose, channel in [
        ("marketing", "any"),
        ("marketing", "email"),
        ("marketing", "sms"),
        ("marketing", "push"),
        ("marketing", "phone"),
        ("profiling", "any"),
    ]
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def customer_context(cn: str, **overrides: Any) -> dict[str, Any]:
    """An active customer with no products but a current account, scores on every model."""
    row: dict[str, Any] = {"customer_number": cn, "customer_status": "active"}
    row.update({f"holds_{p}": p == "current_account" for p in PRODUCTS})
    row.update(
        {
            "current_account_balance": 2_500.0,
            "card_utilisation": 0.1,
            "failed_payments_7d": 0,
            "complaints_7d": 0,
            "open_application_id": None,
            "open_application_product": None,
            "open_application_last_step": None,
            "salary_received_7d": True,
            "last_product_viewed": None,
            "propensity_savings": 0.30,
            "propensity_credit_card": 0.25,
            "propensity_mortgage": 0.05,
            "propensity_personal_loan": 0.20,
            "propensity_investments": 0.15,
            "churn_risk": 0.05,
            "segment_name": "steady_savers",
            "model_versions": {"propensity_savings": "3"},
        }
    )
    row.update(overrides)
    return row


def seed(cfg: Any, rows: list[dict[str, Any]], consent: list[tuple[str, str, bool]] = ALL_CONSENT) -> None:
    """Customers into the store as sync writes them (parts, consent, identities)."""
    from pipelines.serving.store import StoreWriter, connect
    from pipelines.serving.sync import context_parts

    writer = StoreWriter(connect(cfg), cfg.online_store.contact_history_days)
    frame = pd.DataFrame(rows)
    for part, values in context_parts(frame).items():
        writer.put_context(part, values.to_dict("records"))
    now = datetime.now(UTC)
    writer.put_consent(
        [
            {
                "customer_number": r["customer_number"],
                "purpose": p,
                "channel": ch,
                "granted": g,
                "event_time": now,
                "event_id": "seed",
            }
            for r in rows
            for p, ch, g in consent
        ]
    )
    writer.put_identities(
        [(r["customer_number"], r["customer_number"]) for r in rows]
        + [(f"login:{r['customer_number']}", r["customer_number"]) for r in rows]
    )


def model_customer(prefix: str) -> str:
    """A customer number outside the control group (the model policy decides for it)."""
    from pipelines.nba.funnel import in_control_group

    for i in range(1000):
        cn = f"{prefix}{i:04d}"
        if not in_control_group(cn, 0.1):
            return cn
    raise AssertionError("no customer outside the control group")


@pytest.fixture(scope="module")
def api(serve_api, online_store) -> str:
    return serve_api(workers=1)


@pytest.fixture(scope="module")
def api_two_workers(serve_api, online_store) -> str:
    """Two worker processes on one port: only the store keeps a customer's requests apart."""
    return serve_api(workers=2)


def post(
    url: str, path: str, body: Any, token: str | None = TOKEN, raw: bytes | None = None
) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    content = raw if raw is not None else json.dumps(body).encode()
    return httpx.post(f"{url}{path}", content=content, headers=headers, timeout=10)


def test_a_decision_equals_the_streaming_funnel_on_the_same_context(api, jl_config):
    from pipelines.nba.bandit import ThompsonChooser, empty_state
    from pipelines.nba.catalog import load_catalog

    cn = model_customer("EQ")
    seed(jl_config, [customer_context(cn)])
    answer = post(api, "/v1/decisions", {"customer_id": f"login:{cn}", "channel": "app", "max_actions": 3})
    assert answer.status_code == 200, answer.text
    got = answer.json()
    assert got["fallback"] is False and got["policy"] == "model"

    # the streaming job's entry point, on the same context, trigger and clock
    decided_at = pd.Timestamp(got["decided_at"])
    context = customer_context(cn)
    requests = pd.DataFrame(
        [
            {
                **context,
                "trigger_event_id": f"api:app:{got['request_id']}",
                "trigger_type": "channel_request",
                "trigger_product": None,
                "event_time": decided_at,
                "decided_at": decided_at,
            }
        ]
    )
    consent = pd.DataFrame(
        [{"customer_number": cn, "purpose": p, "channel": ch, "granted": g} for p, ch, g in ALL_CONSENT]
    )
    e = jl_config.decisioning.exploration
    chooser = ThompsonChooser(
        empty_state(), e.prior_shape, e.prior_rate, draws=e.draws, seed=e.seed, lift=e.lift
    )
    result = run_funnel(
        requests,
        consent,
        pd.DataFrame(columns=list(CONTACT_COLUMNS)),
        pd.DataFrame(columns=["customer_number", "channel", "action_id", "expires_at"]),
        load_catalog(jl_config),
        jl_config.decisioning,
        chooser,
        channels=("app",),
    )
    assert got["decision_id"] == result.decisions["decision_id"].iloc[0]
    chosen = result.decisions.iloc[0]
    api_chosen = [a for a in got["actions"] if a["role"] == "chosen"]
    assert [a["action_id"] for a in api_chosen] == [chosen["action_id"]]
    assert api_chosen[0]["priority"] == pytest.approx(chosen["priority"], rel=1e-12)
    assert api_chosen[0]["choice_probability"] == pytest.approx(chosen["choice_probability"], rel=1e-12)
    ranked = result.log[(result.log["stage"] == "ranked") & (result.log["action_id"] != "no_action")]
    expected_alternatives = list(ranked.sort_values("priority", ascending=False)["action_id"][:2])
    assert [a["action_id"] for a in got["actions"] if a["role"] == "alternative"] == expected_alternatives


@pytest.mark.parametrize("server", ["api", "api_two_workers"])
def test_fifty_concurrent_requests_for_one_customer_keep_caps_and_exclusions(server, request, jl_config):
    from pipelines.nba.catalog import load_catalog
    from pipelines.serving.store import Contact, connect, contacts_key, serving_key

    api = request.getfixturevalue(server)
    cn = model_customer("CC" if server == "api" else "CW")
    seed(jl_config, [customer_context(cn)])
    channels = ["app", "web", "email"]

    async def fire() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(
            base_url=api, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        ) as client:
            calls = [
                client.post("/v1/decisions", json={"customer_id": cn, "channel": channels[i % 3]})
                for i in range(50)
            ]
            replies = await asyncio.gather(*calls)
        assert all(r.status_code == 200 for r in replies), [r.text for r in replies if r.status_code != 200]
        return [r.json() for r in replies]

    answers = asyncio.run(fire())
    chosen = [(a["channel"], x["action_id"]) for a in answers for x in a["actions"] if x["role"] == "chosen"]
    catalog = load_catalog(jl_config)
    caps = jl_config.decisioning.contact_policy.channel_caps
    for channel in channels:
        assert sum(1 for ch, _ in chosen if ch == channel) <= caps[channel].max_contacts
    actions = [a for _, a in chosen]
    assert len(actions) == len(set(actions)), f"an action was served twice within repeat_days: {actions}"
    assert chosen, "fifty requests and nothing chosen: the test would prove nothing"
    # the store holds exactly the contacts the answers reserved ...
    client = connect(jl_config)
    held = [Contact.from_member(m) for m in client.zrange(contacts_key(cn), 0, -1)]
    assert sorted((c.channel, c.action_id) for c in held if c.response == "decided") == sorted(chosen)
    # ... and what is being served on the three channels at the end excludes none of the others
    # (a newer decision on a channel replaces the action served there, which then no longer counts)
    # (a channel whose last decision under contention chose nothing holds no served action)
    served = [json.loads(v)["action_id"] for v in client.hgetall(serving_key(cn)).values()]
    assert 1 <= len(served) <= len(channels) and set(served) <= set(actions)
    for a in served:
        assert not set(catalog[a].excludes) & set(served), (
            f"{a} served beside an action it excludes: {served}"
        )


def test_a_dismissal_posted_holds_for_the_next_decision(api, jl_config):
    cn = model_customer("DS")
    seed(jl_config, [customer_context(cn)])
    first = post(api, "/v1/decisions", {"customer_id": cn, "channel": "web"}).json()
    action = first["actions"][0]["action_id"]
    reply = post(api, "/v1/responses", {"decision_id": first["decision_id"], "response": "dismiss"})
    assert reply.status_code == 202, reply.text
    # on another channel (the web's cap is not the reason): the dismissed action is cooling down
    second = post(api, "/v1/decisions", {"customer_id": cn, "channel": "app", "max_actions": 3}).json()
    assert action not in [a["action_id"] for a in second["actions"]]


def test_revoked_consent_blocks_the_next_decision_on_that_channel(api, jl_config):
    from pipelines.serving.store import StoreWriter, connect

    cn = model_customer("RV")
    seed(jl_config, [customer_context(cn)])
    assert post(api, "/v1/decisions", {"customer_id": cn, "channel": "email"}).json()["actions"]
    StoreWriter(connect(jl_config), 120).put_consent(
        [
            {
                "customer_number": cn,
                "purpose": "marketing",
                "channel": "email",
                "granted": False,
                "event_time": datetime.now(UTC),
                "event_id": "revoke",
            }
        ]
    )
    after = post(api, "/v1/decisions", {"customer_id": cn, "channel": "email"}).json()
    assert after["actions"] == []


@pytest.mark.parametrize(
    ("body", "raw", "token", "status", "field"),
    [
        (None, b'{"customer_id": "x", "channel": ', TOKEN, 400, "body"),
        ({"customer_id": "C1", "channel": "carrier_pigeon"}, None, TOKEN, 422, "channel"),
        ({"channel": "app"}, None, TOKEN, 422, "customer_id"),
        ({"customer_id": "C1", "channel": "app", "colour": "red"}, None, TOKEN, 422, "colour"),
        ({"customer_id": "C1", "channel": "app", "max_actions": 99}, None, TOKEN, 422, "max_actions"),
        (
            {"customer_id": "C1", "channel": "app", "context": {"product": "yacht"}},
            None,
            TOKEN,
            422,
            "context.product",
        ),
        ({"customer_id": "nobody-knows-me", "channel": "app"}, None, TOKEN, 404, "customer_id"),
        ({"customer_id": "C1", "channel": "app"}, None, None, 401, "Authorization"),
        ({"customer_id": "C1", "channel": "app"}, None, "wrong-token-0123456789", 401, "Authorization"),
        (None, b'{"customer_id": "' + b"x" * 20_000 + b'", "channel": "app"}', TOKEN, 413, "body"),
    ],
)
def test_bad_input_gets_a_4xx_naming_the_field(api, body, raw, token, status, field):
    reply = post(api, "/v1/decisions", body, token=token, raw=raw)
    assert reply.status_code == status, reply.text
    assert reply.json()["field"] == field
    assert reply.json()["error"]


def test_bad_responses_get_a_4xx_naming_the_field(api, jl_config):
    assert (
        post(api, "/v1/responses", {"decision_id": "no-such", "response": "click"}).json()["field"]
        == "decision_id"
    )
    reply = post(api, "/v1/responses", {"decision_id": "x", "response": "love"})
    assert reply.status_code == 422 and reply.json()["field"] == "response"


def test_the_next_best_action_read_is_the_store_s(api, jl_config):
    from pipelines.serving.store import StoreWriter, connect

    cn = model_customer("NB")
    seed(jl_config, [customer_context(cn)])
    now = datetime.now(UTC)
    StoreWriter(connect(jl_config), 120).put_serving(
        [
            {
                "customer_number": cn,
                "channel": "push",
                "action_id": "offer_savings",
                "decision_id": "d-stream-1",
                "priority": 12.5,
                "propensity": 0.3,
                "reason_codes": ["salary paid in recently"],
                "decided_at": now,
                "expires_at": now + pd.Timedelta(hours=72),
            }
        ]
    )
    reply = httpx.get(
        f"{api}/v1/customers/login:{cn}/next-best-action",
        params={"channel": "push"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert reply.status_code == 200
    assert [(a["action_id"], a["decision_id"]) for a in reply.json()["actions"]] == [
        ("offer_savings", "d-stream-1")
    ]


def test_openapi_health_metrics_and_server_timing_describe_the_service(api, jl_config):
    cn = model_customer("OA")
    seed(jl_config, [customer_context(cn)])
    decided = post(api, "/v1/decisions", {"customer_id": cn, "channel": "app"})
    assert decided.status_code == 200
    # the app's own time, for a caller to tell it from the network's and the server's queue
    timing = decided.headers["server-timing"]
    assert timing.startswith("app;dur=") and 0 < float(timing.removeprefix("app;dur=")) < 10_000
    spec = httpx.get(f"{api}/openapi.json").json()
    assert {"/v1/decisions", "/v1/responses", "/v1/customers/{customer_id}/next-best-action"} <= set(
        spec["paths"]
    )
    # the decision route is served outside FastAPI's router, and still described with its body
    body = spec["paths"]["/v1/decisions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"].endswith("/DecisionBody")
    assert {"customer_id", "channel"} <= set(spec["components"]["schemas"]["DecisionBody"]["required"])
    assert httpx.get(f"{api}/health").json()["store"] == "ok"
    text = httpx.get(f"{api}/metrics").text
    assert 'journeylake_api_requests_total{route="/v1/decisions",status="200"}' in text
    assert "journeylake_api_request_seconds_bucket" in text


def test_a_stopped_store_gives_a_fallback_without_contact_not_a_500(api, jl_config):
    from pipelines.services import redis_server

    cn = model_customer("FB")
    seed(jl_config, [customer_context(cn)])
    redis_server.down(jl_config)
    try:
        reply = post(api, "/v1/decisions", {"customer_id": cn, "channel": "email"})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["fallback"] is True and body["actions"] == []
        # named for what happened, and no unresolved id labelled as a customer number
        assert body["fallback_reason"] == "store_unavailable" and body["customer_number"] is None
        assert httpx.get(f"{api}/health").status_code == 503
        metrics = httpx.get(f"{api}/metrics").text
        assert 'journeylake_api_fallbacks_total{reason="store_unavailable"}' in metrics
    finally:
        redis_server.up(jl_config)
    assert post(api, "/v1/decisions", {"customer_id": cn, "channel": "email"}).json()["fallback"] is False
