"""Configuration: layered YAML, validated, with every path resolved.

``conf/base.yml`` is read first, then the target overlay ``conf/targets/<target>.yml``
(target from the argument, else ``JOURNEYLAKE_TARGET``, else ``local``), then ``overrides``; each
layer is deep-merged onto the one before. Unknown keys and wrong types are errors that name the
file and the dotted key at fault::

    conf/targets/local.yml: spark.shuffle_partitions: expected an integer, got 'many'

Environment overrides: ``JOURNEYLAKE_HOME`` (the folder holding all local state),
``JOURNEYLAKE_METASTORE_PORT`` (the shared catalog's port), ``JOURNEYLAKE_KAFKA_PORT`` (the local
Kafka broker's port, its controller's is the next one, and the bootstrap servers) and
``JOURNEYLAKE_CONF_DIR`` (another ``conf/`` folder).

Usage::

    cfg = load_config()                      # or load_config("databricks", {"spark.shuffle_partitions": 2})
    cfg.paths.landing                        # absolute Path under the home folder
    cfg.spark.shuffle_partitions
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import yaml
from pydantic import Field, StringConstraints, ValidationError, model_validator
from pydantic_core import ErrorDetails

from ml.settings import MlConfig
from pipelines.config_section import ConfigSection
from pipelines.contracts import MarketingChannel, OfferChannel
from pipelines.errors import ConfigError
from pipelines.quality.settings import QualityConfig

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TARGET = "local"
ENV_TARGET = "JOURNEYLAKE_TARGET"
ENV_HOME = "JOURNEYLAKE_HOME"
ENV_METASTORE_PORT = "JOURNEYLAKE_METASTORE_PORT"
ENV_KAFKA_PORT = "JOURNEYLAKE_KAFKA_PORT"
ENV_API_PORT = "JOURNEYLAKE_API_PORT"
ENV_STORE_PORT = "JOURNEYLAKE_STORE_PORT"
ENV_CONF_DIR = "JOURNEYLAKE_CONF_DIR"


# Every section below is a ConfigSection (strict, frozen); a component's own sections live beside it
# (ml/settings.py). They subclass it by name: pydantic's mypy plugin only recognises a model whose
# base is named as a class, not through a variable alias.


class PathsConfig(ConfigSection):
    """Where state lives. After loading, every path is absolute."""

    home: Path = Path(".journeylake")
    landing: Path = Path("landing")
    held: Path = Path("held")  # landing files held back until the demo's closed loop plays them
    warehouse: Path = Path("warehouse")
    checkpoints: Path = Path("checkpoints")
    metastore: Path = Path("metastore")
    mlflow: Path = Path("mlflow")
    exports: Path = Path("exports")
    logs: Path = Path("logs")
    gx: Path = Path("gx")  # Great Expectations' project: validation results, Data Docs


class SparkConfig(ConfigSection):
    master: str | None = "local[*]"
    app_name: str = "journeylake"
    shuffle_partitions: int = Field(4, ge=1)
    driver_memory: str = "2g"
    ui_enabled: bool = False
    # finished jobs, stages and SQL queries the driver keeps for its status pages (with the UI
    # off too): Spark's defaults (1,000 each, 100,000 tasks) grow a long-running streaming
    # driver's heap by every micro-batch's plans until a broadcast runs out of memory
    retained_history: int = Field(100, ge=10)
    log_level: Literal["ERROR", "WARN", "INFO", "DEBUG"] = "WARN"
    java_options: str = ""  # extra JVM options for the driver (local sessions)
    conf: dict[str, str | int | float | bool] = Field(default_factory=dict)


class MetastoreConfig(ConfigSection):
    kind: Literal["derby-server", "embedded", "unity"] = "derby-server"
    host: str = "127.0.0.1"
    # 0: this home's own port (METASTORE_BASE_PORT + a number derived from the home's path), so
    # two homes on one machine never share a catalog server by default
    port: int = Field(0, ge=0, le=65535)
    heap: str = "256m"


class SchemasConfig(ConfigSection):
    bronze: str = "bronze"
    silver: str = "silver"
    gold: str = "gold"


class CatalogConfig(ConfigSection):
    name: str | None = None
    schemas: SchemasConfig = Field(default_factory=SchemasConfig)
    metastore: MetastoreConfig = Field(default_factory=MetastoreConfig)


# "10 seconds", "1 minute", "6 hours": what Spark's processing-time triggers and silver's dedup
# watermark both read.
Interval = Annotated[str, StringConstraints(pattern=r"^\d+(\.\d+)? (second|minute|hour|day)s?$")]


class IngestConfig(ConfigSection):
    source: Literal["files", "kafka"] = "files"  # landing folder of JSON files, or Kafka topics
    trigger_interval: Interval = "10 seconds"
    # gold.customer_features recomputes the customers a trigger touched, over 30 days of silver:
    # on two cores that batch takes seconds and competes with ingestion for the CPU
    gold_trigger_interval: Interval = "1 minute"
    max_files_per_trigger: int = Field(50, ge=1)
    # continuous ingest merges the small files of the tables it appends to this often (0: never)
    compact_every_minutes: float = Field(10.0, ge=0)
    dedup_watermark: Interval = "6 hours"
    pii_key_env: str = "JOURNEYLAKE_PII_KEY"
    pii_key_default: str | None = None


class KafkaBrokerConfig(ConfigSection):
    """The local single-node broker `journeylake kafka up` starts (development, tests, demo)."""

    port: int = Field(19092, ge=1, le=65535)
    controller_port: int = Field(19093, ge=1, le=65535)
    heap: str = "512m"
    partitions: int = Field(4, ge=1)  # per topic, for topics the simulator creates


class KafkaConfig(ConfigSection):
    """Kafka as the event source (``ingest.source: kafka``): one topic per source."""

    bootstrap_servers: str = "127.0.0.1:19092"
    topic_prefix: str = "journeylake."
    starting_offsets: Literal["earliest", "latest"] = "earliest"
    max_offsets_per_trigger: int | None = Field(None, ge=1)
    # passed to Spark's Kafka source and to producers as kafka.<key>, e.g. security.protocol,
    # sasl.mechanism, sasl.jaas.config, ssl.truststore.location (a bank's own cluster)
    options: dict[str, str] = Field(default_factory=dict)
    broker: KafkaBrokerConfig = Field(default_factory=KafkaBrokerConfig)
    # How long topics keep records: the bound on how long an erased person stays in Kafka, which
    # cannot be rewritten. Topics journeylake creates get it; erase-customer reports every topic's.
    retention_days: int = Field(30, ge=1, le=3650)

    @property
    def retention_ms(self) -> int:
        return self.retention_days * 86_400_000


class OnlineStoreConfig(ConfigSection):
    """The online store (Redis) the decision API reads: `journeylake online-store up|sync|status|down`."""

    host: str = "127.0.0.1"  # the local server listens on loopback only
    port: int = Field(16379, ge=1, le=65535)
    password_env: str = "JOURNEYLAKE_STORE_PASSWORD"  # unset locally: one is made and kept in the home
    maxmemory: str = "2gb"  # writes fail (noeviction) rather than silently drop customers past this
    contact_history_days: int = Field(120, ge=1)  # contacts kept per customer: >= every policy window
    socket_timeout_ms: float = Field(200.0, gt=0)
    write_through: bool = True  # the streams write what they commit to the store when it runs
    # a bank's own server: an ACL user (default: Redis's "default") and TLS with the bank's CA
    username: str | None = None
    tls: bool = False
    tls_ca_file: Path | None = None  # PEM; None: the system's CAs


SqlRoleName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
SETTING_KEY = r"^[A-Za-z0-9_.-]+$"


class SqlRoleConfig(ConfigSection):
    """What an SQL endpoint user of this role may do (`sql_endpoint.roles`).

    ``layers`` are the medallion layers it reads (their schemas by ``catalog.schemas``); every
    statement is analyzed and refused when it touches anything else, by any route: a table's
    name, a view over another layer, SHOW/DESCRIBE, EXPLAIN.
    """

    layers: tuple[Literal["bronze", "silver", "gold"], ...] = Field(min_length=1)
    path_queries: bool = False  # delta.`/path`, parquet.`/path`: files read around the catalog
    read_only: bool = True  # queries, SHOW, DESCRIBE, EXPLAIN, USE, SET only (no DDL, DML, ADD JAR)
    settable: tuple[Annotated[str, StringConstraints(pattern=SETTING_KEY)], ...] = ()  # SET k=v allowed


def _default_roles() -> dict[str, SqlRoleConfig]:
    return {
        "analyst": SqlRoleConfig(layers=("silver", "gold")),
        "engineer": SqlRoleConfig(layers=("bronze", "silver", "gold"), path_queries=True),
    }


class SqlEndpointConfig(ConfigSection):
    """The analysts' SQL endpoint (`journeylake sql`): Spark's Thrift server, users by password,
    each user with a role."""

    port: int = Field(10015, ge=1, le=65535)  # on loopback; `journeylake sql --port` overrides
    users_file: Path = Path("sql_endpoint/users")  # relative to paths.home; `journeylake sql-user` edits it
    default_user: str = Field("analyst", pattern=r"^[A-Za-z_][\w.-]{0,63}$")  # made when no user exists
    password_env: str = "JOURNEYLAKE_SQL_PASSWORD"  # the default user's; unset: made and kept in the home
    roles: dict[SqlRoleName, SqlRoleConfig] = Field(default_factory=_default_roles, min_length=1)
    default_role: SqlRoleName = "analyst"  # the default user's, and a users-file line's without a role

    @model_validator(mode="after")
    def _default_role_is_defined(self) -> SqlEndpointConfig:
        if self.default_role not in self.roles:
            raise ValueError(
                f"default_role {self.default_role!r} is not one of roles ({', '.join(sorted(self.roles))})"
            )
        return self


SegmentName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,62}$")]


class SegmentConfig(ConfigSection):
    """One audience marketing pulls: who is in it and which channel will contact them.

    ``where`` is a Spark SQL condition over ``gold.customer_360`` columns. Exports keep only
    customers whose marketing consent for ``channel`` (and for ``any``) is granted at export time.
    """

    description: str = Field(min_length=1)
    where: str = Field(min_length=1)
    channel: MarketingChannel


TriggerType = Literal[
    "product_view",
    "application_abandoned",
    "application_stalled",
    "salary",
    "low_balance",
    "failed_payment",
    "complaint",
    "intent",  # a customer said something the text model recognised (contact centre, app chat)
    "consent_change",
    "offer_response",
]


class ChannelCap(ConfigSection):
    """At most ``max_contacts`` contacts on one channel per customer in any ``period_days`` days."""

    max_contacts: int = Field(ge=0)
    period_days: int = Field(ge=1)


def _default_caps() -> dict[OfferChannel, ChannelCap]:
    return {
        "email": ChannelCap(max_contacts=3, period_days=7),
        "sms": ChannelCap(max_contacts=2, period_days=7),
        "push": ChannelCap(max_contacts=3, period_days=7),
        "phone": ChannelCap(max_contacts=1, period_days=14),
        "web": ChannelCap(max_contacts=5, period_days=1),
        "app": ChannelCap(max_contacts=5, period_days=1),
        "branch": ChannelCap(max_contacts=2, period_days=7),
    }


class ContactPolicyConfig(ConfigSection):
    """How often a customer may be contacted: caps, cool-downs, no repeats, how long a decision lasts."""

    channel_caps: dict[OfferChannel, ChannelCap] = Field(default_factory=_default_caps)  # absent: no cap
    cooldown_after_dismiss_days: int = Field(30, ge=0)  # the dismissed action, on every channel
    cooldown_after_complaint_days: int = Field(90, ge=0)  # every contacting action, every channel
    cooldown_after_ignore_days: int = Field(7, ge=0)  # the channel, after an unanswered impression
    repeat_days: int = Field(14, ge=0)  # the same action to the same customer, any channel
    decision_ttl_hours: float = Field(72.0, gt=0)  # a decision's serving rows expire after this


class ArbitrationConfig(ConfigSection):
    """Priority = propensity x value x business_lever x context weight; the best action per channel."""

    # per trigger type; types not listed weigh 1.0; a decision of several triggers takes the largest
    context_weights: dict[TriggerType, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)
    service_propensity: float = Field(0.3, ge=0, le=1)  # help_finish_application has no model
    # ... x this (at most 1.0) when a trigger is about the open application's product
    service_match_boost: float = Field(2.0, ge=1)
    fallback_propensity: float = Field(0.02, ge=0, le=1)  # a score is null (no champion model)
    max_actions_per_decision: int = Field(1, ge=1)  # contacting actions per customer per decision


class ExplorationConfig(ConfigSection):
    """A stable control group on the default policy; Thompson-sampling settings (pipelines/nba/bandit.py)."""

    control_share: float = Field(0.1, ge=0, lt=1)  # customers kept on the default policy (by a hash)
    prior_shape: float = Field(1.0, gt=0)  # Gamma(prior_shape, prior_rate) prior of the bandit
    prior_rate: float = Field(1.0, gt=0)
    draws: int = Field(1000, ge=1)  # Monte Carlo draws estimating each choice's probability
    seed: int = 0
    # what the lift is learnt for: "action_channel" = an action factor x a channel factor (evidence
    # about an action on one channel counts on every channel; learns fast), "arm" = each
    # (action, channel) on its own evidence only
    lift: Literal["action_channel", "arm"] = "action_channel"


class TriggersConfig(ConfigSection):
    """When an event is a decision trigger."""

    low_balance_threshold: float = 100.0  # current account balance below this
    stalled_application_hours: float = Field(24.0, gt=0)  # an application with no step for this long


class LiveLaneConfig(ConfigSection):
    """``journeylake decide --live``: raw events straight to decisions (pipelines/nba/live.py)."""

    # how often the customers' context (features, scores, consent, contacts) is re-read from the
    # lakehouse, in the background; the lane's own events and decisions apply in between
    refresh_seconds: float = Field(60.0, gt=0)
    # what the lane saw (consent changes, responses, its own decisions) is applied again on top of
    # every context read for this long: longer than the lakehouse takes to land those events
    journal_seconds: float = Field(900.0, gt=0)
    trigger: str = "0 seconds"  # processing-time trigger: "0 seconds" = the next batch at once
    max_seen_event_ids: int = Field(2_000_000, ge=1000)  # trigger ids remembered against duplicates


class ServingConfig(ConfigSection):
    """``gold.served_actions`` (appended per micro-batch) behind the ``gold.next_best_actions`` view."""

    # how often the decision job drops the served rows a newer decision replaced and merges the
    # decision log's small files (0: never; the view reads the newest row per customer x channel
    # either way, but slower as rows and files pile up)
    compact_every_minutes: float = Field(10.0, ge=0)
    # what appends each batch's rows: delta-rs (milliseconds; Spark still appends where it cannot,
    # see pipelines/delta_appends.py) or spark (a Spark job and commit, ~0.25 s each on 2 cores)
    appends: Literal["delta-rs", "spark"] = "delta-rs"


class ApiConfig(ConfigSection):
    """The decision API (`journeylake serve`): where it listens, who may call it, its time budget."""

    host: str = "127.0.0.1"  # loopback locally; a deployment puts it behind the bank's gateway
    port: int = Field(18080, ge=1, le=65535)
    workers: int = Field(1, ge=1)  # processes; each runs the funnel on its own core
    server: Literal["uvicorn", "granian"] = "granian"  # the HTTP server the workers run in (bench/README.md)
    # a request's deadline; past it the answer is the catalog's default policy within consent
    timeout_ms: float = Field(50.0, gt=0)
    # the bearer token of the calling system(s): one token in this environment variable, and/or
    # a file of "<system> <token>" lines (relative to the home unless absolute)
    token_env: str = "JOURNEYLAKE_API_TOKEN"
    tokens_file: Path | None = None
    max_body_bytes: int = Field(16_384, ge=256)
    max_actions: int = Field(3, ge=1)  # the most a request may ask for (max_actions)
    flush_ms: float = Field(500.0, gt=0)  # decisions and responses delivered to the lakehouse this often
    # added to the delivery processes' niceness: their appends yield the CPU to the workers' requests
    delivery_nice: int = Field(10, ge=0, le=19)
    publish_decisions: bool = False  # also publish decisions to <kafka.topic_prefix>decisions
    commit_attempts: int = Field(5, ge=1)  # reads and commits of one customer before a fallback
    bandit_refresh_seconds: float = Field(60.0, gt=0)  # the sampler's state re-read from the store


class DecisioningConfig(ConfigSection):
    """Next-best-action decisioning: the action catalog file and the policies applied to it."""

    catalog: Path = Path("actions.yml")  # relative to the conf folder
    contact_policy: ContactPolicyConfig = Field(default_factory=ContactPolicyConfig)
    arbitration: ArbitrationConfig = Field(default_factory=ArbitrationConfig)
    exploration: ExplorationConfig = Field(default_factory=ExplorationConfig)
    triggers: TriggersConfig = Field(default_factory=TriggersConfig)
    live: LiveLaneConfig = Field(default_factory=LiveLaneConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)

    def context_weight(self, trigger_type: str) -> float:
        """The arbitration weight of one trigger type (1.0 when not configured)."""
        # keyed by the known trigger types; any other type read from the events weighs the default
        weights = cast(Mapping[str, float], self.arbitration.context_weights)
        return float(weights.get(trigger_type, 1.0))


class PrivacyConfig(ConfigSection):
    """Erasure (``journeylake erase-customer``) and the PII scan: what names a person, where."""

    # columns that name a person, strongest first: a row belongs to whoever its strongest
    # non-null identifier names (a shared device's anonymous events go with the device's owner,
    # its logged-in events with the login's)
    identifiers: list[str] = Field(
        default_factory=lambda: [
            "unified_customer_id",
            "customer_number",
            "login_id",
            "crm_contact_id",
            "device_id",
            "cookie_id",
            "record_id",
            "duplicate_of",
        ],
        min_length=1,
    )
    raw_columns: list[str] = Field(default_factory=lambda: ["raw", "record"])  # a source record as JSON text
    record_id_column: str = "_record_id"  # silver's record key: names the person's rows in duplicates
    vacuum_retain_hours: float = Field(0.0, ge=0)  # files holding erased rows are deleted this soon
    parallel_tables: int = Field(2, ge=1, le=16)  # tables an erasure works on at once
    records_table: str = "erasure_records"  # in gold: who, when, what, rows removed, hashed ids


class Config(ConfigSection):
    """The whole configuration of one target, with absolute paths."""

    paths: PathsConfig = Field(default_factory=PathsConfig)
    spark: SparkConfig = Field(default_factory=SparkConfig)
    catalog: CatalogConfig = Field(default_factory=CatalogConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    online_store: OnlineStoreConfig = Field(default_factory=OnlineStoreConfig)
    sql_endpoint: SqlEndpointConfig = Field(default_factory=SqlEndpointConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    segments: dict[SegmentName, SegmentConfig] = Field(default_factory=dict)
    ml: MlConfig = Field(default_factory=MlConfig)
    decisioning: DecisioningConfig = Field(default_factory=DecisioningConfig)
    target: str = DEFAULT_TARGET
    sources: tuple[str, ...] = ()  # the files (and "overrides") this config was built from

    @property
    def home(self) -> Path:
        return self.paths.home

    @model_validator(mode="after")
    def _store_keeps_every_policy_window(self) -> Config:
        policy = self.decisioning.contact_policy
        windows = {
            "repeat_days": policy.repeat_days,
            "cooldown_after_dismiss_days": policy.cooldown_after_dismiss_days,
            "cooldown_after_complaint_days": policy.cooldown_after_complaint_days,
            "cooldown_after_ignore_days": policy.cooldown_after_ignore_days,
            **{f"channel_caps.{ch}.period_days": cap.period_days for ch, cap in policy.channel_caps.items()},
        }
        name, longest = max(windows.items(), key=lambda kv: kv[1])
        if self.online_store.contact_history_days < longest:
            raise ValueError(
                f"online_store.contact_history_days is {self.online_store.contact_history_days}, "
                f"shorter than decisioning.contact_policy.{name} ({longest}): the API would forget "
                "contacts a policy counts"
            )
        return self

    @property
    def is_local(self) -> bool:
        return self.catalog.metastore.kind != "unity"

    def pii_key(self) -> str:
        """The pseudonymization key: from the environment, else the target's development default."""
        key = os.environ.get(self.ingest.pii_key_env) or self.ingest.pii_key_default
        if not key:
            raise ConfigError(
                f"no pseudonymization key: set the environment variable {self.ingest.pii_key_env} "
                f"(target {self.target} has no ingest.pii_key_default)"
            )
        return key


