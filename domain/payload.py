"""Checks on the JSON values that sagas carry: data, step results, error texts.

Saga data travels inside events (the log is the outbox), so it must be plain
JSON and bounded in size. The checks are pure: nothing here touches I/O.

Text a store cannot hold is refused here, at the door, not escaped. PostgreSQL's
``text`` and ``jsonb`` cannot hold the NUL character (U+0000) and no store can hold
a lone surrogate (it is not UTF-8). Such text would be accepted by one backend and
break another (the projector writing it into a ``text`` column fails on PostgreSQL
only), so the same value is refused on every backend with an
:class:`InvalidPayloadError` that names the field, before anything is recorded.
Escaping instead would store something other than what the caller gave — a saga
rebuilt from its events, a reply compared with its duplicate or an error shown to
an operator would then differ from the original by an encoding that every reader
would have to know to undo — so refusing is the one answer that keeps the log
equal to its input.

:func:`check_json` runs for the data and every step result of every saga, so it has
a fast path on ``orjson`` for the common case (small values of plain JSON types) and
keeps the standard library's ``json`` as the reference that defines the answer: the
fast path only answers when it can prove it gives what the ``json`` path gives, and
hands everything else to it.
"""

from __future__ import annotations

import json
import marshal
from typing import Any, Final

import orjson

from sagalog.domain.errors import InvalidPayloadError

#: Largest accepted size of a saga's data or of one step result, as UTF-8 JSON.
MAX_PAYLOAD_BYTES = 256 * 1024

#: Largest accepted length of an error text or an operator's reason.
MAX_TEXT_LENGTH = 4000

#: Characters that no sagalog store can hold in text: PostgreSQL refuses NUL in
#: ``text`` and ``jsonb`` (lone surrogates are refused separately: they are not UTF-8).
UNSTORABLE_CHARACTERS: Final = frozenset({"\x00"})

#: How a NUL appears in JSON text written by ``orjson`` and by ``json`` (ensure_ascii off).
_NUL_ESCAPE_BYTES: Final = b"\\u0000"
_NUL_ESCAPE_TEXT: Final = "\\u0000"

#: The keys of the envelope the event store's JSON transcoder writes for a typed value
#: (a UUID, a datetime, ...). A JSON object with exactly these two keys would be read
#: back as such a value, or not at all, so saga payloads may not contain one.
RESERVED_ENVELOPE_KEYS = frozenset({"_type_", "_data_"})

#: ``orjson`` must refuse, not convert, what it would write differently from ``json``:
#: datetimes, dataclasses and subclasses of ``str``/``int``/``dict``/``list`` are passed
#: through to the (absent) ``default`` and so raise, which sends them to the ``json`` path.
_ORJSON_OPTIONS: Final = (
    orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)

#: The ``marshal`` format that compares values exactly: binary floats (from 2), and no
#: object references or interned-string marks (those came with 3).
_MARSHAL_VERSION: Final = 2

#: How an envelope key appears in ``orjson``'s output (it escapes nothing in it). Its
#: absence proves there is no envelope, so the walk over the value can be skipped.
_ENVELOPE_KEY_BYTES: Final = b'"_type_"'


class _Unsure:
    """The type of :data:`_UNSURE`."""

    def __repr__(self) -> str:
        return "_UNSURE"


#: What :func:`_check_json_fast` returns when only the ``json`` path can answer.
_UNSURE: Final = _Unsure()


def check_json(value: Any, what: str, *, limit: int = MAX_PAYLOAD_BYTES) -> Any:
    """Return ``value`` as plain JSON if it is JSON-serialisable and at most ``limit`` bytes.

    The value returned is what a JSON round trip gives (tuples become lists,
    non-string keys become strings, and it shares nothing with ``value``), so what a
    saga records equals what rebuilding it from its stored events gives.
    Raises :class:`InvalidPayloadError` naming ``what`` otherwise. NaN, infinities and
    lone surrogates are refused because they are not JSON (or not UTF-8), and a NUL
    character in any string or key because PostgreSQL cannot store it (see the module).

    The answer (value, error and message) is always that of :func:`_check_json_by_json`;
    :func:`_check_json_fast` gives it sooner for plain values.
    """
    checked = _check_json_fast(value, what, limit)
    if checked is _UNSURE:
        return _check_json_by_json(value, what, limit=limit)
    return checked


