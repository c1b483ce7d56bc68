"""The closed loop: live days of a simulated bank, decided as they stream in, answered by its truth.

The demo (and anyone measuring a policy) holds back the last days of a generated bank, lands the
rest as history, builds and trains on it, then plays the held days one at a time:

1. the day's landing files are released (moved back into the landing folder);
2. ingest streams them through bronze / silver / gold while the decision query
   (:func:`pipelines.nba.decide.start_decision_stream`, acting only on events from the first
   live day on) decides concurrently, in the same Spark session, as a deployment would;
3. the day's decisions are valued under the simulator's true response model next to the
   reference policies (random, static rules, the catalog's default ranking, the oracle), each
   choosing among exactly the contacts the bank's rules allowed at the same decisions; and,
   apart, next to the unrestricted reference policies at the moments the learned policy
   contacted (what the rules cost). Then the contacts are answered: the simulator samples impressions, clicks,
   acceptances, dismissals and complaints and lands them as ``offer_responses`` files, which the
   next day's ingest takes in, so contact history, cool-downs and the bandit learn from them.

Afterwards every contact is audited: consent against the simulator's truth at the decision's
moment, and the contact policies re-checked independently of the funnel from what the decider
could have known (contacts decided earlier, responses ingested before the decision was made).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipelines.config import Config, ContactPolicyConfig
from pipelines.errors import InputError
from pipelines.tables import Tables

REFERENCE_POLICIES = ("random", "static_rules", "oracle")
SCOPE_TITLES = {  # how the policies are compared (pipelines.nba.closed_loop._policy_values)
    "within_rules": (
        "policy value per opportunity, within the bank's rules: {n:,} model-group decisions where the "
        "rules allowed a contact, every policy choosing among those same allowed contacts "
        "(simulator's true model):"
    ),
    "no_rules": (
        "without the rules: the {n:,} moments the learned policy contacted, reference policies "
        "free of suitability and contact policies (what the rules cost):"
    ),
}
RESPONSE_PREFIX = "loop-"  # closed-loop response files never take a generated file's name


# ---------------------------------------------------------------------------- landing by day


def hold_back(landing: Path, held: Path, first_day: str) -> int:
    """Move every landing file dated ``first_day`` or later to ``held/<source>/``; how many moved.

    Landing file names start with their delivery date (``2026-01-31T08-00_000123.jsonl`` or
    ``2026-01-31.jsonl`` for a snapshot), so a name comparison splits history from live days.
    """
    moved = 0
    for path in sorted(landing.glob("*/*.jsonl")):
        if path.name[:10] >= first_day:
            target = held / path.parent.name
            target.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), target / path.name)
            moved += 1
    return moved


def release(held: Path, landing: Path, day: str) -> int:
    """Move the held files of ``day`` back into the landing folder; how many moved."""
    moved = 0
    for path in sorted(held.glob(f"*/{day}*.jsonl")):
        target = landing / path.parent.name / path.name
        if target.exists():
            raise InputError(f"cannot release {path}: {target} already exists in the landing folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), target)
        moved += 1
    return moved


def held_days(held: Path) -> list[str]:
    """The dates of the held files, in order."""
    return sorted({p.name[:10] for p in held.glob("*/*.jsonl")})


# ------------------------------------------------------------------------------------- report


@dataclass
class DayResult:
    day: str
    files: int
    decisions: int
    contacts: int
    seconds: float


@dataclass
class LoopReport:
    """What the closed loop measured; every figure is computed, none assumed."""

    days: list[DayResult]
    decisions: pd.DataFrame  # one row per decision: policy, contact or not, latency
    contacts: pd.DataFrame  # chosen contacting actions with their sampled responses
    values: (
        pd.DataFrame
    )  # policy -> opportunities ("decisions"), value, accepts, complaints, consent violations
    violations: pd.DataFrame  # contact-policy audit findings (rule, customer, decision, detail)
    decide_seconds: float  # time the decision query spent in micro-batches that had input
    plot: Path | None = None
    notes: list[str] = field(default_factory=list)

    def latency(self, column: str) -> tuple[float, float]:
        seconds = self.decisions[column].dropna().to_numpy()
        if not len(seconds):
            return float("nan"), float("nan")
        return float(np.percentile(seconds, 50)), float(np.percentile(seconds, 99))

    def acceptance(self) -> pd.DataFrame:
        """Contacts and acceptances per group (model / control), from the sampled responses."""
        if self.contacts.empty:
            return pd.DataFrame(columns=["policy", "contacts", "accepted", "rate"])
        out = self.contacts.groupby("policy").agg(contacts=("accepted", "size"), accepted=("accepted", "sum"))
        out["rate"] = out["accepted"] / out["contacts"]
        return out.reset_index()

    def lines(self) -> list[str]:
        n = len(self.decisions)
        p50, p99 = self.latency("silver_to_decision_s")
        l50, l99 = self.latency("landing_to_decision_s")
        rate = n / self.decide_seconds if self.decide_seconds > 0 else float("nan")
        out = [
            f"closed loop: {len(self.days)} live day(s), {n:,} decisions, {len(self.contacts):,} contacts",
            f"  latency silver row -> decision:   p50 {p50:.1f} s, p99 {p99:.1f} s",
            f"  latency file landed -> decision:  p50 {l50:.1f} s, p99 {l99:.1f} s "
            "(a whole day's files land at once; ingest stages them source by source)",
            f"  decisions per second of decision-query time: {rate:,.1f} "
            f"({n:,} in {self.decide_seconds:,.1f} s of micro-batches)",
        ]
        for row in self.acceptance().to_dict("records"):
            out.append(
                f"  {row['policy']:<8} group: {row['accepted']:,} of {row['contacts']:,} contacts accepted "
                f"({row['rate']:.1%})"
            )
        for scope, title in SCOPE_TITLES.items():
            rows = self.values[self.values["scope"] == scope]
            if rows.empty:
                continue
            out.append(f"  {title.format(n=int(rows['decisions'].max()))}")
            for row in rows.to_dict("records"):
                out.append(
                    f"    {row['policy']:<13} {row['value_per_opportunity']:>8.2f} per opportunity  "
                    f"(expected accepts {row['expected_accepts']:,.1f}, "
                    f"complaints {row['expected_complaints']:,.1f}, "
                    f"consent violations {row['consent_violations']})"
                )
        mine = self.values[(self.values["policy"] == "learned") & (self.values["scope"] == "no_rules")]
        consent = int(mine["consent_violations"].sum())
        out.append(f"  consent violations (truth at decision time): {consent}")
        out.append(f"  contact-policy violations (independent audit): {len(self.violations)}")
        for row in self.violations.head(5).to_dict("records"):
            out.append(f"    {row['rule']}: {row['customer_number']} {row['decision_id']} {row['detail']}")
        out.extend(f"  {note}" for note in self.notes)
        if self.plot is not None:
            out.append(f"  plot: {self.plot}")
        return out


# ---------------------------------------------------------------------------------- the loop


def run_closed_loop(
    spark: SparkSession,
    cfg: Config,
    tables: Tables,
    *,
    held: Path,
    days: list[str],
    trigger_interval: str = "1 second",
    progress: Callable[[str], None] = print,
) -> LoopReport:
    """Play ``days`` from ``held`` through ingest and the decision stream, answering every contact."""
    from pipelines.lakehouse import ingest
    from pipelines.nba.catalog import load_catalog
    from pipelines.nba.decide import start_decision_stream
    from pipelines.sources.simulator.closed_loop import World, expected_value
    from pipelines.sources.simulator.writers import FileWriter

    if not days:
        raise InputError(f"no held-back days in {held} to play")
    home = cfg.paths.home
    world = World.load(home)
    since = datetime.fromisoformat(days[0]).replace(tzinfo=UTC)
    checkpoint = str(cfg.paths.checkpoints / "gold" / "next_best_actions")
    quiet: Callable[[str], None] = lambda _m: None  # noqa: E731 - per-batch lines would drown the demo
    query = start_decision_stream(
        spark, cfg, tables, checkpoint, ingest.every(trigger_interval), quiet, since=since
    )
    writer = FileWriter(home, prefix=RESPONSE_PREFIX)
    default_rank = {a.action_id: a.default_rank for a in load_catalog(cfg)}
    results: list[DayResult] = []
    decisions: list[pd.DataFrame] = []
    contacts: list[pd.DataFrame] = []
    values: list[pd.DataFrame] = []
    busy: dict[int, float] = {}  # batch id -> seconds; recentProgress keeps only the latest updates
    try:
        for day in days:
            started = time.time()
            files = release(held, cfg.paths.landing, day)
            ingest.run(spark, cfg, until_idle=True, tables=tables, progress=quiet)
            query.processAllAvailable()
            busy.update(_busy_seconds(query))
            if query.exception() is not None:
                raise InputError(f"the decision query failed: {query.exception()}")
            chosen = _chosen_since(spark, tables, started)
            day_decisions = _silver_latency(spark, tables, _decision_rows(chosen, started), started)
            day_contacts = chosen[chosen["action_id"] != "no_action"].copy()
            model = day_contacts[day_contacts["policy"] == "model"]
            moments = day_decisions[day_decisions["decision_id"].isin(model["decision_id"])]
            values.append(
                _policy_values(
                    world,
                    moments,
                    model,
                    expected_value,
                    options=_options_since(spark, tables, started),
                    default_rank=default_rank,
                    seed=len(results),
                )
            )
            answered = _respond(world, day_contacts, writer)
            decisions.append(day_decisions)
            contacts.append(answered)
            seconds = time.time() - started
            results.append(DayResult(day, files, len(day_decisions), len(day_contacts), seconds))
            progress(
                f"live day {day}: {files} files landed, {len(day_decisions):,} decisions, "
                f"{len(day_contacts):,} contacts answered by the simulator ({seconds:.0f} s)"
            )
        # the last day's responses flow in too: contact history and the bandit see them
        ingest.run(spark, cfg, until_idle=True, tables=tables, progress=quiet)
        query.processAllAvailable()
        busy.update(_busy_seconds(query))
    finally:
        if query.isActive:
            query.stop()
    all_decisions = pd.concat(decisions, ignore_index=True) if decisions else pd.DataFrame()
    all_contacts = pd.concat(contacts, ignore_index=True) if contacts else pd.DataFrame()
    summed = (
        pd.concat(values, ignore_index=True).groupby(["scope", "policy"], sort=False).sum(numeric_only=True)
    )
    summed["value_per_opportunity"] = summed["value"] / summed["decisions"].clip(lower=1)
    report = LoopReport(
        days=results,
        decisions=all_decisions,
        contacts=all_contacts,
        values=summed.reset_index(),
        violations=audit_contact_policy(spark, tables, cfg.decisioning.contact_policy, since),
        decide_seconds=sum(busy.values()),
    )
    return report


def _chosen_since(spark: SparkSession, tables: Tables, started: float) -> pd.DataFrame:
    """This day's chosen rows of the decision log (one per decision x channel, no_action included)."""
    mark = datetime.fromtimestamp(started, UTC)
    return (
        spark.table(tables.gold("decision_log"))
        .where((F.col("stage") == "chosen") & (F.col("processed_at") >= F.lit(mark)))
        .select(
            "decision_id", "customer_number", "action_id", "channel", "policy", "decided_at", "processed_at"
        )
        .toPandas()
    )


