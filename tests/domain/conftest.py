"""Load the hypothesis profile chosen by ``SAGALOG_HYPOTHESIS_PROFILE`` (see
``tests/hypothesis_profiles.py``), with ``tests/`` importable by plain module name
(``strategies``, ``hypothesis_profiles``) as pytest's default import mode gives."""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

import hypothesis_profiles  # noqa: E402

PROFILE = hypothesis_profiles.ACTIVE_PROFILE
