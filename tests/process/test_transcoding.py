"""The fast transcoder and mapper keep eventsourcing's stored format, both ways.

``FastJSONTranscoder`` must write the bytes eventsourcing's ``JSONTranscoder``
writes and decode any bytes to the objects ``JSONTranscoder`` decodes them to
(same types: an integer stays an integer, a float a float), or fail the same
way; ``SagaMapper`` must give the events ``Mapper`` gives. Stores written by
either keep loading with the other, without an upcaster.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import (
    Cipher,
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    MapperDeserialisationError,
    StoredEvent,
    Transcoding,
    UUIDAsHex,
)
from eventsourcing.utils import Environment, get_topic
from hypothesis import given, settings
from hypothesis import strategies as st
from support.sagas import ORDER

from sagalog.domain import Saga
from sagalog.process import SagaManager
from sagalog.process.clock import ManualClock
from sagalog.process.store.codec import FastJSONTranscoder, SagaMapper


@dataclass(frozen=True)
class Pair:
    """A user type whose transcoding nests typed values: envelopes inside an envelope."""

    id: UUID
    at: datetime


class PairAsDict(Transcoding):
    """``Pair`` as ``{"id": UUID, "at": datetime}``, each written as its own envelope."""

    type = Pair
    name = "pair"

    def encode(self, obj: Pair) -> dict[str, Any]:
        return {"id": obj.id, "at": obj.at}

    def decode(self, data: dict[str, Any]) -> Pair:
        return Pair(data["id"], data["at"])


class _Kind(enum.StrEnum):
    """A string enum, as a saga event's text field could hold: a subclass of ``str``."""

    ONE = "one"


class UUIDAsText(UUIDAsHex):
    """A replacement for ``uuid_hex`` that decodes to text: no fast path may bypass it."""

    def decode(self, data: str) -> UUID:
        return data  # type: ignore[return-value]


def transcoders(
    *extra: Transcoding,
) -> tuple[JSONTranscoder, FastJSONTranscoder]:
    """eventsourcing's transcoder and the fast one, with the same transcodings registered."""
    old, new = JSONTranscoder(), FastJSONTranscoder()
    for transcoder in (old, new):
        for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO(), PairAsDict(), *extra):
            transcoder.register(transcoding)
    return old, new


def strict(value: Any) -> Any:
    """``value`` with every type spelled out, so ``1 == 1.0`` or ``2**70 == 2.0**70`` fail."""
    if type(value) is dict:
        return ("dict", [(key, strict(item)) for key, item in value.items()])
    if type(value) is list:
        return ("list", [strict(item) for item in value])
    if type(value) is float:
        return ("float", "nan" if math.isnan(value) else repr(value))
    if type(value) is datetime:
        return ("datetime", value.isoformat())
    if type(value) is Pair:
        return ("Pair", strict(value.id), strict(value.at))
    return (type(value).__name__, value)


def same_json(written: bytes, expected: bytes) -> bool:
    """``written`` is ``expected`` byte for byte, or differs only in how floats are spelled.

    orjson spells some floats differently from ``json`` (``1e-7`` for ``1e-07``,
    ``0.00001`` for ``1e-05``): the same number. Anything else (a key, a string,
    an envelope, a type) must be the same.
    """
    return written == expected or strict(json.loads(written)) == strict(json.loads(expected))


def outcome(decode: Callable[[Any], Any], data: Any) -> Any:
    """What decoding ``data`` gives: its strict form, or the type of error raised."""
    try:
        return strict(decode(data))
    except Exception as exc:
        return ("raised", type(exc).__name__)


# -- strategies ----------------------------------------------------------------------

