"""The action catalog: what the bank may do for a customer, and the rules that say when.

``conf/actions.yml`` is edited by the bank's marketers, not by engineers, so it holds data only:
each action's value, channels and a small declarative rule vocabulary (no Python, no SQL). The
rules are interpreted here, once, so that the funnel, the trace an auditor reads and the tests all
agree on what a rule means::

    holding: <product>          the customer holds the product
    not_holding: <product>      the customer does not hold it
    open_application: true      an open (unsubmitted) application, for the action's product if it
                                has one; ``false``: no such application
    intent: [compromised_card, lost_or_stolen_card]   a trigger of the decision is the customer
                                saying one of these (BANKING77's intents, read from what they
                                said in the contact centre or the app chat)
    min_score: {column: churn_risk, value: 0.3}           a model score of at least value
    min_feature: {column: current_account_balance, value: 0}   a feature of at least value
    max_feature: {column: card_utilisation, value: 0.9}   a feature below value

``min_*`` and ``max_feature`` bound a half-open interval (``value <= x`` and ``x < value``), so a
``min_feature`` and a ``max_feature`` on the same value split customers without overlap. A rule
whose column is null fails unless it says ``if_missing: pass`` (e.g. card utilisation is null for
a customer without a card, who is not credit-stressed). Each rule has a stable name, its kind and
column (``max_feature:card_utilisation``) unless it sets ``name:``; the decision log and trace use
it. Columns are limited to the decision context's features and scores: protected attributes (age,
gender, ...) cannot be named, so no rule can target or exclude customers by them.

Errors name the file and the dotted key at fault, like the main configuration::

    conf/actions.yml: actions.offer_mortgage.value: expected a number, got 'lots'
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

import numpy as np
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from pipelines.config import conf_dir, describe_validation_error, display_path, dotted_location, read_yaml
from pipelines.contracts import OFFER_CHANNELS, SCORED_PRODUCTS, OfferChannel, Product
from pipelines.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from pipelines.config import Config

NO_ACTION = "no_action"

ActionKind = Literal["offer", "service", "retention", "none"]
Purpose = Literal["marketing", "service", "none"]
# The model scores a rule may compare: churn_risk and propensity_<product> for every scored product
# (ml/score.py writes them). Built from the products, so a product added to the contracts is scored.
SCORE_COLUMNS: tuple[str, ...] = ("churn_risk", *(f"propensity_{p}" for p in SCORED_PRODUCTS))
# a Literal of computed values: pydantic validates rules against them (a type checker sees only str)
ScoreColumn = Literal[SCORE_COLUMNS]  # type: ignore[valid-type]
# Numeric gold features a rule may compare; protected attributes are deliberately absent.
FeatureColumn = Literal["current_account_balance", "card_utilisation", "failed_payments_7d", "complaints_7d"]
FEATURE_COLUMNS: tuple[str, ...] = get_args(FeatureColumn)

ActionId = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
# the decision-context entry holding the intents the request's triggers carried (a list)
TRIGGER_INTENTS = "trigger_intents"
RuleName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_:.]{0,80}$")]


def missing(value: Any) -> bool:
    """Null in any of the forms a pandas row carries it (None, NaN, NaT, pd.NA)."""
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN, NaT
    except (TypeError, ValueError):  # pd.NA
        return True


@dataclass(frozen=True)
class Verdict:
    """One rule's outcome for one customer, with the plain words the trace and the log show."""

    passed: bool
    detail: str


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Rule(_Strict):
    """A declarative condition on one customer's decision context."""

    kind: str
    name: RuleName | None = None

    @property
    def label(self) -> str:
        """The rule's stable name in the decision log and trace."""
        return self.name or self.default_name()

    @abstractmethod
    def default_name(self) -> str:
        """The name a rule of this kind gets in the log when conf/ gives it none."""

    def columns(self) -> tuple[str, ...]:
        """The decision-context columns the rule reads."""
        return ()

    @abstractmethod
    def evaluate(self, context: Mapping[str, Any], action: Action) -> Verdict:
        """Whether the rule passes for this customer and action, in plain words."""


