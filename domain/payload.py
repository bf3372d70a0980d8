"""Checks on the JSON values that sagas carry: data, step results, error texts.

Saga data travels inside events (the log is the outbox), so it must be plain
JSON and bounded in size. The checks are pure: nothing here touches I/O.
"""

from __future__ import annotations

import json
from typing import Any

from sagalog.domain.errors import InvalidPayloadError

#: Largest accepted size of a saga's data or of one step result, as UTF-8 JSON.
MAX_PAYLOAD_BYTES = 256 * 1024

#: Largest accepted length of an error text or an operator's reason.
MAX_TEXT_LENGTH = 4000

#: The keys of the envelope the event store's JSON transcoder writes for a typed value
#: (a UUID, a datetime, ...). A JSON object with exactly these two keys would be read
#: back as such a value, or not at all, so saga payloads may not contain one.
RESERVED_ENVELOPE_KEYS = frozenset({"_type_", "_data_"})


def check_json(value: Any, what: str, *, limit: int = MAX_PAYLOAD_BYTES) -> Any:
    """Return ``value`` as plain JSON if it is JSON-serialisable and at most ``limit`` bytes.

    The value returned is what a JSON round trip gives (tuples become lists,
    non-string keys become strings, and it shares nothing with ``value``), so what a
    saga records equals what rebuilding it from its stored events gives.
    Raises :class:`InvalidPayloadError` naming ``what`` otherwise. NaN, infinities and
    lone surrogates are refused because they are not JSON (or not UTF-8).
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
    return plain


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
    """An error text, actor or reason: a string of bounded length, non-blank if required."""
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
    if len(value) > MAX_TEXT_LENGTH:
        raise InvalidPayloadError(
            f"{what} is {len(value)} characters; the limit is {MAX_TEXT_LENGTH}"
        )
    return value
