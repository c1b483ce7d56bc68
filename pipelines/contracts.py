"""Event contracts: the one place that defines every source's schema and version.

The simulator writes records that follow these contracts; the pipeline reads landing files with
them (explicit schemas, never inference) and validates silver rows against them. A contract is
plain data so it can be turned into a Spark schema, a pyarrow schema or a validator without
importing Spark here.

Wire format (landing files): JSON lines, one record per line. Timestamps are ISO-8601 UTC strings
with milliseconds and a ``Z`` suffix (``2026-01-05T08:15:30.123Z``); dates are ``YYYY-MM-DD``.
Every record carries ``schema_version`` (the contract version it was written with).

Two kinds of source:
- ``stream``: events delivered as time-ordered micro-batch files
  (``landing/<source>/<batch-start>_<seq>.jsonl``); ``key`` is a globally unique event id and
  ``event_time`` says when the event happened (which may be earlier than its delivery).
- ``snapshot``: daily extracts as banks deliver them
  (``landing/<source>/<YYYY-MM-DD>.jsonl``): a full extract on the first day, then only the
  records that changed; ``key`` identifies the entity, ``event_time`` is the extract's as-of time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql.types import StructType

FieldType = Literal["string", "int", "long", "double", "boolean", "timestamp", "date"]

# Products and channels are declared once, as Literal types (what configuration and the action
# catalog validate against) with their values as tuples (what code iterates), in this order.
# Every product but the current account, which every customer holds, has a propensity model
# (its score column is propensity_<product>).
ScoredProduct = Literal["savings", "credit_card", "mortgage", "personal_loan", "investments"]
Product = Literal["current_account", ScoredProduct]
MarketingChannel = Literal["email", "sms", "push", "phone"]  # need marketing consent for the channel
DigitalChannel = Literal["web", "app"]  # online banking: where clickstream sessions happen
OfferChannel = Literal[MarketingChannel, DigitalChannel, "branch"]  # and the bank's own channels
ANY_CHANNEL = "any"  # consent for every marketing channel at once

PRODUCTS: tuple[str, ...] = get_args(Product)
SCORED_PRODUCTS: tuple[str, ...] = get_args(ScoredProduct)
MARKETING_CHANNELS: tuple[str, ...] = get_args(MarketingChannel)
DIGITAL_CHANNELS: tuple[str, ...] = get_args(DigitalChannel)
CONSENT_PURPOSES: tuple[str, ...] = ("marketing", "profiling")
CONSENT_CHANNELS: tuple[str, ...] = (*MARKETING_CHANNELS, ANY_CHANNEL)
OFFER_CHANNELS: tuple[str, ...] = get_args(OfferChannel)
OFFER_RESPONSES: tuple[str, ...] = ("impression", "click", "accept", "dismiss", "complaint")
APPLICATION_STEPS: tuple[str, ...] = (
    "start",
    "personal_details",
    "income",
    "document_upload",
    "review",
    "submit",
)
TRANSACTION_TYPES: tuple[str, ...] = (
    "salary",
    "rent",
    "bill",
    "card_spend",
    "transfer_in",
    "transfer_out",
    "fee",
    "failed_payment",
    "atm_withdrawal",
    "deposit",
    "loan_repayment",
    "mortgage_payment",
)
MERCHANT_CATEGORIES: tuple[str, ...] = (
    "groceries",
    "restaurants",
    "travel",
    "fuel",
    "utilities",
    "entertainment",
    "retail",
    "health",
    "home_improvement",
    "business_services",
    "gambling",
)
DIGITAL_EVENT_TYPES: tuple[str, ...] = (
    "page_view",
    "product_view",
    "compare",
    "calculator",
    "search",
    "login",
    "logout",
    "application_step",
)
CONTACT_TYPES: tuple[str, ...] = ("call", "service_request", "complaint")
# the contact centre's wrap-up codes: coarse, chosen by the agent (and sometimes wrongly)
CONTACT_TOPICS: tuple[str, ...] = ("cards", "payments", "fees", "account", "security", "complaint", "other")
CHAT_DIRECTIONS: tuple[str, ...] = ("customer", "bot")
VISIT_CHANNELS: tuple[str, ...] = ("atm", "branch")
VISIT_TYPES: tuple[str, ...] = (
    "cash_withdrawal",
    "deposit",
    "balance_enquiry",
    "advice_appointment",
    "service",
)
REGIONS: tuple[str, ...] = ("north", "south", "east", "west", "central", "capital")
INCOME_BANDS: tuple[str, ...] = ("low", "lower_middle", "middle", "upper_middle", "high")


@dataclass(frozen=True)
class Field:
    """One field of a contract.

    ``pii`` fields are pseudonymized after bronze; ``allowed`` lists the values a string field
    may take (checked in silver); ``required`` fields must be present and non-null.
    """

    name: str
    type: FieldType
    required: bool = False
    pii: bool = False
    allowed: tuple[str, ...] | None = None
    doc: str = ""


@dataclass(frozen=True)
class Contract:
    """A source's schema and version, shared by the simulator and the pipeline."""

    source: str
    version: int
    kind: Literal["stream", "snapshot"]
    key: str
    event_time: str
    fields: tuple[Field, ...]
    customer_key: str | None = "customer_number"
    doc: str = ""
    _by_name: dict[str, Field] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = [f.name for f in self.fields]
        if len(names) != len(set(names)):
            raise ValueError(f"contract {self.source}: duplicate field names")
        for required in (self.key, self.event_time, "schema_version"):
            if required not in names:
                raise ValueError(f"contract {self.source}: missing field {required!r}")
        self._by_name.update({f.name: f for f in self.fields})

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @property
    def required_fields(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.required)

    @property
    def pii_fields(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.pii)

    def get(self, name: str) -> Field:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"contract {self.source} has no field {name!r}") from None

    def spark_schema(self, *, as_strings: bool = False) -> StructType:
        """The Spark schema of this contract.

        ``as_strings=True`` reads every field as text, which lets the pipeline tell a wrong
        type (text present, typed cast fails) from a missing value.
        """
        from pyspark.sql import types as T

        spark_types = {
            "string": T.StringType(),
            "int": T.IntegerType(),
            "long": T.LongType(),
            "double": T.DoubleType(),
            "boolean": T.BooleanType(),
            "timestamp": T.TimestampType(),
            "date": T.DateType(),
        }
        return T.StructType(
            [
                T.StructField(f.name, T.StringType() if as_strings else spark_types[f.type], True)
                for f in self.fields
            ]
        )


