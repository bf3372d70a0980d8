"""A JSON transcoder that reads and writes eventsourcing's stored format with orjson.

eventsourcing's :class:`~eventsourcing.persistence.JSONTranscoder` decodes each
stored event with the standard library's ``json`` and an ``object_hook`` that
runs in Python for every JSON object, to turn the envelopes
``{"_type_": name, "_data_": value}`` it writes for UUIDs, datetimes and
decimals back into those values. Decoding was the largest part of rebuilding a
saga: see docs/performance.md, "Stored-event codec".

:class:`FastJSONTranscoder` keeps that format byte for byte and only changes
how it is parsed: ``orjson`` parses the bytes, then envelopes are turned into
values in one pass. Most saga events carry their envelopes (the timestamp, a
deadline) as top-level fields with a string payload, so counting the
``"_type_"`` keys in the bytes usually shows that the top level holds all of
them and nothing deeper is visited. Anything outside the cases where orjson is
known to agree with ``json`` goes to the inherited ``json`` code path, so the
objects decoded (and the errors raised) are the same:

* text that orjson refuses (``NaN``, ``Infinity``, lone surrogate escapes,
  invalid UTF-8, …);
* a run of 19 or more digits anywhere (orjson reads integers beyond 64 bits as
  floats, ``json`` as exact integers);
* a ``\\u`` escape anywhere (a key could spell ``_type_`` with escapes, so the
  count would not be a bound): the envelopes are then found by a full pass.

Encoding: :meth:`FastJSONTranscoder.encode_flat` writes, with orjson, what
``json`` writes (the same bytes, except that orjson spells some floats
differently, ``1e-7`` for ``1e-07``: the same number) for a state whose typed
values (UUIDs, datetimes) are all top-level fields and whose nested values are
plain JSON, which is what every saga event is (its payloads pass
``check_json``, its definition is pydantic's JSON dump). :class:`SagaMapper`
uses it for saga events only; anything else, and anything orjson cannot write
as ``json`` would, goes through ``json`` (a C encoder whose ``default`` hook
runs in Python for every typed value).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID, SafeUUID

import orjson
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import (
    Cipher,
    Compressor,
    DatetimeAsISO,
    JSONTranscoder,
    Mapper,
    MapperDeserialisationError,
    StoredEvent,
    Transcoder,
    Transcoding,
    UUIDAsHex,
    find_id_convertor,
    pass_through_convertor,
)
from eventsourcing.utils import get_topic, resolve_topic

from sagalog.domain import Saga
from sagalog.process.store.encryption import (
    EncryptionKeyError,
    EncryptionKeyMissingError,
    is_encrypted,
)
from sagalog.process.store.shredding import (
    ENCRYPTED,
    SEALED_FIELDS,
    SEALED_PREFIX,
    SagaDataKeys,
    erased_value,
)

#: Maps every digit to ``0`` and blanks the rest: one ``bytes.translate`` (far
#: cheaper than a regular expression) then shows a long run of digits.
_SCREEN = bytes(ord("0") if chr(c).isdigit() and c < 128 else ord(" ") for c in range(256))
#: Where orjson could read a number differently from ``json``: integers beyond
#: 64 bits (orjson gives a float). A conservative over-approximation: any run of
#: 19 digits, in a number or in a string, sends the event to ``json``.
_LONG_DIGITS = b"0" * 19
_ESCAPE = b"\\u"
#: A backslash, looked for first: ``in`` finds one byte far faster than two.
_BACKSLASH = b"\\"
_TYPE_KEY = b'"_type_"'

_CONTAINERS = (dict, list)


def _uuid_from_hex(data: Any) -> UUID:
    """``UUIDAsHex().decode(data)``, without ``UUID.__init__``'s parsing for plain hex.

    For 32 ASCII letters and digits ``UUID(data)`` does exactly ``int(data, 16)``
    (its replacements and strips change nothing in such a string), so the value,
    and the ``ValueError`` for a non-hex letter, are the same. Every event of a
    saga carries the saga's id (``correlation_id``), so the UUIDs decoded last
    are kept and shared: a ``UUID`` is immutable.
    """
    if type(data) is str and len(data) == 32:
        value = _recent_uuids.get(data)
        if value is not None:
            return value
        if data.isascii() and data.isalnum():
            value = _new_object(UUID)
            _set_attribute(value, "int", int(data, 16))
            _set_attribute(value, "is_safe", _SAFE_UNKNOWN)
            if len(_recent_uuids) >= _RECENT_UUIDS_SIZE:
                _recent_uuids.clear()
            _recent_uuids[data] = value
            return value
    return _UUID_AS_HEX.decode(data)


def _datetime_from_iso(data: Any) -> datetime:
    """``DatetimeAsISO().decode(data)`` without the extra call."""
    if type(data) is str:
        return datetime.fromisoformat(data)
    return _DATETIME_AS_ISO.decode(data)


#: At most this many recently decoded UUIDs are kept (then all are dropped).
_RECENT_UUIDS_SIZE = 4096
_recent_uuids: dict[str, UUID] = {}
_new_object = object.__new__
_set_attribute = object.__setattr__
#: Bound once: reading an enum member off its class runs Python code on 3.11.
_SAFE_UNKNOWN = SafeUUID.unknown
_from_iso = datetime.fromisoformat
#: A ``_data_`` that is not there (``None`` is a value an envelope may carry).
_MISSING: Any = object()
_UUID_AS_HEX = UUIDAsHex()
_DATETIME_AS_ISO = DatetimeAsISO()

#: eventsourcing's own transcodings, by exact type, and a faster equal decoder.
_FAST_DECODERS: dict[type[Transcoding], Callable[[Any], Any]] = {
    UUIDAsHex: _uuid_from_hex,
    DatetimeAsISO: _datetime_from_iso,
}

#: eventsourcing's own transcodings, by exact type, and the value each one writes
#: as ``_data_`` (what their ``encode`` returns, without the call).
_FAST_ENCODERS: dict[type[Transcoding], Callable[[Any], Any]] = {
    UUIDAsHex: lambda value: value.hex,
    DatetimeAsISO: lambda value: value.isoformat(),
}

#: Values orjson writes exactly as ``json`` (with eventsourcing's separators and
#: ``ensure_ascii=False``) writes them, by exact type; a ``float`` only if finite.
_PLAIN_TYPES = frozenset({str, int, bool, type(None), dict, list, tuple})

#: orjson hands datetimes, dataclasses and subclasses of built-in types to
#: ``default`` (which refuses them) instead of writing them its own way, so any
#: such value nested in a state sends the whole state to ``json``.
_ORJSON_OPTIONS = (
    orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


def _refuse(value: Any) -> Any:
    """orjson's ``default``: any value it does not write natively is left to ``json``."""
    raise TypeError(type(value).__name__)