def _check_json_by_json(value: Any, what: str, *, limit: int = MAX_PAYLOAD_BYTES) -> Any:
    """:func:`check_json` by the standard library's ``json`` alone: the definition of its answer.

    Slower than the fast path but total: it decides every value, including the Python
    spellings that JSON does not have (tuples, non-string keys, integer subclasses).
    """
    try:
        encoded = json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
        size = len(encoded.encode("utf-8"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidPayloadError(f"{what} must be plain JSON: {exc}") from None
    if size > limit:
        raise InvalidPayloadError(f"{what} is {size} bytes as JSON; the limit is {limit} bytes")
    plain = json.loads(encoded)
    _refuse_envelopes(plain, what)
    if _NUL_ESCAPE_TEXT in encoded:
        _refuse_unstorable_strings(plain, what)
    return plain


def _check_json_fast(value: Any, what: str, limit: int) -> Any:
    """:func:`check_json` by ``orjson`` if that surely agrees with ``json``, else :data:`_UNSURE`.

    Cheaper than the ``json`` path (docs/performance.md, "Checking payloads"). It answers
    only when all of these hold, each of which rules out one way the two paths could differ:

    * ``orjson`` encodes the value. It refuses what ``json`` would convert or reject
      otherwise: non-string keys, integers beyond 64 bits, lone surrogates, nesting
      deeper than 254, subclasses, datetimes, dataclasses, sets, bytes.
    * Its output is at most ``limit // 2`` bytes. Both encoders write strings, integers
      and literals byte for byte alike, floats not always (``1e-9`` where ``json``
      writes ``1e-09``, ``0.000015`` where it writes ``1.5e-05``): ``json``'s text is
      never more than one byte longer per float, so it stays far inside the limit.
      Nearer the limit only ``json`` can give the exact size that decides (and that
      the error message reports).
    * The decoded output is the value, type for type and bit for bit: ``marshal``
      writes both alike. Its format 2 writes each exact built-in type with a code of
      its own (a tuple is not a list, ``True`` not ``1``, ``1`` not ``1.0``), floats as
      their eight bytes (so ``-0.0`` is not ``0.0``), dicts in order, and nothing by
      reference or by interning, so equal bytes mean equal values of the same types.
      It refuses every other type (or, for byte buffers, writes them as bytes, which a
      decoded value never holds), so no enum member, UUID or ``orjson.Fragment`` —
      which ``orjson`` writes but ``json`` does not — is left, and NaN and infinities
      (``orjson`` writes ``null`` where ``json`` refuses) do not match either. The
      decoded output is then what ``json``'s round trip gives, and like it is new.
      Should ``marshal`` ever write equal values differently, this path only answers
      less often; it cannot answer wrongly.

    The envelope walk runs only when an ``"_type_"`` key can be present at all.
    """
    try:
        encoded = orjson.dumps(value, option=_ORJSON_OPTIONS)
        if len(encoded) > limit // 2:
            return _UNSURE
        plain = orjson.loads(encoded)
        if marshal.dumps(value, _MARSHAL_VERSION) != marshal.dumps(plain, _MARSHAL_VERSION):
            return _UNSURE
    except (TypeError, ValueError, RecursionError):
        # orjson.JSONEncodeError is a TypeError; marshal refuses a type with ValueError.
        return _UNSURE
    if _ENVELOPE_KEY_BYTES in encoded:
        _refuse_envelopes(plain, what)
    if _NUL_ESCAPE_BYTES in encoded:
        _refuse_unstorable_strings(plain, what)
    return plain


def _refuse_unstorable_strings(value: Any, what: str) -> None:
    """Refuse a NUL in any string or key of ``value``, at any depth (no recursion).

    Called only when the JSON text holds ``\\u0000``, which a string made of a
    backslash and ``u0000`` also produces, so the walk decides.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            _refuse_unstorable_text(item, what)
        elif isinstance(item, dict):
            for key, inner in item.items():
                _refuse_unstorable_text(key, what)
                stack.append(inner)
        elif isinstance(item, list):
            stack.extend(item)


def _refuse_unstorable_text(value: str, what: str) -> None:
    for char in UNSTORABLE_CHARACTERS:
        if char in value:
            raise InvalidPayloadError(
                f"{what} contains the character U+{ord(char):04X}, which PostgreSQL "
                "cannot store; remove it"
            )


def _refuse_envelopes(value: Any, what: str) -> None:
    """Refuse any JSON object, at any depth, whose keys are exactly the transcoder's envelope.

    Such an object would be stored as written but decoded on load as a typed value
    (or fail to decode), so the saga could not be rebuilt as it was recorded.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if item.keys() == RESERVED_ENVELOPE_KEYS:
                raise InvalidPayloadError(
                    f"{what} contains an object whose only keys are '_type_' and '_data_'; "
                    "the event store reserves that shape for its own typed values"
                )
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def check_data(value: Any, what: str = "saga data") -> dict[str, Any]:
    """Saga data must be a JSON object (a ``dict`` with string keys)."""
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise InvalidPayloadError(f"{what} must be a JSON object with string keys")
    checked: dict[str, Any] = check_json(value, what)
    return checked


def check_text(value: Any, what: str, *, required: bool = True) -> str:
    """An error text, actor or reason: a string of bounded length, non-blank if required.

    Text a store cannot hold (a lone surrogate, a NUL character) is refused, not escaped.
    """
    if not isinstance(value, str):
        raise InvalidPayloadError(f"{what} must be a string, not {type(value).__name__}")
    if required and not value.strip():
        raise InvalidPayloadError(f"{what} must not be blank")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidPayloadError(
            f"{what} must be valid Unicode text (no lone surrogates)"
        ) from None
    _refuse_unstorable_text(value, what)
    if len(value) > MAX_TEXT_LENGTH:
        raise InvalidPayloadError(
            f"{what} is {len(value)} characters; the limit is {MAX_TEXT_LENGTH}"
        )
    return value
