"""The console is safe by default: read-only without a token, the token and the CSRF
check refuse what they should, and nothing is written when they refuse."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from uuid import UUID

from console_support import TOKEN, Client, Console


def _post_json(url: str, body: dict[str, Any], token: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _dead_lettered(console: Console) -> str:
    page = Client(console.url).json("/api/sagas?status=DEAD_LETTERED")
    assert page["sagas"], "the demo left no dead-lettered saga"
    return str(page["sagas"][0]["saga_id"])


RETRY = {"action": "retry", "actor": "ops", "reason": "broker back"}


def test_a_console_without_a_token_refuses_every_action(read_only_console: Console) -> None:
    saga_id = _dead_lettered(read_only_console)
    events = len(read_only_console.store.manager.history(UUID(saga_id)))
    code, body = _post_json(
        f"{read_only_console.url}/api/sagas/{saga_id}/actions", RETRY, "anything"
    )
    assert code == 403
    assert "read-only" in body["error"]
    history = read_only_console.store.manager.history(UUID(saga_id))
    assert len(history) == events


def test_the_api_refuses_a_wrong_or_missing_token_and_accepts_the_right_one(
    console: Console,
) -> None:
    saga_id = _dead_lettered(console)
    url = f"{console.url}/api/sagas/{saga_id}/actions"
    assert _post_json(url, RETRY, None)[0] == 401
    assert _post_json(url, RETRY, "not-the-token")[0] == 401
    code, body = _post_json(url, RETRY, TOKEN)
    assert code == 200, body
    assert body["status"] != "DEAD_LETTERED"


def test_a_form_without_the_csrf_value_is_refused_even_when_signed_in(console: Console) -> None:
    saga_id = _dead_lettered(console)
    client = Client(console.url)
    client.sign_in(TOKEN)
    form = {"action": "retry", "actor": "ops", "reason": "x", "csrf": "forged"}
    code, text = client.post_form(f"/sagas/{saga_id}/act", form)
    assert code == 403
    assert "CSRF" in text
    assert client.json(f"/api/sagas/{saga_id}")["summary"]["status"] == "DEAD_LETTERED"


def test_a_form_without_signing_in_is_refused(console: Console) -> None:
    saga_id = _dead_lettered(console)
    client = Client(console.url)
    client.get("/")
    form = {"action": "retry", "actor": "ops", "reason": "x", "csrf": client.csrf()}
    code, text = client.post_form(f"/sagas/{saga_id}/act", form)
    assert code == 401
    assert "sign in" in text


def test_pages_forbid_inline_scripts_and_framing(console: Console) -> None:
    headers = Client(console.url).get("/").headers
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"


def test_a_patch_retry_through_the_api_is_recorded_with_its_changes(console: Console) -> None:
    saga_id = _dead_lettered(console)
    body = {**RETRY, "patch": {"note": "corrected by ops"}}
    code, answer = _post_json(f"{console.url}/api/sagas/{saga_id}/actions", body, TOKEN)
    assert code == 200, answer
    events = Client(console.url).json(f"/api/sagas/{saga_id}")["events"]
    retried = [e for e in events if e["event"] == "OperatorRetried"]
    assert len(retried) == 1
    assert retried[0]["actor"] == "ops"
    assert "corrected by ops" in json.dumps(retried[0])


def test_an_action_the_saga_refuses_is_one_line_and_writes_nothing(console: Console) -> None:
    saga_id = _dead_lettered(console)
    before = len(console.store.manager.history(UUID(saga_id)))
    body = {**RETRY, "action": "abort"}
    code, answer = _post_json(f"{console.url}/api/sagas/{saga_id}/actions", body, TOKEN)
    assert code == 400
    assert "\n" not in answer["error"]
    assert len(console.store.manager.history(UUID(saga_id))) == before


def test_an_action_on_a_saga_that_does_not_exist_is_a_404(console: Console) -> None:
    missing = "00000000-0000-0000-0000-000000000001"
    code, answer = _post_json(f"{console.url}/api/sagas/{missing}/actions", RETRY, TOKEN)
    assert code == 404
    assert answer == {"error": f"no saga with id {missing}"}
    page = Client(console.url).get(f"/sagas/{missing}")
    assert page.status == 404
    assert "<h1>not found</h1>" in page.text


def test_the_apis_422_does_not_send_the_request_back(console: Console) -> None:
    saga_id = _dead_lettered(console)
    body = {**RETRY, "patch": ["IBAN-DE89-SECRET"]}  # a patch must be an object
    code, answer = _post_json(f"{console.url}/api/sagas/{saga_id}/actions", body, TOKEN)
    assert code == 422
    assert answer["detail"][0]["loc"] == ["body", "patch"]
    assert "IBAN-DE89-SECRET" not in json.dumps(answer)


def test_a_page_request_that_does_not_fit_is_the_error_page_not_json(console: Console) -> None:
    client = Client(console.url)
    page = client.get("/sagas/not-a-saga-id")
    assert page.status == 422
    assert page.headers["Content-Type"].startswith("text/html")
    assert "saga_id: not a saga id" in page.text
    assert '"detail"' not in page.text
    saga_id = _dead_lettered(console)
    before = len(console.store.manager.history(UUID(saga_id)))
    client.sign_in(TOKEN)
    code, text = client.post_form(f"/sagas/{saga_id}/act", {"csrf": client.csrf()})  # no action
    assert code == 422
    assert "action: Field required" in text
    assert len(console.store.manager.history(UUID(saga_id))) == before
    api = client.get("/api/sagas/not-a-saga-id")  # the API keeps its schema's 422
    assert api.status == 422
    assert json.loads(api.text)["detail"][0]["loc"] == ["path", "saga_id"]


def test_a_bulk_dry_run_refuses_what_its_confirmation_would(console: Console) -> None:
    """A blank actor is refused by every action: the dry run says so, and offers no confirm."""
    client = Client(console.url)
    client.sign_in(TOKEN)
    saga_id = _dead_lettered(console)
    before = len(console.store.manager.history(UUID(saga_id)))
    form = {"csrf": client.csrf(), "status": "DEAD_LETTERED", "action": "retry"}
    code, text = client.post_form("/bulk/preview", {**form, "actor": "", "reason": "r"})
    assert code == 200, text
    assert "refused: actor must not be blank" in text
    assert "confirm-form" not in text
    code, text = client.post_form("/bulk/preview", {**form, "actor": "x" * 201, "reason": "r"})
    assert code == 400
    assert "actor: at most 200 characters" in text
    code, text = client.post_form("/bulk/preview", {**form, "actor": "ops <b>", "reason": "r"})
    assert code == 200
    assert "by <strong>ops &lt;b&gt;</strong>, because: r" in text
    assert "confirm-form" in text
    assert len(console.store.manager.history(UUID(saga_id))) == before


def test_a_filter_longer_than_the_api_allows_is_refused_on_the_page_as_in_the_api(
    read_only_console: Console,
) -> None:
    client = Client(read_only_console.url)
    longest = "x" * 200
    assert client.get(f"/sagas?error={longest}").status == 200
    for path in (f"/sagas?error={longest}y", f"/api/sagas?error={longest}y"):
        response = client.get(path)
        assert response.status in (400, 422), path
        assert "200 characters" in response.text
        assert longest not in response.text  # the input is not sent back
    assert client.get(f"/sagas?cursor={longest}y").status == 400


def test_a_filter_no_store_can_hold_is_refused_by_name_on_the_page_and_in_the_api(
    read_only_console: Console,
) -> None:
    client = Client(read_only_console.url)
    for path in ("/sagas?error=a%00b", "/api/sagas?type=%00", "/sagas?step=%00x"):
        response = client.get(path)
        assert response.status == 400, path  # not a 500 from a store refusing the NUL
        assert "NUL" in response.text
    for path in ("/sagas?version=99999999999999999999999", "/sagas?status=zzzq7"):
        response = client.get(path)
        assert response.status == 400, path
        assert "99999999999999999999999" not in response.text  # named, not sent back
        assert "zzzq7" not in response.text.split("<form")[0]
    assert client.get("/api/sagas?version=99999999999999999999999").status == 422
