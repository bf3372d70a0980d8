"""``check_json``'s orjson fast path answers exactly as the ``json`` path, or not at all.

``check_json`` tries ``_check_json_fast`` first and falls back to ``_check_json_by_json``
(the definition of the answer) whenever the fast path is unsure. These tests hold the
two to the same outcome — the same value, type for type and float bit for float bit,
or the same :class:`InvalidPayloadError` with the same message — on every kind of
value where ``orjson`` and ``json`` could part: NaN and infinities, tuples, non-string
keys, integers beyond 64 bits, lone surrogates, subclasses, enums and other typed
values, envelopes at any depth, deep nesting, and sizes at and around the limit.
"""

from __future__ import annotations

import enum
import json
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sagalog.domain import InvalidPayloadError
from sagalog.domain.payload import (
    _UNSURE,
    MAX_PAYLOAD_BYTES,
    _check_json_by_json,
    _check_json_fast,
    check_json,
)
from sagalog.testing.strategies import json_values

Check = Callable[..., Any]

# -- values that orjson and json treat differently ------------------------------------


class Colour(enum.Enum):
    """A plain enum: ``orjson`` writes its value, ``json`` refuses it."""

    RED = 1


class Level(enum.IntEnum):
    """An int enum: both write ``1``."""

    LOW = 1


class Name(enum.StrEnum):
    """A str enum: both write ``"a"``."""

    A = "a"


class ClaimsEquality(enum.Enum):
    """A plain enum whose members say they equal anything: ``==`` cannot expose it."""

    ANY = 1

    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = enum.Enum.__hash__


class BoolValued(enum.IntEnum):
    """An int enum whose value is ``True``: ``orjson`` writes ``true``, ``json`` ``1``."""

    ONE = 1

    def __new__(cls, number: int) -> BoolValued:
        member = int.__new__(cls, number)
        member._value_ = True
        return member


class BytesValued(bytes, enum.Enum):
    """A bytes enum with a str value and a lying ``__eq__``: ``marshal`` writes it as bytes."""

    X = "x"

    def __new__(cls, text: str) -> BytesValued:
        member = bytes.__new__(cls, text.encode())
        member._value_ = text
        return member

    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = bytes.__hash__

    def __repr__(self) -> str:
        return f"<BytesValued.{self.name}>"


class MyInt(int):
    """An int subclass (``json`` writes it, ``orjson`` is told to refuse it)."""


class MyFloat(float):
    """A float subclass."""


class MyStr(str):
    """A str subclass."""


class MyList(list[Any]):
    """A list subclass."""


class MyDict(dict[str, Any]):
    """A dict subclass."""


@dataclass
class Point:
    """A dataclass: ``orjson`` would write it as an object, ``json`` refuses it."""

    x: int = 1


ODD_SCALARS: list[Any] = [
    float("nan"),
    float("inf"),
    float("-inf"),
    -0.0,
    5e-324,
    1e-9,
    1.5e-05,
    1e16,
    1e22,
    2**53 + 1,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    2**64,
    -(2**63) - 1,
    10**30,
    "\ud800",
    "caf\udce9",
    '\u2028\x00\x7f"\\/',
    "_type_",
    Colour.RED,
    Level.LOW,
    Name.A,
    ClaimsEquality.ANY,
    BoolValued.ONE,
    BytesValued.X,
    MyInt(3),
    MyFloat(1.5),
    MyStr("s"),
    uuid.UUID(int=7),
    datetime(2030, 1, 1, tzinfo=UTC),
    Point(),
    orjson.Fragment(b"[1]"),
    b"bytes",
    bytearray(b"x"),
    1 + 2j,
    frozenset({1}),
]

ODD_KEYS: list[Any] = [1, 1.5, True, None, "_type_", "_data_", "\udfff", MyStr("k"), Name.A]


def scalars() -> st.SearchStrategy[Any]:
    """JSON scalars, and the Python values beside them that either encoder treats apart."""
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(),
        st.text(max_size=6),
        st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2),
        st.sampled_from(ODD_SCALARS),
    )


def keys() -> st.SearchStrategy[Any]:
    """Dict keys: text, and what ``json`` converts to text (or refuses) but ``orjson`` refuses."""
    return st.one_of(st.text(max_size=6), st.integers(-3, 3), st.sampled_from(ODD_KEYS))


def values() -> st.SearchStrategy[Any]:
    """Nested values of :func:`scalars`, in lists, tuples, dicts, subclasses and envelopes."""

    def extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.one_of(
            st.lists(children, max_size=4),
            st.lists(children, max_size=3).map(tuple),
            st.dictionaries(keys(), children, max_size=4),
            st.dictionaries(st.text(max_size=4), children, max_size=3).map(MyDict),
            st.lists(children, max_size=3).map(MyList),
            st.fixed_dictionaries({"_type_": children, "_data_": children}),
            st.sets(st.integers(0, 3), max_size=2),
        )

    return st.recursive(scalars(), extend, max_leaves=12)


