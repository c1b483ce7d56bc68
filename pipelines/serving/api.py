"""The decision API: what channel systems call at the moment of interaction.

    POST /v1/decisions                          decide now for a customer on a channel
    POST /v1/responses                          impression / click / accept / dismiss / complaint
    GET  /v1/customers/{id}/next-best-action    what the event-triggered jobs decided, still valid
    GET  /health                                the store answers, delivery keeps up
    GET  /metrics                               Prometheus text: rates, latency, fallbacks, errors
    GET  /openapi.json                          this API described

Every call but /health needs ``Authorization: Bearer <token>`` of a configured calling system.
Errors are JSON naming the field at fault (4xx); a decision the funnel cannot make in time, or
without the store, is still an answer (``fallback: true``), never a bare 500.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from pipelines.config import Config
from pipelines.contracts import OFFER_CHANNELS, OFFER_RESPONSES, PRODUCTS
from pipelines.errors import ConfigError
from pipelines.nba.catalog import load_catalog
from pipelines.serving.decisions import Answer, Ask, DecisionService, UnknownCustomer, served_and_log_rows
from pipelines.serving.delivery import Delivery, response_event_id
from pipelines.serving.metrics import Metrics
from pipelines.serving.store import Contact, StoreReader, connect_async

log = logging.getLogger(__name__)

Channel = Literal[OFFER_CHANNELS]  # type: ignore[valid-type]
Product = Literal[PRODUCTS]  # type: ignore[valid-type]
Response = Literal[OFFER_RESPONSES]  # type: ignore[valid-type]


# ------------------------------------------------------------------------------------ bodies


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InteractionContext(_Body):
    page: str | None = Field(None, max_length=200, description="where the customer is, e.g. 'loans/overview'")
    product: Product | None = Field(None, description="the product the interaction is about, if any")
    intent: str | None = Field(None, max_length=100, description="what the customer came for, if known")
    placement: str | None = Field(None, max_length=100, description="the slot the action will fill")


class DecisionBody(_Body):
    customer_id: str = Field(..., min_length=1, max_length=128, description="any known id of the customer")
    channel: Channel = Field(..., description="the channel asking")
    context: InteractionContext = Field(default_factory=InteractionContext)
    max_actions: int = Field(1, ge=1, description="the chosen action and up to max_actions - 1 alternatives")


class ResponseBody(_Body):
    decision_id: str = Field(..., min_length=1, max_length=64)
    response: Response
    action_id: str | None = Field(None, max_length=100, description="needed when the decision had several")
    channel: Channel | None = None
    at: str | None = Field(None, description="ISO-8601 time of the response (default: now)")


# ------------------------------------------------------------------------------------ access


def load_tokens(cfg: Config) -> dict[str, str]:
    """token -> calling system, from the environment variable and the tokens file."""
    api = cfg.decisioning.api
    tokens: dict[str, str] = {}
    value = os.environ.get(api.token_env)
    if value:
        tokens[value.strip()] = "default"
    if api.tokens_file is not None:
        path = api.tokens_file if api.tokens_file.is_absolute() else cfg.paths.home / api.tokens_file
        if not path.is_file():
            raise ConfigError(f"decisioning.api.tokens_file: {path} does not exist")
        for number, line in enumerate(path.read_text().splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 2 or len(parts[1]) < 16:
                raise ConfigError(f"{path}:{number}: expected '<system> <token of 16+ characters>'")
            tokens[parts[1]] = parts[0]
    if not tokens:
        raise ConfigError(
            f"the decision API needs at least one bearer token: set ${api.token_env} "
            "or decisioning.api.tokens_file (no token, no decisions)"
        )
    return tokens


def caller(tokens: Mapping[str, str], header: str | None) -> str | None:
    if not header or not header.startswith("Bearer "):
        return None
    offered = header[len("Bearer ") :].strip().encode()
    for token, system in tokens.items():
        if hmac.compare_digest(token.encode(), offered):
            return system
    return None


def error(status: int, message: str, field: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if field:
        body["field"] = field
    return JSONResponse(body, status_code=status)


def internal_error(path: str, exc: Exception) -> JSONResponse:
    """An unexpected failure: logged with its trace, answered as JSON naming it (never a bare 500)."""
    log.exception("unexpected error on %s", path)
    return error(500, f"internal error: {type(exc).__name__}: {exc}")


def invalid_body(errors: Sequence[Any]) -> JSONResponse:
    """A body the model refuses: 400 when it is not JSON, else 422 naming the first field at fault."""
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    if first.get("type", "") == "json_invalid":
        return error(400, f"body is not valid JSON: {first.get('ctx', {}).get('error', 'malformed')}", "body")
    return error(422, f"{where}: {first.get('msg', 'invalid')}", where)


class DecisionRoute:
    """``POST /v1/decisions`` as a plain ASGI route: the body read once, parsed and validated by
    the same model in one step (pydantic's JSON parser), then the same handler FastAPI's route
    calls. FastAPI's request path (routing, dependency solving, a Request object, body parsing
    and validation as separate steps) was a fixed cost per decision next to the funnel's own."""

    PATH = "/v1/decisions"

    def __init__(self, app: ASGIApp, handler: Callable[[DecisionBody], Awaitable[JSONResponse]]) -> None:
        self.app = app
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        raw = b"".join(chunks)
        try:
            body = DecisionBody.model_validate_json(raw if raw else b"{}")
        except ValidationError as exc:
            response = invalid_body(exc.errors())
        else:
            try:
                response = await self.handler(body)
            except Exception as exc:  # noqa: BLE001 - a JSON body naming it, never a bare 500
                response = internal_error(self.PATH, exc)
        await response(scope, receive, send)


