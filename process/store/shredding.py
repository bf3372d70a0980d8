"""Crypto-shredding: each saga's payloads under its own data key, destroyed to erase them.

With encryption on (:mod:`.encryption`), every saga gets a random 256-bit data
key when it starts. The key is wrapped (AES-GCM) by the store's writing key and
kept in the store's key table, one row per saga, written in the transaction
that records the saga's first events (the ``data_keys`` keyword of
``insert_events``, like ``saga_timers``). The saga's payload fields — its data,
command payloads, results, error texts, reasons and data patches
(:data:`SEALED_FIELDS`) — are sealed under that key inside each event's state,
which the store key then encrypts whole.

``SagaManager.forget`` records ``SagaForgotten`` and replaces the key's row by
an empty tombstone: from then on those fields read as :data:`ERASED` (a dict
field as ``{"<erased>": true}``), while every other field — statuses, steps,
attempts, times, command ids — still replays. A payload written after the
tombstone (a late reply) is stored as erased, never in the clear.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable
from uuid import UUID

from sagalog.domain.errors import SagalogError
from sagalog.process.store.encryption import KeyRing, aes_gcm_class

__all__ = [
    "DATA_KEYS_KWARG",
    "ENCRYPTED",
    "ERASED",
    "KEY_MAX_AGE_SECONDS",
    "SEALED_FIELDS",
    "DataKeyTable",
    "ErasureError",
    "SagaDataKeys",
    "erased_value",
    "unwrap_data_key",
]

#: Keyword argument of ``insert_events`` carrying ``{saga_id: wrapped data key}``.
DATA_KEYS_KWARG = "data_keys"
#: What an erased payload reads as (dict fields: ``{ERASED: True}``).
ERASED = "<erased>"
#: What a payload reads as where it is not decrypted (the read models).
ENCRYPTED = "<encrypted>"
#: The fields of saga events that hold saga data, sealed under the saga's key.
SEALED_FIELDS = ("data", "payload", "result", "error", "reason", "changes")
#: Seconds a process uses a data key it looked up before looking it up again: how long
#: a saga forgotten by another process may still be decrypted here (docs/security.md).
KEY_MAX_AGE_SECONDS = 5.0
#: Fields that are dicts: erased or redacted, they stay dicts.
_DICT_FIELDS = frozenset({"data", "payload"})
#: A sealed field's text: this prefix, then base64 of nonce, tag and ciphertext.
SEALED_PREFIX = "sagalog:sealed:"
_NONCE = 12
_WRAP_AAD = b"sagalog-data-key:"


class ErasureError(SagalogError, ValueError):
    """A saga's data cannot be erased here (no encryption, or recorded in the clear)."""


def erased_value(field: str, marker: str = ERASED) -> Any:
    """What ``field`` reads as when its payload is erased (or not decrypted: ``ENCRYPTED``)."""
    if field in _DICT_FIELDS:
        return {marker: True}
    if field == "changes":
        return {}
    return marker


def unwrap_data_key(keyring: KeyRing, saga_id: UUID, wrapped: bytes) -> bytes | None:
    """The saga's data key from its key table row (``None``: a tombstone); raises if
    ``keyring`` cannot unwrap it (``EncryptionKeyError``)."""
    if not wrapped:
        return None
    return keyring.decrypt(bytes(wrapped), _WRAP_AAD + saga_id.bytes)


@runtime_checkable
class DataKeyTable(Protocol):
    """A recorder that keeps one wrapped data key (or a tombstone) per saga."""

    def select_data_keys(self, saga_ids: Sequence[UUID]) -> dict[UUID, bytes]:
        """The wrapped keys of ``saga_ids`` that have a row (``b""``: forgotten)."""
        ...

    def insert_data_keys(self, keys: Mapping[UUID, bytes]) -> None:
        """Add rows for sagas that have none, in a transaction of their own."""
        ...

    def forget_data_key(self, saga_id: UUID) -> bool:
        """Replace the saga's key by a tombstone; whether a key was there."""
        ...


