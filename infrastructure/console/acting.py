"""The operator actions of the console: one saga, or many after a dry run.

Acting calls the same ``SagaManager`` methods as ``sagalog retry|resolve|abort|compensate``
(each records its own event with actor and reason). A dry run applies the action to the
saga loaded in memory and never saves it, then lists what the saga would record and the
commands it would send — the commands read with what-if's reader of dispatches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from sagalog.domain import Saga, SagalogError
from sagalog.process import SagaManager
from sagalog.process.debugging.whatif import CommandRecord, commands_of

__all__ = ["ACTIONS", "ActionOutcome", "Preview", "UnknownActionError", "act", "preview"]

#: Most sagas one bulk action may touch (one page of the filtered list, at most).
BULK_LIMIT = 500


class UnknownActionError(SagalogError, ValueError):
    """An action the console does not know (it knows retry, resolve, abort, compensate)."""


_OnManager = Callable[[SagaManager, UUID, str, str, dict[str, Any] | None], object]
_OnSaga = Callable[[Saga, str, str, Any, dict[str, Any] | None], object]

#: Each action as the manager runs it (recorded) and as the aggregate runs it (dry run).
_ACTIONS: dict[str, tuple[_OnManager, _OnSaga]] = {
    "retry": (
        lambda m, sid, actor, reason, patch: m.retry(sid, actor=actor, reason=reason, patch=patch),
        lambda s, actor, reason, now, patch: s.retry(
            actor=actor, reason=reason, now=now, patch=patch
        ),
    ),
    "resolve": (
        lambda m, sid, actor, reason, _patch: m.resolve(sid, actor=actor, reason=reason),
        lambda s, actor, reason, now, _patch: s.resolve(actor=actor, reason=reason, now=now),
    ),
    "abort": (
        lambda m, sid, actor, reason, _patch: m.abort(sid, actor=actor, reason=reason),
        lambda s, actor, reason, now, _patch: s.abort(actor=actor, reason=reason, now=now),
    ),
    "compensate": (
        lambda m, sid, actor, reason, _patch: m.compensate(sid, actor=actor, reason=reason),
        lambda s, actor, reason, now, _patch: s.compensate(actor=actor, reason=reason, now=now),
    ),
}
ACTIONS = tuple(_ACTIONS)


def _action(name: str) -> tuple[_OnManager, _OnSaga]:
    try:
        return _ACTIONS[name]
    except KeyError:
        raise UnknownActionError(
            f"unknown action {name!r}; choose one of {', '.join(ACTIONS)}"
        ) from None


@dataclass(frozen=True)
class Preview:
    """What an action would do to one saga: the events it would record and the commands
    it would send, or why the saga refuses it (``refused``)."""

    saga_id: UUID
    saga_type: str
    status: str
    action: str
    records: tuple[str, ...] = ()
    commands: tuple[CommandRecord, ...] = ()
    refused: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "saga_id": str(self.saga_id),
            "saga_type": self.saga_type,
            "status": self.status,
            "action": self.action,
            "records": list(self.records),
            "commands": [c.to_json() for c in self.commands],
            "refused": self.refused,
        }


def preview(
    manager: SagaManager,
    saga_id: UUID,
    action: str,
    *,
    actor: str,
    reason: str,
    patch: dict[str, Any] | None = None,
) -> Preview:
    """Dry run: apply ``action`` to the saga in memory only; nothing is written."""
    _, on_saga = _action(action)
    saga = manager.get(saga_id)
    head = Preview(saga.id, saga.saga_type, saga.status.value, action)
    try:
        on_saga(saga, actor, reason, manager.clock(), patch)
    except SagalogError as exc:
        return Preview(head.saga_id, head.saga_type, head.status, action, refused=str(exc))
    new = list(saga.pending_events)
    return Preview(
        head.saga_id,
        head.saga_type,
        head.status,
        action,
        records=tuple(type(event).__name__ for event in new),
        commands=commands_of(new),
    )


@dataclass(frozen=True)
class ActionOutcome:
    """What became of one saga's action: its status after, or the one-line refusal."""

    saga_id: UUID
    action: str
    status: str | None
    error: str | None = None
    refusal: SagalogError | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "saga_id": str(self.saga_id),
            "action": self.action,
            "status": self.status,
            "error": self.error,
        }


def act(
    manager: SagaManager,
    saga_id: UUID,
    action: str,
    *,
    actor: str,
    reason: str,
    patch: dict[str, Any] | None = None,
) -> ActionOutcome:
    """Run ``action`` on one saga, recorded in its log; a refusal is returned, not raised."""
    on_manager, _ = _action(action)
    try:
        on_manager(manager, saga_id, actor, reason, patch)
    except SagalogError as exc:
        return ActionOutcome(saga_id, action, None, str(exc), exc)
    return ActionOutcome(saga_id, action, manager.get(saga_id).status.value)