def _common(key: str, key_doc: str, time_doc: str, *, time_field: str = "event_time") -> tuple[Field, ...]:
    return (
        Field(key, "string", required=True, doc=key_doc),
        Field(time_field, "timestamp", required=True, doc=time_doc),
        Field("schema_version", "int", required=True, doc="contract version the record was written with"),
    )


_EVENT = ("event_id", "globally unique event id (duplicates share it)", "when the event happened, UTC")
_SNAPSHOT_TIME = "as-of time of the daily extract, UTC"

CONTRACTS: dict[str, Contract] = {
    c.source: c
    for c in (
        Contract(
            source="transactions",
            version=1,
            kind="stream",
            key="event_id",
            event_time="event_time",
            doc="Core-banking card and account postings.",
            fields=(
                *_common(*_EVENT),
                Field("customer_number", "string", required=True, doc="core-banking customer number"),
                Field("account_id", "string", required=True),
                Field("txn_type", "string", required=True, allowed=TRANSACTION_TYPES),
                Field("amount", "double", required=True, doc="signed: credits > 0, debits < 0"),
                Field("currency", "string", required=True),
                Field("merchant_category", "string", allowed=MERCHANT_CATEGORIES),
                Field("counterparty", "string"),
                Field("balance_after", "double", doc="account balance after posting"),
            ),
        ),
        Contract(
            source="digital",
            version=1,
            kind="stream",
            key="event_id",
            event_time="event_time",
            customer_key=None,
            doc=(
                "Web and app clickstream. Sessions start anonymous (device and cookie only); "
                "login_id is set from the login event on."
            ),
            fields=(
                *_common(*_EVENT),
                Field("channel", "string", required=True, allowed=DIGITAL_CHANNELS),
                Field("session_id", "string", required=True),
                Field("device_id", "string", required=True),
                Field("cookie_id", "string", doc="web only"),
                Field("login_id", "string", doc="online-banking login, null while anonymous"),
                Field("event_type", "string", required=True, allowed=DIGITAL_EVENT_TYPES),
                Field("page", "string"),
                Field("product", "string", allowed=PRODUCTS),
                Field("application_id", "string", doc="set on application_step events"),
                Field("step", "string", allowed=APPLICATION_STEPS),
                Field("step_index", "int"),
            ),
        ),
        Contract(
            source="visits",
            version=1,
            kind="stream",
            key="event_id",
            event_time="event_time",
            doc="ATM and branch visits.",
            fields=(
                *_common(*_EVENT),
                Field("customer_number", "string", required=True),
                Field("channel", "string", required=True, allowed=VISIT_CHANNELS),
                Field("location_id", "string", required=True),
                Field("visit_type", "string", required=True, allowed=VISIT_TYPES),
                Field("amount", "double"),
            ),
        ),
        Contract(
            source="contact_centre",
            version=2,  # 2: no sentiment field (no contact centre sends one; it is read from the note)
            kind="stream",
            key="event_id",
            event_time="event_time",
            doc=(
                "Calls, service requests and complaints: the agent's note of what the customer said "
                "(shorthand, personal details) and the agent's coarse, sometimes wrong, topic."
            ),
            fields=(
                *_common(*_EVENT),
                Field("customer_number", "string", required=True),
                Field("interaction_type", "string", required=True, allowed=CONTACT_TYPES),
                Field(
                    "topic", "string", required=True, allowed=CONTACT_TOPICS, doc="the agent's wrap-up code"
                ),
                Field("note", "string", pii=True, doc="free text; may mention personal details"),
                Field("agent_id", "string"),
            ),
        ),
        Contract(
            source="consent",
            version=1,
            kind="stream",
            key="event_id",
            event_time="event_time",
            doc="Consent grants and revocations per purpose x channel.",
            fields=(
                *_common(*_EVENT),
                Field("customer_number", "string", required=True),
                Field("purpose", "string", required=True, allowed=CONSENT_PURPOSES),
                Field("channel", "string", required=True, allowed=CONSENT_CHANNELS),
                Field("granted", "boolean", required=True),
                Field("captured_via", "string"),
            ),
        ),
        Contract(
            source="offer_responses",
            version=1,
            kind="stream",
            key="event_id",
            event_time="event_time",
            doc="Impressions of and responses to next-best-actions.",
            fields=(
                *_common(*_EVENT),
                Field("customer_number", "string", required=True),
                Field("decision_id", "string"),
                Field("action_id", "string", required=True),
                Field("channel", "string", required=True, allowed=OFFER_CHANNELS),
                Field("response", "string", required=True, allowed=OFFER_RESPONSES),
            ),
        ),
        Contract(
            source="app_chat",
            version=1,
            kind="stream",
            key="event_id",
            event_time="event_time",
            customer_key=None,
            doc=(
                "The banking app's chat: what signed-in customers write (informal, typos, sometimes "
                "card digits or an email) and the bot's replies, one message per record."
            ),
            fields=(
                *_common(*_EVENT),
                Field("login_id", "string", required=True, doc="online-banking login (the chat needs one)"),
                Field("device_id", "string", required=True, doc="the app's device"),
                Field("chat_session_id", "string", required=True),
                Field("direction", "string", required=True, allowed=CHAT_DIRECTIONS),
                Field("message", "string", required=True, pii=True, doc="free text as typed"),
            ),
        ),
        Contract(
            source="customers",
            version=1,
            kind="snapshot",
            key="customer_number",
            event_time="snapshot_time",
            doc="Core-banking customer profile (daily extract).",
            fields=(
                *_common(
                    "customer_number",
                    "core-banking customer number",
                    _SNAPSHOT_TIME,
                    time_field="snapshot_time",
                ),
                Field("login_id", "string", doc="online-banking login, null if not registered"),
                Field("first_name", "string", required=True, pii=True),
                Field("last_name", "string", required=True, pii=True),
                Field("date_of_birth", "date", required=True, pii=True),
                Field("email", "string", pii=True),
                Field("phone", "string", pii=True),
                Field("address_line", "string", pii=True),
                Field("postcode", "string", pii=True),
                Field("city", "string"),
                Field("region", "string", required=True, allowed=REGIONS),
                Field("income_band", "string", allowed=INCOME_BANDS),
                Field("customer_since", "date", required=True),
                Field("status", "string", required=True, allowed=("active", "closed")),
            ),
        ),
        Contract(
            source="accounts",
            version=1,
            kind="snapshot",
            key="account_id",
            event_time="snapshot_time",
            doc="Core-banking products held (daily extract).",
            fields=(
                *_common("account_id", "core-banking account id", _SNAPSHOT_TIME, time_field="snapshot_time"),
                Field("customer_number", "string", required=True),
                Field("product", "string", required=True, allowed=PRODUCTS),
                Field("opened_date", "date", required=True),
                Field("status", "string", required=True, allowed=("open", "closed")),
                Field("balance", "double", required=True),
                Field("credit_limit", "double"),
            ),
        ),
        Contract(
            source="crm_contacts",
            version=1,
            kind="snapshot",
            key="crm_contact_id",
            event_time="snapshot_time",
            doc=(
                "CRM contact records (daily extract): typed by people, so with typos, nicknames, "
                "old addresses, shared household emails and duplicates; customer_number often missing."
            ),
            fields=(
                *_common("crm_contact_id", "CRM contact id", _SNAPSHOT_TIME, time_field="snapshot_time"),
                Field("customer_number", "string", doc="often missing in CRM"),
                Field("first_name", "string", pii=True),
                Field("last_name", "string", required=True, pii=True),
                Field("email", "string", pii=True),
                Field("phone", "string", pii=True),
                Field("address_line", "string", pii=True),
                Field("postcode", "string", pii=True),
                Field("city", "string"),
                Field("date_of_birth", "date", pii=True),
                Field("updated_at", "timestamp"),
            ),
        ),
        Contract(
            source="bureau",
            version=1,
            kind="snapshot",
            key="bureau_record_id",
            event_time="snapshot_time",
            doc="Credit-bureau attributes per customer (daily extract).",
            fields=(
                *_common(
                    "bureau_record_id",
                    "customer_number + extract date",
                    _SNAPSHOT_TIME,
                    time_field="snapshot_time",
                ),
                Field("customer_number", "string", required=True),
                Field("bureau_score", "int", required=True, doc="300..850"),
                Field("total_debt", "double"),
                Field("credit_utilisation", "double", doc="0..1+ across all lenders"),
                Field("delinquencies_12m", "int"),
                Field("inquiries_6m", "int"),
            ),
        ),
    )
}

STREAM_SOURCES: tuple[str, ...] = tuple(s for s, c in CONTRACTS.items() if c.kind == "stream")
SNAPSHOT_SOURCES: tuple[str, ...] = tuple(s for s, c in CONTRACTS.items() if c.kind == "snapshot")

# Fault labels the simulator writes into truth/records and the pipeline must account for.
FAULT_TYPES: tuple[str, ...] = (
    "duplicate",
    "late",
    "out_of_order",
    "malformed_json",
    "missing_required",
    "wrong_type",
    "unknown_customer",
    "schema_drift",
)
# A drifted record carries this field, unknown to contract version 1 (kept as rescued data).
SCHEMA_DRIFT_FIELD = "app_version"


def get_contract(source: str) -> Contract:
    try:
        return CONTRACTS[source]
    except KeyError:
        raise KeyError(f"unknown source {source!r}; known: {', '.join(CONTRACTS)}") from None
