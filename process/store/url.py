"""Database URLs: one string chooses where sagas are stored.

``SagaManager(definitions, database_url=...)`` accepts a URL, falls back to the
environment variable ``SAGALOG_DATABASE_URL``, and otherwise uses a SQLite file
``sagalog.db`` in the working directory, so a first run needs no setup and
loses nothing when the process stops.

Supported forms::

    memory://                                   in-process dicts, gone on exit (tests)
    sqlite:///relative/path.db                  a file, relative to the working directory
    sqlite:////absolute/path.db                 a file, absolute path
    sqlite:///:memory:                          a private in-memory SQLite database
    postgresql://user:password@host:port/dbname  (also postgres:// and postgresql+psycopg://)

A PostgreSQL URL must name a host and a database; the user defaults to
``postgres``, the port to 5432 and the password to none. Percent-escape
reserved characters in user names, passwords and paths (``%40`` for ``@``).

Query parameters: PostgreSQL takes ``schema``, ``pool_size``, ``max_overflow`` and
``connect_timeout`` (seconds); SQLite takes ``lock_timeout`` (seconds). Anything
else is rejected, so a typo cannot be silently ignored.

How the URL reaches eventsourcing
---------------------------------
:meth:`DatabaseUrl.eventsourcing_env` turns the URL into the environment an
eventsourcing ``Application``/``ProcessApplication`` reads. eventsourcing picks
its persistence by *topic strings* in that environment, which is what lets this
module (in ``sagalog.process``) choose the recorders that keep the durable timer
index without importing ``sagalog.infrastructure``:

* SQLite and PostgreSQL use eventsourcing's own factories (``PERSISTENCE_MODULE``
  is ``eventsourcing.sqlite`` / ``eventsourcing.postgres``); their
  ``process_recorder()`` and ``application_recorder()`` honour
  ``PROCESS_RECORDER_TOPIC`` and ``APPLICATION_RECORDER_TOPIC``, which name the
  sagalog recorder subclasses.
* eventsourcing's POPO factory ignores those two topics (it always builds its
  stock recorders). ``PERSISTENCE_MODULE`` may name a factory *class* instead of
  a module (``InfrastructureFactory.construct`` accepts either), so for
  ``memory://`` it names ``sagalog.infrastructure.persistence.recorders:POPOSagaFactory``, a
  ``POPOFactory`` subclass that does honour the topics. The topics are set too,
  so all three backends are configured the same way.

Both recorder topics are set because a plain ``Application`` asks its factory
for an *application* recorder and a ``ProcessApplication`` for a *process*
recorder; the sagalog recorders are process recorders, which satisfy both.

The keys are prefixed with the application's name (``SAGAMANAGER_SQLITE_DBNAME``),
eventsourcing's convention for per-application settings. Prefixed keys win over
unprefixed ones already in ``os.environ`` and do not leak into other
applications of an eventsourcing ``System`` that share one environment. Pass the
application's own ``name`` (``eventsourcing_env(self.name)``) so that subclasses,
which eventsourcing names after the subclass, still find their settings; pass
``""`` for unprefixed keys.

This module is pure: it parses strings and builds dicts, and never touches a
database, so the process layer can validate configuration up front.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from sagalog.domain.errors import SagalogError

__all__ = [
    "DATABASE_URL_ENV_VAR",
    "DEFAULT_DATABASE_URL",
    "DEFAULT_FILE_MODE",
    "DEFAULT_POSTGRES_POOL_SIZE",
    "DEFAULT_SQLITE_LOCK_TIMEOUT",
    "FILE_MODE_ENV_VAR",
    "DatabaseKind",
    "DatabaseUnavailableError",
    "DatabaseUrl",
    "DatabaseUrlError",
    "mask_password",
    "parse_database_url",
]

#: The embedded default: a SQLite file in the working directory.
DEFAULT_DATABASE_URL = "sqlite:///sagalog.db"

#: Environment variable consulted when no URL is passed explicitly.
DATABASE_URL_ENV_VAR = "SAGALOG_DATABASE_URL"

#: PostgreSQL connections a sagalog application's pool keeps open when neither the
#: URL (``pool_size``) nor the environment (``POSTGRES_POOL_SIZE``) says: one, plus
#: up to ``max_overflow`` (eventsourcing's default 10) opened while threads need
#: more. psycopg's pool hands out its idle connections in turn, so with
#: eventsourcing's default of five a manager that writes from one thread spreads
#: its statements over five server backends, each of which prepares them and warms
#: its caches anew: see docs/performance.md, "One pooled PostgreSQL connection".
DEFAULT_POSTGRES_POOL_SIZE = 1

#: Seconds a SQLite writer waits for another writer's lock before failing.
#: eventsourcing's own default is 5; the manager, the command relay and the
#: projections may all write to one file, so sagalog waits a little longer.
DEFAULT_SQLITE_LOCK_TIMEOUT = 10

#: Files sagalog creates (SQLite stores, participant stores) are owner-only: they
#: hold saga data (card numbers, addresses). ``SAGALOG_FILE_MODE`` (octal, e.g.
#: ``640``) configures it. SQLite creates a store's ``-wal`` and ``-shm`` files with
#: the mode of the store file, so they follow.
DEFAULT_FILE_MODE = 0o600
FILE_MODE_ENV_VAR = "SAGALOG_FILE_MODE"


def file_mode(environ: Mapping[str, str] | None = None) -> int:
    """The mode of the files sagalog creates: ``SAGALOG_FILE_MODE`` (octal), else 0600."""
    text = (os.environ if environ is None else environ).get(FILE_MODE_ENV_VAR, "").strip()
    if not text:
        return DEFAULT_FILE_MODE
    try:
        mode = int(text, 8)
    except ValueError:
        raise DatabaseUrlError(
            f"{FILE_MODE_ENV_VAR} must be an octal file mode such as 600, not {text!r}"
        ) from None
    if not 0 <= mode <= 0o777:
        raise DatabaseUrlError(f"{FILE_MODE_ENV_VAR} {text!r} is not a file mode")
    return mode


def create_private_file(path: str | os.PathLike[str]) -> None:
    """Create ``path`` empty with :func:`file_mode` if it does not exist (else leave it).

    An empty file is a valid empty SQLite database, so opening it afterwards
    creates the store inside a file that was never readable by others.
    """
    mode = file_mode()
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        return
    except OSError:
        return  # a missing folder, a read-only place: SQLite reports it when it opens
    os.close(descriptor)


DatabaseKind = Literal["memory", "sqlite", "postgresql"]

_RECORDERS_MODULE = "sagalog.infrastructure.persistence.recorders"
_POPO_FACTORY_TOPIC = f"{_RECORDERS_MODULE}:POPOSagaFactory"
_RECORDER_TOPICS: dict[str, str] = {
    "memory": f"{_RECORDERS_MODULE}:POPOSagaRecorder",
    "sqlite": f"{_RECORDERS_MODULE}:SQLiteSagaRecorder",
    "postgresql": f"{_RECORDERS_MODULE}:PostgresSagaRecorder",
}

_POSTGRES_SCHEMES = frozenset({"postgresql", "postgres", "postgresql+psycopg"})
_POSTGRES_PARAMS = ("schema", "pool_size", "max_overflow", "connect_timeout")
_SQLITE_PARAMS = ("lock_timeout",)
_SQLITE_MEMORY = ":memory:"
_MAX_PG_IDENTIFIER = 63  # PostgreSQL truncates longer identifiers silently.
_MASK = "***"


class DatabaseUrlError(SagalogError, ValueError):
    """A database URL is malformed or names something sagalog cannot use.

    The message is one line and names the URL with any password masked.
    """


class DatabaseUnavailableError(SagalogError, ConnectionError):
    """The configured database cannot be reached (down, refused, no such file).

    The message is one line, ``cannot reach database <masked url>: <reason>``,
    so it can be shown to an operator as is without leaking a password.
    """

    def __init__(self, url: DatabaseUrl | str, reason: str | BaseException) -> None:
        self.url = url.masked if isinstance(url, DatabaseUrl) else mask_password(url)
        self.reason = _short_reason(reason)
        if isinstance(url, DatabaseUrl) and url.password:
            # Belt and braces: a driver could echo its connection string.
            self.reason = self.reason.replace(url.password, _MASK)
        super().__init__(f"cannot reach database {self.url}: {self.reason}")

    def __reduce__(self) -> tuple[type[DatabaseUnavailableError], tuple[str, str]]:
        # Exceptions unpickle as cls(*args); keep that working across processes.
        return (type(self), (self.url, self.reason))


def _short_reason(reason: str | BaseException) -> str:
    """The first non-empty line of an error, trimmed: drivers write essays."""
    text = str(reason).strip()
    if not text and isinstance(reason, BaseException):
        text = type(reason).__name__
    first = next((line.strip() for line in text.splitlines() if line.strip()), "unknown error")
    return first if len(first) <= 200 else first[:197] + "..."


def mask_password(url: str) -> str:
    """``url`` with the password (and any ``password=`` query value) replaced by ``***``.

    Works on malformed URLs too, because it is used to build the error messages
    for them. When unsure where the password ends it masks more, never less.
    """
    text = url.strip()
    scheme_end = text.find("://")
    split = 0 if scheme_end < 0 else scheme_end + 3
    prefix, rest = text[:split], text[split:]
    # The last "@" anywhere: a password may hold an unescaped "/", "?" or "#".
    at = rest.rfind("@")
    if at >= 0:
        user, colon, _password = rest[:at].partition(":")
        if colon:
            rest = f"{user}:{_MASK}@{rest[at + 1 :]}"
    before, sep, query = rest.partition("?")
    if sep:
        query = re.sub(r"(?i)((?:^|[&;])[^=&;]*pass[^=&;]*=)[^&;]*", rf"\g<1>{_MASK}", query)
    return prefix + before + sep + query


@dataclass(frozen=True)
class DatabaseUrl:
    """A parsed, validated database URL.

    ``kind`` says which backend; the other fields are those that backend uses
    (``None`` when absent). The password is kept out of ``repr`` and ``str``;
    use :attr:`masked` to show the URL to people.
    """

    kind: DatabaseKind
    #: SQLite: the file path as given (relative paths are relative to the
    #: working directory), or ``":memory:"``.
    path: str | None = None
    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    dbname: str | None = None
    #: PostgreSQL schema (``POSTGRES_SCHEMA``); ``None`` means ``public``.
    schema: str | None = None
    pool_size: int | None = None
    max_overflow: int | None = None
    #: PostgreSQL: seconds to wait for a connection.
    connect_timeout: int | None = None
    #: SQLite: seconds to wait for another writer's lock.
    lock_timeout: int | None = None

    @property
    def is_sqlite_memory(self) -> bool:
        """True for ``sqlite:///:memory:``."""
        return self.kind == "sqlite" and self.path == _SQLITE_MEMORY

    @property
    def masked(self) -> str:
        """The URL in canonical form with the password replaced by ``***``."""
        if self.kind == "memory":
            return "memory://"
        if self.kind == "sqlite":
            assert self.path is not None
            query = _query({"lock_timeout": self.lock_timeout})
            return f"sqlite:///{quote(self.path, safe='/:')}{query}"
        userinfo = quote(self.user or "", safe="")
        if self.password:
            userinfo += ":" + _MASK
        netloc = f"{userinfo}@" if userinfo else ""
        netloc += f"[{self.host}]" if self.host and ":" in self.host else (self.host or "")
        if self.port is not None:
            netloc += f":{self.port}"
        query = _query(
            {
                "schema": self.schema,
                "pool_size": self.pool_size,
                "max_overflow": self.max_overflow,
                "connect_timeout": self.connect_timeout,
            }
        )
        return f"postgresql://{netloc}/{quote(self.dbname or '', safe='')}{query}"

    def __str__(self) -> str:
        return self.masked

    def conninfo(self, **extra: str | int | None) -> str:
        """The libpq connection string of a PostgreSQL URL (``extra``: more libpq keys).

        For sagalog's own short connections beside eventsourcing's pool: the store's
        lease, the health probe, the lookup of which managers a store holds.
        """
        from psycopg.conninfo import make_conninfo

        return make_conninfo(
            "",
            host=self.host or "",
            port=self.port or 5432,
            user=self.user or "",
            dbname=self.dbname or "",
            password=self.password or None,
            **extra,
        )

    def eventsourcing_env(self, app_name: str = "SagaManager") -> dict[str, str]:
        """The eventsourcing environment that stores an application's events here.

        Keys are prefixed with ``app_name.upper() + "_"`` (none when ``app_name``
        is empty); see the module docstring for why. Only settings present in the
        URL are included, besides the ones eventsourcing requires, so anything the
        URL does not say can still be tuned through ``os.environ``.

        For ``sqlite:///:memory:`` every call names a fresh shared-cache
        in-memory database (``file:sagalog-<hex>?mode=memory&cache=shared``):
        all pooled connections of the one application see the same data (a
        plain ``:memory:`` would give each connection its own empty database),
        while two applications never share one by accident.
        """
        env: dict[str, str] = {
            "PROCESS_RECORDER_TOPIC": _RECORDER_TOPICS[self.kind],
            "APPLICATION_RECORDER_TOPIC": _RECORDER_TOPICS[self.kind],
        }
        if self.kind == "postgresql":
            # Positions recorded on their own (the relay's) in one round trip.
            env["TRACKING_RECORDER_TOPIC"] = f"{_RECORDERS_MODULE}:PostgresSagaTrackingRecorder"
        if self.kind == "memory":
            env["PERSISTENCE_MODULE"] = _POPO_FACTORY_TOPIC
        elif self.kind == "sqlite":
            assert self.path is not None
            env["PERSISTENCE_MODULE"] = "eventsourcing.sqlite"
            env["SQLITE_DBNAME"] = (
                f"file:sagalog-{uuid.uuid4().hex}?mode=memory&cache=shared"
                if self.is_sqlite_memory
                else self.path
            )
            if not self.is_sqlite_memory:
                create_private_file(self.path)
            lock_timeout = self.lock_timeout or DEFAULT_SQLITE_LOCK_TIMEOUT
            env["SQLITE_LOCK_TIMEOUT"] = str(lock_timeout)
        else:
            env["PERSISTENCE_MODULE"] = "eventsourcing.postgres"
            env["POSTGRES_DBNAME"] = self.dbname or ""
            env["POSTGRES_HOST"] = self.host or ""
            env["POSTGRES_PORT"] = str(self.port or 5432)
            env["POSTGRES_USER"] = self.user or ""
            # eventsourcing insists on a password key; empty means "none" to libpq.
            env["POSTGRES_PASSWORD"] = self.password or ""
            optional = {
                "POSTGRES_SCHEMA": self.schema,
                "POSTGRES_POOL_SIZE": self.pool_size,
                "POSTGRES_MAX_OVERFLOW": self.max_overflow,
                "POSTGRES_CONNECT_TIMEOUT": self.connect_timeout,
            }
            env.update({key: str(value) for key, value in optional.items() if value is not None})
        prefix = f"{app_name.upper()}_" if app_name else ""
        return {prefix + key: value for key, value in env.items()}

    def application_env(
        self, app_name: str, environ: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """:meth:`eventsourcing_env`, with sagalog's defaults for what nothing else sets.

        On PostgreSQL the pool size is :data:`DEFAULT_POSTGRES_POOL_SIZE` unless the
        URL or ``environ`` (default ``os.environ``, prefixed or not) names one, so
        tuning through the environment keeps working.
        """
        env = self.eventsourcing_env(app_name)
        if self.kind == "postgresql":
            source = os.environ if environ is None else environ
            prefixed = f"{app_name.upper()}_POSTGRES_POOL_SIZE" if app_name else ""
            keys = [key for key in (prefixed, "POSTGRES_POOL_SIZE") if key]
            if not any(key in env or source.get(key) for key in keys):
                env[keys[0]] = str(DEFAULT_POSTGRES_POOL_SIZE)
        return env


def _query(params: Mapping[str, object | None]) -> str:
    present = [f"{key}={quote(str(value), safe='')}" for key, value in params.items() if value]
    return "?" + "&".join(present) if present else ""


def parse_database_url(
    url: str | None = None, environ: Mapping[str, str] | None = None
) -> DatabaseUrl:
    """Parse ``url``, else ``$SAGALOG_DATABASE_URL``, else :data:`DEFAULT_DATABASE_URL`.

    ``environ`` defaults to ``os.environ``; an empty or blank variable counts as
    unset. An explicit ``url`` must not be blank. Raises :class:`DatabaseUrlError`
    (one line, password masked) for anything malformed or unsupported.
    """
    if url is None:
        env = os.environ if environ is None else environ
        url = (env.get(DATABASE_URL_ENV_VAR) or "").strip() or DEFAULT_DATABASE_URL
    return _Parser(url).parse()


class _Parser:
    """Parses one URL; every error message names the masked URL."""

    def __init__(self, url: str) -> None:
        self.url = url.strip()

    def fail(self, problem: str) -> DatabaseUrlError:
        shown = mask_password(self.url) if self.url else "''"
        return DatabaseUrlError(f"invalid database URL {shown}: {problem}")

    def parse(self) -> DatabaseUrl:
        if not self.url:
            raise self.fail("it is empty")
        if any(ch.isspace() for ch in self.url):
            raise self.fail("it contains whitespace")
        if "://" not in self.url:
            raise self.fail(
                "expected scheme://..., e.g. sqlite:///sagalog.db, "
                "postgresql://user@host/dbname or memory://"
            )
        try:
            parts = urlsplit(self.url)
        except ValueError as e:  # e.g. an unbalanced IPv6 bracket
            raise self.fail(str(e)) from None
        scheme = parts.scheme.lower()
        if scheme in _POSTGRES_SCHEMES and "@" in parts.path + parts.query + parts.fragment:
            # The userinfo holds an unescaped "/", "?" or "#": the split above is
            # wrong, and reporting any of its pieces could leak the password.
            raise self.fail(
                "'@' after the host; percent-escape '@', '/', '?' and '#' "
                "in the user name and password (e.g. %40 for '@')"
            )
        if parts.fragment:
            raise self.fail("a '#fragment' has no meaning here")
        params = self.query(parts.query)
        if scheme == "memory":
            return self.memory(parts.netloc, parts.path, params)
        if scheme == "sqlite":
            return self.sqlite(parts.netloc, parts.path, params)
        if scheme in _POSTGRES_SCHEMES:
            return self.postgresql(parts.netloc, parts.path, params)
        if scheme.startswith(("postgresql+", "postgres+")):
            raise self.fail(f"unsupported driver {scheme!r}; sagalog uses psycopg 3")
        raise self.fail(
            f"unsupported scheme {scheme!r}; use memory://, sqlite:///path or postgresql://"
        )

    def query(self, query: str) -> dict[str, str]:
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
        except ValueError:
            raise self.fail("malformed query string; expected ?name=value&name=value") from None
        params: dict[str, str] = {}
        for key, value in pairs:
            if key in params:
                raise self.fail(f"query parameter {key!r} is given twice")
            params[key] = value
        return params

    def check_params(self, params: Mapping[str, str], allowed: tuple[str, ...], kind: str) -> None:
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            accepted = ", ".join(allowed) if allowed else "none"
            raise self.fail(
                f"unknown query parameter {unknown[0]!r} for {kind} (accepted: {accepted})"
            )

    def int_param(self, params: Mapping[str, str], name: str, minimum: int) -> int | None:
        raw = params.get(name)
        if raw is None:
            return None
        try:
            value = int(raw)
        except ValueError:
            raise self.fail(f"{name} must be an integer, got {raw!r}") from None
        if value < minimum:
            raise self.fail(f"{name} must be at least {minimum}, got {value}")
        return value

    def memory(self, netloc: str, path: str, params: Mapping[str, str]) -> DatabaseUrl:
        if netloc or path.strip("/"):
            raise self.fail("memory:// takes no host or path")
        self.check_params(params, (), "memory://")
        return DatabaseUrl(kind="memory")

    def sqlite(self, netloc: str, path: str, params: Mapping[str, str]) -> DatabaseUrl:
        if netloc:
            raise self.fail(
                "SQLite URLs have no host; use sqlite:///relative.db or sqlite:////abs/path.db"
            )
        # urlsplit leaves "/relative.db" or "//abs/path.db"; drop the separator.
        if not path.startswith("/") or len(path) < 2:
            raise self.fail("no database file; use sqlite:///relative.db or sqlite:////abs.db")
        file_path = unquote(path[1:])
        if "\x00" in file_path:
            raise self.fail("the file path contains a NUL character")
        if file_path.endswith("/"):
            raise self.fail("the path names a directory, not a database file")
        if file_path.startswith("file:"):
            raise self.fail("SQLite URI filenames are not supported; give a plain path")
        self.check_params(params, _SQLITE_PARAMS, "SQLite")
        return DatabaseUrl(
            kind="sqlite",
            path=file_path,
            lock_timeout=self.int_param(params, "lock_timeout", 1),
        )

    def postgresql(self, netloc: str, path: str, params: Mapping[str, str]) -> DatabaseUrl:
        userinfo, at, hostport = netloc.rpartition("@")
        if not at:
            userinfo, hostport = "", netloc
        user_raw, colon, password_raw = userinfo.partition(":")
        user = unquote(user_raw) or "postgres"
        password = unquote(password_raw) if colon else None
        host, port = self.host_port(hostport)
        dbname = unquote(path[1:]) if path.startswith("/") else ""
        if not dbname:
            raise self.fail("no database name; use postgresql://user@host:port/dbname")
        if "/" in dbname:
            raise self.fail(f"database name {dbname!r} contains '/'")
        self.check_params(params, _POSTGRES_PARAMS, "PostgreSQL")
        schema = params.get("schema")
        if schema is not None:
            if not schema:
                raise self.fail("schema is empty")
            if len(schema.encode()) > _MAX_PG_IDENTIFIER:
                raise self.fail(f"schema name is longer than {_MAX_PG_IDENTIFIER} bytes")
        return DatabaseUrl(
            kind="postgresql",
            host=host,
            port=port,
            user=user,
            password=password,
            dbname=dbname,
            schema=schema,
            pool_size=self.int_param(params, "pool_size", 1),
            max_overflow=self.int_param(params, "max_overflow", 0),
            connect_timeout=self.int_param(params, "connect_timeout", 1),
        )

    def host_port(self, hostport: str) -> tuple[str, int]:
        if hostport.startswith("["):  # [IPv6]:port
            host, bracket, after = hostport[1:].partition("]")
            if not bracket:
                raise self.fail("unbalanced '[' in the host")
            if after and not after.startswith(":"):
                raise self.fail(f"unexpected {after!r} after the IPv6 address")
            port_raw = after[1:] if after else ""
        else:
            host, _, port_raw = hostport.partition(":")
            if ":" in port_raw:
                raise self.fail("the host part has more than one ':'; bracket IPv6 addresses")
        host = unquote(host)
        if not host:
            raise self.fail("no host; use postgresql://user@host:port/dbname")
        if not port_raw:
            return host, 5432
        if not port_raw.isdigit() or not 0 < int(port_raw) < 65536:
            raise self.fail(f"port {port_raw!r} is not a number between 1 and 65535")
        return host, int(port_raw)