def conf_dir() -> Path:
    override = os.environ.get(ENV_CONF_DIR)
    return Path(override).resolve() if override else PROJECT_ROOT / "conf"


def display_path(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{display_path(path)}: configuration file not found") from None
    except OSError as exc:
        raise ConfigError(f"{display_path(path)}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{display_path(path)}: not valid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{display_path(path)}: expected a mapping of sections, got {type(data).__name__}")
    return data


def _nest(overrides: dict[str, Any]) -> dict[str, Any]:
    """{"spark.shuffle_partitions": 2} -> {"spark": {"shuffle_partitions": 2}}; nested dicts pass."""
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        node = nested
        parts = str(key).split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return nested


def _merge(base: dict, layer: dict, origin: str, provenance: dict[str, str], prefix: str = "") -> dict:
    """Deep-merge ``layer`` onto ``base``, recording which source set each dotted key."""
    out = dict(base)
    for key, value in layer.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value, origin, provenance, f"{dotted}.")
        else:
            out[key] = copy.deepcopy(value)
            provenance[dotted] = origin
            if isinstance(value, dict):
                for sub in _leaves(value, f"{dotted}."):
                    provenance[sub] = origin
    return out


def _leaves(data: dict, prefix: str) -> list[str]:
    keys = []
    for key, value in data.items():
        keys.append(f"{prefix}{key}")
        if isinstance(value, dict):
            keys.extend(_leaves(value, f"{prefix}{key}."))
    return keys


