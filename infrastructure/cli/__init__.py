"""The ``sagalog`` command line (Typer for parsing, rich for tables and progress).

Every command takes ``--database-url`` (or ``SAGALOG_DATABASE_URL``); without
either it uses the embedded SQLite default, ``sagalog.db`` in the working
directory. ``--app`` (``SAGALOG_APP``) names the user's ``SagaManager`` subclass,
whose name names its tables, and ``--definitions`` (``SAGALOG_DEFINITIONS``) the
user's saga definitions. Exit codes: 0 done, 2 a user error (bad option value,
unknown saga, an action the saga's state refuses, unreachable database), 1 anything
else. See docs/cli.md.

The room: ``app`` (the root app, ``main``, one-line errors), ``options``,
``opening`` (the store a command names), ``output`` (consoles, colours, JSON), and
one module per command group, each registering its commands on ``app`` when
imported. They are imported below in the order ``sagalog --help`` lists them.
"""

from __future__ import annotations

from sagalog.infrastructure.cli.app import app, main

# Imported for what importing does: each module registers its commands on ``app``,
# in this order, which is the order ``sagalog --help`` lists them in.
# isort: off
from sagalog.infrastructure.cli import demo as demo
from sagalog.infrastructure.cli import listings as listings
from sagalog.infrastructure.cli import debugging as debugging
from sagalog.infrastructure.cli import actions as actions
from sagalog.infrastructure.cli import versions as versions
from sagalog.infrastructure.cli import worker as worker
from sagalog.infrastructure.cli import projections as projections
from sagalog.infrastructure.cli import poison as poison
from sagalog.infrastructure.cli import console as console
from sagalog.infrastructure.cli import keys as keys
from sagalog.infrastructure.cli import retention as retention
# isort: on

__all__ = ["app", "main"]
