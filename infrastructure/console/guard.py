"""Who may act: the operator token, and the CSRF check of the console's forms.

Without a token the console is read-only. With one, a browser signs in once (the
session cookie holds an HMAC of the token, never the token) and the API sends it as
``Authorization: Bearer``. Forms carry a CSRF value that must equal the ``csrf``
cookie (double submit); both cookies are ``HttpOnly`` and ``SameSite=Strict``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from sagalog.domain import SagalogError

__all__ = [
    "CSRF_COOKIE",
    "SESSION_COOKIE",
    "TOKEN_ENV_VAR",
    "ConsoleGuard",
    "ConsoleRefusedError",
    "read_token",
]

TOKEN_ENV_VAR = "SAGALOG_CONSOLE_TOKEN"
SESSION_COOKIE = "sagalog_session"
CSRF_COOKIE = "sagalog_csrf"


class ConsoleRefusedError(SagalogError, PermissionError):
    """An action the console refuses: read-only, a wrong token, or a failed CSRF check."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class TokenFileError(SagalogError, ValueError):
    """The token file cannot be read or is empty."""


def read_token(token_file: Path | None) -> str | None:
    """The operator token: from ``token_file`` if given, else ``SAGALOG_CONSOLE_TOKEN``."""
    if token_file is not None:
        try:
            text = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise TokenFileError(
                f"--token-file {token_file}: cannot read: {exc.strerror or exc}"
            ) from None
        if not text:
            raise TokenFileError(f"--token-file {token_file}: the file is empty")
        return text
    return os.environ.get(TOKEN_ENV_VAR, "").strip() or None


@dataclass
class ConsoleGuard:
    """Checks the token and CSRF values of requests that act."""

    token: str | None
    _key: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    @property
    def read_only(self) -> bool:
        return self.token is None

    def session_value(self) -> str:
        """The session cookie's value: an HMAC of the token under this process's key."""
        assert self.token is not None
        return hmac.new(self._key, self.token.encode(), hashlib.sha256).hexdigest()

    def check_token(self, given: str | None) -> None:
        """Refuse unless actions are enabled and ``given`` is the token."""
        if self.token is None:
            raise ConsoleRefusedError(
                "the console is read-only: start it with SAGALOG_CONSOLE_TOKEN or "
                "--token-file to enable actions",
                403,
            )
        if not given or not hmac.compare_digest(given.encode(), self.token.encode()):
            raise ConsoleRefusedError("a wrong or missing operator token", 401)

    def check_session(self, cookie: str | None) -> None:
        """Refuse unless the browser signed in with the token."""
        if self.token is None:
            self.check_token(None)
        if not cookie or not hmac.compare_digest(cookie, self.session_value()):
            raise ConsoleRefusedError("sign in with the operator token first", 401)

    @staticmethod
    def new_csrf() -> str:
        return secrets.token_urlsafe(32)

    @staticmethod
    def check_csrf(cookie: str | None, form_value: str | None) -> None:
        """Refuse a form whose CSRF value does not match its cookie (a cross-site post)."""
        if not cookie or not form_value or not hmac.compare_digest(cookie, form_value):
            raise ConsoleRefusedError("the form's CSRF check failed; reload the page", 403)