offsets = st.sampled_from(
    [None, UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
)
datetimes = st.datetimes(timezones=offsets)
integers = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**130), max_value=2**130),
    st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**19]),
)
floats = st.one_of(
    st.floats(allow_nan=False),
    st.sampled_from([0.0, -0.0, 1e-05, 1e-4, 1e16, 1e300, 5e-324, 0.1, 120.5]),
)
texts = st.one_of(
    st.text(),
    st.sampled_from(['"_type_"', "_type_", "\\u005f", "\x00\x1f\x7f", "é😀\u2028", "1" * 25]),
)
keys = st.one_of(st.sampled_from(["_type_", "_data_", "a", "é", "\\u"]), st.text(max_size=8))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    integers,
    floats,
    texts,
    st.uuids(),
    datetimes,
    st.decimals(allow_nan=False, allow_infinity=False),
    st.builds(Pair, st.uuids(), datetimes),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20,
)


#: What saga payloads hold: plain JSON, as ``check_json`` returns it (no UUIDs,
#: datetimes or NaN nested; the domain refuses envelope-shaped objects).
finite_floats = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 1e-05, 1e-7, 1e16, 1e300, 5e-324, 0.1, 120.5]),
)
plain_values = st.recursive(
    st.one_of(st.none(), st.booleans(), integers, finite_floats, texts),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(keys, inner, max_size=4).filter(
            lambda d: d.keys() != {"_type_", "_data_"}
        )
    ),
    max_leaves=20,
)

#: Nested values orjson refuses to write (so ``json`` writes the state): datetimes,
#: decimals, dataclasses; and everything plain. Not UUIDs, NaN or plain enums,
#: which orjson writes its own way (``encode_flat``'s caller vouches they are absent).
refused_or_plain = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        integers,
        finite_floats,
        texts,
        datetimes,
        st.decimals(allow_nan=False, allow_infinity=False),
        st.builds(Pair, st.uuids(), datetimes),
    ),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20,
)


def _annotations(cls: type) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for base in reversed(cls.__mro__):
        found.update(getattr(base, "__annotations__", {}))
    return found


def _field_values(annotation: str) -> st.SearchStrategy[Any]:
    """Values for an event field, by its annotation: the types sagas store, at their edges."""
    optional = annotation.endswith("| None")
    strategy: st.SearchStrategy[Any]
    if annotation.startswith("datetime"):
        strategy = datetimes
    elif annotation.startswith("UUID"):
        strategy = st.uuids()
    elif annotation.startswith("int"):
        strategy = integers
    elif annotation.startswith("str"):
        strategy = texts
    else:  # dict[str, Any], Any: payloads, which the domain checks are plain JSON
        strategy = st.dictionaries(keys, plain_values, max_size=5)
    return strategy | st.none() if optional else strategy


SAGA_EVENT_TYPES = sorted(
    (
        cls
        for cls in vars(Saga).values()
        if isinstance(cls, type) and issubclass(cls, Saga.Event) and cls is not Saga.Event
    ),
    key=lambda cls: cls.__name__,
)


@st.composite
def saga_events(draw: st.DrawFn, cls: type) -> Saga.Event:
    """Any saga event of type ``cls``, its fields drawn by their annotations."""
    state: dict[str, Any] = {}
    annotations = _annotations(cls)
    for field in dataclasses.fields(cls):
        if field.name == "originator_id":
            state[field.name] = draw(st.uuids())
        elif field.name == "originator_version":
            state[field.name] = draw(st.integers(min_value=1, max_value=2**40))
        else:
            state[field.name] = draw(_field_values(str(annotations[field.name])))
    event: Saga.Event = object.__new__(cls)
    object.__setattr__(event, "__dict__", state)
    return event


# -- the transcoder ------------------------------------------------------------------