# -- comparing outcomes exactly -------------------------------------------------------


def exact(value: Any) -> Any:
    """``value`` spelled so that ``==`` tells apart what ``==`` on values does not.

    Types count (``1``, ``1.0`` and ``True`` differ), floats by their bits (``-0.0`` is
    not ``0.0``), dicts in their order.
    """
    if isinstance(value, dict):
        return ("dict", [(exact(k), exact(v)) for k, v in value.items()])
    if isinstance(value, list | tuple):
        return (type(value).__name__, [exact(item) for item in value])
    if isinstance(value, float):
        return (type(value).__name__, value.hex())
    return (type(value).__name__, value)


def fast(value: Any, what: str = "payload", *, limit: int = MAX_PAYLOAD_BYTES) -> Any:
    """The fast path alone, with ``check_json``'s signature."""
    return _check_json_fast(value, what, limit)


#: What :func:`outcome` gives when the fast path leaves the answer to the json path.
UNSURE_OUTCOME = ("unsure",)


def outcome(check: Check, value: Any, limit: int = MAX_PAYLOAD_BYTES) -> Any:
    """What ``check`` makes of ``value``: its result, exactly, or its error message."""
    try:
        result = check(value, "payload", limit=limit)
    except InvalidPayloadError as exc:
        return ("error", str(exc))
    return UNSURE_OUTCOME if result is _UNSURE else ("value", exact(result))


def assert_agree(value: Any, limit: int = MAX_PAYLOAD_BYTES) -> None:
    """``check_json`` answers as the ``json`` path; the fast path so too, if it answers."""
    expected = outcome(_check_json_by_json, value, limit)
    assert outcome(check_json, value, limit) == expected
    answer = outcome(fast, value, limit)
    assert answer in (expected, UNSURE_OUTCOME)