def _options_since(spark: SparkSession, tables: Tables, started: float) -> pd.DataFrame:
    """Every contact the rules allowed at this day's model-policy decisions: the candidates that
    passed eligibility, suitability, consent and the contact policies (chosen, ranked, or removed
    only by arbitration because another was chosen)."""
    mark = datetime.fromtimestamp(started, UTC)
    return (
        spark.table(tables.gold("decision_log"))
        .where(
            F.col("stage").isin("chosen", "ranked", "arbitration")
            & (F.col("policy") == "model")
            & (F.col("action_id") != "no_action")
            & (F.col("processed_at") >= F.lit(mark))
        )
        .select("decision_id", "customer_number", "action_id", "channel", "decided_at")
        .toPandas()
    )


def _decision_rows(chosen: pd.DataFrame, released: float) -> pd.DataFrame:
    """One row per decision with its latencies (a decision's channels share its moment)."""
    if chosen.empty:
        return pd.DataFrame(
            columns=["decision_id", "customer_number", "policy", "decided_at", "processed_at", "contact"]
        )
    chosen = chosen.assign(contact=chosen["action_id"] != "no_action")
    rows = chosen.groupby("decision_id", as_index=False).agg(
        customer_number=("customer_number", "first"),
        policy=("policy", "first"),
        decided_at=("decided_at", "first"),
        processed_at=("processed_at", "first"),
        contact=("contact", "any"),
    )
    processed = pd.to_datetime(rows["processed_at"], utc=True)
    rows["landing_to_decision_s"] = (
        processed - pd.Timestamp(released, unit="s", tz="UTC")
    ).dt.total_seconds()
    return rows