@pytest.mark.parametrize("cls", SAGA_EVENT_TYPES, ids=lambda cls: cls.__name__)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_every_saga_event_type_is_stored_and_read_back_as_eventsourcing_does(
    cls: type, data: st.DataObject
) -> None:
    event = data.draw(saga_events(cls))
    old, new = transcoders()
    old_mapper, new_mapper = Mapper[UUID](old), SagaMapper(new)
    stored = old_mapper.to_stored_event(event)
    written = new_mapper.to_stored_event(event)
    assert (written.originator_id, written.originator_version, written.topic) == (
        stored.originator_id,
        stored.originator_version,
        stored.topic,
    )
    assert same_json(written.state, stored.state)
    # eventsourcing's own mapper reads what the fast one wrote as what it wrote itself.
    assert outcome(lambda row: vars(old_mapper.to_domain_event(row)), written) == outcome(
        lambda row: vars(old_mapper.to_domain_event(row)), stored
    )
    expected = outcome(lambda row: vars(old_mapper.to_domain_event(row)), stored)
    assert outcome(lambda row: vars(new_mapper.to_domain_event(row)), stored) == expected
    assert outcome(lambda row: vars(new_mapper.to_domain_event(row)), stored) == expected
    assert outcome(new.decode, stored.state) == outcome(old.decode, stored.state)


@settings(max_examples=400, deadline=None)
@given(
    state=st.dictionaries(
        keys,
        st.one_of(scalars, st.floats(), st.tuples(plain_values), refused_or_plain),
        max_size=6,
    )
)
def test_a_flat_state_is_written_with_the_bytes_json_writes(state: dict[str, Any]) -> None:
    # Top-level UUIDs, datetimes, decimals, NaN and infinities; nested anything
    # orjson refuses: each is written as eventsourcing's json writes it.
    old, new = transcoders()
    try:
        written = old.encode(dict(state))
    except Exception as exc:
        with pytest.raises(type(exc)):
            new.encode_flat(dict(state))
        return
    assert same_json(new.encode_flat(dict(state)), written)


@settings(max_examples=300, deadline=None)
@given(state=st.dictionaries(keys, values, max_size=6), data=st.data())
def test_looking_in_named_fields_first_decodes_the_same_object(
    state: dict[str, Any], data: st.DataObject
) -> None:
    # Whichever fields are named (holding envelopes, other values, or absent),
    # the object is the one eventsourcing's decoder gives.
    old, new = transcoders()
    try:
        written = old.encode(state)
    except Exception:
        return
    fields = tuple(
        data.draw(st.lists(st.sampled_from([*state, "absent", "_type_"]), max_size=4, unique=True))
    )
    assert outcome(lambda b: new.decode_fields(b, fields), written) == outcome(old.decode, written)


def test_values_repeated_across_states_are_written_as_each_state_alone() -> None:
    # encode_flat reuses the envelope of the object it wrote last (by identity only).
    old, new = transcoders()
    saga_id = uuid4()
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    same_instant = moment.astimezone(timezone(timedelta(hours=1)))  # equal, other text
    states = [
        {"timestamp": moment, "correlation_id": saga_id, "n": 1},
        {"timestamp": moment, "correlation_id": saga_id, "n": 2},
        {"timestamp": same_instant, "correlation_id": uuid4(), "n": 3},
        {"timestamp": moment, "correlation_id": saga_id, "n": 4},
    ]
    for state in states:
        assert new.encode_flat(dict(state)) == old.encode(dict(state))
    new.register(UUIDAsText())  # a replaced transcoding: nothing remembered is reused
    assert new.encode_flat({"id": saga_id}) == old.encode({"id": saga_id})


def test_a_flat_state_with_what_orjson_refuses_falls_back_to_json() -> None:
    old, new = transcoders()
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    for state in (
        {"n": 2**64, "at": at},
        {"keys": {1: "one", None: "none"}},
        {"nested": {"at": at}},
        {"nested": [Pair(uuid4(), at)]},
        {"x": float("nan"), "y": float("inf")},
        {"flag": _Kind.ONE, "id": uuid4()},
    ):
        assert same_json(new.encode_flat(dict(state)), old.encode(dict(state))), state
    with pytest.raises(UnicodeEncodeError):
        new.encode_flat({"text": "\ud800"})


