"""The hidden personas and every behavioural parameter that depends on them.

Personas differ in what they do (channel mix, transaction mix, balances, products), not only in
their hidden label, so a segmentation built on behaviour can recover them. All parameters are
plain arrays indexed ``[persona]`` or ``[persona, category]`` so the simulator stays vectorised.
"""

from __future__ import annotations

import numpy as np

PERSONAS: tuple[str, ...] = (
    "young_digital_saver",
    "home_buying_family",
    "affluent_investor",
    "small_business_owner",
    "credit_stressed",
    "disengaged",
)
YOUNG, FAMILY, AFFLUENT, BUSINESS, STRESSED, DISENGAGED = range(6)

AGE_BANDS: tuple[str, ...] = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
AGE_BAND_RANGES: tuple[tuple[int, int], ...] = ((18, 24), (25, 34), (35, 44), (45, 54), (55, 64), (65, 85))


def _a(rows: list[list[float]], normalise: bool = False) -> np.ndarray:
    arr = np.asarray(rows, dtype=np.float64)
    if normalise:
        arr = arr / arr.sum(axis=-1, keepdims=True)
    return arr


SHARE = _a([[0.20, 0.17, 0.13, 0.14, 0.18, 0.18]], normalise=True)[0]

AGE_MIX = _a(
    [
        [0.45, 0.45, 0.08, 0.02, 0, 0],
        [0, 0.35, 0.45, 0.15, 0.05, 0],
        [0, 0.05, 0.15, 0.30, 0.30, 0.20],
        [0, 0.10, 0.30, 0.35, 0.20, 0.05],
        [0.15, 0.30, 0.25, 0.15, 0.10, 0.05],
        [0.10, 0.15, 0.15, 0.20, 0.20, 0.20],
    ],
    normalise=True,
)
# contracts.INCOME_BANDS order: low, lower_middle, middle, upper_middle, high
INCOME_MIX = _a(
    [
        [0.20, 0.40, 0.30, 0.10, 0],
        [0, 0.20, 0.45, 0.30, 0.05],
        [0, 0, 0.10, 0.35, 0.55],
        [0.05, 0.15, 0.30, 0.30, 0.20],
        [0.45, 0.35, 0.15, 0.05, 0],
        [0.30, 0.30, 0.25, 0.10, 0.05],
    ],
    normalise=True,
)
MONTHLY_INCOME = np.array([1400.0, 2100.0, 2900.0, 4200.0, 7500.0])
# contracts.REGIONS order: north, south, east, west, central, capital
REGION_MIX = _a(
    [
        [0.15, 0.15, 0.15, 0.15, 0.20, 0.20],
        [0.20, 0.20, 0.15, 0.15, 0.20, 0.10],
        [0.10, 0.15, 0.10, 0.10, 0.15, 0.40],
        [0.18, 0.18, 0.16, 0.16, 0.17, 0.15],
        [0.25, 0.15, 0.15, 0.15, 0.20, 0.10],
        [0.20, 0.15, 0.20, 0.20, 0.15, 0.10],
    ],
    normalise=True,
)
TENURE_YEARS_MEAN = np.array([2.0, 7.0, 15.0, 9.0, 5.0, 10.0])

# contracts.PRODUCTS order: current_account, savings, credit_card, mortgage, personal_loan, investments
HOLD_P = _a(
    [
        [1, 0.75, 0.35, 0.02, 0.05, 0.15],
        [1, 0.40, 0.60, 0.25, 0.20, 0.05],
        [1, 0.90, 0.80, 0.45, 0.05, 0.95],
        [1, 0.50, 0.70, 0.30, 0.35, 0.20],
        [1, 0.10, 0.85, 0.10, 0.55, 0.0],
        [1, 0.15, 0.20, 0.10, 0.05, 0.02],
    ]
)
# median balances per product (debts as positive amounts; signed later)
BALANCE_MEDIAN = _a(
    [
        [1500, 4000, 400, 120000, 5000, 3000],
        [2500, 6000, 1500, 180000, 9000, 5000],
        [12000, 60000, 1500, 250000, 10000, 150000],
        [8000, 10000, 2800, 200000, 15000, 20000],
        [150, 200, 2550, 110000, 7000, 500],
        [600, 1500, 400, 90000, 4000, 2000],
    ]
)
CREDIT_LIMIT_MEDIAN = np.array([2000.0, 5000.0, 15000.0, 8000.0, 3000.0, 2000.0])
UTILISATION_MEAN = np.array([0.15, 0.30, 0.10, 0.35, 0.85, 0.20])
BUREAU_MEAN = np.array([680.0, 700.0, 790.0, 720.0, 560.0, 650.0])

