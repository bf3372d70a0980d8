"""In-process participants whose setup waits for the test: a worker caught in its startup.

``setup`` writes ``ready`` in ``$SLOW_PARTICIPANTS_DIR`` and waits (at most a minute)
for ``go`` there, so a test can signal the worker while it is still starting.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


def setup(transport: Any, manager: Any) -> None:
    """Announce the startup, wait for the go-ahead, subscribe a participant that never answers."""
    directory = Path(os.environ["SLOW_PARTICIPANTS_DIR"])
    (directory / "ready").write_text("ready")
    deadline = time.monotonic() + 60
    while not (directory / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    transport.subscribe_all(lambda command: None)