class FastJSONTranscoder(JSONTranscoder):
    """eventsourcing's JSON transcoder, with the same bytes, decoded by orjson.

    Transcodings are registered as on :class:`JSONTranscoder` (``register``). An
    envelope whose ``_type_`` names eventsourcing's own ``UUIDAsHex`` or
    ``DatetimeAsISO`` is decoded by an equal, faster function; any other goes
    through the inherited ``_decode_obj``, so an unknown ``_type_`` raises the
    same ``TranscodingNotRegisteredError``.
    """

    def __init__(self) -> None:
        """A transcoder with no transcodings registered yet, as ``JSONTranscoder()``."""
        super().__init__()
        self._fast: dict[str, Callable[[Any], Any]] = {}
        #: ``datetime_iso`` is eventsourcing's own ``DatetimeAsISO`` (decoded inline).
        self._datetime_iso_inline = False
        self._fast_encoders: dict[type[Any], tuple[str, Callable[[Any], Any]]] = {}
        #: Per field name, the value encoded last and its envelope (:meth:`encode_flat`).
        self._last_envelopes: dict[str, tuple[Any, dict[str, Any]]] = {}

    def register(self, transcoding: Transcoding) -> None:
        """Register ``transcoding``, with its faster decoder and encoder if it has them."""
        super().register(transcoding)
        fast = _FAST_DECODERS.get(type(transcoding))
        if fast is None:
            self._fast.pop(transcoding.name, None)
        else:
            self._fast[transcoding.name] = fast
        self._datetime_iso_inline = self._fast.get("datetime_iso") is _datetime_from_iso
        self._last_envelopes.clear()
        encoder = _FAST_ENCODERS.get(type(transcoding))
        if encoder is None:
            self._fast_encoders.pop(transcoding.type, None)
        else:
            self._fast_encoders[transcoding.type] = (transcoding.name, encoder)

    def encode_flat(self, state: dict[str, Any]) -> bytes:
        """What ``encode(state)`` writes, by orjson when ``state`` is flat; changes ``state``.

        The bytes are ``encode``'s, except for how orjson spells some floats
        (``1e-7``, ``0.00001`` where ``json`` writes ``1e-07``, ``1e-05``): every
        decoder reads the same value back.

        Flat: every value that needs a transcoding (a ``UUID``, a ``datetime``)
        is a top-level field, and every nested value is plain JSON (``str``,
        ``int`` within 64 bits, finite ``float``, ``bool``, ``None``, ``dict``
        with string keys, ``list``, ``tuple``). The caller vouches for the
        nesting, because orjson writes a nested ``UUID`` as a plain string, a
        nested NaN as ``null`` and a nested plain ``Enum`` as its value where
        ``json`` would not; everything else that orjson would write differently
        it refuses (datetimes, dataclasses and subclasses are handed to a
        ``default`` that raises), and then ``json`` writes the state.

        Top-level typed values are replaced in ``state`` by their envelopes
        ``{"_type_": name, "_data_": value}``, exactly as ``json``'s ``default``
        hook writes them, so either way eventsourcing reads the state back.
        """
        encoders = self._fast_encoders
        last = self._last_envelopes
        for key, value in state.items():
            kind = type(value)
            if kind in _PLAIN_TYPES:
                continue
            fast = encoders.get(kind)
            if fast is not None:
                # The same object as the last one under this key (a batch's
                # timestamp, a saga's id in each of its events): the same envelope,
                # shared (nothing changes an envelope; states are written, dropped).
                previous = last.get(key)
                if previous is not None and previous[0] is value:
                    state[key] = previous[1]
                else:
                    envelope = {"_type_": fast[0], "_data_": fast[1](value)}
                    last[key] = (value, envelope)
                    state[key] = envelope
            elif kind is not float or not math.isfinite(value):
                return self.encode(state)
        try:
            return orjson.dumps(state, default=_refuse, option=_ORJSON_OPTIONS)
        except TypeError:  # orjson.JSONEncodeError: big int, non-str key, surrogate, ...
            return self.encode(state)

    def decode(self, data: bytes) -> Any:
        """Decode ``data`` (UTF-8 JSON) to the object ``JSONTranscoder.decode`` gives."""
        return self.decode_fields(data, ())

    def decode_fields(self, data: bytes, fields: tuple[str, ...]) -> Any:
        """``decode(data)``, looking for the envelopes in the top-level ``fields`` first.

        ``fields`` names, each once, where a state is expected to hold its typed
        values (a saga event's UUID and datetime fields). The bytes are screened
        and parsed once; the envelopes found in ``fields`` are decoded in place
        (:meth:`_decode_named`), and if they are all the ``"_type_"`` keys the
        bytes contain, that is the object — a saga event's state nearly always
        is, and every rebuild runs this once per event. Otherwise the other
        top-level values are looked at, then every value at any depth, as
        :meth:`decode` does. The object is the same either way: a decoded
        envelope held a string, so nothing was nested in it.
        """
        if _LONG_DIGITS in data.translate(_SCREEN):
            return JSONTranscoder.decode(self, data)
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return JSONTranscoder.decode(self, data)
        if _BACKSLASH in data and _ESCAPE in data:
            return self._decode_deep(obj)
        expected = data.count(_TYPE_KEY)
        if expected == 0:
            return obj
        if type(obj) is not dict:
            return self._decode_deep(obj)
        found = 0
        if fields:
            try:
                found = self._decode_named(obj, fields)
            except ValueError:
                # A malformed value: parse again and let the whole-object path
                # decide what is raised, in the document's order as ``json`` does.
                obj = orjson.loads(data)
                found = 0
            if found == expected:
                return obj
        pairs = [
            (key, value) for key, value in obj.items() if type(value) is dict and "_type_" in value
        ]
        if len(pairs) == expected - found:
            self._decode_pairs(obj, pairs)
            return obj
        return self._decode_deep(obj)

    def _decode_named(self, obj: dict[str, Any], fields: tuple[str, ...]) -> int:
        """Decode, in place, the envelopes in ``obj``'s ``fields`` that hold a string; how many.

        Stops at the first envelope it cannot decode this way (a value that is
        not a string, a name without a fast decoder), leaving it and the rest to
        the caller. A repeated decoded UUID (the saga's id in each of its events)
        is taken from the shared ones without a call.
        """
        fast = self._fast
        datetime_iso = self._datetime_iso_inline
        found = 0
        for key in fields:
            value = obj.get(key)
            if type(value) is not dict or len(value) != 2 or "_type_" not in value:
                continue
            name = value["_type_"]
            item = value.get("_data_", _MISSING)
            if type(item) is not str or type(name) is not str:
                break
            if datetime_iso and name == "datetime_iso":
                obj[key] = _from_iso(item)
            elif (shared := _recent_uuids.get(item)) is not None and (
                fast.get(name) is _uuid_from_hex
            ):
                obj[key] = shared
            else:
                decoder = fast.get(name)
                if decoder is None:
                    break
                obj[key] = decoder(item)
            found += 1
        return found

    def _decode_pairs(self, obj: dict[str, Any], pairs: list[tuple[str, Any]]) -> None:
        """Turn the top-level envelopes ``(key, value)`` into values, all envelopes being there.

        The caller counted the ``"_type_"`` strings in the bytes: every key
        ``_type_`` anywhere in ``obj`` (``obj``'s own included) is one of them.
        When that many top-level values in ``pairs`` are objects with a
        ``_type_`` key, all are accounted for: no envelope is nested deeper (nor
        inside those values), so decoding these is what ``json`` would do.
        eventsourcing's own ``datetime_iso`` of a string is decoded inline (one
        call fewer per event: docs/performance.md, "Stored-event codec").
        """
        fast = self._fast
        datetime_iso = self._datetime_iso_inline
        for key, value in pairs:
            if len(value) != 2:
                continue
            data = value.get("_data_", _MISSING)
            if data is _MISSING:
                continue
            name = value["_type_"]
            if datetime_iso and name == "datetime_iso" and type(data) is str:
                obj[key] = _from_iso(data)
                continue
            decoder = fast.get(name) if type(name) is str else None
            if decoder is None:
                obj[key] = self._decode_obj(value)
            else:
                obj[key] = decoder(data)

    def _decode_deep(self, obj: Any) -> Any:
        """Turn every envelope in ``obj`` into its value, innermost first, as ``json`` does."""
        if type(obj) is dict:
            for key, value in obj.items():
                if type(value) is dict or type(value) is list:
                    obj[key] = self._decode_deep(value)
            if len(obj) == 2:
                return self._decode_obj(obj)
            return obj
        if type(obj) is list:
            for index, value in enumerate(obj):
                if type(value) is dict or type(value) is list:
                    obj[index] = self._decode_deep(value)
        return obj


