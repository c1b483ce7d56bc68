"""The fuzzing suite's Hypothesis profile: a short run in ``make test``, a long one in ``make fuzz``.

``JOURNEYLAKE_FUZZ=long`` (what ``make fuzz`` sets) selects each test's long example count, with
random seeds; the short run is derandomized. A failure prints its example and the
``@reproduce_failure`` blob that replays it.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "journeylake",
    # make test's short run draws the same examples every time (a CI run fails only on a change);
    # make fuzz draws new ones on every run
    derandomize=os.environ.get("JOURNEYLAKE_FUZZ") != "long",
    deadline=None,  # examples that run Spark or a subprocess take seconds: time is not the property
    database=None,  # no .hypothesis folder left in the clone
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
settings.load_profile("journeylake")
