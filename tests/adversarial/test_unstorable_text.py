"""Issue 15, case 1: text a store cannot hold is refused at the door, on every backend.

A NUL character (U+0000) or a lone surrogate in saga data, a step result, an error, a
message id, an actor or a reason raises :class:`InvalidPayloadError` naming the field
and records nothing — on memory and SQLite (which could hold a NUL) exactly as on
PostgreSQL (which cannot), so a store never holds what another backend could not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID, uuid4

import pytest
from helpers import first_command_id

from sagalog.domain import InvalidPayloadError
from sagalog.infrastructure.demo.sagas import DEMO_DEFINITIONS
from sagalog.process import InvalidReplyError, SagaManager

NUL = "\u0000"
SURROGATE = "\udc80"


@pytest.fixture
def manager(database_url: str) -> Iterator[SagaManager]:
    app = SagaManager(DEMO_DEFINITIONS, database_url)
    yield app
    app.close()


def _compensating(manager: SagaManager) -> UUID:
    saga_id = manager.start("OrderFulfillment", {"order_id": "o1"})
    manager.handle_step_completed(saga_id, "reserve_inventory")
    manager.handle_step_failed(saga_id, "process_payment", "card declined")
    return saga_id


Case = Callable[[SagaManager, UUID, str], Any]

#: (field named in the error, what writes it) — ``bad`` is the unstorable text.
CASES: list[tuple[str, Case]] = [
    ("saga data", lambda m, s, bad: m.start("OrderFulfillment", {"order_id": f"o{bad}"})),
    ("saga data", lambda m, s, bad: m.start("OrderFulfillment", {f"k{bad}": 1})),
    (
        "saga data",
        lambda m, s, bad: m.start("OrderFulfillment", {"deep": [{"x": [f"{bad}"]}]}),
    ),
    (
        "result of step",
        lambda m, s, bad: m.handle_step_completed(s, "reserve_inventory", {"sku": bad}),
    ),
    (
        "error of step",
        lambda m, s, bad: m.handle_step_failed(s, "reserve_inventory", f"declined{bad}"),
    ),
    (
        "message_id",
        lambda m, s, bad: m.handle_step_completed(s, "reserve_inventory", message_id=f"m{bad}"),
    ),
    (
        "error",
        lambda m, s, bad: m.handle(
            {
                "message_id": "r1",
                "saga_id": str(s),
                "command_id": first_command_id(s),
                "step": "reserve_inventory",
                "outcome": "failed",
                "error": f"declined{bad}",
            }
        ),
    ),
    ("actor", lambda m, s, bad: m.abort(s, actor=f"op{bad}", reason="customer asked")),
    ("reason", lambda m, s, bad: m.abort(s, actor="op", reason=f"asked{bad}")),
]


@pytest.mark.parametrize("bad", [NUL, SURROGATE], ids=["nul", "surrogate"])
@pytest.mark.parametrize(("field", "call"), CASES)
def test_unstorable_text_is_refused_naming_the_field_and_nothing_is_written(
    manager: SagaManager, field: str, call: Case, bad: str
) -> None:
    saga_id = manager.start("OrderFulfillment", {"order_id": "o0"}, saga_id=uuid4())
    before = manager.history(saga_id)
    head = manager.recorder.max_notification_id()
    # A reply message is validated first: its error names the field too.
    with pytest.raises((InvalidPayloadError, InvalidReplyError), match=field):
        call(manager, saga_id, bad)
    assert manager.history(saga_id) == before
    assert manager.recorder.max_notification_id() == head


@pytest.mark.parametrize("bad", [NUL, SURROGATE], ids=["nul", "surrogate"])
def test_a_compensation_error_with_unstorable_text_is_refused(
    manager: SagaManager, bad: str
) -> None:
    saga_id = _compensating(manager)
    before = manager.history(saga_id)
    with pytest.raises(InvalidPayloadError, match="error of compensation"):
        manager.handle_compensation_failed(saga_id, "reserve_inventory", f"no{bad}")
    assert manager.history(saga_id) == before


def test_a_backslash_u0000_spelled_out_is_ordinary_text(manager: SagaManager) -> None:
    """Only the character is refused: the six characters ``\\u0000`` are stored as given."""
    saga_id = manager.start("OrderFulfillment", {"note": "\\u0000"})
    assert manager.get(saga_id).data == {"note": "\\u0000"}