class SagaMapper(Mapper[UUID]):
    """eventsourcing's ``Mapper``, with less work per saga event written and read.

    Writing: a saga event (a ``Saga.Event``) is flat — its UUIDs and datetimes
    are top-level fields and its payloads are plain JSON (``check_json``) — so
    with a :class:`FastJSONTranscoder` its state is written by
    :meth:`FastJSONTranscoder.encode_flat` (the same JSON, less work:
    docs/performance.md, "Stored-event codec"). Other events (snapshots, other
    aggregates') are written as ``Mapper`` writes them.

    Reading: ``Mapper.to_domain_event`` looks up, for every event, how to convert its
    originator id (an ``lru_cache`` call) and the class's version. Here both
    are remembered per event class, for events whose originator id is already
    a ``UUID`` (both sagalog recorders return UUIDs). Everything else — string
    ids, the first event of each class, and any event that fails to decrypt,
    decompress or decode — goes through ``Mapper.to_domain_event`` itself, so
    the events and errors are the same.
    """

    def __init__(
        self,
        transcoder: Transcoder,
        compressor: Compressor | None = None,
        cipher: Cipher | None = None,
    ) -> None:
        """A mapper as eventsourcing's, with an empty per-class memory."""
        super().__init__(transcoder, compressor=compressor, cipher=cipher)
        #: Event classes by topic (eventsourcing's ``resolve_topic``, remembered here).
        self._topic_classes: dict[str, type[Any]] = {}
        #: Per event class read with a UUID id: its class version and typed fields.
        self._read_classes: dict[type[Any], tuple[int, tuple[str, ...]]] = {}
        self._decode_fields = (
            transcoder.decode_fields if isinstance(transcoder, FastJSONTranscoder) else None
        )
        #: ``decode_fields`` when the stored bytes are the transcoder's own (no
        #: cipher, no compressor): the one call the fast path makes per event.
        self._plain_fields = self._decode_fields if cipher is None and compressor is None else None
        #: Per saga event class: its topic and class version (``None``: not a saga event).
        self._flat_classes: dict[type[Any], tuple[str, int] | None] = {}
        self._encode_flat = (
            transcoder.encode_flat if isinstance(transcoder, FastJSONTranscoder) else None
        )
        #: Each saga's data keys (crypto-shredding), when encryption is on.
        self.data_keys: SagaDataKeys | None = None
        #: Sealed payloads are read as ``<encrypted>``, not decrypted (the read models).
        self.redacting = False
        #: Per saga event class: the fields sealed under the saga's data key.
        self._sealed_classes: dict[type[Any], tuple[str, ...]] = {}

    def seal_payloads(self, data_keys: SagaDataKeys) -> None:
        """Seal saga events' payload fields under each saga's data key from now on."""
        self.data_keys = data_keys
        # An instance attribute: a mapper without encryption reads with no extra step.
        self.event_from_row = self._opened_event_from_row  # type: ignore[method-assign]

    def redacted(self) -> SagaMapper:
        """A mapper over the same keys that reads sealed payloads as ``<encrypted>``.

        The read models are built through it, so they hold no saga data.
        """
        mapper = SagaMapper(self.transcoder, compressor=self.compressor, cipher=self.cipher)
        mapper.redacting = True
        mapper.event_from_row = mapper._opened_event_from_row  # type: ignore[method-assign]
        return mapper

    def _sealed_fields(self, cls: type[Any]) -> tuple[str, ...]:
        try:
            return self._sealed_classes[cls]
        except KeyError:
            pass
        names: tuple[str, ...] = ()
        if issubclass(cls, Saga.Event) and not getattr(cls, "payload_free", False):
            annotated = {
                name for base in cls.__mro__ for name in getattr(base, "__annotations__", {})
            }
            names = tuple(name for name in SEALED_FIELDS if name in annotated)
        self._sealed_classes[cls] = names
        return names

    def _sealed(self, domain_event: DomainEventProtocol[UUID]) -> DomainEventProtocol[UUID]:
        """A copy of ``domain_event`` whose payload fields are sealed under its saga's key."""
        assert self.data_keys is not None
        fields = self._sealed_fields(type(domain_event))
        if not fields:
            return domain_event
        state = dict(vars(domain_event))
        saga_id = state["originator_id"]
        key = self.data_keys.key_for_writing(saga_id)
        for name in fields:
            value = state.get(name)
            if value is not None:
                state[name] = self.data_keys.seal(saga_id, name, value, key)
        copy: Any = _new_object(type(domain_event))
        _set_attribute(copy, "__dict__", state)
        return copy  # type: ignore[no-any-return]

    def _opened(self, domain_event: Any) -> Any:
        """``domain_event`` with its sealed payloads opened (or redacted, or erased)."""
        if type(domain_event) is Saga.SagaForgotten:
            if self.data_keys is not None:  # read it as erased from now on, whatever is cached
                self.data_keys.erased(vars(domain_event)["originator_id"])
            return domain_event
        fields = self._sealed_fields(type(domain_event))
        if not fields:
            return domain_event
        state = vars(domain_event)
        saga_id = state.get("originator_id")
        keys = self.data_keys
        for name in fields:
            value = state.get(name)
            if type(value) is not str or not value.startswith(SEALED_PREFIX):
                continue
            if self.redacting:
                state[name] = erased_value(name, ENCRYPTED)
                continue
            if keys is None:
                raise EncryptionKeyMissingError("the saga's payloads are encrypted")
            key = keys.key_for_reading(saga_id)
            try:
                state[name] = keys.unseal(saga_id, name, value, key)
            except ValueError:
                raise EncryptionKeyError(
                    f"a payload of saga {saga_id} does not decrypt under its data key"
                ) from None
        return domain_event

    def _opened_event_from_row(
        self,
        originator_id: UUID | str,
        originator_version: int,
        topic: str,
        state: bytes,
        stored_event: StoredEvent | None = None,
    ) -> DomainEventProtocol[UUID]:
        """``event_from_row``, then the payloads opened (encryption on)."""
        event = SagaMapper.event_from_row(
            self, originator_id, originator_version, topic, state, stored_event
        )
        return self._opened(event)  # type: ignore[no-any-return]

    def _decoded_as_eventsourcing(self, stored_event: StoredEvent) -> DomainEventProtocol[UUID]:
        """``Mapper.to_domain_event``; a missing or wrong store key said in one line."""
        try:
            return super().to_domain_event(stored_event)
        except MapperDeserialisationError as exc:
            if isinstance(exc.__cause__, EncryptionKeyError):
                raise exc.__cause__ from None
            if self.cipher is None and is_encrypted(stored_event.state):
                raise EncryptionKeyMissingError() from None
            raise

    def to_stored_event(self, domain_event: DomainEventProtocol[UUID]) -> StoredEvent:
        """The stored event ``Mapper.to_stored_event`` gives, a saga event's written faster."""
        cls = type(domain_event)
        try:
            flat = self._flat_classes[cls]
        except KeyError:
            flat = self._flat_classes[cls] = (
                (get_topic(cls), getattr(cls, "class_version", 1))
                if issubclass(cls, Saga.Event)
                else None
            )
        if self.data_keys is not None and flat is not None:
            domain_event = self._sealed(domain_event)
        if flat is None or self._encode_flat is None:
            return super().to_stored_event(domain_event)
        topic, class_version = flat
        event_state = dict(vars(domain_event))
        originator_id = event_state.pop("originator_id")
        originator_version = event_state.pop("originator_version")
        if class_version > 1:
            event_state["class_version"] = class_version
        stored_state = self._encode_flat(event_state)
        if self.compressor:
            stored_state = self.compressor.compress(stored_state)
        if self.cipher:
            stored_state = self.cipher.encrypt(stored_state)
        return StoredEvent(
            originator_id=originator_id,
            originator_version=originator_version,
            topic=topic,
            state=stored_state,
        )

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[UUID]:
        """The domain event ``stored_event`` holds, as ``Mapper.to_domain_event`` gives it."""
        return self.event_from_row(
            stored_event.originator_id,
            stored_event.originator_version,
            stored_event.topic,
            stored_event.state,
            stored_event,
        )

    def event_from_row(
        self,
        originator_id: UUID | str,
        originator_version: int,
        topic: str,
        state: bytes,
        stored_event: StoredEvent | None = None,
    ) -> DomainEventProtocol[UUID]:
        """``to_domain_event`` of the stored event with these columns, built only if needed.

        Bulk reads (``SagaManager.get_many``) pass a row's columns as they come
        from the database, so no ``StoredEvent`` is made for an event decoded on
        the fast path.
        """
        cls: Any = self._topic_classes.get(topic)
        if cls is None:
            cls = self._topic_classes[topic] = resolve_topic(topic)
        known = self._read_classes.get(cls) if type(originator_id) is UUID else None
        if known is None:
            if stored_event is None:
                stored_event = StoredEvent(originator_id, originator_version, topic, state)
            if type(originator_id) is UUID and (
                find_id_convertor(cls, UUID) is pass_through_convertor
            ):
                self._read_classes[cls] = (getattr(cls, "class_version", 1), _typed_fields(cls))
            return self._decoded_as_eventsourcing(stored_event)
        class_version, fields = known
        try:
            if self._plain_fields is not None:
                event_state: dict[str, Any] = self._plain_fields(state, fields)
            else:
                if self.cipher:
                    state = self.cipher.decrypt(state)
                if self.compressor:
                    state = self.compressor.decompress(state)
                if self._decode_fields is None:
                    event_state = self.transcoder.decode(state)
                else:
                    event_state = self._decode_fields(state, fields)
        except Exception:
            # Worded and chained as eventsourcing does it: decode again its way.
            if stored_event is None:
                stored_event = StoredEvent(originator_id, originator_version, topic, state)
            return self._decoded_as_eventsourcing(stored_event)
        event_state["originator_id"] = originator_id
        event_state["originator_version"] = originator_version
        from_version = event_state.pop("class_version", 1)
        while from_version < class_version:
            getattr(cls, f"upcast_v{from_version}_v{from_version + 1}")(event_state)
            from_version += 1
        domain_event: Any = _new_object(cls)  # Any: typing.cast would be one more call
        _set_attribute(domain_event, "__dict__", event_state)
        return domain_event  # type: ignore[no-any-return]


def _typed_fields(cls: type[Any]) -> tuple[str, ...]:
    """The fields of ``cls`` annotated as UUIDs or datetimes (optional or not): where
    its stored state holds envelopes. Read from the annotations' text, which is
    what they are under ``from __future__ import annotations``.
    """
    fields: list[str] = []
    for base in reversed(cls.__mro__):
        for name, annotation in getattr(base, "__annotations__", {}).items():
            text = (
                annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
            )
            head = text.split("|")[0].strip()
            if head in ("UUID", "datetime") and name not in fields:
                fields.append(name)
    for name in ("originator_id", "originator_version"):
        if name in fields:
            fields.remove(name)
    return tuple(fields)
