"""The console's web application: server-rendered pages and the JSON API under ``/api``.

FastAPI serves both, so that the API's OpenAPI schema (``/api/openapi.json``) comes from
the same declarations that check its input. Pages are Jinja2 templates with autoescaping
on; a Content-Security-Policy allows only the console's own script and style, so saga
data that slipped through as markup would still not run.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

from fastapi import FastAPI, Form, Header, Query, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from sagalog.domain import SagalogError, SagaNotFoundError, SagaStatus
from sagalog.domain.payload import UNSTORABLE_CHARACTERS
from sagalog.infrastructure.console.acting import ACTIONS, BULK_LIMIT, Preview, act, preview
from sagalog.infrastructure.console.guard import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    ConsoleGuard,
    ConsoleRefusedError,
)
from sagalog.infrastructure.console.pictures import (
    activity_picture,
    path_picture,
    timeline_picture,
)
from sagalog.infrastructure.console.reading import EXPLAINED_STUCK, ConsoleStore, jsonable
from sagalog.process import EncryptionKeyError
from sagalog.projections.search import PageCursor, SagaFilter

#: The error page's heading by status (anything else is "refused").
_HEADINGS = {404: "not found", 503: "unavailable"}

__all__ = ["create_app"]

_HERE = Path(__file__).parent
_TEXT = 200
#: The highest definition version a filter may ask for (a larger one would overflow a
#: store's integer column).
_MOST_VERSION = 1_000_000

#: Sent with every answer: only our own script and style run; no framing, no referrer.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "A request the console refuses (one-line `error`)."},
    401: {"description": "A wrong or missing operator token."},
    403: {"description": "Read-only console, or a failed CSRF check."},
    404: {"description": "No such saga (or one retention archived)."},
    503: {"description": "The store is encrypted and the console lacks its key (one line)."},
}


class ActionRequest(BaseModel):
    """One operator action: who, why, and for retry an optional data patch."""

    action: str = Field(json_schema_extra={"enum": list(ACTIONS)})
    actor: str = Field(min_length=1, max_length=_TEXT)
    reason: str = Field(min_length=1, max_length=1000)
    patch: dict[str, Any] | None = None


class BulkRequest(ActionRequest):
    """An action on the sagas a filter selects (at most ``BULK_LIMIT``)."""

    status: SagaStatus | None = None
    saga_type: str | None = Field(default=None, max_length=_TEXT)
    version: int | None = Field(default=None, ge=1, le=_MOST_VERSION)
    step: str | None = Field(default=None, max_length=_TEXT)
    error: str | None = Field(default=None, max_length=_TEXT)


class BulkApply(ActionRequest):
    """An action on the sagas a dry run listed."""

    saga_ids: list[UUID] = Field(min_length=1, max_length=BULK_LIMIT)


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _filter(
    status: SagaStatus | None,
    saga_type: str | None,
    version: int | None,
    step: str | None,
    error: str | None,
    after: datetime | None = None,
    before: datetime | None = None,
) -> SagaFilter:
    """The store's filter; a text with a NUL is refused (400) rather than sent to a store
    that cannot take it (PostgreSQL refuses NUL in text, and no saga's text holds one)."""
    for field, value in (("type", saga_type), ("step", step), ("error", error)):
        if value and not UNSTORABLE_CHARACTERS.isdisjoint(value):
            raise ConsoleRefusedError(f"filter: {field} holds a NUL character", 400)
    return SagaFilter(
        status=status,
        saga_type=saga_type or None,
        version=version,
        step=step or None,
        error=error or None,
        updated_after=_aware(after),
        updated_before=_aware(before),
    )


_FILTER_FIELDS = ("status", "type", "version", "step", "error", "after", "before")


def _form_filter(values: Mapping[str, str]) -> SagaFilter:
    """A filter from a form's (or query string's) text fields; empty fields do not narrow.

    A field longer than the API allows is refused, as the API refuses it, rather than cut:
    a cut filter would quietly list sagas the user did not ask for.
    """
    text = {k: values.get(k, "").strip() for k in _FILTER_FIELDS}
    for field, value in text.items():
        if len(value) > _TEXT:
            raise ConsoleRefusedError(
                f"filter: {field} is longer than {_TEXT} characters ({len(value)})", 400
            )
    field = ""
    try:
        field = "status"
        status = SagaStatus(text["status"]) if text["status"] else None
        field = "version"
        version = int(text["version"]) if text["version"] else None
        if version is not None and not 1 <= version <= _MOST_VERSION:
            raise ValueError(version)
        field = "after"
        after = datetime.fromisoformat(text["after"]) if text["after"] else None
        field = "before"
        before = datetime.fromisoformat(text["before"]) if text["before"] else None
    except ValueError:
        # Named, not quoted: as the API's 422, the page does not send the value back.
        raise ConsoleRefusedError(f"filter: {field} is not one the console can read", 400) from None
    return _filter(status, text["type"], version, text["step"], text["error"], after, before)


def _bearer(authorization: str | None) -> str | None:
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return None


def _patch(text: str | None) -> dict[str, Any] | None:
    """A form's patch field: empty, or a JSON object."""
    if not text or not text.strip():
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConsoleRefusedError(f"patch: not JSON: {exc}", 400) from None
    if not isinstance(value, dict):
        raise ConsoleRefusedError(f"patch: give a JSON object, not a {type(value).__name__}", 400)
    return value


_WHERE = ("path", "query", "body")


def _unfit(exc: RequestValidationError) -> str:
    """The first field a page's request got wrong, in one line (``saga_id: …``)."""
    for error in exc.errors():
        where = [str(part) for part in error.get("loc", ()) if part not in _WHERE]
        if error.get("type") == "uuid_parsing":
            return f"{'.'.join(where) or 'id'}: not a saga id"
        text = " ".join(str(error.get("msg", "")).split())
        return f"{'.'.join(where) or 'request'}: {text}"[:_TEXT]
    return "the request does not fit this page"


def create_app(store: ConsoleStore, guard: ConsoleGuard) -> FastAPI:
    """The console for ``store``; ``guard`` decides whether and with what token it acts."""
    app = FastAPI(
        title="sagalog console",
        description="Sagas, stuck sagas, one saga's story and the operator actions.",
        version="1",
        openapi_url="/api/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.mount("/static", StaticFiles(directory=_HERE / "static"), name="static")
    env = Environment(
        loader=FileSystemLoader(_HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    env.filters["when"] = lambda m: "-" if m is None else m.strftime("%Y-%m-%d %H:%M:%S")

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.exception_handler(SagalogError)
    async def refused(request: Request, exc: SagalogError) -> Response:
        code = (
            exc.status_code
            if isinstance(exc, ConsoleRefusedError)
            else 404
            if isinstance(exc, SagaNotFoundError)
            else 503  # the console's own keys: nothing the request could change
            if isinstance(exc, EncryptionKeyError)
            else 400
        )
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": str(exc)}, status_code=code)
        return page(
            request, "error.html", {"message": str(exc), "heading": _HEADINGS.get(code)}, code
        )

    @app.exception_handler(RequestValidationError)
    async def unfit(request: Request, exc: RequestValidationError) -> Response:
        """The API keeps the schema's 422; a page says what did not fit in one line."""
        if request.url.path.startswith("/api/"):
            # The schema's 422 without what was sent: a patch may hold saga data.
            errors = [{k: v for k, v in e.items() if k != "input"} for e in exc.errors()]
            return await request_validation_exception_handler(
                request, RequestValidationError(errors)
            )
        return page(
            request, "error.html", {"message": _unfit(exc), "heading": "not understood"}, 422
        )

    def page(
        request: Request, name: str, context: dict[str, Any], status_code: int = 200
    ) -> HTMLResponse:
        csrf = request.cookies.get(CSRF_COOKIE) or guard.new_csrf()
        signed_in = not guard.read_only and request.cookies.get(SESSION_COOKIE) == (
            guard.session_value()
        )
        html = env.get_template(name).render(
            csrf=csrf,
            read_only=guard.read_only,
            signed_in=signed_in,
            actions=ACTIONS,
            statuses=[s.value for s in SagaStatus],
            **context,
        )
        response = HTMLResponse(html, status_code=status_code)
        if request.cookies.get(CSRF_COOKIE) != csrf:
            response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="strict")
        return response

    def acting_form(request: Request, csrf: str | None) -> None:
        guard.check_csrf(request.cookies.get(CSRF_COOKIE), csrf)
        guard.check_session(request.cookies.get(SESSION_COOKIE))

    # -- pages ---------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def overview_page(request: Request) -> HTMLResponse:
        overview = store.overview()
        return page(
            request,
            "overview.html",
            {
                "overview": overview,
                "chart": activity_picture(overview),
                "head": store.head(),
                "live": True,
            },
        )

    @app.get("/sagas", response_class=HTMLResponse, include_in_schema=False)
    def sagas_page(request: Request) -> HTMLResponse:
        wanted = _form_filter(request.query_params)
        cursor = request.query_params.get("cursor", "")
        if len(cursor) > _TEXT:
            raise ConsoleRefusedError(f"cursor: longer than {_TEXT} characters", 400)
        found = store.sagas(wanted, after=PageCursor.decode(cursor) if cursor else None)
        params = {
            k: v
            for k, v in request.query_params.items()
            if k in ("status", "type", "version", "step", "error", "after", "before") and v
        }
        return page(
            request,
            "sagas.html",
            {
                "page": found,
                "params": params,
                "next": found.next_cursor.encode() if found.next_cursor else None,
                "bulk_limit": BULK_LIMIT,
            },
        )

    @app.get("/stuck", response_class=HTMLResponse, include_in_schema=False)
    def stuck_page(request: Request) -> HTMLResponse:
        stuck = store.stuck()
        advice = store.advice([item.saga_id for item in stuck[:EXPLAINED_STUCK]])
        return page(request, "stuck.html", {"stuck": stuck, "advice": advice})

    @app.get("/sagas/{saga_id}", response_class=HTMLResponse, include_in_schema=False)
    def saga_page(request: Request, saga_id: UUID) -> HTMLResponse:
        story = store.story(saga_id)
        return page(
            request,
            "saga.html",
            {
                "story": story,
                "s": story.summary,
                "timeline_chart": timeline_picture(story.chart),
                "path": path_picture(story),
                "events_json": json.dumps(story.events, indent=2, ensure_ascii=False),
                "head": store.head(),
                "live": True,
                "done": request.query_params.get("done"),
            },
        )

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_page(request: Request) -> HTMLResponse:
        return page(request, "login.html", {})

    @app.post("/login", include_in_schema=False)
    def login(
        request: Request,
        token: Annotated[str, Form(max_length=1000)] = "",
        csrf: Annotated[str, Form(max_length=200)] = "",
    ) -> Response:
        guard.check_csrf(request.cookies.get(CSRF_COOKIE), csrf)
        guard.check_token(token)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(SESSION_COOKIE, guard.session_value(), httponly=True, samesite="strict")
        return response

    @app.post("/logout", include_in_schema=False)
    def logout(request: Request, csrf: Annotated[str, Form(max_length=200)] = "") -> Response:
        guard.check_csrf(request.cookies.get(CSRF_COOKIE), csrf)
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    @app.post("/sagas/{saga_id}/act", include_in_schema=False)
    def act_page(
        request: Request,
        saga_id: UUID,
        action: Annotated[str, Form(max_length=32)],
        actor: Annotated[str, Form(max_length=_TEXT)] = "",
        reason: Annotated[str, Form(max_length=1000)] = "",
        patch: Annotated[str, Form(max_length=10_000)] = "",
        csrf: Annotated[str, Form(max_length=200)] = "",
    ) -> Response:
        acting_form(request, csrf)
        with store.lock:
            outcome = act(
                store.manager, saga_id, action, actor=actor, reason=reason, patch=_patch(patch)
            )
        if outcome.refusal is not None:
            raise outcome.refusal
        return RedirectResponse(f"/sagas/{saga_id}?done={action}", status_code=303)

    @app.post("/bulk/preview", response_class=HTMLResponse, include_in_schema=False)
    async def bulk_preview_page(request: Request) -> HTMLResponse:
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        acting_form(request, form.get("csrf"))
        action, actor, reason, patch = (
            form.get(k, "") for k in ("action", "actor", "reason", "patch")
        )
        # The limits of the confirmation's form, and the actor and reason as given: the dry
        # run refuses what the confirmation would (a blank actor), never promises more.
        for what, text, most in (("actor", actor, _TEXT), ("reason", reason, 1000)):
            if len(text) > most:
                raise ConsoleRefusedError(f"{what}: at most {most} characters", 400)
        if len(patch) > 10_000:
            raise ConsoleRefusedError("patch: at most 10000 characters", 400)
        previews = await run_in_threadpool(
            _bulk_preview, _form_filter(form), action, actor, reason, _patch(patch)
        )
        return page(
            request,
            "bulk.html",
            {
                "previews": previews,
                "action": action,
                "actor": actor,
                "reason": reason,
                "patch": patch,
                "doable": [p for p in previews if p.refused is None],
            },
        )

    @app.post("/bulk/apply", response_class=HTMLResponse, include_in_schema=False)
    def bulk_apply_page(
        request: Request,
        action: Annotated[str, Form(max_length=32)],
        saga_id: Annotated[list[UUID], Form()],
        actor: Annotated[str, Form(max_length=_TEXT)] = "",
        reason: Annotated[str, Form(max_length=1000)] = "",
        patch: Annotated[str, Form(max_length=10_000)] = "",
        csrf: Annotated[str, Form(max_length=200)] = "",
    ) -> HTMLResponse:
        acting_form(request, csrf)
        if len(saga_id) > BULK_LIMIT:
            raise ConsoleRefusedError(f"at most {BULK_LIMIT} sagas at once", 400)
        with store.lock:
            outcomes = [
                act(store.manager, sid, action, actor=actor, reason=reason, patch=_patch(patch))
                for sid in saga_id
            ]
        return page(request, "applied.html", {"outcomes": outcomes, "action": action})

    def _bulk_preview(
        chosen: SagaFilter, action: str, actor: str, reason: str, patch: dict[str, Any] | None
    ) -> list[Preview]:
        found = store.sagas(chosen, limit=BULK_LIMIT)
        with store.lock:
            return [
                preview(store.manager, row.saga_id, action, actor=actor, reason=reason, patch=patch)
                for row in found.sagas
            ]

    # -- the JSON API --------------------------------------------------------------------

    @app.get("/api/head", responses=_ERRORS)
    def api_head() -> dict[str, int]:
        """The log's head: it changes whenever a saga does."""
        return {"head": store.head()}

    @app.get("/api/overview", responses=_ERRORS)
    def api_overview() -> dict[str, Any]:
        """Sagas by type and status, stuck by reason, hourly activity, relay and projection lag."""
        overview = store.overview()
        return {
            "by_type": overview.by_type,
            "stuck_by_reason": overview.stuck_by_reason,
            "stuck_capped": overview.stuck_capped,
            "activity": jsonable(overview.activity),
            "lag": {
                "head": overview.lag.head,
                "relay": overview.lag.relay,
                "projections": overview.lag.projections,
            },
        }

    @app.get("/api/sagas", responses=_ERRORS)
    def api_sagas(
        status: Annotated[SagaStatus | None, Query()] = None,
        saga_type: Annotated[str | None, Query(alias="type", max_length=_TEXT)] = None,
        version: Annotated[int | None, Query(ge=1, le=_MOST_VERSION)] = None,
        step: Annotated[str | None, Query(max_length=_TEXT)] = None,
        error: Annotated[str | None, Query(max_length=_TEXT)] = None,
        after: Annotated[datetime | None, Query()] = None,
        before: Annotated[datetime | None, Query()] = None,
        cursor: Annotated[str | None, Query(max_length=_TEXT)] = None,
        limit: Annotated[int, Query(ge=1, le=BULK_LIMIT)] = 50,
    ) -> dict[str, Any]:
        """A keyset page of sagas, newest first; pass ``next_cursor`` back as ``cursor``."""
        wanted = _filter(status, saga_type, version, step, error, after, before)
        found = store.sagas(
            wanted, after=PageCursor.decode(cursor) if cursor else None, limit=limit
        )
        return {
            "sagas": [row.to_json() for row in found.sagas],
            "next_cursor": found.next_cursor.encode() if found.next_cursor else None,
        }

    @app.get("/api/stuck", responses=_ERRORS)
    def api_stuck() -> list[dict[str, Any]]:
        """Stuck sagas, most urgent first, each with its reasons and what to do."""
        return [item.to_json() for item in store.stuck()]

    @app.get("/api/sagas/{saga_id}", responses=_ERRORS)
    def api_saga(saga_id: UUID) -> dict[str, Any]:
        """One saga: summary, explanation, timeline, path and raw events."""
        story = store.story(saga_id)
        return {
            "summary": story.summary.to_json(),
            "explanation": story.explanation,
            "timeline": [entry.to_json() for entry in story.timeline],
            "steps": [step.to_json() for step in story.snapshot.steps],
            "events": story.events,
            "erased": None if story.erased is None else story.erased.to_json(),
        }

    @app.post("/api/sagas/{saga_id}/actions", responses=_ERRORS)
    def api_act(
        saga_id: UUID,
        wanted: ActionRequest,
        authorization: Annotated[str | None, Header(max_length=1000)] = None,
    ) -> dict[str, Any]:
        """Retry, resolve, abort or compensate one saga (``Authorization: Bearer TOKEN``)."""
        guard.check_token(_bearer(authorization))
        with store.lock:
            outcome = act(
                store.manager,
                saga_id,
                wanted.action,
                actor=wanted.actor,
                reason=wanted.reason,
                patch=wanted.patch,
            )
        if outcome.refusal is not None:
            raise outcome.refusal  # 404 for a saga that does not exist, else 400
        return outcome.to_json()

    @app.post("/api/bulk/preview", responses=_ERRORS)
    def api_bulk_preview(
        wanted: BulkRequest,
        authorization: Annotated[str | None, Header(max_length=1000)] = None,
    ) -> list[dict[str, Any]]:
        """Dry run: per saga the filter selects, what the action would record and send."""
        guard.check_token(_bearer(authorization))
        chosen = _filter(wanted.status, wanted.saga_type, wanted.version, wanted.step, wanted.error)
        previews = _bulk_preview(chosen, wanted.action, wanted.actor, wanted.reason, wanted.patch)
        return [item.to_json() for item in previews]

    @app.post("/api/bulk/apply", responses=_ERRORS)
    def api_bulk_apply(
        wanted: BulkApply,
        authorization: Annotated[str | None, Header(max_length=1000)] = None,
    ) -> list[dict[str, Any]]:
        """Run the action on each listed saga, each recorded as its own event."""
        guard.check_token(_bearer(authorization))
        with store.lock:
            return [
                act(
                    store.manager,
                    sid,
                    wanted.action,
                    actor=wanted.actor,
                    reason=wanted.reason,
                    patch=wanted.patch,
                ).to_json()
                for sid in wanted.saga_ids
            ]

    return app