class HoldingRule(_Rule):
    kind: Literal["holding"]
    holding: Product

    def default_name(self) -> str:
        return f"holding:{self.holding}"

    def columns(self) -> tuple[str, ...]:
        return (f"holds_{self.holding}",)

    def evaluate(self, context: Mapping[str, Any], action: Action) -> Verdict:
        held = context.get(f"holds_{self.holding}")
        if missing(held):
            return Verdict(False, f"whether the customer holds {self.holding} is unknown")
        return Verdict(bool(held), f"holds {self.holding}" if held else f"does not hold {self.holding}")


class NotHoldingRule(_Rule):
    kind: Literal["not_holding"]
    not_holding: Product

    def default_name(self) -> str:
        return f"not_holding:{self.not_holding}"

    def columns(self) -> tuple[str, ...]:
        return (f"holds_{self.not_holding}",)

    def evaluate(self, context: Mapping[str, Any], action: Action) -> Verdict:
        held = context.get(f"holds_{self.not_holding}")
        if missing(held):
            return Verdict(False, f"whether the customer holds {self.not_holding} is unknown")
        return Verdict(
            not held, f"already holds {self.not_holding}" if held else f"does not hold {self.not_holding}"
        )


class OpenApplicationRule(_Rule):
    """An open (unsubmitted) application: for the action's product if it has one, else any."""

    kind: Literal["open_application"]
    open_application: bool

    def default_name(self) -> str:
        return "open_application" if self.open_application else "no_open_application"

    def columns(self) -> tuple[str, ...]:
        return ("open_application_id", "open_application_product")

    def evaluate(self, context: Mapping[str, Any], action: Action) -> Verdict:
        app_id = context.get("open_application_id")
        app_product = context.get("open_application_product")
        has_app = not missing(app_id) and (action.product is None or app_product == action.product)
        what = f"open {action.product} application" if action.product else "open application"
        if has_app:
            step = context.get("open_application_last_step")
            at = "" if missing(step) else f", last step {step}"
            product = "" if action.product or missing(app_product) else f" for {app_product}"
            detail = f"{what} {app_id}{product}{at}"
        else:
            detail = f"no {what}"
        return Verdict(has_app == self.open_application, detail)


class IntentRule(_Rule):
    """The decision's triggers include the customer saying one of these intents (read by the text
    model from a contact-centre note or an app-chat message): proactive service, e.g. a
    card-security call-back right after "I think someone used my card"."""

    kind: Literal["intent"]
    intent: tuple[str, ...] = Field(min_length=1)

    @field_validator("intent", mode="before")
    @classmethod
    def _known(cls, value: Any) -> Any:
        from pipelines.sources import banking77

        said = [value] if isinstance(value, str) else value
        known = set(banking77.intents())
        unknown = [v for v in said if v not in known] if isinstance(said, list | tuple) else []
        if unknown:
            raise ValueError(
                f"unknown intent {unknown[0]!r}: one of BANKING77's 77 intents is expected "
                "(pipelines/sources/banking77/categories.json)"
            )
        return said

    def default_name(self) -> str:
        return "intent:" + "|".join(self.intent)

    def columns(self) -> tuple[str, ...]:
        return ()  # reads the triggers' intents, which every request gathers (none: an empty list)

    def evaluate(self, context: Mapping[str, Any], action: Action) -> Verdict:
        value = context.get(TRIGGER_INTENTS)
        said = [str(v) for v in value] if isinstance(value, list | tuple | np.ndarray) else []
        matched = [i for i in said if i in self.intent]
        if matched:
            return Verdict(True, f"the customer said {matched[0]}")
        heard = f"heard {', '.join(said)}" if said else "no intent among the triggers"
        return Verdict(False, f"{heard}; the action answers {', '.join(self.intent)}")


class _ThresholdRule(_Rule):
    column: str
    value: float
    if_missing: Literal["pass", "fail"] = "fail"

    def columns(self) -> tuple[str, ...]:
        return (self.column,)

    def default_name(self) -> str:
        return f"{self.kind}:{self.column}"

    @abstractmethod
    def _compare(self, x: float) -> bool:
        """Whether ``x`` is on the passing side of the threshold."""

    def evaluate(self, context: Mapping[str, Any], action: Action) -> Verdict:
        column = self.column
        value: Any = context.get(column)  # a number, or None/NaN/pd.NA: missing() tells
        if missing(value):
            ok = self.if_missing == "pass"
            return Verdict(ok, f"{column} is missing ({'passes' if ok else 'fails'} when missing)")
        x = float(value)
        ok = self._compare(x)
        relation = self._words(ok)
        return Verdict(ok, f"{column} {plain_number(x)} {relation} {plain_number(self.value)}")

    @abstractmethod
    def _words(self, ok: bool) -> str:
        """The relation to the threshold in words, for the trace."""


