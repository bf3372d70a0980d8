"""Which definition versions the recorded sagas run on, and which the code still knows.

A saga is pinned to the definition it started with: its ``SagaStarted`` event
stores the whole definition with its name, version and fingerprint, and every
later decision uses that stored copy. A deploy that registers a new version
therefore leaves sagas in flight on older ones. Before a version is retired
from the code, an operator wants to know how many sagas still run on it;
:func:`definition_versions` answers that, per saga type, version and fingerprint.

Where the facts come from, and why:

* **version and fingerprint** from each saga's first event, ``SagaStarted``,
  read from the log by topic. The summary table keeps the version but not the
  fingerprint, and the fingerprint is what tells two *different* definitions
  recorded under one name and version apart (the registry refuses that within
  one process, but two deployments can disagree). Reading the first event stays
  correct without a schema change of the views;
* **status** from the summary table (``saga_summary_v<N>``), one indexed row per
  saga — catch the projections up first to count everything (the CLI does);
  a saga the views have not seen yet is counted under ``UNPROJECTED``;
* **registered** from the definitions the running code knows (a
  :class:`~sagalog.process.DefinitionRegistry` or any iterable of definitions).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic
from sqlalchemy import select

from sagalog.domain import Saga, SagaDefinition, SagaStatus
from sagalog.process import SagaManager
from sagalog.projections.schema import saga_summary
from sagalog.projections.view import SagaViews

__all__ = ["UNPROJECTED", "DefinitionVersionUsage", "definition_versions", "started_sagas"]

#: The status counted for a saga whose ``SagaStarted`` the views have not applied yet.
UNPROJECTED = "UNPROJECTED"

_STARTED_TOPIC = get_topic(Saga.SagaStarted)
_PAGE = 1000


@dataclass(frozen=True)
class DefinitionVersionUsage:
    """The sagas of one definition version (one fingerprint), and whether the code has it.

    ``registered``: this exact definition (same fingerprint) is registered.
    ``newest``: it is the version new sagas of its type start on.
    ``registered_fingerprint``: set when the code registers a *different* definition
    under this name and version (the sagas here keep running on their stored copy).
    ``in_flight`` counts the sagas that have not ended by status (``STARTED``,
    ``PENDING``, ``COMPENSATING``, ``DEAD_LETTERED``, or ``UNPROJECTED``), ``ended``
    those that have (``COMPLETED``, ``FAILED``).
    """

    saga_type: str
    version: int
    fingerprint: str
    registered: bool
    newest: bool
    registered_fingerprint: str | None = None
    in_flight: dict[str, int] = field(default_factory=dict)
    ended: dict[str, int] = field(default_factory=dict)

    @property
    def in_flight_total(self) -> int:
        """How many sagas of this version have not ended."""
        return sum(self.in_flight.values())

    @property
    def ended_total(self) -> int:
        """How many sagas of this version completed or failed."""
        return sum(self.ended.values())

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``sagalog versions --json`` prints per version)."""
        return {
            "saga_type": self.saga_type,
            "version": self.version,
            "fingerprint": self.fingerprint,
            "registered": self.registered,
            "newest": self.newest,
            "registered_fingerprint": self.registered_fingerprint,
            "in_flight": dict(sorted(self.in_flight.items())),
            "in_flight_total": self.in_flight_total,
            "ended": dict(sorted(self.ended.items())),
            "ended_total": self.ended_total,
        }


def started_sagas(manager: SagaManager) -> Iterator[Saga.SagaStarted]:
    """Every ``SagaStarted`` in ``manager``'s log, in log order (read by topic, paged)."""
    position = 0
    while True:
        page = manager.recorder.select_notifications(
            start=position + 1, limit=_PAGE, topics=(_STARTED_TOPIC,)
        )
        if not page:
            return
        for notification in page:
            event = manager.mapper.to_domain_event(notification)
            if isinstance(event, Saga.SagaStarted):
                yield event
        position = page[-1].id


def definition_versions(
    manager: SagaManager,
    views: SagaViews,
    registered: Iterable[SagaDefinition] | None = None,
) -> list[DefinitionVersionUsage]:
    """Per saga type, version and fingerprint: sagas in flight by status, sagas ended.

    ``registered`` defaults to ``manager.registry``. Registered versions that no
    saga ran on yet are listed too, with zero counts. Sorted by type, version,
    then fingerprint. Reads only; catch ``views`` up first to count every saga.
    """
    known = list(manager.registry if registered is None else registered)
    by_key = {(d.name, d.version): d for d in known}
    newest = {name: max(v for (n, v) in by_key if n == name) for name, _ in by_key}

    status_of = _statuses(views)
    counts: dict[tuple[str, int, str], Counter[str]] = {}
    for started in started_sagas(manager):
        key = (started.saga_type, started.definition_version, started.definition_fingerprint)
        status = status_of.get(started.originator_id, UNPROJECTED)
        counts.setdefault(key, Counter())[status] += 1
    for definition in known:
        counts.setdefault((definition.name, definition.version, definition.fingerprint), Counter())

    usages: list[DefinitionVersionUsage] = []
    for (saga_type, version, fingerprint), by_status in sorted(counts.items()):
        code = by_key.get((saga_type, version))
        same = code is not None and code.fingerprint == fingerprint
        usages.append(
            DefinitionVersionUsage(
                saga_type=saga_type,
                version=version,
                fingerprint=fingerprint,
                registered=same,
                newest=same and newest.get(saga_type) == version,
                registered_fingerprint=(
                    code.fingerprint if code is not None and not same else None
                ),
                in_flight={s: n for s, n in by_status.items() if not _ended(s)},
                ended={s: n for s, n in by_status.items() if _ended(s)},
            )
        )
    return usages


def _ended(status: str) -> bool:
    return status in (SagaStatus.COMPLETED.value, SagaStatus.FAILED.value)


def _statuses(views: SagaViews) -> dict[UUID, str]:
    """Every projected saga's status, by id (one scan of the summary table)."""
    query = select(saga_summary.c.saga_id, saga_summary.c.status)
    with views.engine.connect() as conn:
        return {saga_id: str(status) for saga_id, status in conn.execute(query)}