_EXPECTED = {
    "int_parsing": "expected an integer",
    "int_type": "expected an integer",
    "int_from_float": "expected an integer",
    "float_parsing": "expected a number",
    "float_type": "expected a number",
    "bool_parsing": "expected true or false",
    "bool_type": "expected true or false",
    "string_type": "expected a text value",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "path_type": "expected a path",
}


def describe_validation_error(error: ErrorDetails) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    got = error.get("input")
    if kind in _EXPECTED:
        return f"{_EXPECTED[kind]}, got {got!r}"
    if kind == "literal_error":
        allowed = error.get("ctx", {}).get("expected", "")
        return f"expected one of {allowed}, got {got!r}"
    if kind == "value_error" and isinstance(got, dict):  # a check across sections: its message says it all
        return str(error.get("ctx", {}).get("error", error["msg"]))
    return f"{error['msg'].lower()}, got {got!r}"


def dotted_location(loc: tuple) -> str:
    # Union types add their branch name to the location (e.g. "str", "int"), and a mapping's bad key
    # adds "[key]" after the key; drop those.
    parts = [
        str(p) for p in loc if not (isinstance(p, str) and p in {"str", "int", "float", "bool", "[key]"})
    ]
    return ".".join(parts)


def _origin(dotted: str, provenance: dict[str, str], default: str) -> str:
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        origin = provenance.get(".".join(parts[:n]))
        if origin:
            return origin
    return default