@settings(max_examples=400, deadline=None)
@given(value=values)
def test_any_value_encodes_to_the_same_bytes_and_decodes_to_the_same_object(value: Any) -> None:
    old, new = transcoders()
    try:
        written = old.encode(value)
    except Exception as exc:
        with pytest.raises(type(exc)):
            new.encode(value)
        return
    assert new.encode(value) == written
    assert outcome(new.decode, written) == outcome(old.decode, written)


@settings(max_examples=300, deadline=None)
@given(
    text=st.recursive(
        st.none() | st.booleans() | integers | floats | texts,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
        max_leaves=12,
    )
)
def test_any_json_text_decodes_as_eventsourcing_decodes_it(text: Any) -> None:
    """Plain JSON written by anyone (here ``json`` itself), envelopes or not, any spelling."""
    old, new = transcoders()
    for data in (
        json.dumps(text).encode(),  # ASCII with \\u escapes, spaces after separators
        json.dumps(text, ensure_ascii=False, separators=(",", ":")).encode(),
    ):
        assert outcome(new.decode, data) == outcome(old.decode, data)


ENVELOPE = b'{"_type_":"uuid_hex","_data_":"5c0b3cbe0ad94b1b8e2a4a6a1ba3ef4e"}'


@pytest.mark.parametrize(
    "data",
    [
        ENVELOPE,  # a typed value at the top level
        b'{"a":' + ENVELOPE + b',"b":[' + ENVELOPE + b"]}",  # nested in a list
        b'{"\\u005ftype_":"uuid_hex","_data_":"5c0b3cbe0ad94b1b8e2a4a6a1ba3ef4e"}',  # escaped key
        b'{"_type_":"uuid_hex","_data_":"5c0b3cbe0ad94b1b8e2a4a6a1ba3ef4e","x":1}',  # 3 keys
        b'{"t":{"_type_":"uuid_hex","_data_":"5C0B3CBE0AD94B1B8E2A4A6A1BA3EF4E"}}',  # upper hex
        b'{"t":{"_type_":"uuid_hex","_data_":"{5c0b3cbe-0ad9-4b1b-8e2a-4a6a1ba3ef4e}"}}',
        b'{"t":{"_type_":"uuid_hex","_data_":"5c0b3cbe0ad94b1b8e2a4a6a1ba3ef4g"}}',  # not hex
        b'{"t":{"_type_":"uuid_hex","_data_":12}}',  # not a string
        b'{"t":{"_type_":"datetime_iso","_data_":"2026-03-01T12:00:00.000001+05:30"}}',
        b'{"t":{"_type_":"datetime_iso","_data_":"yesterday"}}',
        b'{"t":{"_type_":"nobody","_data_":1}}',  # unknown type
        b'{"t":{"_type_":[1],"_data_":1}}',  # unhashable type name
        b'{"t":{"_type_":"uuid_hex","_type_":"decimal_str","_data_":"1.5"}}',  # repeated key
        b'{"s":"\\"_type_\\": not a key","n":{"_type_":1}}',
        b'{"p":{"_type_":"pair","_data_":{"id":' + ENVELOPE + b',"at":'
        b'{"_type_":"datetime_iso","_data_":"2026-03-01T12:00:00"}}}}',
        b'{"big":123456789012345678901234567890,"neg":-18446744073709551617}',
        b'{"edge":18446744073709551615,"f":1e400,"g":-0.0,"h":1E-7}',
        b'{"n":NaN,"i":-Infinity}',
        b'{"lone":"\\ud800"}',
        b'{"t":{"_type_":"uuid_hex","_data_":"5c0b3cbe0ad94b1b8e2a4a6a1ba3ef4e"},"a":{"_type_":"x"}}',
        b'{"t":{"_type_":"datetime_iso","_data_":"2026-03-01T12:00:00"},"b":{"_type_":"nobody","_data_":1}}',
        b'{"a":[{"_type_":"nobody","_data_":1}],"t":{"_type_":"datetime_iso","_data_":"late"}}',
        b'{"t":{"_type_":"uuid_hex","_data_":"5c0b3cbe0ad94b1b8e2a4a6a1ba3ef4e"},"s":"\\n"}',
        b'{"t":{"_type_":null,"_data_":"x"}}',
        b'{"a":{"_type_":"nobody","_data_":1},"t":{"_type_":"datetime_iso","_data_":"late"}}',
        b'{"t":{"_type_":"datetime_iso","_data_":null}}',
        b"[1,2",  # truncated
        b"\xff\xfe",  # not UTF-8
        b"  [] ",
        b'"text"',
    ],
)
def test_edge_cases_decode_or_fail_as_eventsourcing_does(data: bytes) -> None:
    old, new = transcoders()
    assert outcome(new.decode, data) == outcome(old.decode, data)
    # Naming the fields where envelopes are expected (the mapper's fast path)
    # gives the same object or error, whichever fields are named.
    for fields in (("t",), ("p", "t"), ("a", "b"), ("n", "s", "t"), ("absent",)):
        assert outcome(partial(new.decode_fields, fields=fields), data) == outcome(old.decode, data)


