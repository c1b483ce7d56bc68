"""The actions the simulator understands, with default values: one place for every action id.

A later action catalog in ``conf/`` uses the same ids; values are a bank's expected margin from
an accepted action, in the account currency.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.contracts import OFFER_CHANNELS, PRODUCTS


@dataclass(frozen=True)
class Action:
    """An action a policy can take for one customer."""

    action_id: str
    value: float
    product: str | None = None  # the product the action sells, if any
    credit: bool = False  # a credit offer (harmful to credit-stressed customers)
    contact: bool = True  # whether it contacts the customer (fatigue, consent)


ACTIONS: dict[str, Action] = {
    a.action_id: a
    for a in (
        Action("offer_credit_card", 180.0, "credit_card", credit=True),
        Action("offer_mortgage", 2500.0, "mortgage", credit=True),
        Action("offer_personal_loan", 350.0, "personal_loan", credit=True),
        Action("offer_savings", 80.0, "savings"),
        Action("offer_investments", 600.0, "investments"),
        Action("retention_call", 1500.0),
        Action("help_finish_application", 400.0),
        Action("no_action", 0.0, contact=False),
        # proactive service, answered when the customer says so (conf/actions.yml's `intent:` rules);
        # never picked by the simulated campaigns
        Action("card_security_callback", 2000.0),
        Action("retention_on_leaving", 1500.0),
    )
}
ACTION_IDS: tuple[str, ...] = tuple(ACTIONS)
# cost of one complaint (handling, redress, reputational)
COMPLAINT_COST = 250.0

ACTION_VALUE = np.array([ACTIONS[a].value for a in ACTION_IDS])
ACTION_PRODUCT = np.array(
    [PRODUCTS.index(ACTIONS[a].product) if ACTIONS[a].product else -1 for a in ACTION_IDS]
)
ACTION_CREDIT = np.array([ACTIONS[a].credit for a in ACTION_IDS])
ACTION_CONTACT = np.array([ACTIONS[a].contact for a in ACTION_IDS])
NO_ACTION = ACTION_IDS.index("no_action")
RETENTION = ACTION_IDS.index("retention_call")
# the actions a customer takes up as they would a retention call (at their retention probability)
RETENTION_LIKE = np.array([RETENTION, ACTION_IDS.index("retention_on_leaving")])
HELP_FINISH = ACTION_IDS.index("help_finish_application")
CHANNEL_IDS: tuple[str, ...] = OFFER_CHANNELS