def _silver_latency(
    spark: SparkSession, tables: Tables, decisions: pd.DataFrame, started: float
) -> pd.DataFrame:
    """``silver_to_decision_s`` from the served rows: processed_at - triggered_at (the triggers'
    ingestion into silver). A decision whose served rows were compacted away (a later one
    replaced them) has none left to measure and stays NaN."""
    mark = datetime.fromtimestamp(started, UTC)
    served = (
        spark.table(tables.gold("served_actions"))
        .where(F.col("processed_at") >= F.lit(mark))
        .groupBy("decision_id")
        .agg(F.min("triggered_at").alias("triggered_at"), F.max("processed_at").alias("served_at"))
        .toPandas()
    )
    out = decisions.merge(served, on="decision_id", how="left")
    out["silver_to_decision_s"] = (
        pd.to_datetime(out["served_at"], utc=True) - pd.to_datetime(out["triggered_at"], utc=True)
    ).dt.total_seconds()
    return out.drop(columns=["triggered_at", "served_at"])


def _busy_seconds(query: Any) -> dict[int, float]:
    """Seconds per micro-batch that had input rows, by batch id, from the query's recent progress."""
    return {
        int(p.batchId): p.durationMs.get("triggerExecution", 0) / 1000.0
        for p in query.recentProgress
        if p.numInputRows
    }