class MinScoreRule(_ThresholdRule):
    kind: Literal["min_score"]
    column: ScoreColumn

    def _compare(self, x: float) -> bool:
        return x >= self.value

    def _words(self, ok: bool) -> str:
        return "is at least" if ok else "is below"


class MinFeatureRule(_ThresholdRule):
    kind: Literal["min_feature"]
    column: FeatureColumn

    def _compare(self, x: float) -> bool:
        return x >= self.value

    def _words(self, ok: bool) -> str:
        return "is at least" if ok else "is below"


class MaxFeatureRule(_ThresholdRule):
    kind: Literal["max_feature"]
    column: FeatureColumn

    def _compare(self, x: float) -> bool:
        return x < self.value

    def _words(self, ok: bool) -> str:
        return "is below" if ok else "is at or above"


_SCALAR_KINDS = ("holding", "not_holding", "open_application", "intent")
_MAPPING_KINDS = ("min_score", "min_feature", "max_feature")
RULE_KINDS: tuple[str, ...] = (*_SCALAR_KINDS, *_MAPPING_KINDS)


def _tag_rule(value: Any) -> Any:
    """``{not_holding: savings}`` -> ``{kind: not_holding, not_holding: savings}`` for validation."""
    if not isinstance(value, dict):
        raise ValueError(f"expected a rule such as {{not_holding: savings}}, got {value!r}")
    keys = [k for k in value if k != "name"]
    if len(keys) != 1:
        raise ValueError(
            f"expected one rule kind per item ({', '.join(RULE_KINDS)}), "
            f"got {', '.join(map(str, keys)) or 'none'}"
        )
    kind = str(keys[0])
    if "age" in kind.split("_"):
        raise ValueError(f"{kind}: age is a protected attribute and may not be used in a rule")
    if kind not in RULE_KINDS:
        raise ValueError(f"unknown rule kind {kind!r}; known kinds: {', '.join(RULE_KINDS)}")
    body = value[kind]
    named = {"name": value["name"]} if "name" in value else {}
    if kind in _MAPPING_KINDS:
        if not isinstance(body, dict):
            raise ValueError(f"{kind}: expected a mapping such as {{column: ..., value: ...}}, got {body!r}")
        return {"kind": kind, **body, **named}
    return {"kind": kind, kind: body, **named}


Rule = Annotated[
    HoldingRule
    | NotHoldingRule
    | OpenApplicationRule
    | IntentRule
    | MinScoreRule
    | MinFeatureRule
    | MaxFeatureRule,
    Field(discriminator="kind"),
    BeforeValidator(_tag_rule),
]


class Action(_Strict):
    """One thing the bank may do for a customer, on some channels, when its rules allow.

    ``eligibility`` says whether the action makes sense for the customer (not offering what they
    hold); ``suitability`` whether it would be responsible (no credit to a credit-stressed
    customer). Both are the same rule vocabulary; the funnel runs them as separate stages so the
    log tells a product question from a conduct question. ``excludes`` is symmetric once loaded.
    """

    action_id: ActionId
    kind: ActionKind
    description: str = ""
    product: Product | None = None
    value: float = Field(ge=0)  # expected margin if accepted, in the account currency
    channels: tuple[OfferChannel, ...] = ()
    purpose: Purpose | None = None  # default: marketing for offers and retention, service, none
    business_lever: float = Field(1.0, ge=0)
    eligibility: tuple[Rule, ...] = ()
    suitability: tuple[Rule, ...] = ()
    excludes: tuple[ActionId, ...] = ()
    valid_from: date | None = None
    valid_to: date | None = None
    default_rank: int  # the default (control) policy picks the lowest surviving rank

    @property
    def contact(self) -> bool:
        """Whether the action contacts the customer (consent, contact policy); no_action does not."""
        return self.kind != "none"

    @property
    def contact_purpose(self) -> str:
        if self.purpose:
            return self.purpose
        return {"offer": "marketing", "retention": "marketing", "service": "service"}.get(self.kind, "none")

    def rules(self) -> Iterator[tuple[str, _Rule]]:
        """(stage, rule) for every rule, in the order the funnel runs them."""
        for rule in self.eligibility:
            yield "eligibility", rule
        for rule in self.suitability:
            yield "suitability", rule

    def validity(self, day: date) -> Verdict:
        """Whether the action is offered on ``day`` (its campaign window, both ends included)."""
        if self.valid_from and day < self.valid_from:
            return Verdict(False, f"valid from {self.valid_from}, decided on {day}")
        if self.valid_to and day > self.valid_to:
            return Verdict(False, f"valid until {self.valid_to}, decided on {day}")
        if self.valid_from or self.valid_to:
            return Verdict(True, f"valid {self.valid_from or '...'} to {self.valid_to or '...'}")
        return Verdict(True, "always valid")