class SagaDataKeys:
    """The data keys of sagas: made, wrapped, looked up (and remembered), destroyed.

    A remembered key is looked up again once it is ``max_age`` seconds old, so a saga
    forgotten by another process reads as erased here within that time (and at once
    after this process decoded the saga's ``SagaForgotten``: :meth:`erased`).
    """

    def __init__(
        self,
        keyring: KeyRing,
        table: DataKeyTable,
        *,
        cache_size: int = 10_000,
        max_age: float = KEY_MAX_AGE_SECONDS,
    ) -> None:
        """Keys wrapped by ``keyring``'s writing key, kept in ``table``."""
        self.keyring = keyring
        self.table = table
        self.cache_size = cache_size
        self.max_age = max_age
        #: saga id → (its data key's cipher, or ``None`` when it was forgotten; when
        #: it was looked up, on the monotonic clock).
        self._cache: dict[UUID, tuple[Any, float]] = {}
        self._aes_gcm = aes_gcm_class()

    # -- keys --------------------------------------------------------------------

    def _remember(self, saga_id: UUID, key: bytes | None) -> Any:
        if len(self._cache) >= self.cache_size:
            self._cache.clear()
        cipher = None if key is None else self._aes_gcm(key)
        self._cache[saga_id] = (cipher, time.monotonic())
        return cipher

    def _remembered(self, saga_id: UUID) -> tuple[bool, Any]:
        """(whether a key young enough is remembered, that key)."""
        entry = self._cache.get(saga_id)
        if entry is None or time.monotonic() - entry[1] >= self.max_age:
            return False, None
        return True, entry[0]

    def _wrap(self, saga_id: UUID, key: bytes) -> bytes:
        return self.keyring.encrypt(key, _WRAP_AAD + saga_id.bytes)

    def _unwrap(self, saga_id: UUID, wrapped: bytes) -> bytes | None:
        return unwrap_data_key(self.keyring, saga_id, wrapped)

    def new_keys(self, saga_ids: Sequence[UUID]) -> dict[UUID, bytes]:
        """Fresh keys for new sagas, remembered; their wrapped forms, for ``insert_events``."""
        wrapped: dict[UUID, bytes] = {}
        for saga_id in saga_ids:
            key = os.urandom(32)
            self._remember(saga_id, key)
            wrapped[saga_id] = self._wrap(saga_id, key)
        return wrapped

    def discard(self, saga_ids: Sequence[UUID]) -> None:
        """Forget what is remembered of ``saga_ids`` (their keys were not committed)."""
        for saga_id in saga_ids:
            self._cache.pop(saga_id, None)

    def prefetch(self, saga_ids: Sequence[UUID]) -> None:
        """Look up the keys of ``saga_ids`` not remembered yet, in one query."""
        missing = [saga_id for saga_id in saga_ids if not self._remembered(saga_id)[0]]
        if missing:
            for saga_id, wrapped in self.table.select_data_keys(missing).items():
                self._remember(saga_id, self._unwrap(saga_id, wrapped))

    def key_for_reading(self, saga_id: UUID) -> Any:
        """The saga's key (a cipher), ``None`` if it was forgotten (or never existed)."""
        known, key = self._remembered(saga_id)
        if known:
            return key
        wrapped = self.table.select_data_keys([saga_id]).get(saga_id)
        if wrapped is None:
            return None
        return self._remember(saga_id, self._unwrap(saga_id, wrapped))

    def key_for_writing(self, saga_id: UUID) -> Any:
        """The saga's key (a cipher), made now if it has none (a saga started before encryption)."""
        known, key = self._remembered(saga_id)
        if known:
            return key
        found = self.table.select_data_keys([saga_id]).get(saga_id)
        if found is None:
            self.table.insert_data_keys({saga_id: self._wrap(saga_id, os.urandom(32))})
            found = self.table.select_data_keys([saga_id]).get(saga_id, b"")
        return self._remember(saga_id, self._unwrap(saga_id, found))

    def erased(self, saga_id: UUID) -> None:
        """Read the saga as erased from now on: its ``SagaForgotten`` was decoded here."""
        self._remember(saga_id, None)

    def forget(self, saga_id: UUID) -> bool:
        """Destroy the saga's key (a tombstone row); whether there was one to destroy."""
        destroyed = self.table.forget_data_key(saga_id)
        self._remember(saga_id, None)
        return destroyed

    # -- payloads ----------------------------------------------------------------

    def seal(self, saga_id: UUID, field: str, value: Any, key: Any) -> Any:
        """``value`` sealed under ``key`` (``None``: the saga was forgotten, so erased)."""
        if key is None:
            return erased_value(field)
        nonce = os.urandom(_NONCE)
        plain = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        sealed = key.encrypt(nonce, plain, saga_id.bytes + field.encode("ascii"))
        return SEALED_PREFIX + base64.b64encode(nonce + sealed).decode("ascii")

    def unseal(self, saga_id: UUID, field: str, text: str, key: Any) -> Any:
        """The value ``seal`` sealed; :data:`ERASED` when ``key`` is ``None``.

        Raises ``ValueError`` when it does not decrypt (altered, or another key).
        """
        if key is None:
            return erased_value(field)
        blob = base64.b64decode(text[len(SEALED_PREFIX) :])
        try:
            plain = key.decrypt(blob[:_NONCE], blob[_NONCE:], saga_id.bytes + field.encode("ascii"))
        except Exception as exc:  # cryptography's InvalidTag
            raise ValueError("a sealed payload does not decrypt") from exc
        return json.loads(plain)
