"""What an operator does, in a real browser (Debian's Chromium, headless, off the network).

Each step saves a screenshot under ``tests/console/artifacts/`` (ignored by git).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from console_support import TOKEN, XSS, Console

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"
#: Keep the browser off the network: no QUIC, no updates, no sync, no background fetches.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs chromium (apt-get install)"),
]


@pytest.fixture
def page(request: pytest.FixtureRequest) -> Iterator[object]:
    """A fresh headless Chromium page (its own profile directory), phone-friendly default."""
    profile = tempfile.mkdtemp(prefix="sagalog-chromium-")
    with playwright_api.sync_playwright() as driver:
        context = driver.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            tab = context.new_page()
            tab.set_default_timeout(15_000)
            yield tab
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


def shot(page: object, name: str, *, full: bool = True) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full)  # type: ignore[attr-defined]


def test_an_operator_finds_a_dead_lettered_saga_and_retries_it(
    console: Console, page: object
) -> None:
    p: object = page
    p.goto(console.url + "/")  # type: ignore[attr-defined]
    assert p.locator("#by-type").inner_text().count("OrderFulfillment") == 1  # type: ignore[attr-defined]
    assert p.locator("svg.chart rect").count() > 0  # type: ignore[attr-defined]
    shot(p, "overview")

    p.goto(console.url + "/sagas")  # type: ignore[attr-defined]
    p.select_option("select[name=status]", "DEAD_LETTERED")  # type: ignore[attr-defined]
    p.click("#filters button")  # type: ignore[attr-defined]
    rows = p.locator("#sagas tbody tr")  # type: ignore[attr-defined]
    assert rows.count() > 0
    assert all("DEAD_LETTERED" in text for text in rows.all_inner_texts())
    shot(p, "sagas-dead-lettered")

    p.locator("#sagas tbody tr a").first.click()  # type: ignore[attr-defined]
    assert "waits for an operator" in p.locator("#explain").inner_text()  # type: ignore[attr-defined]
    assert p.locator("svg.timeline rect").count() > 0  # type: ignore[attr-defined]
    assert p.locator("svg.path rect.node").count() > 0  # type: ignore[attr-defined]
    saga_url = p.url  # type: ignore[attr-defined]
    shot(p, "saga-dead-lettered")

    p.goto(console.url + "/login")  # type: ignore[attr-defined]
    p.fill("input[name=token]", TOKEN)  # type: ignore[attr-defined]
    p.click("main button")  # type: ignore[attr-defined]
    p.goto(saga_url)  # type: ignore[attr-defined]
    p.select_option("#act-form select[name=action]", "retry")  # type: ignore[attr-defined]
    p.fill("#act-form input[name=actor]", "night-ops")  # type: ignore[attr-defined]
    p.fill("#act-form input[name=reason]", "ledger is back")  # type: ignore[attr-defined]
    p.click("#act-form button")  # type: ignore[attr-defined]
    assert "retry recorded" in p.locator("#done").inner_text()  # type: ignore[attr-defined]
    assert "DEAD_LETTERED" not in p.locator("h1").inner_text()  # type: ignore[attr-defined]
    timeline = p.locator("#timeline").inner_text()  # type: ignore[attr-defined]
    assert "OperatorRetried" in timeline
    assert "night-ops" in timeline
    shot(p, "saga-retried")

    p.set_viewport_size({"width": 390, "height": 844})  # type: ignore[attr-defined]
    shot(p, "saga-phone")
    width = p.evaluate("document.documentElement.scrollWidth")  # type: ignore[attr-defined]
    assert width <= 400, f"the saga page scrolls sideways at a phone's width ({width}px)"


def test_a_bulk_retry_shows_a_dry_run_then_acts_on_confirmation(
    console: Console, page: object
) -> None:
    p: object = page
    before = console.store.projector.views.count_by_status().get("DEAD_LETTERED", 0)
    assert before > 1
    p.goto(console.url + "/login")  # type: ignore[attr-defined]
    p.fill("input[name=token]", TOKEN)  # type: ignore[attr-defined]
    p.click("main button")  # type: ignore[attr-defined]
    p.goto(console.url + "/sagas?status=DEAD_LETTERED")  # type: ignore[attr-defined]
    p.click("details.bulk summary")  # type: ignore[attr-defined]
    p.fill("#bulk-form input[name=actor]", "night-ops")  # type: ignore[attr-defined]
    p.fill("#bulk-form input[name=reason]", "after the outage")  # type: ignore[attr-defined]
    p.click("#bulk-form button")  # type: ignore[attr-defined]
    rows = p.locator("#preview tbody tr")  # type: ignore[attr-defined]
    assert rows.count() == before
    assert "OperatorRetried" in rows.first.inner_text()
    # The dry run wrote nothing.
    console.store.catch_up()
    assert console.store.projector.views.count_by_status()["DEAD_LETTERED"] == before
    shot(p, "bulk-dry-run")

    p.click("#confirm-form button")  # type: ignore[attr-defined]
    assert f"{before} of {before} recorded" in p.locator("h1").inner_text()  # type: ignore[attr-defined]
    shot(p, "bulk-applied")
    console.store.catch_up()
    assert console.store.projector.views.count_by_status().get("DEAD_LETTERED", 0) == 0


def test_markup_in_saga_data_errors_and_operator_text_never_runs(
    console: Console, page: object
) -> None:
    p: object = page
    dialogs: list[str] = []

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    p.on("dialog", on_dialog)  # type: ignore[attr-defined]
    for path in ("/", "/sagas", "/stuck", f"/sagas/{console.xss_saga}"):
        p.goto(console.url + path)  # type: ignore[attr-defined]
        p.locator("details").first.click() if p.locator("details").count() else None  # type: ignore[attr-defined]
        assert p.evaluate("window.__xss === undefined")  # type: ignore[attr-defined]
        assert p.locator("main script, main img, main svg[onload]").count() == 0  # type: ignore[attr-defined]
    text = p.locator("main").inner_text()  # type: ignore[attr-defined]
    assert "<script>window.__xss = 1</script>" in text  # shown as text, not run
    assert XSS.split('"')[0] in p.locator("#events").inner_text()  # type: ignore[attr-defined]
    assert dialogs == []
    shot(p, "saga-markup")


def test_the_stuck_page_says_what_to_do_and_a_saga_page_follows_the_log(
    console: Console, page: object
) -> None:
    p: object = page
    p.goto(console.url + "/stuck")  # type: ignore[attr-defined]
    first = p.locator("#stuck li").first  # type: ignore[attr-defined]
    assert "DEAD_LETTERED" in first.inner_text()
    assert "What to do: Run `sagalog retry" in first.inner_text()
    shot(p, "stuck")

    saga_id = first.locator("a.id").inner_text()
    p.goto(f"{console.url}/sagas/{saga_id}")  # type: ignore[attr-defined]
    assert "DEAD_LETTERED" in p.locator("h1").inner_text()  # type: ignore[attr-defined]
    # Someone else acts (the CLI, another console): the open page reloads on its own.
    console.store.manager.retry(UUID(saga_id), actor="cli-user", reason="from a terminal")
    heading = p.locator("h1")  # type: ignore[attr-defined]
    playwright_api.expect(heading).not_to_contain_text("DEAD_LETTERED", timeout=20_000)
    assert "cli-user" in p.locator("#timeline").inner_text()  # type: ignore[attr-defined]


def test_a_parallel_sagas_path_shows_its_branches_and_an_uncertain_step(
    console: Console, page: object
) -> None:
    p: object = page
    p.goto(f"{console.url}/sagas/{console.trips['uncertain']}")  # type: ignore[attr-defined]
    path = p.locator("svg.path")  # type: ignore[attr-defined]
    assert path.locator("rect.node.uncertain").count() == 2  # hotel (timed out), car (abandoned)
    assert path.locator("rect.node.remaining").count() >= 1  # confirm
    assert "hotel, flight, car" in p.locator("#summary").inner_text()  # type: ignore[attr-defined]
    shot(p, "saga-parallel")
    path.screenshot(path=str(ARTIFACTS / "saga-parallel-path.png"))