# daily event rates
WEB_SESSIONS = np.array([0.15, 0.35, 0.30, 0.35, 0.15, 0.03])
APP_SESSIONS = np.array([1.20, 0.60, 0.25, 0.70, 0.50, 0.05])
ATM_VISITS = np.array([0.03, 0.12, 0.02, 0.06, 0.20, 0.10])
BRANCH_VISITS = np.array([0.005, 0.03, 0.08, 0.12, 0.03, 0.02])
CARD_SPEND = np.array([3.0, 4.5, 2.5, 2.0, 3.5, 0.6])
BILLS = np.array([0.10, 0.25, 0.20, 0.20, 0.20, 0.10])
TRANSFER_IN = np.array([0.05, 0.05, 0.15, 1.5, 0.05, 0.02])
TRANSFER_OUT = np.array([0.30, 0.15, 0.30, 1.2, 0.20, 0.03])
CALLS = np.array([0.005, 0.015, 0.02, 0.03, 0.04, 0.004])
SERVICE_REQUESTS = np.array([0.005, 0.008, 0.01, 0.02, 0.015, 0.002])
COMPLAINTS = np.array([0.0008, 0.001, 0.001, 0.0015, 0.004, 0.002])
CHATS = np.array([0.012, 0.006, 0.003, 0.008, 0.012, 0.002])  # app chat sessions, app users
FAILED_PAYMENTS = np.array([0.001, 0.002, 0.0, 0.005, 0.06, 0.004])
FEES = np.array([0.002, 0.003, 0.001, 0.02, 0.05, 0.005])
SPEND_SCALE = np.array([0.7, 1.0, 2.5, 1.3, 0.6, 0.7])

# contracts.MERCHANT_CATEGORIES order: groceries, restaurants, travel, fuel, utilities, entertainment,
# retail, health, home_improvement, business_services, gambling
MERCHANT_MIX = _a(
    [
        [0.20, 0.25, 0.08, 0.02, 0, 0.20, 0.20, 0.03, 0, 0, 0.02],
        [0.40, 0.08, 0.03, 0.12, 0, 0.07, 0.18, 0.05, 0.07, 0, 0],
        [0.15, 0.25, 0.25, 0.05, 0, 0.10, 0.12, 0.05, 0.03, 0, 0],
        [0.10, 0.10, 0.08, 0.15, 0, 0.03, 0.05, 0.02, 0.07, 0.40, 0],
        [0.30, 0.12, 0.01, 0.08, 0, 0.08, 0.16, 0.03, 0, 0, 0.22],
        [0.45, 0.05, 0.02, 0.15, 0, 0.05, 0.20, 0.08, 0, 0, 0],
    ],
    normalise=True,
)
MERCHANT_AMOUNT = np.array([45.0, 35.0, 220.0, 55.0, 80.0, 30.0, 60.0, 40.0, 120.0, 300.0, 25.0])

REGISTERED_P = np.array([0.99, 0.90, 0.80, 0.90, 0.75, 0.35])
APP_USER_P = np.array([0.98, 0.85, 0.60, 0.85, 0.80, 0.40])
RENTER_P = np.array([0.80, 0.95, 0.20, 0.40, 0.70, 0.50])
WEB_LOGIN_P = 0.6
APP_LOGIN_P = 0.95

