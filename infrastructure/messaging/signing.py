"""HMAC signatures on commands and replies over a shared broker, one key per service.

Anyone who can publish to the replies queue of a shared broker could otherwise
answer for any participant. With signing on, each participant service shares a
secret key with the saga manager's worker:

* the relay signs each command with the key of the service it is for;
* a participant accepts only commands signed with its service's key, and signs
  its replies with that key;
* the reply consumer accepts only replies signed with the key of the service whose
  command the reply's step sent — so a service cannot answer for another.

A message that is unsigned, or whose signature does not verify, is dead-lettered
with the reason (error header ``SignatureError``) and changes nothing.

A message's service is the part of its command name before the first dot
(``InventoryService.ReserveItems`` → ``InventoryService``), the convention of the
demo's definitions. The signature (header ``sagalog-signature``) is
``v1:`` + the hex HMAC-SHA256, under the service's key, of the message kind
(``command`` or ``reply``), the service (header ``sagalog-signer``), the message id
and the body, so a signature cannot be moved to another message, service or kind.

Keys come from ``SAGALOG_SIGNING_KEYS`` (``InventoryService=secret,PaymentService=…``;
each secret at least 16 characters) or are given in code as a :class:`SigningKeys`
on the :class:`~sagalog.infrastructure.rabbitmq.topology.Topology`; see
docs/poison-messages.md.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from typing import Any, Final, Literal

from sagalog.domain import SagalogError

__all__ = [
    "HEADER_SIGNATURE",
    "HEADER_SIGNER",
    "SIGNING_KEYS_ENV_VAR",
    "SignatureError",
    "SigningKeys",
    "service_of",
]

HEADER_SIGNATURE: Final = "sagalog-signature"
HEADER_SIGNER: Final = "sagalog-signer"
SIGNING_KEYS_ENV_VAR: Final = "SAGALOG_SIGNING_KEYS"

#: Shortest key accepted (bytes): shorter secrets are guessable.
MIN_KEY_BYTES: Final = 16

_VERSION: Final = "v1"

MessageKind = Literal["command", "reply"]


class SignatureError(SagalogError, ValueError):
    """A message is unsigned, signed by an unknown service, or its signature is wrong."""


def service_of(command_name: str) -> str:
    """The service a command belongs to: the part of its name before the first dot."""
    return command_name.split(".", 1)[0]


class SigningKeys:
    """Secret keys by service name; signs and verifies messages (see the module)."""

    def __init__(self, keys: Mapping[str, str | bytes]) -> None:
        self._keys: dict[str, bytes] = {}
        for service, key in keys.items():
            secret = key.encode("utf-8") if isinstance(key, str) else bytes(key)
            if not service or "." in service:
                raise ValueError(
                    f"a signing key's service must be a name without dots: {service!r}"
                )
            if len(secret) < MIN_KEY_BYTES:
                raise ValueError(
                    f"the signing key of {service!r} is {len(secret)} bytes; "
                    f"at least {MIN_KEY_BYTES} are needed"
                )
            self._keys[service] = secret
        if not self._keys:
            raise ValueError("signing needs at least one service key")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SigningKeys | None:
        """Keys from ``SAGALOG_SIGNING_KEYS`` (``Service=secret,…``), or ``None`` if unset."""
        text = (os.environ if environ is None else environ).get(SIGNING_KEYS_ENV_VAR, "").strip()
        if not text:
            return None
        keys: dict[str, str] = {}
        for item in text.split(","):
            service, equals, secret = item.strip().partition("=")
            if not equals or not service.strip():
                raise ValueError(
                    f"{SIGNING_KEYS_ENV_VAR} takes Service=secret pairs separated by commas"
                )
            keys[service.strip()] = secret.strip()
        return cls(keys)

    @property
    def services(self) -> frozenset[str]:
        """The services these keys sign for."""
        return frozenset(self._keys)

    def __repr__(self) -> str:  # never the secrets
        return f"SigningKeys({sorted(self._keys)})"

    def _mac(self, kind: MessageKind, service: str, message_id: str, body: bytes) -> str:
        key = self._keys.get(service)
        if key is None:
            raise SignatureError(f"no signing key for service {service!r}")
        digest = hmac.new(key, digestmod=hashlib.sha256)
        for part in (_VERSION, kind, service, message_id):
            digest.update(part.encode("utf-8", "surrogatepass") + b"\x00")
        digest.update(body)
        return f"{_VERSION}:{digest.hexdigest()}"

    def sign(self, kind: MessageKind, service: str, message_id: str, body: bytes) -> dict[str, str]:
        """The headers that sign a message of ``service`` (``SignatureError`` if no key)."""
        return {
            HEADER_SIGNER: service,
            HEADER_SIGNATURE: self._mac(kind, service, message_id, body),
        }

    def verify(
        self,
        kind: MessageKind,
        headers: Mapping[str, Any],
        message_id: str | None,
        body: bytes,
        *,
        service: str | None = None,
    ) -> str:
        """The signing service if the signature holds; else :class:`SignatureError`.

        With ``service``, the message must be signed by that service.
        """
        signer = headers.get(HEADER_SIGNER)
        signature = headers.get(HEADER_SIGNATURE)
        if isinstance(signer, bytes):
            signer = signer.decode("utf-8", "replace")
        if isinstance(signature, bytes):
            signature = signature.decode("utf-8", "replace")
        if not isinstance(signer, str) or not isinstance(signature, str):
            raise SignatureError(f"unsigned {kind}: signing is on and it carries no signature")
        if service is not None and signer != service:
            raise SignatureError(f"{kind} signed by {signer!r}, not by {service!r}")
        if signer not in self._keys:
            raise SignatureError(f"{kind} signed by unknown service {signer!r}")
        expected = self._mac(kind, signer, message_id or "", body)
        if not hmac.compare_digest(expected, signature):
            raise SignatureError(f"{kind} signature of {signer!r} does not verify")
        return signer
