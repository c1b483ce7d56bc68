"""The online store's keys, and every read and write of them.

Per customer (``{cn}`` is a Redis hash tag, so one customer's keys live together and one Lua
script may touch them all at once):

    jl:{cn}:profile   hash   the decision context in parts, each JSON: core (status, holdings),
                             features (gold.customer_features' real-time features), scores
                             (propensities, churn risk, segment, model versions); reasons
                             (model -> reason codes); features_at (ms: the features' commit)
    jl:{cn}:consent   hash   "<purpose>|<channel>" -> "<1 granted | 0 not>:<event ms>:<event id>"
    jl:{cn}:contacts  zset   contact history (score: seconds since the epoch; member: JSON of
                             action_id, channel, decision_id, response, at), kept for
                             ``online_store.contact_history_days``
    jl:{cn}:serving   hash   channel -> JSON of the action being served there (what the
                             event-triggered jobs and the API decided, until it expires)
    jl:{cn}:ver       string a counter every write of consent, contacts or serving increments

and for everyone:

    jl:ids            hash   any known id (customer number, login, device, cookie, CRM id) ->
                             customer number
    jl:d:<decision>   string JSON of a decision (customer, actions, channels, times), for the
                             responses that name it; expires with the response window
    jl:bandit         string JSON of the Thompson sampler's state (the lakehouse's, at sync)
    jl:meta           hash   when the store was synced, and the lakehouse tables it feeds
    jl:staleness      list   silver commit -> store write delays (ms) of write-through batches

A decision reads one customer's keys with one script (an atomic snapshot, one round trip) and
commits what it reserves (its contacts, its serving rows, its decision record) with another that
first checks ``ver`` is what it read: two requests for one customer at the same moment cannot
both take the last slot of a cap or serve two mutually exclusive actions; the one that loses
reads again and decides on what the winner reserved.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

from pipelines.config import Config
from pipelines.errors import SetupError

IDS = "jl:ids"
META = "jl:meta"
BANDIT = "jl:bandit"
STALENESS = "jl:staleness"
STALENESS_KEPT = 20_000  # write-through delays kept for status and the benchmark
CHUNK = 2_000  # rows per pipeline in bulk writes
# the profile's context parts, each replaced whole by the write that owns it
CONTEXT_PARTS = ("core", "features", "scores")


# one customer's key: jl:{<customer number>}:<part> (the braces are Redis' hash tag)
_CUSTOMER_OPEN, _CUSTOMER_CLOSE = "jl:{", "}:"


def customer_key(cn: str, part: str) -> str:
    return f"{_CUSTOMER_OPEN}{cn}{_CUSTOMER_CLOSE}{part}"


def profile_key(cn: str) -> str:
    return customer_key(cn, "profile")


def consent_key(cn: str) -> str:
    return customer_key(cn, "consent")


def contacts_key(cn: str) -> str:
    return customer_key(cn, "contacts")


def serving_key(cn: str) -> str:
    return customer_key(cn, "serving")


def version_key(cn: str) -> str:
    return customer_key(cn, "ver")


def decision_key(decision_id: str) -> str:
    return f"jl:d:{decision_id}"


def customer_keys(cn: str) -> list[str]:
    return [profile_key(cn), consent_key(cn), contacts_key(cn), serving_key(cn), version_key(cn)]


# ------------------------------------------------------------------------------------ values


def epoch_ms(value: Any) -> int | None:
    """A timestamp (datetime, pandas Timestamp, ISO string or epoch ms) as epoch milliseconds."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if hasattr(value, "to_pydatetime"):
        if value != value:  # NaT
            return None
        value = value.to_pydatetime()
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return int(value.timestamp() * 1000)
    raise TypeError(f"not a timestamp: {value!r}")


def from_ms(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def plain(value: Any) -> Any:
    """A value as JSON holds it: NaN/NaT -> None, numpy scalars -> Python, timestamps -> ms."""
    if value is None:
        return None
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, bool | int | str):
        return value
    if hasattr(value, "item") and not hasattr(value, "__len__"):  # numpy scalar
        return plain(value.item())
    if isinstance(value, datetime) or hasattr(value, "to_pydatetime"):
        return epoch_ms(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple) or hasattr(value, "tolist"):
        items = value.tolist() if hasattr(value, "tolist") else value
        if isinstance(items, list) and items and isinstance(items[0], tuple) and len(items[0]) == 2:
            return {str(k): plain(v) for k, v in items}  # a Spark map as pairs
        return [plain(v) for v in items]
    return str(value)


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=plain)


def consent_field(purpose: str, channel: str) -> str:
    return f"{purpose}|{channel}"


