"""Saga payloads may not contain the event store's typed-value envelope.

eventsourcing's JSON transcoder writes typed values (UUIDs, datetimes, ...) as an
object with exactly the keys ``_type_`` and ``_data_`` and decodes every such object
on load. A user's object of that shape would be stored as written and then read back
as something else, or not at all, breaking law 5; so it is refused up front.
"""

from __future__ import annotations

from typing import Any

import pytest

from sagalog.domain import InvalidPayloadError
from sagalog.domain.payload import check_data, check_json


@pytest.mark.parametrize(
    "value",
    [
        {"_type_": "uuid_hex", "_data_": "x"},
        [1, {"_data_": None, "_type_": "datetime_iso"}],
        {"a": {"b": [{"c": {"_type_": 1, "_data_": 2}}]}},
    ],
)
def test_an_envelope_at_any_depth_is_refused(value: Any) -> None:
    with pytest.raises(InvalidPayloadError, match="step result contains an object"):
        check_json(value, "step result")


@pytest.mark.parametrize(
    "value",
    [
        {"_type_": "x"},
        {"_type_": "x", "_data_": 1, "more": 2},
        {"type": "x", "data": 1},
        ["_type_", "_data_"],
    ],
)
def test_objects_of_other_shapes_pass_unchanged(value: Any) -> None:
    assert check_json(value, "step result") == value


def test_saga_data_itself_may_not_be_an_envelope() -> None:
    with pytest.raises(InvalidPayloadError, match="saga data"):
        check_data({"_type_": "uuid_hex", "_data_": "0" * 32})