# base daily intent to apply for each product (times life-event multipliers, zero if held)
BASE_INTENT = _a(
    [
        [0, 0.0040, 0.0020, 0.0003, 0.0005, 0.0020],
        [0, 0.0010, 0.0010, 0.0010, 0.0020, 0.0003],
        [0, 0.0020, 0.0005, 0.0005, 0.0002, 0.0030],
        [0, 0.0010, 0.0020, 0.0005, 0.0030, 0.0005],
        [0, 0.0002, 0.0040, 0.0001, 0.0060, 0.0],
        [0, 0.0002, 0.0002, 0.0001, 0.0002, 0.0001],
    ]
)
# which products a persona looks at when browsing (relative weights, current account first)
BROWSE_INTEREST = _a(
    [
        [0.25, 0.40, 0.15, 0.03, 0.05, 0.12],
        [0.20, 0.15, 0.15, 0.30, 0.15, 0.05],
        [0.10, 0.25, 0.05, 0.10, 0.02, 0.48],
        [0.35, 0.10, 0.20, 0.10, 0.20, 0.05],
        [0.30, 0.03, 0.30, 0.02, 0.35, 0.0],
        [0.60, 0.15, 0.10, 0.05, 0.05, 0.05],
    ],
    normalise=True,
)
# digital event mix after the first page: page_view, product_view, compare, calculator, search
DIGITAL_MIX = _a(
    [
        [0.45, 0.25, 0.10, 0.10, 0.10],
        [0.30, 0.30, 0.15, 0.20, 0.05],
        [0.35, 0.30, 0.15, 0.15, 0.05],
        [0.60, 0.15, 0.05, 0.10, 0.10],
        [0.55, 0.20, 0.10, 0.05, 0.10],
        [0.80, 0.10, 0.02, 0.03, 0.05],
    ],
    normalise=True,
)
SESSION_EVENTS_MEAN = np.array([5.0, 6.0, 5.0, 4.0, 4.0, 2.5])

CHURN_HAZARD = np.array([0.0006, 0.0003, 0.0003, 0.0005, 0.0012, 0.0030])
HOME_BUYING_P = np.array([0.08, 0.35, 0.05, 0.06, 0.03, 0.02])
CASH_STRESS_P = np.array([0.03, 0.06, 0.0, 0.10, 0.30, 0.05])

# consent at the start: marketing per channel (email, sms, push, phone), marketing/any, profiling/any
CONSENT_MARKETING_P = _a(
    [
        [0.70, 0.40, 0.85, 0.10],
        [0.75, 0.50, 0.50, 0.30],
        [0.60, 0.20, 0.20, 0.60],
        [0.80, 0.50, 0.40, 0.50],
        [0.50, 0.50, 0.40, 0.30],
        [0.30, 0.20, 0.10, 0.10],
    ]
)
CONSENT_MARKETING_ANY_P = np.array([0.95, 0.90, 0.90, 0.90, 0.85, 0.70])
CONSENT_PROFILING_P = np.array([0.90, 0.85, 0.80, 0.85, 0.75, 0.60])

# offer response affinity per contracts.OFFER_CHANNELS (email, sms, push, phone, web, app, branch), logit
CHANNEL_AFFINITY = _a(
    [
        [-0.2, -0.3, 0.6, -1.0, 0.2, 0.9, -1.2],
        [0.2, 0.1, 0.0, 0.1, 0.4, 0.3, 0.2],
        [0.3, -0.5, -0.5, 0.6, 0.1, -0.2, 0.9],
        [0.4, 0.0, 0.0, 0.3, 0.3, 0.3, 0.2],
        [-0.2, 0.2, 0.1, -0.3, 0.0, 0.2, -0.3],
        [-0.6, -0.5, -0.8, -0.4, -0.6, -0.6, -0.3],
    ]
)
# application funnel: P(continue from step i to step i+1); document_upload is the designed friction
FUNNEL_CONTINUE = np.array([0.85, 0.88, 0.90, 0.50, 0.92])
FUNNEL_PERSONA_SHIFT = np.array([0.3, 0.0, 0.1, 0.0, -0.2, -0.4])
BRANCH_COMPLETE_P = 0.6
