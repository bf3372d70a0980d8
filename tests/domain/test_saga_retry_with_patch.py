"""An operator's retry may correct the saga's data: validated, recorded as a diff, carried on."""

from __future__ import annotations

import pytest
from saga_builders import assert_refused_and_unchanged, at, collect, event_names
from test_saga_operator_actions import dead_lettered_compensation, dead_lettered_confirmation

from sagalog.domain import InvalidPayloadError, InvalidTransitionError, Saga
from sagalog.domain.payload import MAX_PAYLOAD_BYTES


def test_a_patched_retry_records_the_diff_and_the_command_carries_the_new_data() -> None:
    saga = dead_lettered_confirmation()
    saga.retry(
        actor="alice", reason="typo in the address", now=at(60), patch={"order": 43, "note": "x"}
    )
    events = collect(saga)
    assert event_names(events) == ["OperatorRetried", "StepDispatched"]
    retried, dispatched = events
    assert isinstance(retried, Saga.OperatorRetried)
    assert retried.changes == {"order": {"old": 42, "new": 43}, "note": {"new": "x"}}
    assert (retried.actor, retried.reason) == ("alice", "typo in the address")
    assert isinstance(dispatched, Saga.StepDispatched)
    assert dispatched.payload["data"] == {"order": 43, "note": "x"}
    assert saga.data == {"order": 43, "note": "x"}


def test_a_patched_compensation_retry_carries_the_patched_data() -> None:
    saga = dead_lettered_compensation()
    saga.retry(actor="bob", reason="new account", now=at(60), patch={"order": {"id": 1}})
    command = saga.pending_command
    assert command is not None
    assert command.payload["data"] == {"order": {"id": 1}}


def test_a_retry_without_a_patch_records_no_changes() -> None:
    saga = dead_lettered_confirmation()
    saga.retry(actor="alice", reason="again", now=at(60))
    retried = collect(saga)[0]
    assert isinstance(retried, Saga.OperatorRetried)
    assert retried.changes is None


@pytest.mark.parametrize(
    "patch",
    [
        {},
        ["order", 1],
        {"order": float("nan")},
        {"order": "nul\x00"},
        {1: "not a string key"},
        {"big": "x" * (MAX_PAYLOAD_BYTES + 1)},
    ],
    ids=["empty", "not-an-object", "nan", "nul", "int-key", "too-big"],
)
def test_a_bad_patch_is_refused_and_records_nothing(patch: object) -> None:
    saga = dead_lettered_confirmation()
    assert_refused_and_unchanged(
        saga,
        InvalidPayloadError,
        lambda: saga.retry(actor="a", reason="r", now=at(60), patch=patch),  # type: ignore[arg-type]
    )


def test_a_patch_needs_a_dead_lettered_saga() -> None:
    saga = dead_lettered_confirmation()
    saga.retry(actor="a", reason="r", now=at(60))
    saga.collect_events()
    with pytest.raises(InvalidTransitionError):
        saga.retry(actor="a", reason="r", now=at(61), patch={"order": 1})