def containers(value: Any) -> Iterator[Any]:
    """Every list and dict in ``value``, itself included."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            if isinstance(item, list):
                yield item
            stack.extend(item)


# -- properties -----------------------------------------------------------------------


@settings(max_examples=500)
@given(values())
def test_the_fast_path_and_the_json_path_agree_on_any_value(value: Any) -> None:
    assert_agree(value)


@settings(max_examples=300)
@given(values(), st.integers(0, 300))
def test_the_fast_path_and_the_json_path_agree_on_any_limit(value: Any, limit: int) -> None:
    assert_agree(value, limit)


@given(json_values(max_leaves=20))
def test_the_fast_path_answers_for_plain_json(value: Any) -> None:
    try:
        answer = _check_json_fast(value, "payload", MAX_PAYLOAD_BYTES)
    except InvalidPayloadError:
        return  # an envelope: refused, which is an answer too
    assert answer is not _UNSURE
    assert exact(answer) == exact(json.loads(json.dumps(value)))


# -- the cases, one by one ------------------------------------------------------------


def _scalar_id(scalar: object) -> str:
    """The test id of ``scalar``: its repr, without a memory address (``<… at 0x…>``), so
    every pytest-xdist worker collects the same ids."""
    text = repr(scalar)
    return type(scalar).__name__ if " at 0x" in text else text


@pytest.mark.parametrize("scalar", ODD_SCALARS, ids=_scalar_id)
def test_odd_scalars_agree_alone_and_nested(scalar: Any) -> None:
    for value in (scalar, [scalar], {"k": [1, {"j": scalar}]}, (scalar,)):
        assert_agree(value)


@pytest.mark.parametrize("key", ODD_KEYS, ids=repr)
def test_odd_keys_agree(key: Any) -> None:
    assert_agree({key: 1})
    assert_agree([{"a": {key: [key]}}])


@pytest.mark.parametrize(
    "value",
    [float("nan"), [1.0, float("inf")], {"a": (1, 2)}, {1: "one"}, 2**64, [-(2**63) - 1]],
    ids=repr,
)
def test_what_orjson_would_write_differently_goes_to_the_json_path(value: Any) -> None:
    assert fast(value) is _UNSURE
    assert_agree(value)


def test_a_key_collision_after_conversion_keeps_the_json_paths_last_value() -> None:
    assert check_json({1: "int", "1": "str"}, "payload") == {"1": "str"}


@pytest.mark.parametrize(
    "value",
    [ClaimsEquality.ANY, [BoolValued.ONE], {"b": BytesValued.X}, Colour.RED, Level.LOW],
    ids=repr,
)
def test_enums_orjson_writes_are_left_to_the_json_path(value: Any) -> None:
    # ``orjson`` writes every one of these, and ``==`` would pass the first three.
    orjson.dumps(value)
    assert fast(value) is _UNSURE
    assert_agree(value)


def test_an_enum_claiming_equality_is_refused_as_json_refuses_it() -> None:
    with pytest.raises(InvalidPayloadError, match="must be plain JSON: Object of type"):
        check_json({"x": ClaimsEquality.ANY}, "payload")


def test_an_int_enum_valued_true_is_recorded_as_the_integer_json_writes() -> None:
    assert exact(check_json([BoolValued.ONE], "payload")) == exact([1])


@pytest.mark.parametrize(
    "value",
    [
        {"_type_": "uuid_hex", "_data_": "x"},
        [1, {"_data_": None, "_type_": "datetime_iso"}],
        {"a": {"b": [{"c": {"_type_": 1, "_data_": {"_type_": 2, "_data_": 3}}}]}},
    ],
    ids=repr,
)
def test_the_fast_path_refuses_envelopes_at_any_depth(value: Any) -> None:
    with pytest.raises(InvalidPayloadError, match="payload contains an object") as caught:
        fast(value)
    assert outcome(_check_json_by_json, value) == ("error", str(caught.value))


@pytest.mark.parametrize(
    "value",
    [{"_type_": 1}, ["_type_", "_data_"], {"k": "_type_", "_type_": 1, "_data_": 2, "x": 3}],
    ids=repr,
)
def test_the_fast_path_passes_other_shapes_with_the_envelope_keys(value: Any) -> None:
    assert fast(value) == value
    assert_agree(value)


@pytest.mark.parametrize("depth", [1, 200, 253, 254, 255, 300, 2000])
def test_deep_nesting_agrees(depth: int) -> None:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    assert_agree(value)
    # orjson stops at its nesting limit (254); deeper lists are the json path's to decide.
    assert (fast(value) is _UNSURE) == (depth > 253)


def test_self_reference_agrees() -> None:
    looped: list[Any] = []
    looped.append(looped)
    assert fast(looped) is _UNSURE
    assert outcome(check_json, looped) == (
        "error",
        "payload must be plain JSON: Circular reference detected",
    )


def test_the_result_shares_no_container_with_the_value() -> None:
    shared = ["x", {"y": [1]}]
    value = {"a": shared, "b": shared, "c": {"d": []}}
    result = fast(value)
    assert result is not _UNSURE
    assert result == value
    assert not {id(c) for c in containers(result)} & {id(c) for c in containers(value)}
    assert result["a"] is not result["b"]  # shared in the value, two copies as JSON gives


def test_equal_strings_compare_equal_however_they_were_made() -> None:
    # marshal must not tell an interned string from an equal one built at run time.
    built = "".join(["order ", "number"])
    interned = sys.intern("order number")
    assert built is not interned
    assert fast({built: built, "n": [built]}) == {interned: interned, "n": [interned]}


# -- the size limit -------------------------------------------------------------------


def sizes(value: Any) -> tuple[int, int]:
    """``value``'s size as ``json`` and as ``orjson`` write it."""
    text = json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    return len(text.encode("utf-8")), len(orjson.dumps(value))


@pytest.mark.parametrize(
    "value",
    [
        {"t": "é" * 100},  # same size in both encoders
        [1e-9] * 50,  # json writes 1e-09: a byte longer per float
        [1.5e-05] * 50,  # json writes 1.5e-05 where orjson writes 0.000015
    ],
    ids=["text", "json-longer", "orjson-longer"],
)
def test_the_size_limit_is_decided_by_the_json_size(value: Any) -> None:
    json_size, _ = sizes(value)
    for limit in (json_size - 1, json_size, json_size + 1):
        assert_agree(value, limit)
    assert check_json(value, "payload", limit=json_size) == value
    with pytest.raises(InvalidPayloadError, match=f"payload is {json_size} bytes as JSON"):
        check_json(value, "payload", limit=json_size - 1)


def test_the_fast_path_answers_only_up_to_half_the_limit() -> None:
    value = [1e-9] * 50
    _, orjson_size = sizes(value)
    assert fast(value, limit=2 * orjson_size) == value
    assert fast(value, limit=2 * orjson_size - 1) is _UNSURE
    assert check_json(value, "payload", limit=2 * orjson_size - 1) == value


def test_the_default_limit_agrees_at_its_boundary() -> None:
    overhead = len('{"t":""}')
    for length in (MAX_PAYLOAD_BYTES - overhead, MAX_PAYLOAD_BYTES - overhead + 1):
        assert_agree({"t": "a" * length})
    with pytest.raises(InvalidPayloadError, match=f"{MAX_PAYLOAD_BYTES + 1} bytes as JSON"):
        check_json({"t": "a" * (MAX_PAYLOAD_BYTES - overhead + 1)}, "payload")
