"""Encryption at rest: the store keys, the cipher of stored events, one line when a key is missing.

Two layers, both AES-256-GCM (the ``cryptography`` package, OpenSSL's AES-GCM;
install ``sagalog[encryption]``):

* the **store key** encrypts every stored event's whole state (eventsourcing's
  cipher hook: :class:`SagaCipher`, named by ``CIPHER_TOPIC``), and wraps each
  saga's data key;
* each saga's **data key** encrypts that saga's payloads (data, command
  payloads, results, error texts, reasons) inside the state, so destroying
  one saga's key erases its payloads and nothing else (:mod:`.shredding`).

Store keys are named: ``SAGALOG_ENCRYPTION_KEYS="k2=BASE64,k1=BASE64"`` or a
file named by ``SAGALOG_ENCRYPTION_KEY_FILE`` with one ``id=BASE64`` per line.
The first key writes; every key listed reads, so a new key is put first and the
old ones stay listed for as long as anything written with them is kept (key
rotation). Each ciphertext starts with :data:`MAGIC` and its key's id.

Without a key, a store whose events are encrypted is refused in one line
(:class:`EncryptionKeyMissingError`), and so is a key the store was not
written with (:class:`EncryptionKeyError`).
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eventsourcing.persistence import Cipher

from sagalog.domain.errors import SagalogError

__all__ = [
    "ENCRYPTION_KEYS_ENV_VAR",
    "ENCRYPTION_KEY_FILE_ENV_VAR",
    "MAGIC",
    "EncryptionKeyError",
    "EncryptionKeyMissingError",
    "KeyRing",
    "SagaCipher",
    "encryption_configured",
    "is_encrypted",
    "new_key",
]

ENCRYPTION_KEYS_ENV_VAR = "SAGALOG_ENCRYPTION_KEYS"
ENCRYPTION_KEY_FILE_ENV_VAR = "SAGALOG_ENCRYPTION_KEY_FILE"
#: First bytes of everything encrypted here (no JSON document starts with them).
MAGIC = b"\x00sl1"
_NONCE = 12
_KEY_BYTES = 32
_MAX_ID = 64
_HINT = (
    f"set {ENCRYPTION_KEYS_ENV_VAR} or {ENCRYPTION_KEY_FILE_ENV_VAR} (docs/security.md, 'Settings')"
)


def aes_gcm_class() -> Any:
    """``cryptography``'s ``AESGCM``, or a one-line error naming the extra to install."""
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:  # pragma: no cover - the extra is missing
        raise EncryptionKeyError(
            "encryption at rest needs the cryptography package: pip install 'sagalog[encryption]'"
        ) from None
    return AESGCM


def _invalid_tag() -> type[Exception]:
    from cryptography.exceptions import InvalidTag

    return InvalidTag


class EncryptionKeyError(SagalogError, ValueError):
    """A store key setting is malformed, or cannot decrypt what the store holds."""


class EncryptionKeyMissingError(EncryptionKeyError):
    """The store holds encrypted events and no store key is configured."""

    def __init__(self, what: str = "the saga store is encrypted") -> None:
        super().__init__(f"{what}: {_HINT}")


def is_encrypted(blob: bytes | bytearray | memoryview) -> bool:
    """Whether ``blob`` was written by this module (a stored state, a wrapped key)."""
    return bytes(blob[: len(MAGIC)]) == MAGIC


def new_key(key_id: str) -> str:
    """A new random store key as one ``id=BASE64`` setting line."""
    _check_id(key_id)
    return f"{key_id}={base64.b64encode(os.urandom(_KEY_BYTES)).decode('ascii')}"


def _check_id(key_id: str) -> bytes:
    raw = key_id.encode("utf-8")
    if not raw or len(raw) > _MAX_ID or not all(c.isalnum() or c in "-_." for c in key_id):
        raise EncryptionKeyError(
            f"a key id is 1 to {_MAX_ID} letters, digits, '-', '_' or '.', not {key_id!r}"
        )
    return raw


def _setting(env: Mapping[str, str] | Any, name: str) -> str:
    value = env.get(name) if env is not None else None
    return str(value).strip() if value else ""


def encryption_configured(env: Mapping[str, str] | Any) -> bool:
    """Whether ``env`` (a mapping or an eventsourcing ``Environment``) names a store key."""
    return bool(
        _setting(env, ENCRYPTION_KEYS_ENV_VAR) or _setting(env, ENCRYPTION_KEY_FILE_ENV_VAR)
    )


