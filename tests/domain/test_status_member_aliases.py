"""The saga's fast aliases of the status members are exactly the enums' members.

``sagalog.domain.saga`` reads ``SagaStatus``/``StepStatus`` members through two
small classes of plain attributes in ``sagalog.domain._speed`` (cheaper than the
enum's own lookup on Python 3.11). A member added to an enum and not to its alias,
or an alias naming the wrong member, would break rebuilding sagas; these tests say
so first.
"""

from __future__ import annotations

from typing import Any

import pytest

from sagalog.domain import SagaStatus, StepStatus, _speed


def _aliases(cls: type[Any]) -> dict[str, Any]:
    return {name: value for name, value in vars(cls).items() if name.isupper()}


@pytest.mark.parametrize(
    ("alias", "enum"),
    [(_speed.SagaStatuses, SagaStatus), (_speed.StepStatuses, StepStatus)],
)
def test_every_member_has_its_alias_and_the_alias_is_the_member(
    alias: type[Any], enum: type[Any]
) -> None:
    aliases = _aliases(alias)
    assert aliases.keys() == enum.__members__.keys()
    for name, member in enum.__members__.items():
        assert aliases[name] is member
