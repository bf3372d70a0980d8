"""Errors are reported in one line: the first line of the message, or the type's name."""

from __future__ import annotations

import pytest

from sagalog.domain.errors import first_line


@pytest.mark.parametrize(
    ("exc", "named", "expected"),
    [
        (ValueError("bad\nsecond line"), False, "bad"),
        (ValueError("  \n bad\nmore"), False, "bad"),
        (ValueError(""), False, "ValueError"),
        (ValueError("bad\nmore"), True, "ValueError: bad"),
        (ValueError("ValueError raised: bad"), True, "ValueError raised: bad"),
        (KeyError(), True, "KeyError"),
    ],
)
def test_first_line(exc: BaseException, named: bool, expected: str) -> None:
    assert first_line(exc, named=named) == expected