class KeyRing:
    """The named store keys: the first writes, all read. AES-256-GCM, key id in every blob."""

    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        """Keys as ``(id, 32 bytes)``, the writing key first."""
        if not keys:
            raise EncryptionKeyMissingError("no store key is configured")
        aes_gcm = aes_gcm_class()
        self._keys: dict[bytes, Any] = {}
        for key_id, key in keys:
            raw_id = _check_id(key_id)
            if len(key) != _KEY_BYTES:
                raise EncryptionKeyError(f"store key {key_id!r} must be 32 bytes, not {len(key)}")
            if raw_id in self._keys:
                raise EncryptionKeyError(f"store key {key_id!r} is listed twice")
            self._keys[raw_id] = aes_gcm(key)
        self.write_id = keys[0][0]
        self._write_raw_id = keys[0][0].encode("utf-8")
        self._write_key = self._keys[self._write_raw_id]
        self._header = MAGIC + bytes([len(self._write_raw_id)]) + self._write_raw_id

    @property
    def key_ids(self) -> list[str]:
        """The ids of the keys that read, the writing key first."""
        return [raw.decode("utf-8") for raw in self._keys]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | Any) -> KeyRing:
        """The keys ``SAGALOG_ENCRYPTION_KEYS`` (or the file ``..._KEY_FILE``) name."""
        text = _setting(env, ENCRYPTION_KEYS_ENV_VAR)
        source = ENCRYPTION_KEYS_ENV_VAR
        if not text:
            path = _setting(env, ENCRYPTION_KEY_FILE_ENV_VAR)
            if not path:
                raise EncryptionKeyMissingError("no store key is configured")
            source = path
            try:
                text = Path(path).read_text(encoding="utf-8")
            except OSError as exc:
                raise EncryptionKeyError(
                    f"cannot read the key file {path}: {exc.strerror or exc}"
                ) from None
        return cls(_parse_keys(text, source))

    def encrypt(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        """``plaintext`` sealed under the writing key, bound to ``aad``."""
        nonce = os.urandom(_NONCE)
        return b"".join(
            (self._header, nonce, self._write_key.encrypt(nonce, plaintext, aad or None))
        )

    def decrypt(self, blob: bytes, aad: bytes = b"") -> bytes:
        """What :meth:`encrypt` sealed, under whichever listed key it names."""
        if not is_encrypted(blob):
            raise EncryptionKeyError("not a sagalog ciphertext")
        start = len(MAGIC)
        size = blob[start]
        raw_id = bytes(blob[start + 1 : start + 1 + size])
        key = self._keys.get(raw_id)
        if key is None:
            raise EncryptionKeyError(
                f"the store holds data encrypted with key {raw_id.decode('utf-8', 'replace')!r}, "
                f"which the configured keys ({', '.join(self.key_ids)}) do not include"
            )
        body = start + 1 + size
        try:
            return bytes(
                key.decrypt(blob[body : body + _NONCE], blob[body + _NONCE :], aad or None)
            )
        except _invalid_tag():
            raise EncryptionKeyError(
                f"data encrypted with key {raw_id.decode('utf-8', 'replace')!r} does not "
                "decrypt: the key is not the one it was written with, or the data was altered"
            ) from None


def _parse_keys(text: str, source: str) -> list[tuple[str, bytes]]:
    keys: list[tuple[str, bytes]] = []
    for item in text.replace(",", "\n").splitlines():
        item = item.strip()
        if not item or item.startswith("#"):
            continue
        key_id, sep, encoded = item.partition("=")
        if not sep:
            raise EncryptionKeyError(f"{source}: each key is id=BASE64 (see `sagalog keys new`)")
        try:
            key = base64.b64decode(
                encoded.strip() + "=" * (-len(encoded.strip()) % 4), validate=True
            )
        except (binascii.Error, ValueError):
            raise EncryptionKeyError(f"{source}: key {key_id.strip()!r} is not base64") from None
        keys.append((key_id.strip(), key))
    if not keys:
        raise EncryptionKeyMissingError(f"{source} lists no key")
    return keys


class SagaCipher(Cipher):
    """eventsourcing's cipher hook (``CIPHER_TOPIC``) on the store keys of the environment.

    Encrypts every stored state with the writing key. A state without
    :data:`MAGIC` (written before encryption was turned on) is read as it is,
    so a store can be switched on without rewriting it (docs/security.md).
    """

    def __init__(self, environment: Any) -> None:
        """The key ring ``environment`` names (``SAGALOG_ENCRYPTION_KEYS`` or the key file)."""
        self.keyring = KeyRing.from_env(environment)

    def encrypt(self, plaintext: bytes) -> bytes:
        """``plaintext`` under the writing store key."""
        return self.keyring.encrypt(plaintext)

    def decrypt(self, ciphertext: bytes) -> bytes:
        """The plaintext of ``ciphertext``; plaintext written before encryption as it is."""
        if not is_encrypted(ciphertext):
            return ciphertext
        return self.keyring.decrypt(ciphertext)
