"""Simulation settings: population size, period, seed and data-fault rates.

Settings are validated here, once, so every bad value a user can pass ends as one clear
``InputError`` naming the setting.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field

from pipelines.errors import InputError

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MAX_LATE_MS = 6 * HOUR_MS


@dataclass(frozen=True)
class FaultRates:
    """Per-record probabilities of each data fault; faults are mutually exclusive per record.

    Stream rates apply per generated event (``duplicate`` adds an extra copy of a clean event);
    ``snapshot_*`` rates apply per changed snapshot record after an entity's first extract.
    ``schema_drift_at`` is the fraction of the run after which ``digital`` events carry the
    drift field (``None``: no drift).
    """

    duplicate: float = 0.01
    late: float = 0.01
    out_of_order: float = 0.01
    malformed_json: float = 0.002
    missing_required: float = 0.003
    wrong_type: float = 0.003
    unknown_customer: float = 0.002
    snapshot_malformed_json: float = 0.002
    snapshot_missing_required: float = 0.002
    schema_drift_at: float | None = 0.5

    @classmethod
    def preset(cls, name: str) -> FaultRates:
        """The named preset: ``default`` (realistic rates) or ``none`` (clean data)."""
        if name == "default":
            return cls()
        if name == "none":
            rates = {f.name: 0.0 for f in dataclasses.fields(cls) if f.name != "schema_drift_at"}
            return cls(**rates, schema_drift_at=None)
        raise InputError(f"unknown fault preset {name!r}; choose from: default, none")

    def stream_rates(self) -> dict[str, float]:
        """Per-event rates of the stream faults, in the order they are assigned."""
        return {
            "duplicate": self.duplicate,
            "late": self.late,
            "out_of_order": self.out_of_order,
            "malformed_json": self.malformed_json,
            "missing_required": self.missing_required,
            "wrong_type": self.wrong_type,
            "unknown_customer": self.unknown_customer,
        }

    def any(self) -> bool:
        return any(v for v in self.stream_rates().values()) or bool(
            self.snapshot_malformed_json or self.snapshot_missing_required or self.schema_drift_at is not None
        )


@dataclass(frozen=True)
class SimConfig:
    """What to simulate. Defaults run in seconds and are deterministic (fixed seed and start)."""

    customers: int = 2000
    days: int = 30
    seed: int = 42
    start: dt.date = dt.date(2026, 1, 1)
    faults: FaultRates = field(default_factory=FaultRates)
    campaign_rate: float = 0.03  # share of active customers the bank's own campaigns contact per day
    label_days: int | None = None  # labelling window at the end of the run (default: days // 4, 1..7)
    # Multipliers on every persona's daily intent to apply for products and on the churn hazard:
    # a small bank with busier demand, so that model tests see enough openings in a few weeks.
    demand_scale: float = 1.0
    churn_scale: float = 1.0
    # share of contact-centre interactions whose agent picks a wrong topic (wrap-up code)
    topic_error_rate: float = 0.15

    def __post_init__(self) -> None:
        if self.customers < 1:
            raise InputError(f"--customers must be a positive number, got {self.customers}")
        if self.customers > 2_000_000:
            raise InputError(f"--customers must be at most 2,000,000, got {self.customers}")
        if self.days < 1:
            raise InputError(f"--days must be a positive number, got {self.days}")
        if self.days > 3660:
            raise InputError(f"--days must be at most 3660, got {self.days}")
        if self.seed < 0:
            raise InputError(f"--seed must be zero or positive, got {self.seed}")
        for name, rate in self.faults.stream_rates().items():
            if not 0.0 <= rate <= 0.2:
                raise InputError(f"fault rate {name!r} must be within 0..0.2, got {rate}")
        total = sum(self.faults.stream_rates().values())
        if total > 0.5:
            raise InputError(f"fault rates add up to {total:.2f}; at most 0.5 of events may be faulty")
        drift = self.faults.schema_drift_at
        if drift is not None and not 0.0 <= drift <= 1.0:
            raise InputError(f"schema_drift_at must be within 0..1, got {drift}")
        for name in ("demand_scale", "churn_scale"):
            if not 0.0 <= getattr(self, name) <= 50.0:
                raise InputError(f"{name} must be within 0..50, got {getattr(self, name)}")
        if not 0.0 <= self.topic_error_rate <= 1.0:
            raise InputError(f"topic_error_rate must be within 0..1, got {self.topic_error_rate}")
        if self.label_days is not None and not 1 <= self.label_days <= self.days:
            raise InputError(f"label_days must be within 1..{self.days}, got {self.label_days}")

    @property
    def start_ms(self) -> int:
        """Epoch milliseconds (UTC) of the first simulated day's midnight."""
        return (self.start - dt.date(1970, 1, 1)).days * DAY_MS

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.days * DAY_MS

    @property
    def start_day(self) -> int:
        """Days since 1970-01-01 of the first simulated day."""
        return (self.start - dt.date(1970, 1, 1)).days

    @property
    def label_window(self) -> int:
        """Number of days at the end of the run whose outcomes are the labels."""
        return self.label_days if self.label_days is not None else max(1, min(7, self.days // 4))

    @property
    def drift_ms(self) -> int | None:
        """Event time from which ``digital`` events carry the drift field."""
        at = self.faults.schema_drift_at
        if at is None:
            return None
        return self.start_ms + int(round(at * self.days)) * DAY_MS