# ------------------------------------------------------------------------------------ reads


@dataclass(frozen=True)
class Contact:
    """One contact-history row as the store keeps it."""

    action_id: str
    channel: str
    decision_id: str | None
    response: str
    at_ms: int

    def member(self) -> str:
        return dumps(
            {
                "a": self.action_id,
                "c": self.channel,
                "d": self.decision_id,
                "r": self.response,
                "t": self.at_ms,
            }
        )

    @classmethod
    def from_member(cls, raw: bytes | str) -> Contact:
        d = json.loads(raw)
        return cls(d["a"], d["c"], d.get("d"), d["r"], int(d["t"]))


@dataclass(frozen=True)
class CustomerState:
    """What the store holds of one customer, read in one snapshot."""

    customer_number: str
    known: bool  # the store has a profile for them
    context: dict[str, Any]
    reasons: dict[str, list[str]]
    consent: dict[tuple[str, str], bool]  # (purpose, channel) -> granted
    contacts: list[Contact]
    serving: dict[str, dict[str, Any]]  # channel -> the served action
    version: int
    features_at_ms: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# one customer's keys in one snapshot: profile, consent, contacts since ARGV[1], serving, version
READ_SCRIPT = """
return {
  redis.call('HGETALL', KEYS[1]),
  redis.call('HGETALL', KEYS[2]),
  redis.call('ZRANGEBYSCORE', KEYS[3], ARGV[1], '+inf'),
  redis.call('HGETALL', KEYS[4]),
  redis.call('GET', KEYS[5]) or '0'
}
"""

# any known id -> the customer's number and snapshot, in one round trip (the decision API's first
# read): KEYS[1] the identity hash; ARGV: the id, contacts since (s). The customer's keys are
# derived in the script, which a single Redis server allows (a Redis Cluster would not: there the
# identity hash and the customer live on different shards). Returns false for an unknown id.
RESOLVE_READ_SCRIPT = f"""
local cn = redis.call('HGET', KEYS[1], ARGV[1])
if not cn then return false end
local p = '{_CUSTOMER_OPEN}' .. cn .. '{_CUSTOMER_CLOSE}'
return {{
  cn,
  redis.call('HGETALL', p .. 'profile'),
  redis.call('HGETALL', p .. 'consent'),
  redis.call('ZRANGEBYSCORE', p .. 'contacts', ARGV[2], '+inf'),
  redis.call('HGETALL', p .. 'serving'),
  redis.call('GET', p .. 'ver') or '0'
}}
"""

# commit a decision's reservations if nobody wrote the customer since it read them:
# KEYS: contacts, serving, ver, decision record; ARGV: expected ver, contacts cut-off (s),
# decision JSON, decision ttl (s), n contacts, then (score, member) pairs, then (channel, json) pairs
COMMIT_SCRIPT = """
local current = redis.call('GET', KEYS[3]) or '0'
if current ~= ARGV[1] then return 0 end
local n = tonumber(ARGV[5])
local i = 6
for _ = 1, n do
  redis.call('ZADD', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
while i <= #ARGV do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  i = i + 2
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2])
redis.call('SET', KEYS[4], ARGV[3], 'EX', ARGV[4])
redis.call('INCR', KEYS[3])
return 1
"""


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _pairs(flat: Sequence[bytes | str]) -> dict[str, str]:
    return {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}


def decode_state(cn: str, raw: Sequence[Any]) -> CustomerState:
    """The READ_SCRIPT's reply as a CustomerState."""
    profile = _pairs(raw[0])
    consent = {}
    for key, value in _pairs(raw[1]).items():
        purpose, _, channel = key.partition("|")
        consent[(purpose, channel)] = value[:1] == "1"
    contacts = [Contact.from_member(m) for m in raw[2]]
    serving = {channel: json.loads(value) for channel, value in _pairs(raw[3]).items()}
    features_at = profile.get("features_at")
    context: dict[str, Any] = {}
    for part in CONTEXT_PARTS:
        if part in profile:
            context.update(json.loads(profile[part]))
    return CustomerState(
        customer_number=cn,
        known="core" in profile,
        context=context,
        reasons=json.loads(profile.get("reasons", "{}")),
        consent=consent,
        contacts=contacts,
        serving=serving,
        version=int(_text(raw[4])),
        features_at_ms=int(features_at) if features_at else None,
    )


# ------------------------------------------------------------------------------------ clients


