"""Load the hypothesis profile that ``SAGALOG_HYPOTHESIS_PROFILE`` chooses (``dev`` by
default; see ``sagalog.testing.profiles``)."""

from __future__ import annotations

from sagalog.testing.profiles import load_profile

PROFILE = load_profile()