class _CatalogFile(_Strict):
    shared: dict[str, Any] = Field(default_factory=dict)  # holds YAML anchors the actions reuse
    actions: dict[ActionId, Action]


@dataclass(frozen=True)
class ActionCatalog:
    """The validated actions, in default-rank order, and the questions the funnel asks of them."""

    actions: Mapping[str, Action]
    source: str = "conf/actions.yml"
    exclusions: frozenset[frozenset[str]] = field(default=frozenset(), repr=False)  # unordered pairs

    def __getitem__(self, action_id: str) -> Action:
        return self.actions[action_id]

    def __iter__(self) -> Iterator[Action]:
        return iter(self.actions.values())

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self.actions)

    @property
    def no_action(self) -> Action:
        return self.actions[NO_ACTION]

    @property
    def contacting(self) -> tuple[Action, ...]:
        """Every action that contacts the customer (all but no_action), in default-rank order."""
        return tuple(a for a in self.actions.values() if a.contact)

    @property
    def channels(self) -> tuple[str, ...]:
        """The channels any action uses, in contract order: no_action is a candidate on each."""
        used = {c for a in self.contacting for c in a.channels}
        return tuple(c for c in OFFER_CHANNELS if c in used)

    def excluded(self, a: str, b: str) -> bool:
        """Whether actions ``a`` and ``b`` may not be in one decision or served together."""
        return frozenset((a, b)) in self.exclusions

    def rule_columns(self) -> tuple[str, ...]:
        """Every decision-context column some rule reads (the funnel requires them)."""
        seen: dict[str, None] = {}
        for action in self:
            for _, rule in action.rules():
                for column in rule.columns():
                    seen.setdefault(column, None)
        return tuple(seen)


def _check_duplicates(node: yaml.Node, path: str, where: str) -> None:
    """Duplicate mapping keys (yaml keeps the last one silently): an error naming key and lines."""
    if isinstance(node, yaml.MappingNode):
        lines: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            dotted = f"{path}.{key}" if path else str(key)
            line = key_node.start_mark.line + 1
            if key in lines:
                what = "action id" if path == "actions" else "key"
                raise ConfigError(f"{where}: {dotted}: duplicate {what} (lines {lines[key]} and {line})")
            lines[key] = line
            _check_duplicates(value_node, dotted, where)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicates(item, f"{path}.{i}", where)


def _validation_message(exc: ValidationError, where: str) -> str:
    messages = []
    for error in exc.errors():
        parts = dotted_location(error["loc"]).split(".")
        # a tagged rule's location repeats its kind ("not_holding.not_holding"): say it once
        parts = [p for i, p in enumerate(parts) if i == 0 or p != parts[i - 1]]
        if error["type"] == "value_error":
            problem = str(error["msg"]).removeprefix("Value error, ")
        else:
            problem = describe_validation_error(error)
        messages.append(f"{where}: {'.'.join(parts)}: {problem}")
    return "; ".join(dict.fromkeys(messages))