def connection_kwargs(cfg: Config) -> dict[str, Any]:
    """How a client reaches the configured store (host, port, password, timeouts)."""
    from pipelines.services.redis_server import store_password

    st = cfg.online_store
    out: dict[str, Any] = {
        "host": st.host,
        "port": st.port,
        "password": store_password(cfg),
        "socket_timeout": st.socket_timeout_ms / 1000,
        "socket_connect_timeout": st.socket_timeout_ms / 1000,
    }
    if st.username:
        out["username"] = st.username
    if st.tls:
        out["ssl_cert_reqs"] = "required"
        out["ssl_check_hostname"] = True
        if st.tls_ca_file:
            out["ssl_ca_certs"] = str(st.tls_ca_file)
    return out


def connect(cfg: Config) -> redis.Redis:
    """A synchronous client (sync, write-through, tests), checked with a PING."""
    client = redis.Redis(**connection_kwargs(cfg), ssl=cfg.online_store.tls)
    try:
        client.ping()
    except redis.RedisError as exc:
        st = cfg.online_store
        raise SetupError(
            f"online store at {st.host}:{st.port} does not answer ({exc}); "
            "start it with `journeylake online-store up`"
        ) from exc
    return client


def connect_async(cfg: Config, max_connections: int = 64) -> aioredis.Redis:
    """The API's client: a pool of connections for concurrent requests. A blocking pool: when
    every connection is busy a request waits for one (its deadline still bounds it) instead of
    failing with "Too many connections"."""
    tls: dict[str, Any] = {"connection_class": aioredis.SSLConnection} if cfg.online_store.tls else {}
    pool = aioredis.BlockingConnectionPool(
        max_connections=max_connections,
        timeout=cfg.decisioning.api.timeout_ms / 1000,
        **tls,
        **connection_kwargs(cfg),
    )
    return aioredis.Redis(connection_pool=pool)


class StoreReader:
    """The decision API's reads and its commit, on an asyncio client."""

    def __init__(self, client: aioredis.Redis, contact_history_days: int) -> None:
        self.client = client
        self.history_seconds = contact_history_days * 86_400
        self._read = client.register_script(READ_SCRIPT)
        self._resolve_read = client.register_script(RESOLVE_READ_SCRIPT)
        self._commit = client.register_script(COMMIT_SCRIPT)

    async def resolve(self, any_id: str) -> str | None:
        """The customer number of any known id, None when the store knows no such id."""
        found = await self.client.hget(IDS, any_id)
        return _text(found) if found is not None else None

    async def read(self, cn: str, now_s: float | None = None) -> CustomerState:
        since = (now_s if now_s is not None else time.time()) - self.history_seconds
        raw = await self._read(keys=customer_keys(cn), args=[since])
        return decode_state(cn, raw)

    async def resolve_and_read(self, any_id: str, now_s: float | None = None) -> CustomerState | None:
        """The snapshot of the customer any known id names (``read`` after ``resolve``, in one
        round trip); None when the store knows no such id."""
        since = (now_s if now_s is not None else time.time()) - self.history_seconds
        raw = await self._resolve_read(keys=[IDS], args=[any_id, since])
        if not raw:
            return None
        return decode_state(_text(raw[0]), raw[1:])

    async def commit(
        self,
        cn: str,
        expected_version: int,
        contacts: Sequence[Contact],
        serving: Mapping[str, Mapping[str, Any]],
        decision_id: str,
        decision: Mapping[str, Any],
        decision_ttl_s: int,
        now_s: float | None = None,
    ) -> bool:
        """Reserve a decision's contacts and serving rows; False when another write came first."""
        cutoff = (now_s if now_s is not None else time.time()) - self.history_seconds
        args: list[Any] = [expected_version, cutoff, dumps(decision), max(1, decision_ttl_s), len(contacts)]
        for c in contacts:
            args += [c.at_ms / 1000, c.member()]
        for channel, row in serving.items():
            args += [channel, dumps(row)]
        keys = [contacts_key(cn), serving_key(cn), version_key(cn), decision_key(decision_id)]
        return bool(await self._commit(keys=keys, args=args))

    async def decision(self, decision_id: str) -> dict[str, Any] | None:
        raw = await self.client.get(decision_key(decision_id))
        return json.loads(raw) if raw is not None else None

    async def add_contact(self, cn: str, contact: Contact) -> None:
        """A response applied at once: the next decision's cool-downs and caps see it."""
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.zadd(contacts_key(cn), {contact.member(): contact.at_ms / 1000})
            pipe.incr(version_key(cn))
            await pipe.execute()

    async def bandit_state(self) -> tuple[str | None, list[dict[str, Any]]]:
        """(version, rows) of the sampler's state as the last sync left it."""
        raw = await self.client.get(BANDIT)
        if raw is None:
            return None, []
        doc = json.loads(raw)
        return str(doc.get("version")), list(doc.get("rows", []))


