"""Bounds on the JSON messages sagalog reads from a broker: size, depth and count.

A message on a shared broker is input from anyone who can publish there. Parsing
it must cost at most a bounded amount of memory and time and never crash the
reader: a command nested 100,000 deep made ``json.loads`` raise ``RecursionError``
in a participant, on every redelivery. So a body is checked *before* it is parsed,
in one pass over its bytes that never recurses:

* ``max_bytes`` — its size (checked first, for free);
* ``max_depth`` — how deeply arrays and objects nest;
* ``max_items`` — how many strings, arrays and objects it holds (numbers and
  literals are bounded by the size).

A body past a bound raises :class:`MessageBoundsError` (a ``ValueError``) naming the
bound, and the reader dead-letters the message with that reason and carries on.
The defaults are far above anything sagalog writes: saga data and each step result
are at most 256 KiB (``sagalog.domain.payload``), an error text 4,000 characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from sagalog.domain.errors import SagalogError

__all__ = [
    "COMMAND_BOUNDS",
    "REPLY_BOUNDS",
    "MessageBounds",
    "MessageBoundsError",
    "check_message_bounds",
]


class MessageBoundsError(SagalogError, ValueError):
    """A message body is larger, deeper or holds more items than its bounds allow."""


@dataclass(frozen=True)
class MessageBounds:
    """Limits on one JSON message body."""

    max_bytes: int
    max_depth: int = 256
    max_items: int = 500_000

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_depth < 1 or self.max_items < 1:
            raise ValueError("message bounds must be positive")


#: A reply: one step result (at most 256 KiB as JSON) and a short error, with room.
REPLY_BOUNDS: Final = MessageBounds(max_bytes=1024 * 1024)

#: A command: the saga's data and every result so far, so larger than a reply.
COMMAND_BOUNDS: Final = MessageBounds(max_bytes=16 * 1024 * 1024)

#: A JSON string (escapes included) or one structural character. Matching whole
#: strings keeps brackets inside them from counting, and runs in C.
_TOKEN: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)


def check_message_bounds(body: bytes | str, bounds: MessageBounds, what: str = "message") -> None:
    """Raise :class:`MessageBoundsError` if ``body`` breaks ``bounds``; parse nothing.

    The scan stops at the first bound broken, so a hostile body costs at most
    ``max_bytes`` of reading. Malformed JSON within the bounds passes: the parser
    that follows reports it.
    """
    data = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    if len(data) > bounds.max_bytes:
        raise MessageBoundsError(
            f"{what} is {len(data)} bytes; the limit is {bounds.max_bytes} bytes"
        )
    depth = 0
    items = 0
    max_depth, max_items = bounds.max_depth, bounds.max_items
    for match in _TOKEN.finditer(data):
        first = match.group()[0]
        if first == 0x5D or first == 0x7D:  # ] }
            depth -= 1
            continue
        items += 1
        if items > max_items:
            raise MessageBoundsError(
                f"{what} holds more than {max_items} strings, arrays and objects"
            )
        if first == 0x5B or first == 0x7B:  # [ {
            depth += 1
            if depth > max_depth:
                raise MessageBoundsError(f"{what} nests deeper than {max_depth} arrays and objects")
