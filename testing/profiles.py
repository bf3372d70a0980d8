"""Hypothesis profiles for saga property tests: ``dev`` and ``ci``.

``dev`` is quick enough to run on every save (50 examples); ``ci`` runs ten times
more with no per-example deadline and prints a blob to reproduce a failure. Both
let a state machine make :data:`STATEFUL_STEP_COUNT` moves per run, and neither
has a per-example deadline (a saga example commits to a database). Choose one with
the environment variable ``SAGALOG_HYPOTHESIS_PROFILE``::

    from sagalog.testing.profiles import load_profile

    load_profile()  # in a conftest.py: "dev" unless SAGALOG_HYPOTHESIS_PROFILE says "ci"

The sagalog pytest plugin calls :func:`load_profile` itself when the variable is
set, so ``SAGALOG_HYPOTHESIS_PROFILE=ci pytest`` needs no conftest at all.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

__all__ = ["PROFILES", "PROFILE_VARIABLE", "STATEFUL_STEP_COUNT", "load_profile", "register"]

#: The environment variable that chooses the profile.
PROFILE_VARIABLE = "SAGALOG_HYPOTHESIS_PROFILE"

#: Rules per run of a state machine: enough to take an 8-step saga through
#: failures, retries, compensation, a dead letter and operator actions.
STATEFUL_STEP_COUNT = 40

#: The profiles by name, and how many examples each runs.
PROFILES = {"dev": 50, "ci": 500}


def register() -> None:
    """Register the ``dev`` and ``ci`` profiles with hypothesis (without loading one)."""
    for name, examples in PROFILES.items():
        settings.register_profile(
            name,
            max_examples=examples,
            stateful_step_count=STATEFUL_STEP_COUNT,
            deadline=None,
            print_blob=name == "ci",
            suppress_health_check=[HealthCheck.too_slow],
        )


def load_profile(name: str | None = None) -> str:
    """Load profile ``name`` (by default the one ``SAGALOG_HYPOTHESIS_PROFILE`` names,
    else ``dev``) and return its name."""
    register()
    chosen = name or os.environ.get(PROFILE_VARIABLE, "").strip() or "dev"
    if chosen not in PROFILES:
        raise ValueError(
            f"{PROFILE_VARIABLE}={chosen!r} names no sagalog profile; use one of "
            f"{', '.join(PROFILES)}"
        )
    settings.load_profile(chosen)
    return chosen