def _cross_check(actions: dict[str, Action], where: str) -> None:
    """What one action cannot check alone: references, ranks, the mandatory no_action."""
    problems: list[str] = []
    if NO_ACTION not in actions:
        problems.append(f"{where}: actions.{NO_ACTION}: required: the funnel needs a do-nothing action")
    ranks: dict[int, str] = {}
    for action_id, action in actions.items():
        key = f"{where}: actions.{action_id}"
        if (action.kind == "none") != (action_id == NO_ACTION):
            problems.append(f"{key}.kind: only {NO_ACTION} has kind none, and it must, got {action.kind!r}")
        if action_id == NO_ACTION:
            for name in ("channels", "eligibility", "suitability", "excludes", "valid_from", "valid_to"):
                if getattr(action, name):
                    problems.append(f"{key}.{name}: {NO_ACTION} is always a candidate on every channel")
            if action.value != 0:
                problems.append(f"{key}.value: {NO_ACTION} has value 0, got {action.value!r}")
        else:
            if not action.channels:
                problems.append(f"{key}.channels: at least one channel is required")
            if len(set(action.channels)) != len(action.channels):
                problems.append(f"{key}.channels: a channel is listed twice")
            if action.kind == "offer" and action.product is None:
                problems.append(f"{key}.product: an offer names its product")
            if action.contact_purpose == "none":
                problems.append(f"{key}.purpose: a contacting action needs marketing or service")
        for i, other in enumerate(action.excludes):
            if other not in actions:
                problems.append(f"{key}.excludes.{i}: unknown action id {other!r}")
            elif other == action_id:
                problems.append(f"{key}.excludes.{i}: an action cannot exclude itself")
        if action.valid_from and action.valid_to and action.valid_to < action.valid_from:
            problems.append(f"{key}.valid_to: {action.valid_to} is before valid_from {action.valid_from}")
        if action.default_rank in ranks:
            problems.append(
                f"{key}.default_rank: {action.default_rank} is also the rank of {ranks[action.default_rank]}"
            )
        ranks.setdefault(action.default_rank, action_id)
        names = [rule.label for _, rule in action.rules()]
        for name in sorted({n for n in names if names.count(n) > 1}):
            problems.append(f"{key}: two rules are named {name!r}; set name: on one of them")
    if problems:
        raise ConfigError("; ".join(problems))


def catalog_from_data(data: Any, source: str = "actions") -> ActionCatalog:
    """Validate a parsed catalog (``{"actions": {...}}``); ``source`` names it in errors."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with an actions: section")
    raw = data.get("actions")
    if isinstance(raw, dict):  # the mapping key is the action id
        data = {
            **data,
            "actions": {
                k: {"action_id": k, **v} if isinstance(v, dict) and "action_id" not in v else v
                for k, v in raw.items()
            },
        }
    try:
        parsed = _CatalogFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_validation_message(exc, source)) from None
    actions = dict(parsed.actions)
    for action_id, action in actions.items():
        if action.action_id != action_id:
            raise ConfigError(
                f"{source}: actions.{action_id}.action_id: must equal its key, got {action.action_id!r}"
            )
    _cross_check(actions, source)

    pairs = frozenset(frozenset((a.action_id, b)) for a in actions.values() for b in a.excludes)
    symmetric = {
        action_id: action.model_copy(
            update={
                "excludes": tuple(
                    sorted(other for other in actions if frozenset((action_id, other)) in pairs)
                )
            }
        )
        for action_id, action in actions.items()
    }
    ordered = dict(sorted(symmetric.items(), key=lambda kv: (kv[1].default_rank, kv[0])))
    return ActionCatalog(actions=ordered, source=source, exclusions=pairs)


def load_catalog_file(path: str | Path) -> ActionCatalog:
    """Read and validate one catalog file; every error names the file and the dotted key."""
    path = Path(path)
    where = display_path(path)
    data = read_yaml(path)  # missing file, unreadable, bad YAML: already named
    _check_duplicates(yaml.compose(path.read_text(), Loader=yaml.SafeLoader), "", where)
    return catalog_from_data(data, where)


def load_catalog(cfg: Config) -> ActionCatalog:
    """The catalog ``decisioning.catalog`` names (relative to the conf folder unless absolute)."""
    path = Path(cfg.decisioning.catalog)
    return load_catalog_file(path if path.is_absolute() else conf_dir() / path)


def plain_number(x: float) -> str:
    """A number as a person reads it in a trace: 0.9, 3, 1,250.50."""
    if math.isfinite(x) and x == int(x) and abs(x) < 1e15:
        return f"{int(x):,}"
    return f"{x:,.2f}" if abs(x) >= 100 else f"{x:.4g}"