# ------------------------------------------------------------------------------------ writes


class StoreWriter:
    """Bulk and write-through writes, on a synchronous client; every method is idempotent."""

    def __init__(self, client: redis.Redis, contact_history_days: int) -> None:
        self.client = client
        self.history_seconds = contact_history_days * 86_400

    def _chunks(self, rows: Sequence[Any]) -> Iterable[Sequence[Any]]:
        for start in range(0, len(rows), CHUNK):
            yield rows[start : start + CHUNK]

    def put_context(
        self, part: str, rows: Sequence[Mapping[str, Any]], features_at_ms: int | None = None
    ) -> int:
        """Replace one part of each row's customer context (``part``: one of CONTEXT_PARTS; each
        row: customer_number and that part's columns), leaving the other parts as they are."""
        if part not in CONTEXT_PARTS:
            raise ValueError(f"unknown context part {part!r}; expected one of {CONTEXT_PARTS}")
        for chunk in self._chunks(rows):
            pipe = self.client.pipeline(transaction=False)
            for row in chunk:
                cn = str(row["customer_number"])
                values = {k: plain(v) for k, v in row.items() if k != "customer_number"}
                mapping: dict[FieldT, EncodableT] = {part: dumps(values)}
                if features_at_ms is not None:
                    mapping["features_at"] = str(features_at_ms)
                pipe.hset(profile_key(cn), mapping=mapping)
            pipe.execute()
        return len(rows)

    def put_reasons(self, by_customer: Mapping[str, Mapping[str, list[str]]]) -> int:
        items = list(by_customer.items())
        for chunk in self._chunks(items):
            pipe = self.client.pipeline(transaction=False)
            for cn, reasons in chunk:
                pipe.hset(profile_key(str(cn)), "reasons", dumps(reasons))
            pipe.execute()
        return len(items)

    def put_consent(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Rows of customer_number, purpose, channel, granted, event_time and event_id: a state
        replaces the stored one only if it is newer in event time (then event id), as silver's
        fold does, so out-of-order delivery cannot bring back an old state."""
        script = self.client.register_script(PUT_CONSENT_SCRIPT)
        for chunk in self._chunks(rows):
            pipe = self.client.pipeline(transaction=False)
            for row in chunk:
                cn = str(row["customer_number"])
                granted = row["granted"] not in (None, False) and row["granted"] == row["granted"]
                at = epoch_ms(row.get("event_time")) or 0
                value = f"{'1' if granted else '0'}:{at}:{row.get('event_id') or ''}"
                script(
                    keys=[consent_key(cn), version_key(cn)],
                    args=[
                        consent_field(row["purpose"], row["channel"]),
                        value,
                        at,
                        str(row.get("event_id") or ""),
                    ],
                    client=pipe,
                )
            pipe.execute()
        return len(rows)

    def add_contacts(self, rows: Sequence[Mapping[str, Any]], now_s: float | None = None) -> int:
        """Rows of customer_number, action_id, channel, decision_id, contacted_at, response."""
        cutoff = (now_s if now_s is not None else time.time()) - self.history_seconds
        kept = 0
        for chunk in self._chunks(rows):
            pipe = self.client.pipeline(transaction=False)
            for row in chunk:
                at = epoch_ms(row["contacted_at"])
                if at is None or at / 1000 < cutoff:
                    continue
                cn = str(row["customer_number"])
                decision = row.get("decision_id")
                contact = Contact(
                    str(row["action_id"]),
                    str(row["channel"]),
                    None if decision is None or decision != decision else str(decision),
                    str(row["response"]),
                    at,
                )
                pipe.zadd(contacts_key(cn), {contact.member(): at / 1000})
                pipe.incr(version_key(cn))
                kept += 1
            pipe.execute()
        return kept

    def put_serving(self, rows: Sequence[Mapping[str, Any]], now_s: float | None = None) -> int:
        """Served actions (customer_number, channel, action_id, decision_id, expires_at, ...): the
        newest per customer x channel wins; expired ones are not written."""
        now_ms = int((now_s if now_s is not None else time.time()) * 1000)
        script = self.client.register_script(PUT_SERVING_SCRIPT)
        kept = 0
        for chunk in self._chunks(rows):
            pipe = self.client.pipeline(transaction=False)
            for row in chunk:
                served = {k: plain(v) for k, v in row.items()}
                expires = served.get("expires_at")
                if expires is None or expires <= now_ms:
                    continue
                cn = str(row["customer_number"])
                decided = served.get("decided_at") or 0
                script(
                    keys=[serving_key(cn), version_key(cn)],
                    args=[str(row["channel"]), dumps(served), decided],
                    client=pipe,
                )
                kept += 1
            pipe.execute()
        return kept

    def put_identities(self, pairs: Iterable[tuple[str, str]]) -> int:
        """(any id, customer number) pairs."""
        items = list(pairs)
        for chunk in self._chunks(items):
            self.client.hset(IDS, mapping={str(k): str(v) for k, v in chunk})
        return len(items)

    def put_bandit_state(self, rows: Sequence[Mapping[str, Any]], version: str) -> None:
        self.client.set(BANDIT, dumps({"version": version, "rows": [plain(dict(r)) for r in rows]}))

    def put_meta(self, **values: Any) -> None:
        self.client.hset(META, mapping={k: dumps(v) for k, v in values.items()})

    def meta(self) -> dict[str, Any]:
        return {_text(k): json.loads(v) for k, v in self.client.hgetall(META).items()}

    def record_staleness(self, delays_ms: Sequence[float]) -> None:
        if not delays_ms:
            return
        pipe = self.client.pipeline(transaction=False)
        pipe.lpush(STALENESS, *[f"{d:.1f}" for d in delays_ms])
        pipe.ltrim(STALENESS, 0, STALENESS_KEPT - 1)
        pipe.execute()

    def staleness(self) -> list[float]:
        return [float(v) for v in self.client.lrange(STALENESS, 0, -1)]

    def erase(self, customer_numbers: Iterable[str], ids: Iterable[str]) -> dict[str, int]:
        """Every key of these customers, the identity entries that lead to them and the decision
        records naming them: how many of each went."""
        numbers = sorted(set(customer_numbers))
        keys = [k for cn in numbers for k in customer_keys(cn)]
        removed = {"customer_keys": int(self.client.delete(*keys)) if keys else 0}
        candidates = sorted(set(ids) | set(numbers))
        owners = self.client.hmget(IDS, candidates) if candidates else []
        leading = {
            i for i, owner in zip(candidates, owners, strict=True) if owner and _text(owner) in numbers
        }
        # every other form of an id that leads to them too ("device_id:D1" from gold.identity_map's
        # typed keys, an id the request did not name): the whole map is read once, by owner
        wanted = set(numbers)
        for key, owner in self.client.hscan_iter(IDS, count=5000):
            if _text(owner) in wanted:
                leading.add(_text(key))
        removed["identities"] = int(self.client.hdel(IDS, *sorted(leading))) if leading else 0
        records = 0
        for batch in _batched(self.client.scan_iter(match=decision_key("*"), count=1000), CHUNK):
            values = self.client.mget(batch)
            named = [
                k
                for k, v in zip(batch, values, strict=True)
                if v and json.loads(v).get("customer_number") in numbers
            ]
            records += int(self.client.delete(*named)) if named else 0
        removed["decision_records"] = records
        return removed

    def rewrite_persistence(self, timeout_s: float = 300.0) -> None:
        """The server's files rewritten from what it holds now, so erased keys leave the disk too:
        the append-only file (which logs every write ever made until rewritten) and the snapshot
        file when there is one."""
        self.client.bgrewriteaof()
        deadline = time.monotonic() + timeout_s
        while True:
            info = self.client.info("persistence")
            if not info.get("aof_rewrite_in_progress") and not info.get("aof_rewrite_scheduled"):
                break
            if time.monotonic() > deadline:
                raise SetupError(f"the online store's append-only file rewrite took over {timeout_s:.0f} s")
            time.sleep(0.1)
        if info.get("aof_last_bgrewrite_status") != "ok":
            raise SetupError(
                f"the online store's append-only file rewrite failed: {info.get('aof_last_bgrewrite_status')}"
            )
        self.client.save()


def _batched(items: Iterable[Any], size: int) -> Iterable[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# a consent state replaces the stored one if newer: KEYS consent, ver; ARGV field, value
# ("<1|0>:<event ms>:<event id>"), event ms, event id
PUT_CONSENT_SCRIPT = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  local _, _, at, id = string.find(old, '^[01]:(%d*):(.*)$')
  at = tonumber(at) or 0
  local new_at = tonumber(ARGV[3])
  if at > new_at or (at == new_at and (id or '') >= ARGV[4]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('INCR', KEYS[2])
return 1
"""

# a served row replaces the channel's unless the stored one was decided later
# KEYS: serving, ver; ARGV: channel, row JSON, decided_at (ms)
PUT_SERVING_SCRIPT = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  local decided = cjson.decode(old)['decided_at'] or 0
  if decided ~= cjson.null and tonumber(decided) > tonumber(ARGV[3]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('INCR', KEYS[2])
return 1
"""