def test_a_replaced_transcoding_is_used_not_the_fast_path() -> None:
    old, new = transcoders(UUIDAsText())
    data = b'{"t":' + ENVELOPE + b',"u":1}'
    assert (
        new.decode(data)
        == old.decode(data)
        == {
            "t": "5c0b3cbe0ad94b1b8e2a4a6a1ba3ef4e",
            "u": 1,
        }
    )


def test_decoded_uuids_are_shared_but_equal_to_fresh_ones() -> None:
    _old, new = transcoders()
    first, second = new.decode(ENVELOPE), new.decode(ENVELOPE)
    assert first == second == UUID("5c0b3cbe0ad94b1b8e2a4a6a1ba3ef4e")
    assert hash(first) == hash(UUID("5c0b3cbe0ad94b1b8e2a4a6a1ba3ef4e"))
    with pytest.raises(TypeError):
        first.int = 1


def test_the_mapper_words_a_corrupt_event_as_eventsourcing_does() -> None:
    old, new = transcoders()
    event = Saga.SagaCompleted.__new__(Saga.SagaCompleted)
    object.__setattr__(
        event,
        "__dict__",
        {
            "originator_id": uuid4(),
            "originator_version": 3,
            "timestamp": datetime.now(UTC),
            "correlation_id": uuid4(),
            "causation_id": None,
        },
    )
    stored = Mapper[UUID](old).to_stored_event(event)
    mapper = SagaMapper(new)
    mapper.to_domain_event(stored)  # the class is known from now on
    corrupt = dataclasses.replace(stored, state=stored.state[:-1])
    with pytest.raises(MapperDeserialisationError) as fast:
        mapper.to_domain_event(corrupt)
    with pytest.raises(MapperDeserialisationError) as reference:
        Mapper[UUID](old).to_domain_event(corrupt)
    assert str(fast.value) == str(reference.value)
    as_text = StoredEvent(str(stored.originator_id), 3, stored.topic, stored.state)
    assert vars(mapper.to_domain_event(as_text)) == vars(Mapper[UUID](old).to_domain_event(as_text))


# -- the manager ---------------------------------------------------------------------

ESCAPES_JSON_TRANSCODER = {
    "TRANSCODER_TOPIC": get_topic(JSONTranscoder),
    "MAPPER_TOPIC": get_topic(Mapper),
}


class XorCipher(Cipher):
    """A toy cipher (flips every byte), to show the cipher option still applies."""

    def __init__(self, environment: Environment) -> None:
        self.environment = environment

    def encrypt(self, plaintext: bytes) -> bytes:
        return bytes(byte ^ 0x5A for byte in plaintext)

    def decrypt(self, ciphertext: bytes) -> bytes:
        return bytes(byte ^ 0x5A for byte in ciphertext)


