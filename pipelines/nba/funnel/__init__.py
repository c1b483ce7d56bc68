"""The decision funnel: from trigger events to one explained decision per customer.

The streaming jobs (``pipelines/nba/decide.py``, ``pipelines/nba/live.py``) call :func:`run_funnel`
from ``foreachBatch`` on a small micro-batch of decision requests, with the customers' current
consent, contact history and active serving rows, as frames. It runs :func:`decide_one`, the
funnel for one customer without frames, per customer; the decision API
(``pipelines/serving/decisions.py``) runs the same :func:`decide_one` per request. Everything here
is deterministic, so the same micro-batch replayed after a crash gives the same decision ids and,
with a seeded chooser, the same decisions.

Every candidate (an action on one of its channels) goes through the stages in this order, and the
first rule that removes it is logged with its stage, rule name and plain words::

    customer        the customer is not active: no decision at all
    validity        the action's campaign window
    eligibility     the action's eligibility rules (conf/actions.yml)
    suitability     the action's suitability rules (e.g. no credit to the credit-stressed)
    consent         the contact's consent, read at decision time (no row = not granted)
    contact_policy  channel caps, cool-downs after a dismissal / complaint / ignored contact,
                    no repeat within repeat_days, mutual exclusion with actions being served
    arbitration     priority = propensity x value x business_lever x context weight; channels
                    choose in order of their best priority x the chooser's expected lift, each
                    picking one; a decision never holds one action on two channels, two
                    mutually exclusive actions, or more than max_actions_per_decision contacts

What survives arbitration is logged ``chosen`` or ``ranked`` (not chosen), with the chooser's
probability: the log holds every candidate of every decision exactly once, which is what an
auditor and off-policy evaluation need. ``no_action`` is a candidate on every channel, with
priority 0, needing no consent: a channel where it wins gets no serving row.

A stable share of customers (``exploration.control_share``, by a hash of the customer number)
gets the default policy instead of the model's: the lowest ``default_rank`` among the surviving
candidates, through the same rules and policies, so the model's uplift can be measured.

The package, in the order a decision flows::

    requests        trigger rows -> one DecisionRequest per customer, decision ids, control group
    candidates      every action on each of its channels, and how far it got (STAGES)
    rules           the customer, validity, eligibility, suitability and consent stages
    history         a customer's contact history (contacts made, answers to them)
    contact_policy  the contact-policy stage
    arbitration     priorities, channel order, choosers (greedy; Thompson in pipelines.nba.bandit)
    records         decision rows and log rows, as dicts and as frames
    core            decide_one: the stages for one customer
    batch           run_funnel: frames of a micro-batch in and out, decide_one per customer
"""

from pipelines.nba.funnel.arbitration import Chooser, greedy_chooser
from pipelines.nba.funnel.batch import FunnelResult, run_funnel
from pipelines.nba.funnel.candidates import STAGES
from pipelines.nba.funnel.contact_policy import ACTIVE_COLUMNS
from pipelines.nba.funnel.core import CustomerDecision, decide_one
from pipelines.nba.funnel.history import ANSWERS, CONTACT_COLUMNS, CONTACT_STARTS, ContactRow
from pipelines.nba.funnel.records import DECISION_COLUMNS, LOG_COLUMNS
from pipelines.nba.funnel.requests import (
    CONTEXT_COLUMNS,
    FEATURE_COLUMNS,
    REQUEST_COLUMNS,
    DecisionRequest,
    decision_id_for,
    in_control_group,
    request_decision_ids,
    request_for,
)
from pipelines.nba.funnel.rules import CONSENT_COLUMNS, ConsentKey

# The funnel's public API; the stages' building blocks are imported from their modules.
__all__ = [
    "ACTIVE_COLUMNS",
    "ANSWERS",
    "CONSENT_COLUMNS",
    "CONTACT_COLUMNS",
    "CONTACT_STARTS",
    "CONTEXT_COLUMNS",
    "DECISION_COLUMNS",
    "FEATURE_COLUMNS",
    "LOG_COLUMNS",
    "REQUEST_COLUMNS",
    "STAGES",
    "Chooser",
    "ConsentKey",
    "ContactRow",
    "CustomerDecision",
    "DecisionRequest",
    "FunnelResult",
    "decide_one",
    "decision_id_for",
    "greedy_chooser",
    "in_control_group",
    "request_decision_ids",
    "request_for",
    "run_funnel",
]