class BodyLimit:
    """Refuses a body over ``limit`` bytes with a 413 before the app reads it."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            response = error(413, f"body of {int(length)} bytes is over the limit of {self.limit}", "body")
            await response(scope, receive, send)
            return
        seen = 0

        async def limited() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge()
            return message

        try:
            await self.app(scope, limited, send)
        except BodyTooLarge:
            response = error(413, f"body is over the limit of {self.limit} bytes", "body")
            await response(scope, receive, send)


class BodyTooLarge(Exception):
    pass


class Guard:
    """The bearer-token check and the request metrics, as a plain ASGI middleware: Starlette's
    ``@app.middleware("http")`` runs each request through an extra task and stream, a fixed cost
    on every decision."""

    OPEN = frozenset({"/health", "/metrics", "/openapi.json", "/docs"})

    def __init__(self, app: ASGIApp, tokens: Mapping[str, str], metrics: Metrics) -> None:
        self.app = app
        self.tokens = tokens
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        route = _route_of(scope["path"])
        if scope["path"] not in self.OPEN:
            header = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), None)
            if caller(self.tokens, header) is None:
                response = error(
                    401, "missing or unknown bearer token (Authorization: Bearer <token>)", "Authorization"
                )
                await response(scope, receive, send)
                self.metrics.request(route, 401, time.perf_counter() - started)
                return
        status = 500

        async def sending(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                # the app's own time (W3C Server-Timing): what a caller measures beyond it was
                # spent in the network, the server's queue or its own client
                took = (time.perf_counter() - started) * 1000
                timing = (b"server-timing", b"app;dur=%.2f" % took)
                message = {**message, "headers": [*message.get("headers", ()), timing]}
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.request(route, status, time.perf_counter() - started)


# ------------------------------------------------------------------------------------ the app


@dataclass
class State:
    cfg: Config
    service: DecisionService
    delivery: Delivery
    metrics: Metrics
    tokens: dict[str, str]
    client: Any


def create_app(cfg: Config, *, start_delivery: bool = True) -> FastAPI:
    api_cfg = cfg.decisioning.api
    tokens = load_tokens(cfg)
    catalog = load_catalog(cfg)
    metrics = Metrics()
    holder: dict[str, State] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = connect_async(cfg)
        reader = StoreReader(client, cfg.online_store.contact_history_days)
        service = DecisionService(cfg, catalog, reader)
        try:
            await service.refresh_bandit(force=True)
        except redis.RedisError as exc:
            log.warning("online store not reachable at start (%s): decisions fall back until it is", exc)
        delivery = Delivery(cfg)
        if start_delivery:
            delivery.start()
        holder["state"] = State(cfg, service, delivery, metrics, tokens, client)
        # What exists now (modules, the catalog, the app) lives as long as the worker: frozen, the
        # collector never scans it again, so its full collections (a pause of tens of
        # milliseconds among the requests) only walk what requests made since.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            delivery.close()
            await client.aclose()

    app = FastAPI(
        title="journeylake decision API",
        version="1",
        description=__doc__,
        lifespan=lifespan,
    )
    # the last added runs first: Guard (token, metrics) -> BodyLimit -> DecisionRoute -> FastAPI
    app.add_middleware(DecisionRoute, handler=lambda body: decide(body))
    app.add_middleware(BodyLimit, limit=api_cfg.max_body_bytes)
    timeout_s = api_cfg.timeout_ms / 1000

    def state() -> State:
        return holder["state"]

    app.add_middleware(Guard, tokens=tokens, metrics=metrics)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return invalid_body(exc.errors())

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return internal_error(request.url.path, exc)

    @app.post("/v1/decisions")
    async def decisions(body: DecisionBody) -> JSONResponse:
        """Decide now for a customer on a channel (served by :class:`DecisionRoute`; declared
        here for the OpenAPI description)."""
        return await decide(body)

    async def decide(body: DecisionBody) -> JSONResponse:
        st = state()
        if body.max_actions > api_cfg.max_actions:
            return error(422, f"max_actions: at most {api_cfg.max_actions}", "max_actions")
        ask = Ask(
            body.customer_id, body.channel, body.context.model_dump(exclude_none=True), body.max_actions
        )
        try:
            answer, outcome = await asyncio.wait_for(st.service.decide(ask), timeout_s)
        except UnknownCustomer:
            return error(404, f"customer_id: no customer is known by {body.customer_id!r}", "customer_id")
        except TimeoutError:
            answer, outcome = await _after_breach(st, ask)
        except (redis.RedisError, OSError) as exc:
            answer, outcome = _store_down(st, ask, exc), None
        if outcome is not None and answer.decision_id:
            served, log_rows = served_and_log_rows(outcome, answer, answer.model_versions)
            st.delivery.decision(served, log_rows, {**answer.to_json(), "source": "api"})
        return JSONResponse(answer.to_json())

    async def _after_breach(st: State, ask: Ask) -> tuple[Answer, Any]:
        """The default policy on a fresh snapshot; a store that fails now (rather than is slow)
        is named as such. Each path counts its one fallback reason."""
        try:
            cn = await asyncio.wait_for(st.service.reader.resolve(ask.customer_id), timeout_s)
            if cn is None:
                return st.service.no_contact(None, ask, "deadline", _now_ms()), None
            return await asyncio.wait_for(st.service.default_on_snapshot(cn, ask, "deadline"), timeout_s)
        except TimeoutError:
            return st.service.no_contact(None, ask, "deadline", _now_ms()), None
        except (redis.RedisError, OSError) as exc:
            return _store_down(st, ask, exc), None

    def _store_down(st: State, ask: Ask, exc: Exception) -> Answer:
        st.service.counters.store_errors += 1
        log.warning("online store error: %s", exc)
        return st.service.no_contact(None, ask, "store_unavailable", _now_ms())

    @app.post("/v1/responses", status_code=202)
    async def responses(body: ResponseBody) -> JSONResponse:
        st = state()
        record = await st.service.reader.decision(body.decision_id)
        if record is None:
            return error(
                404, f"decision_id: no decision {body.decision_id!r} (unknown or expired)", "decision_id"
            )
        actions = [tuple(a) for a in record["actions"]]
        matching = [
            a
            for a in actions
            if (body.action_id is None or a[0] == body.action_id)
            and (body.channel is None or a[1] == body.channel)
        ]
        if not matching:
            return error(
                422,
                f"action_id/channel: decision {body.decision_id} holds {actions}, not this action",
                "action_id",
            )
        if len(matching) > 1:
            return error(422, "action_id: the decision holds several actions; say which one", "action_id")
        action_id, channel = matching[0]
        try:
            at_ms = _parse_ms(body.at) if body.at else _now_ms()
        except ValueError:
            return error(422, f"at: {body.at!r} is not an ISO-8601 time", "at")
        cn = record["customer_number"]
        await st.service.reader.add_contact(
            cn, Contact(action_id, channel, body.decision_id, body.response, at_ms)
        )
        event = {
            "event_id": response_event_id(body.decision_id, action_id, channel, body.response, at_ms),
            "customer_number": cn,
            "decision_id": body.decision_id,
            "action_id": action_id,
            "channel": channel,
            "response": body.response,
            "at_ms": at_ms,
        }
        st.delivery.response(event)
        return JSONResponse({"accepted": True, "event_id": event["event_id"]}, status_code=202)

    @app.get("/v1/customers/{customer_id}/next-best-action")
    async def next_best_action(customer_id: str, channel: Channel | None = None) -> JSONResponse:
        st = state()
        cn = await st.service.reader.resolve(customer_id)
        if cn is None:
            return error(404, f"customer_id: no customer is known by {customer_id!r}", "customer_id")
        snapshot = await st.service.reader.read(cn)
        now = _now_ms()
        from pipelines.serving.delivery import iso

        served = [
            {
                "channel": ch,
                "action_id": row.get("action_id"),
                "decision_id": row.get("decision_id"),
                "priority": row.get("priority"),
                "propensity": row.get("propensity"),
                "reason_codes": row.get("reason_codes") or [],
                "decided_at": iso(row["decided_at"]) if row.get("decided_at") else None,
                "expires_at": iso(row["expires_at"]),
                "source": row.get("source", "stream"),
            }
            for ch, row in sorted(snapshot.serving.items())
            if row.get("expires_at") and row["expires_at"] > now and (channel is None or ch == channel)
        ]
        return JSONResponse({"customer_number": cn, "actions": served})

    @app.get("/health")
    async def health() -> JSONResponse:
        st = state()
        try:
            await asyncio.wait_for(st.client.ping(), timeout_s * 4)
            store = "ok"
        except Exception as exc:  # any failure is the answer here
            store = f"unavailable: {type(exc).__name__}"
        backlog = len(st.delivery.pending_files())
        ok = store == "ok"
        return JSONResponse(
            {"status": "ok" if ok else "degraded", "store": store, "delivery_backlog_batches": backlog},
            status_code=200 if ok else 503,
        )

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        st = state()
        return PlainTextResponse(
            metrics.render(st.service.counters, st.delivery.stats), media_type="text/plain; version=0.0.4"
        )

    return app


ROUTES = frozenset({"/v1/decisions", "/v1/responses", "/health", "/metrics", "/openapi.json", "/docs"})


def _route_of(path: str) -> str:
    """The route a path is counted under (unknown paths share one label: no unbounded series)."""
    if path.startswith("/v1/customers/"):
        return "/v1/customers/{id}/next-best-action"
    return path if path in ROUTES else "other"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _parse_ms(value: str) -> int:
    from pipelines.serving.store import epoch_ms

    ms = epoch_ms(value)
    if ms is None:
        raise ValueError(value)
    return ms


def app_from_environment() -> FastAPI:
    """The app uvicorn's workers import (``--factory``): config from the environment."""
    from pipelines.config import load_config

    return create_app(load_config(os.environ.get("JOURNEYLAKE_TARGET") or "local"))