# ------------------------------------------------------------------------ valuing and answering


def _policy_values(
    world: Any,
    decisions: pd.DataFrame,
    contacts: pd.DataFrame,
    expected_value: Callable[..., Any],
    *,
    options: pd.DataFrame | None = None,
    default_rank: dict[str, int] | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """The learned policy's contacts and the reference policies' on the same opportunities, twice.

    ``within_rules`` (with ``options``): every model-group decision at which the bank's rules
    (eligibility, suitability, consent, contact policies) allowed at least one contact; each
    reference policy picks among exactly the contacts the learned policy could pick from
    (:func:`policies_within_rules`). This compares the choices.

    ``no_rules``: the moments the learned policy contacted a customer; the reference policies
    pick from everything (the simulator's own policies: consent respected by static rules and
    the oracle, no suitability, no contact policy). This shows what the bank's rules cost.
    """
    from pipelines.sources.simulator.closed_loop import (
        oracle_policy,
        policies_within_rules,
        random_policy,
        static_rule_policy,
    )

    learned = _as_simulator_decisions(contacts)
    scoped: list[tuple[str, int, dict[str, pd.DataFrame]]] = []
    if options is not None:
        within = policies_within_rules(world, options, default_rank=default_rank, seed=seed)
        opportunities = int(options["decision_id"].nunique())
        mine = learned[learned["decision_id"].isin(options["decision_id"])]
        scoped.append(("within_rules", opportunities, {"learned": mine, **within}))
    frames: dict[str, pd.DataFrame] = {"learned": learned}
    if len(decisions):
        hours = pd.to_datetime(decisions["decided_at"], utc=True).dt.floor("h")
        refs: dict[str, list[pd.DataFrame]] = {p: [] for p in REFERENCE_POLICIES}
        for i, (hour, group) in enumerate(decisions.groupby(hours, sort=True)):
            customers = group["customer_number"].astype(str).tolist()
            refs["random"].append(random_policy(world, at=hour, customers=customers, seed=i))
            refs["static_rules"].append(static_rule_policy(world, at=hour, customers=customers))
            refs["oracle"].append(oracle_policy(world, at=hour, customers=customers))
        for name, parts in refs.items():
            frame = pd.concat(parts, ignore_index=True)
            frame["decision_id"] = [f"{name}:{i}" for i in range(len(frame))]
            frames[name] = frame
    scoped.append(("no_rules", len(decisions), frames))
    rows = []
    for scope, opportunities, by_policy in scoped:
        for name, frame in by_policy.items():
            value = expected_value(world, frame) if len(frame) else None
            rows.append(
                {
                    "scope": scope,
                    "policy": name,
                    "decisions": opportunities,
                    "value": value.value if value else 0.0,
                    "expected_accepts": value.expected_accepts if value else 0.0,
                    "expected_complaints": value.expected_complaints if value else 0.0,
                    "consent_violations": value.violations if value else 0,
                }
            )
    return pd.DataFrame(rows)


def _as_simulator_decisions(contacts: pd.DataFrame) -> pd.DataFrame:
    columns = ["customer_number", "action_id", "channel", "decided_at", "decision_id"]
    if contacts.empty:
        return pd.DataFrame(columns=columns)
    frame = contacts[columns].copy()
    frame["decided_at"] = pd.to_datetime(frame["decided_at"], utc=True)
    return frame


def _respond(world: Any, contacts: pd.DataFrame, writer: Any) -> pd.DataFrame:
    """Sample the simulator's responses to the day's contacts; they land as offer_responses files.

    A decision with several contacting actions (``max_actions_per_decision`` > 1) is answered one
    action at a time, since the simulator takes one action per decision id.
    """
    from pipelines.sources.simulator.closed_loop import respond

    if contacts.empty:
        return contacts.assign(accepted=pd.Series(dtype=bool), complained=pd.Series(dtype=bool))
    frame = contacts.copy()
    frame["_slot"] = frame.groupby("decision_id").cumcount()
    events = []
    for _, part in frame.groupby("_slot"):
        events.append(respond(world, _as_simulator_decisions(part), writer=writer))
    answered = pd.concat(events, ignore_index=True)
    key = ["decision_id", "action_id", "channel"]
    responses = answered.groupby(key)["response"].agg(set).reset_index()
    out = frame.drop(columns="_slot").merge(responses, on=key, how="left")
    seen = out["response"].apply(lambda r: r if isinstance(r, set) else set())
    out["accepted"] = seen.apply(lambda r: "accept" in r)
    out["complained"] = seen.apply(lambda r: "complaint" in r)
    return out.drop(columns="response")


# ------------------------------------------------------------------------------- policy audit


def audit_contact_policy(
    spark: SparkSession, tables: Tables, policy: ContactPolicyConfig, since: datetime
) -> pd.DataFrame:
    """Contacts decided since ``since`` that break a contact policy, given what was known then.

    Re-checked here without the funnel's code: channel caps, repeats of an action, the cool-downs
    after a dismissal and after a complaint. "Known" goes by processing, not by event time:
    a contact counts for every decision processed after it (whatever their clocks), a response
    once it was ingested before the decision was processed. Windows start N days before the
    decision's clock and have no end. The cool-down after an ignored impression and the checks
    within one decision (no repeated or mutually exclusive actions) are the funnel tests' job.
    """
    columns = ["rule", "customer_number", "decision_id", "detail"]
    chosen: pd.DataFrame = (
        spark.table(tables.gold("decision_log"))
        .where(
            (F.col("stage") == "chosen")
            & (F.col("action_id") != "no_action")
            & (F.col("decided_at") >= F.lit(since))
        )
        .select("decision_id", "customer_number", "action_id", "channel", "decided_at", "processed_at")
        .toPandas()
    )
    if chosen.empty:
        return pd.DataFrame(columns=columns)
    customers = spark.createDataFrame(chosen[["customer_number"]].drop_duplicates())
    responses: pd.DataFrame = (
        spark.table(tables.silver("offer_responses"))
        .join(F.broadcast(customers), "customer_number", "left_semi")
        .where(F.col("response").isin("dismiss", "complaint"))
        .select("customer_number", "action_id", "channel", "response", "event_time", "_ingested_at")
        .toPandas()
    )
    found: list[dict[str, str]] = []
    by_customer = dict(tuple(responses.groupby("customer_number"))) if len(responses) else {}
    for customer, mine in chosen.groupby("customer_number"):
        answers = by_customer.get(customer)
        for _, row in mine.iterrows():
            now = row["decided_at"]
            earlier = mine[mine["processed_at"] < row["processed_at"]]
            cap = policy.channel_caps.get(row["channel"])
            if cap is not None:
                window = earlier[
                    (earlier["channel"] == row["channel"])
                    & (earlier["decided_at"] > now - pd.Timedelta(days=cap.period_days))
                ]
                if len(window) >= cap.max_contacts:
                    found.append(
                        _finding("channel_cap", row, f"{len(window)} earlier {row['channel']} contacts")
                    )
            if policy.repeat_days:
                again = earlier[
                    (earlier["action_id"] == row["action_id"])
                    & (earlier["decided_at"] > now - pd.Timedelta(days=policy.repeat_days))
                ]
                if len(again):
                    found.append(
                        _finding(
                            "repeat_days", row, f"{row['action_id']} sent at {again['decided_at'].max()}"
                        )
                    )
            if answers is None:
                continue
            known = answers[answers["_ingested_at"] < row["processed_at"]]
            dismissed = known[
                (known["response"] == "dismiss")
                & (known["action_id"] == row["action_id"])
                & (known["event_time"] > now - pd.Timedelta(days=policy.cooldown_after_dismiss_days))
            ]
            if policy.cooldown_after_dismiss_days and len(dismissed):
                found.append(
                    _finding("cooldown_after_dismiss", row, f"dismissed at {dismissed['event_time'].max()}")
                )
            complained = known[
                (known["response"] == "complaint")
                & (known["event_time"] > now - pd.Timedelta(days=policy.cooldown_after_complaint_days))
            ]
            if policy.cooldown_after_complaint_days and len(complained):
                found.append(
                    _finding(
                        "cooldown_after_complaint", row, f"complaint at {complained['event_time'].max()}"
                    )
                )
    return pd.DataFrame(found, columns=columns)


def _finding(rule: str, row: Any, detail: str) -> dict[str, str]:
    return {
        "rule": rule,
        "customer_number": str(row["customer_number"]),
        "decision_id": str(row["decision_id"]),
        "detail": f"{row['action_id']} on {row['channel']} at {row['decided_at']}: {detail}",
    }


# ------------------------------------------------------------------------------------- plot


def plot_policy_values(report: LoopReport, path: Path) -> Path:
    """Bars of each policy's expected value per opportunity: within the bank's rules (the same
    allowed contacts for every policy) and, beside it, without them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {
        "random": "#9e9e9e",
        "static_rules": "#8d6e63",
        "default_rank": "#bcaaa4",
        "learned": "#1e88e5",
        "oracle": "#43a047",
    }
    scopes = [s for s in SCOPE_TITLES if (report.values["scope"] == s).any()]
    fig, axes = plt.subplots(1, max(len(scopes), 1), figsize=(6 * max(len(scopes), 1), 4), squeeze=False)
    days = f"{report.days[0].day} .. {report.days[-1].day}" if report.days else "no days"
    for ax, scope in zip(axes[0], scopes, strict=False):
        rows = report.values[report.values["scope"] == scope].set_index("policy")
        order = [p for p in colours if p in rows.index]
        values = rows.loc[order, "value_per_opportunity"].fillna(0.0).to_numpy()
        bars = ax.bar(order, values, color=[colours[p] for p in order])
        ax.bar_label(bars, fmt="%.2f")
        ax.set_ylabel("expected value per opportunity")
        what = "within the rules" if scope == "within_rules" else "without the rules"
        ax.set_title(f"{what}: {int(rows['decisions'].max()):,} opportunities ({days})", fontsize=10)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
