"""The demo's last act: the online store and the decision API, as a channel system meets them.

Part of ``journeylake demo`` (not a verb of its own): after the closed loop, the store is started
and loaded from the lakehouse, ``journeylake serve`` is started, and a few customers are asked
for across channels: one reached by another of their ids, one who revokes marketing consent on
the stream (the revocation reaches the store by the write-through, and the next decision holds
it), and one who dismisses what they were shown (the next decision respects it). Then a short
burst of requests gives the latency, the API is stopped (it delivers what it holds), the
response lands in silver and the store is stopped.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipelines.config import Config
from pipelines.tables import Tables

LATENCY_REQUESTS = 300  # sequential decisions timed at the end of the tour
CHANNELS = ("app", "web", "phone", "email")  # phone: the contact-centre desktop asking


class _Client:
    """The few calls a channel system makes, with the standard library (what curl would do)."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], float]:
        request = urllib.request.Request(
            f"{self.url}{path}", data=json.dumps(body).encode(), headers=self.headers, method="POST"
        )
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:  # noqa: S310 - loopback
                status, text = reply.status, reply.read()
        except urllib.error.HTTPError as error:
            status, text = error.code, error.read()
        return status, json.loads(text or b"{}"), (time.perf_counter() - started) * 1000

    def decide(self, customer_id: str, channel: str, **context: str) -> tuple[dict[str, Any], float]:
        body: dict[str, Any] = {"customer_id": customer_id, "channel": channel, "max_actions": 2}
        if context:
            body["context"] = context
        status, answer, ms = self.post("/v1/decisions", body)
        if status != 200:
            raise RuntimeError(f"POST /v1/decisions for {customer_id} on {channel}: {status} {answer}")
        return answer, ms


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def describe(answer: dict[str, Any], ms: float) -> list[str]:
    """An answer as a channel would show it: the action(s), their reasons, the latency."""
    head = f"    {answer['channel']:<15} {ms:5.1f} ms  decision {answer.get('decision_id') or '-'}"
    if answer.get("fallback"):
        head += f"  FALLBACK ({answer.get('fallback_reason')})"
    lines = [head]
    if not answer["actions"]:
        lines.append("      no action")
    for action in answer["actions"]:
        propensity = action.get("propensity")
        shown = f"{propensity:.3f}" if isinstance(propensity, float) else "-"
        role, action_id, priority = action["role"], action["action_id"], action.get("priority") or 0.0
        lines.append(f"      {role:<11} {action_id:<26} priority {priority:7.2f} propensity {shown}")
        for reason in action.get("reasons", [])[:3]:
            text = reason if isinstance(reason, str) else reason.get("text") or json.dumps(reason)
            lines.append(f"        - {text}")
    return lines


def _consent_event(cn: str, channel: str) -> str:
    now = datetime.now(UTC)
    return json.dumps(
        {
            "event_id": f"demo-revoke-{uuid.uuid4().hex[:12]}",
            "event_time": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
            "schema_version": 1,
            "customer_number": cn,
            "purpose": "marketing",
            "channel": channel,
            "granted": False,
            "captured_via": "app",
        }
    )


def _candidates(spark: SparkSession, tables: Tables) -> list[str]:
    """Active customers with marketing consent by email, those with scores first."""
    granted = (
        spark.table(tables.consent_current)
        .where("purpose = 'marketing' and channel in ('email', 'any') and granted")
        .groupBy("customer_number")
        .count()
        .where("count = 2")
        .select("customer_number")
    )
    return [r[0] for r in granted.orderBy(F.hash("customer_number")).limit(200).collect()]


def _another_id(spark: SparkSession, tables: Tables, cn: str) -> str | None:
    """A login id of ``cn`` (what the app knows), to show that any known id resolves."""
    row = (
        spark.table(tables.silver("customers"))
        .where((F.col("customer_number") == cn) & F.col("login_id").isNotNull())
        .select("login_id")
        .first()
    )
    return None if row is None else str(row[0])


