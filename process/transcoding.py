"""A faster JSON transcoder that reads and writes eventsourcing's stored format.

eventsourcing's :class:`~eventsourcing.persistence.JSONTranscoder` decodes each
stored event with the standard library's ``json`` and an ``object_hook`` that
runs in Python for every JSON object, to turn the envelopes
``{"_type_": name, "_data_": value}`` it writes for UUIDs, datetimes and
decimals back into those values. Decoding was the largest part of rebuilding a
saga (issue 6: 7.7 µs of about 15 µs per event).

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

Encoding stays ``json``'s (a C encoder; its ``default`` hook runs only for the
few typed values), so the bytes written are exactly what eventsourcing writes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, cast
from uuid import UUID, SafeUUID

import orjson
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import (
    Cipher,
    Compressor,
    DatetimeAsISO,
    JSONTranscoder,
    Mapper,
    StoredEvent,
    Transcoder,
    Transcoding,
    UUIDAsHex,
    find_id_convertor,
    pass_through_convertor,
)
from eventsourcing.utils import resolve_topic

#: Maps every digit to ``0``, keeps ``\\`` and ``u``, blanks the rest: one
#: ``bytes.translate`` (far cheaper than a regular expression) then shows both
#: what sends an event to ``json`` and what needs a full pass.
_SCREEN = bytes(
    ord("0") if chr(c).isdigit() and c < 128 else c if c in b"\\u" else ord(" ") for c in range(256)
)
#: Where orjson could read a number differently from ``json``: integers beyond
#: 64 bits (orjson gives a float). A conservative over-approximation: any run of
#: 19 digits, in a number or in a string, sends the event to ``json``.
_LONG_DIGITS = b"0" * 19
_ESCAPE = b"\\u"
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
            _set_attribute(value, "is_safe", SafeUUID.unknown)
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
_UUID_AS_HEX = UUIDAsHex()
_DATETIME_AS_ISO = DatetimeAsISO()

#: eventsourcing's own transcodings, by exact type, and a faster equal decoder.
_FAST_DECODERS: dict[type[Transcoding], Callable[[Any], Any]] = {
    UUIDAsHex: _uuid_from_hex,
    DatetimeAsISO: _datetime_from_iso,
}


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

    def register(self, transcoding: Transcoding) -> None:
        """Register ``transcoding``, with its faster decoder if it has one."""
        super().register(transcoding)
        fast = _FAST_DECODERS.get(type(transcoding))
        if fast is None:
            self._fast.pop(transcoding.name, None)
        else:
            self._fast[transcoding.name] = fast

    def decode(self, data: bytes) -> Any:
        """Decode ``data`` (UTF-8 JSON) to the object ``JSONTranscoder.decode`` gives."""
        screened = data.translate(_SCREEN)
        if _LONG_DIGITS in screened:
            return super().decode(data)
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return super().decode(data)
        if _ESCAPE in screened:
            return self._decode_deep(obj)
        expected = data.count(_TYPE_KEY)
        if expected == 0:
            return obj
        if type(obj) is dict and self._decode_top_level(obj, expected):
            return obj
        return self._decode_deep(obj)

    def _decode_top_level(self, obj: dict[str, Any], expected: int) -> bool:
        """Turn top-level envelopes into values if no envelope can be elsewhere.

        ``expected`` counts the ``"_type_"`` strings in the bytes: every key
        ``_type_`` anywhere in ``obj`` (``obj``'s own included) is one of them.
        When that many top-level values are objects with a ``_type_`` key, all
        are accounted for: no envelope is nested deeper (nor inside those
        values), so decoding the top-level ones is what ``json`` would do, and
        True is returned. Otherwise ``obj`` is left untouched and False returned.
        """
        keys = [key for key, value in obj.items() if type(value) is dict and "_type_" in value]
        if len(keys) != expected:
            return False
        fast = self._fast
        for key in keys:
            value = obj[key]
            if len(value) == 2 and "_data_" in value:
                name = value["_type_"]
                decoder = fast.get(name) if type(name) is str else None
                if decoder is None:
                    obj[key] = self._decode_obj(value)
                else:
                    obj[key] = decoder(value["_data_"])
        return True

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
    """eventsourcing's ``Mapper``, with less work per event when reading UUID-keyed events.

    ``Mapper.to_domain_event`` looks up, for every event, how to convert its
    originator id (an ``lru_cache`` call) and the class's version. Here both
    are remembered per event class, for events whose originator id is already
    a ``UUID`` (both sagalog recorders return UUIDs). Everything else — string
    ids, the first event of each class, and any event that fails to decrypt,
    decompress or decode — goes through ``Mapper.to_domain_event`` itself, so
    the events and errors are the same. Writing is unchanged.
    """

    def __init__(
        self,
        transcoder: Transcoder,
        compressor: Compressor | None = None,
        cipher: Cipher | None = None,
    ) -> None:
        """A mapper as eventsourcing's, with an empty per-class memory."""
        super().__init__(transcoder, compressor=compressor, cipher=cipher)
        self._class_versions: dict[type[Any], int] = {}

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[UUID]:
        """The domain event ``stored_event`` holds, as ``Mapper.to_domain_event`` gives it."""
        cls = resolve_topic(stored_event.topic)
        originator_id = stored_event.originator_id
        class_version = self._class_versions.get(cls) if type(originator_id) is UUID else None
        if class_version is None:
            if type(originator_id) is UUID and (
                find_id_convertor(cls, UUID) is pass_through_convertor
            ):
                self._class_versions[cls] = getattr(cls, "class_version", 1)
            return super().to_domain_event(stored_event)
        state = stored_event.state
        try:
            if self.cipher:
                state = self.cipher.decrypt(state)
            if self.compressor:
                state = self.compressor.decompress(state)
            event_state: dict[str, Any] = self.transcoder.decode(state)
        except Exception:
            # Worded and chained as eventsourcing does it: decode again its way.
            return super().to_domain_event(stored_event)
        event_state["originator_id"] = originator_id
        event_state["originator_version"] = stored_event.originator_version
        from_version = event_state.pop("class_version", 1)
        while from_version < class_version:
            getattr(cls, f"upcast_v{from_version}_v{from_version + 1}")(event_state)
            from_version += 1
        domain_event = _new_object(cls)
        _set_attribute(domain_event, "__dict__", event_state)
        return cast("DomainEventProtocol[UUID]", domain_event)
