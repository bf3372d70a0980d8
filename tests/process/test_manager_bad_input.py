"""Bad input gets a typed error and writes nothing."""

from __future__ import annotations

from collections.abc import Callable
from uuid import uuid4

import pytest

from sagalog.domain import (
    CommandKind,
    InvalidPayloadError,
    InvalidTransitionError,
    SagaNotFoundError,
    UnexpectedReplyError,
    UnknownSagaTypeError,
    UnknownStepError,
    command_id_for,
)
from sagalog.process import InvalidReplyError, SagaManager


def _writes_nothing(
    manager: SagaManager, call: Callable[[], object], error: type[Exception], match: str
) -> None:
    head = manager.recorder.max_notification_id()
    with pytest.raises(error, match=match):
        call()
    assert manager.recorder.max_notification_id() == head


def test_unknown_saga_type(manager: SagaManager) -> None:
    _writes_nothing(manager, lambda: manager.start("Nope", {}), UnknownSagaTypeError, "'Nope'")


def test_unknown_saga_id(manager: SagaManager) -> None:
    _writes_nothing(
        manager,
        lambda: manager.handle_step_completed(uuid4(), "reserve"),
        SagaNotFoundError,
        "no saga",
    )


def test_unknown_step(manager: SagaManager) -> None:
    saga_id = manager.start("Order", {})
    _writes_nothing(
        manager, lambda: manager.handle_step_completed(saga_id, "fly"), UnknownStepError, "'fly'"
    )


def test_wrong_reply_kind(manager: SagaManager) -> None:
    saga_id = manager.start("Order", {})
    _writes_nothing(
        manager,
        lambda: manager.handle_compensation_completed(saga_id, "reserve"),
        UnexpectedReplyError,
        "never dispatched",
    )
    _writes_nothing(
        manager,
        lambda: manager.handle_compensation_completed(saga_id, "notify"),
        UnexpectedReplyError,
        "no compensation",
    )


def test_malformed_reply_message(manager: SagaManager) -> None:
    saga_id = manager.start("Order", {})
    _writes_nothing(
        manager,
        lambda: manager.handle(
            {
                "message_id": "m",
                "saga_id": str(saga_id),
                "command_id": str(command_id_for(saga_id, "reserve", CommandKind.ACTION, 1)),
                "step": "reserve",
                "outcome": "failed",
            }
        ),
        InvalidReplyError,
        "error",
    )
    _writes_nothing(
        manager, lambda: manager.handle("{not json"), InvalidReplyError, "invalid reply"
    )


def test_oversized_and_non_json_payloads(manager: SagaManager) -> None:
    _writes_nothing(
        manager,
        lambda: manager.start("Order", {"blob": "x" * 300_000}),
        InvalidPayloadError,
        "limit",
    )
    _writes_nothing(
        manager, lambda: manager.start("Order", {"when": object()}), InvalidPayloadError, "JSON"
    )
    saga_id = manager.start("Order", {})
    _writes_nothing(
        manager,
        lambda: manager.handle_step_completed(saga_id, "reserve", "y" * 300_000),
        InvalidPayloadError,
        "limit",
    )


def test_a_payload_shaped_like_the_stores_typed_envelope_is_refused(
    manager: SagaManager,
) -> None:
    """Such data would be stored, then fail to load: the saga could not be rebuilt."""
    envelope = {"_type_": "uuid_hex", "_data_": "not a uuid"}
    _writes_nothing(
        manager,
        lambda: manager.start("Order", {"nested": [envelope]}),
        InvalidPayloadError,
        "'_type_' and '_data_'",
    )
    saga_id = manager.start("Order", {"note": {"_type_": "kept", "other": 1}})
    _writes_nothing(
        manager,
        lambda: manager.handle_step_completed(saga_id, "reserve", {"x": envelope}),
        InvalidPayloadError,
        "reserves that shape",
    )
    assert manager.get(saga_id).data == {"note": {"_type_": "kept", "other": 1}}


def test_operator_action_in_the_wrong_state(manager: SagaManager) -> None:
    saga_id = manager.start("Order", {})
    _writes_nothing(
        manager,
        lambda: manager.retry(saga_id, actor="ops", reason="why"),
        InvalidTransitionError,
        "dead-lettered",
    )
    _writes_nothing(
        manager,
        lambda: manager.abort(saga_id, actor="", reason="why"),
        InvalidPayloadError,
        "actor",
    )