def run_tour(
    spark: SparkSession,
    cfg: Config,
    tables: Tables,
    step: Callable[[str], None],
    show: Callable[[str], None],
) -> None:
    """Store up, sync, API up, the customers' decisions, latency, then everything stopped."""
    from pipelines.lakehouse import ingest
    from pipelines.services import redis_server
    from pipelines.services.api_server import start_api
    from pipelines.serving.sync import sync
    from pipelines.serving.write_through import StoreFeed

    state, started_store = redis_server.up(cfg)
    step(f"online store: {state.describe()}")
    try:
        results = sync(spark, cfg, full=True)
        show("  synced from the lakehouse: " + ", ".join(f"{r.stage} {r.rows:,}" for r in results))
        token_env = cfg.decisioning.api.token_env
        token = os.environ.get(token_env) or secrets.token_urlsafe(24)
        api = start_api(_free_port(), workers=1, env={token_env: token})
        try:
            step(f"decision API: {api.url} (1 worker, bearer token from ${token_env}); asking as channels do")
            client = _Client(api.url, token)
            customers = _candidates(spark, tables)
            if len(customers) < 3:
                raise RuntimeError("the demo bank has fewer than 3 customers with email consent to show")
            _across_channels(spark, tables, client, customers[0], step, show)
            dismissed, event_id = _dismissal(client, customers[1:], step, show)
            revoking = next(cn for cn in customers[1:] if cn != dismissed)
            answer, ms = client.decide(revoking, "email")
            step(f"{revoking} by email, before revoking marketing consent")
            show("\n".join(describe(answer, ms)))
            landing = Path(cfg.paths.landing) / "consent"
            landing.mkdir(parents=True, exist_ok=True)
            (landing / f"demo-revoke-{revoking}.jsonl").write_text(_consent_event(revoking, "email") + "\n")
            feed = StoreFeed.open(cfg)
            ingest.run(spark, cfg, until_idle=True, tables=tables, progress=lambda _m: None, listener=feed)
            answer, ms = client.decide(revoking, "email")
            step(f"{revoking} revoked it in the app; the stream wrote it through; the next email decision:")
            show("\n".join(describe(answer, ms)))
            if answer["actions"]:
                raise RuntimeError(f"{revoking} revoked email consent but the API still emails them")
            _latency(client, customers, step)
        finally:
            api.stop()  # delivers what it holds: decision log, served actions, responses
        ingest.run(spark, cfg, until_idle=True, tables=tables, progress=lambda _m: None)
        landed = spark.table(tables.silver("offer_responses")).where(F.col("event_id") == event_id).count()
        step(
            f"API stopped; {dismissed}'s dismissal is in {tables.silver('offer_responses')} "
            f"({landed} row) and the API's decisions in {tables.gold('decision_log')}"
        )
        if landed != 1:
            raise RuntimeError(f"the dismissal posted to the API ({event_id}) did not reach silver")
    finally:
        if started_store:
            redis_server.down(cfg)
            step("online store stopped")


def _across_channels(
    spark: SparkSession,
    tables: Tables,
    client: _Client,
    cn: str,
    step: Callable[[str], None],
    show: Callable[[str], None],
) -> None:
    login = _another_id(spark, tables, cn)
    step(f"{cn} across channels" + (f" (the app asks by their login id {login})" if login else ""))
    for channel in CHANNELS:
        asked = login if channel == "app" and login else cn
        answer, ms = client.decide(asked, channel, page="home")
        show("\n".join(describe(answer, ms)))


def _dismissal(
    client: _Client, customers: list[str], step: Callable[[str], None], show: Callable[[str], None]
) -> tuple[str, str]:
    """A customer shown a web action dismisses it: the next decision does not offer it again.
    Returns the customer and the response's event id."""
    for cn in customers:
        answer, ms = client.decide(cn, "web", page="products/savings", product="savings")
        if answer["actions"] and not answer["fallback"]:
            break
    else:
        raise RuntimeError("no customer of the demo bank was offered anything on the web")
    step(f"{cn} is shown a web action and dismisses it")
    show("\n".join(describe(answer, ms)))
    chosen = answer["actions"][0]
    status, reply, _ = client.post(
        "/v1/responses",
        {"decision_id": answer["decision_id"], "action_id": chosen["action_id"], "response": "dismiss"},
    )
    if status != 202:
        raise RuntimeError(f"POST /v1/responses: {status} {reply}")
    again, ms = client.decide(cn, "web", page="products/savings", product="savings")
    show("  the next web decision for them:\n" + "\n".join(describe(again, ms)))
    if any(a["action_id"] == chosen["action_id"] and a["role"] == "chosen" for a in again["actions"]):
        raise RuntimeError(f"{cn} dismissed {chosen['action_id']} but was offered it again at once")
    return cn, str(reply["event_id"])


def _latency(client: _Client, customers: list[str], step: Callable[[str], None]) -> None:
    timings = []
    for i in range(LATENCY_REQUESTS):
        _answer, ms = client.decide(customers[i % len(customers)], CHANNELS[i % len(CHANNELS)])
        timings.append(ms)
    timings.sort()
    p50 = timings[len(timings) // 2]
    p99 = timings[int(len(timings) * 0.99) - 1]
    step(
        f"{LATENCY_REQUESTS} sequential decisions from this process: p50 {p50:.1f} ms, p99 {p99:.1f} ms "
        "(HTTP round trip included; under load see bench/bench_serve.py)"
    )
