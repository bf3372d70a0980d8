"""Hypothesis profiles for sagalog's property tests.

``dev`` (the default) is quick enough to run on every save; ``ci`` runs ten times
more examples with no per-example deadline. ``SAGALOG_HYPOTHESIS_PROFILE`` chooses
one; the conftests of the test folders that use hypothesis import this module.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

#: The environment variable that chooses the profile.
PROFILE_VARIABLE = "SAGALOG_HYPOTHESIS_PROFILE"

#: Rules per run of a state machine: enough to take an 8-step saga through
#: failures, retries, compensation, a dead letter and operator actions.
STATEFUL_STEP_COUNT = 40

settings.register_profile(
    "dev",
    max_examples=50,
    stateful_step_count=STATEFUL_STEP_COUNT,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "ci",
    max_examples=500,
    stateful_step_count=STATEFUL_STEP_COUNT,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)

#: The profile in force for this run.
ACTIVE_PROFILE = os.environ.get(PROFILE_VARIABLE, "dev")
settings.load_profile(ACTIVE_PROFILE)