def _resolve_paths(paths: PathsConfig) -> PathsConfig:
    home = Path(os.environ.get(ENV_HOME) or paths.home).expanduser()
    if not home.is_absolute():
        home = PROJECT_ROOT / home
    home = home.resolve()
    resolved: dict[str, Path] = {"home": home}
    for name in PathsConfig.model_fields:
        if name != "home":
            value = getattr(paths, name).expanduser()
            resolved[name] = value if value.is_absolute() else home / value
    return PathsConfig(**resolved)


def load_config(target: str | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Load ``conf/base.yml`` + ``conf/targets/<target>.yml`` + ``overrides``, validated.

    ``overrides`` may be nested ({"spark": {"shuffle_partitions": 2}}) or dotted
    ({"spark.shuffle_partitions": 2}). Raises ConfigError naming the file and key at fault.
    """
    target = target or os.environ.get(ENV_TARGET) or DEFAULT_TARGET
    directory = conf_dir()
    base_file = directory / "base.yml"
    target_file = directory / "targets" / f"{target}.yml"
    plain = re.fullmatch(r"[\w.-]+", target) is not None  # a name, not a path or control characters
    if (not plain or not target_file.is_file()) and base_file.is_file():
        known = sorted(p.stem for p in (directory / "targets").glob("*.yml"))
        raise ConfigError(
            f"{display_path(directory / 'targets')}: unknown target {target!r}; "
            f"known targets: {', '.join(known) or 'none'}"
        )

    provenance: dict[str, str] = {}
    layers = [
        (display_path(base_file), read_yaml(base_file)),
        (display_path(target_file), read_yaml(target_file)),
    ]
    if overrides:
        layers.append(("overrides", _nest(overrides)))
    port = os.environ.get(ENV_METASTORE_PORT)
    if port:
        layers.append((f"${ENV_METASTORE_PORT}", {"catalog": {"metastore": {"port": port}}}))
    kafka_port = os.environ.get(ENV_KAFKA_PORT)
    if kafka_port:  # a private local broker: its listener, its controller (port + 1), and bootstrap
        try:
            broker = {"port": int(kafka_port), "controller_port": int(kafka_port) + 1}
        except ValueError:
            raise ConfigError(f"${ENV_KAFKA_PORT}: expected a port number, got {kafka_port!r}") from None
        layers.append(
            (
                f"${ENV_KAFKA_PORT}",
                {"kafka": {"bootstrap_servers": f"127.0.0.1:{kafka_port}", "broker": broker}},
            )
        )
    store_port = os.environ.get(ENV_STORE_PORT)
    if store_port:
        layers.append((f"${ENV_STORE_PORT}", {"online_store": {"port": store_port}}))
    api_port = os.environ.get(ENV_API_PORT)
    if api_port:
        layers.append((f"${ENV_API_PORT}", {"decisioning": {"api": {"port": api_port}}}))

    merged: dict[str, Any] = {}
    for origin, data in layers:
        merged = _merge(merged, data, origin, provenance)
    merged.pop("target", None)
    merged.pop("sources", None)

    try:
        cfg = Config.model_validate(merged)
    except ValidationError as exc:
        by_key: dict[str, list[ErrorDetails]] = {}
        for error in exc.errors():
            by_key.setdefault(dotted_location(error["loc"]), []).append(error)
        messages = []
        for dotted, errors in by_key.items():
            origin = _origin(dotted, provenance, display_path(base_file))
            if len(errors) == 1:
                problem = describe_validation_error(errors[0])
            else:  # a value that fits none of a union's types
                wanted = [_EXPECTED.get(e["type"], e["msg"]).removeprefix("expected ") for e in errors]
                problem = f"expected {' or '.join(dict.fromkeys(wanted))}, got {errors[0].get('input')!r}"
            messages.append(f"{origin}: {dotted}: {problem}" if dotted else f"{origin}: {problem}")
        raise ConfigError("; ".join(messages)) from None

    paths = _resolve_paths(cfg.paths)
    metastore = cfg.catalog.metastore
    if metastore.port == 0:
        metastore = metastore.model_copy(update={"port": home_port(METASTORE_BASE_PORT, paths.home)})
    return cfg.model_copy(
        update={
            "paths": paths,
            "catalog": cfg.catalog.model_copy(update={"metastore": metastore}),
            "target": target,
            "sources": tuple(origin for origin, _ in layers),
        }
    )


METASTORE_BASE_PORT = 15270
HOME_PORT_SPREAD = 1000


def home_port(base: int, home: Path) -> int:
    """A port of ``home``'s own: ``base`` plus a number below HOME_PORT_SPREAD derived from the
    home's path (stable across runs; two homes that meet on one are told so at start)."""
    return base + zlib.crc32(str(home).encode()) % HOME_PORT_SPREAD


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--target`` to a CLI verb's parser (use with :func:`config_from_args`)."""
    parser.add_argument(
        "--target",
        default=None,
        help=f"configuration target in conf/targets/ (default: ${ENV_TARGET} or {DEFAULT_TARGET})",
    )


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(getattr(args, "target", None))