def _drive(manager: SagaManager, clock: ManualClock) -> list[UUID]:
    """A few sagas through many kinds of event: completion, timeouts, failure, abort."""
    data = {"order": "ö-1", "amount": 120.5, "big": 2**70, "tags": ["a", {"_type_": "x", "y": 1}]}
    done, failed, timed_out, aborted = (manager.start("Order", data) for _ in range(4))
    for step in ("reserve", "charge", "ship", "notify"):
        manager.handle_step_completed(done, step, {"ref": step, "at": "2026"})
    manager.handle_step_completed(failed, "reserve")
    manager.handle_step_failed(failed, "charge", "card declined ✗")
    manager.abort(aborted, actor="ops", reason="customer called")
    manager.tick(clock.advance(31))
    manager.tick(clock.advance(10))
    return [done, failed, timed_out, aborted]


def _states(manager: SagaManager, ids: list[UUID]) -> list[Any]:
    return [{k: v for k, v in vars(manager.get(i)).items() if k != "_pending_events"} for i in ids]


@pytest.fixture
def fast_and_reference(
    database_url: str, clock: ManualClock
) -> Iterator[tuple[SagaManager, SagaManager]]:
    fast = SagaManager([ORDER], database_url, clock=clock)
    reference = SagaManager([ORDER], database_url, clock=clock, env=ESCAPES_JSON_TRANSCODER)
    yield fast, reference
    fast.close()
    reference.close()


def test_the_manager_decodes_with_the_fast_transcoder_by_default(
    fast_and_reference: tuple[SagaManager, SagaManager],
) -> None:
    fast, reference = fast_and_reference
    assert type(fast.mapper) is SagaMapper
    assert type(fast.mapper.transcoder) is FastJSONTranscoder
    assert type(reference.mapper) is Mapper
    assert type(reference.mapper.transcoder) is JSONTranscoder


@pytest.mark.parametrize("writer", ["fast", "reference"])
def test_a_store_written_by_either_transcoder_rebuilds_the_same_sagas(
    fast_and_reference: tuple[SagaManager, SagaManager], clock: ManualClock, writer: str
) -> None:
    fast, reference = fast_and_reference
    if fast.database_url.kind == "memory":  # two in-memory managers share no store
        pytest.skip("needs a store both managers open")
    ids = _drive(fast if writer == "fast" else reference, clock)
    assert _states(fast, ids) == _states(reference, ids)
    assert fast.get_many(ids).keys() == set(ids)
    rows = fast.recorder.select_notifications(start=1, limit=1000)
    assert len({row.topic for row in rows}) >= 8
    for row in rows:
        assert strict(vars(fast.mapper.to_domain_event(row))) == strict(
            vars(reference.mapper.to_domain_event(row))
        )
        event = reference.mapper.to_domain_event(row)
        assert fast.mapper.to_stored_event(event).state == row.state


@pytest.mark.parametrize(
    "env",
    [
        {"COMPRESSOR_TOPIC": "eventsourcing.compressor:ZlibCompressor"},
        {"CIPHER_TOPIC": get_topic(XorCipher)},
    ],
    ids=["compressor", "cipher"],
)
def test_compressor_and_cipher_settings_still_apply(
    database_url: str, clock: ManualClock, env: dict[str, str]
) -> None:
    manager = SagaManager([ORDER], database_url, clock=clock, env=env)
    try:
        assert type(manager.mapper) is SagaMapper
        assert (manager.mapper.compressor or manager.mapper.cipher) is not None
        ids = _drive(manager, clock)
        row = manager.recorder.select_notifications(start=1, limit=1)[0]
        assert not row.state.startswith(b"{")  # stored compressed or enciphered
        assert _states(manager, ids) == [
            {k: v for k, v in vars(saga).items() if k != "_pending_events"}
            for saga in manager.get_many(ids).values()
        ]
        assert manager.get(ids[0]).data["big"] == 2**70
    finally:
        manager.close()
