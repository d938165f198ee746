"""The operator dashboard in a real browser: Playwright driving Debian's Chromium against a real
HTTP server (werkzeug, in a thread) and a real Redis.

Chromium is /usr/bin/chromium; when it is missing the setup tries `apt-get install -y chromium`
and skips these tests, saying why, only if that fails. Playwright's own browser download is
never used. With RELANCE_SCREENSHOTS=1 the screenshots go to docs/ (else to a temporary folder).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.test_dashboard import failure, resolved_ticket
from webhooks import create_app
from workers.stores.audit import Audit
from workers.failures import FailureStore
from workers.stores.queue import make_queue
from workers.stores.timers import TimerStore

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
DOCS = Path(__file__).parent.parent / "docs"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1200, "height": 900}


def _chromium() -> str:
    if not Path(CHROMIUM).exists() and shutil.which("apt-get") and os.geteuid() == 0:
        install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
        if subprocess.run(install, capture_output=True, timeout=900).returncode != 0:     # stale package lists?
            subprocess.run(["apt-get", "update"], capture_output=True, timeout=300)
            subprocess.run(install, capture_output=True, timeout=900)
    if not Path(CHROMIUM).exists():
        why = "not root or no apt-get" if not (shutil.which("apt-get") and os.geteuid() == 0) else "apt-get failed"
        pytest.skip(f"{CHROMIUM} is missing and `apt-get install -y chromium` could not install it ({why})")
    return CHROMIUM


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[test])")
    executable = _chromium()
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def server(settings, redis):
    """The app (operator password set) on a free port; yields (base URL, settings)."""
    from werkzeug.serving import make_server
    op = settings.replace(operator_password="op-secret")
    app = create_app(op)
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}", op, app
    httpd.shutdown()
    thread.join(5)


def page_of(browser, viewport=DESKTOP, credentials=("operator", "op-secret")):
    context = browser.new_context(viewport=viewport, timezone_id="Europe/Paris", locale="en-GB",
                                  http_credentials={"username": credentials[0], "password": credentials[1]})
    return context.new_page()


def shot(page, name: str, tmp_path: Path) -> Path:
    folder = DOCS if os.environ.get("RELANCE_SCREENSHOTS") == "1" else tmp_path
    path = folder / name
    page.screenshot(path=str(path), full_page=True)
    return path


def test_wrong_credentials_see_no_page(browser, server):
    base, _, _ = server
    page = page_of(browser, credentials=("operator", "wrong"))
    assert page.goto(base + "/operator/").status == 401
    page.context.close()


def test_find_a_ticket_read_its_timeline_and_cancel_its_timer(browser, server, redis, tmp_path):
    base, op, app = server
    resolved_ticket(app.test_client(), op, redis)
    page = page_of(browser, viewport=PHONE)
    page.goto(base + "/operator/")
    page.get_by_label("Find a ticket").fill("tes-4")
    page.get_by_role("button", name="Find ticket").click()
    page.wait_for_url("**/operator/tickets/TES-4")
    timeline = page.locator("ol.timeline li")
    assert timeline.count() >= 6
    texts = timeline.all_inner_texts()
    assert any("Waiting for feedback → Resolved" in t for t in texts)
    assert any("email done · resolved-notice" in t for t in texts)
    assert any("timer armed · auto-close" in t for t in texts)
    # Due times are shown in the viewer's zone (Europe/Paris here), the UTC ISO kept as a tooltip.
    first_time = page.locator("ol.timeline time").first
    assert first_time.get_attribute("title").endswith("Z") and "UTC" not in first_time.inner_text()
    shot(page, "dashboard-ticket-phone.png", tmp_path)
    page.set_viewport_size(DESKTOP)
    shot(page, "dashboard-ticket.png", tmp_path)
    page.set_viewport_size(PHONE)

    row = page.locator('tr.timer[data-rule="auto-close"]')
    assert "in 5 days" in row.inner_text()
    row.get_by_role("button", name="Cancel auto-close of TES-4").click()
    page.wait_for_url("**/operator/tickets/TES-4?**")
    assert "cancelled" in page.locator(".note").inner_text()
    assert page.locator('tr.timer[data-rule="auto-close"]').count() == 0
    assert TimerStore(redis).get("auto-close", "TES-4") is None
    newest = page.locator("ol.timeline li").first.inner_text()
    assert "timer cancelled · auto-close" in newest and "operator" in newest
    assert Audit(redis).timeline("TES-4")[-1]["by"] == "operator"
    page.context.close()


def test_timers_page_and_run_now(browser, server, redis, tmp_path):
    base, _, _ = server
    timers = TimerStore(redis)
    now = time.time()
    for i, (rule, days) in enumerate([("feedback-reminder", 0.2), ("auto-close", 2), ("support-silence", 0.04),
                                      ("auto-close", 4.5), ("feedback-reminder", 2.9)]):
        timers.arm(rule, f"SUP-{101 + i}", now + days * 86400, f"g{i}")
    page = page_of(browser)
    page.goto(base + "/operator/timers")
    rows = page.locator("tr.timer")
    assert rows.count() == 5 and "SUP-103" in rows.first.inner_text()       # soonest first
    assert "in 2 days" in page.locator('tr.timer[data-ticket="SUP-102"]').inner_text()
    shot(page, "dashboard-timers.png", tmp_path)
    page.set_viewport_size(PHONE)
    shot(page, "dashboard-timers-phone.png", tmp_path)
    page.get_by_role("button", name="Run auto-close of SUP-102 now").click()
    page.wait_for_url("**/operator/timers?**")
    assert "due now" in page.locator(".note").inner_text()
    assert timers.get("auto-close", "SUP-102").due <= time.time()
    assert Audit(redis).timeline("SUP-102")[-1]["kind"] == "timer run now"
    page.context.close()


def test_retry_a_failure(browser, server, redis):
    base, _, _ = server
    failure(redis)
    failure(redis, job="timer-def-g1", ticket="SUP-4")
    page = page_of(browser)
    page.goto(base + "/operator/failures")
    assert page.locator("tr.failure").count() == 2
    assert "JiraUnavailable: 503 from JIRA" in page.locator('tr.failure[data-job="timer-abc-g1"]').inner_text()
    page.get_by_role("button", name="Retry timer-abc-g1").click()
    page.wait_for_url("**/operator/failures?**")
    assert "queued again" in page.locator(".note").inner_text()
    assert page.locator("tr.failure").count() == 1
    assert FailureStore(redis).count() == 1
    assert [j.args[0] for j in make_queue(redis).get_jobs()] == ["auto-close|SUP-3"]
    page.context.close()


def test_a_forged_cross_site_post_changes_nothing(browser, server, redis):
    """A page on another origin posting the cancel form (the browser adds the operator's
    credentials): refused, the timer stays."""
    base, _, _ = server
    TimerStore(redis).arm("auto-close", "SUP-2", time.time() + 86400, "g1")
    page = page_of(browser)
    page.goto("data:text/html,<form method=post action='" + base + "/operator/timers/cancel'>"
              "<input name=rule value=auto-close><input name=ticket value=SUP-2><button>go</button></form>")
    with page.expect_navigation():
        page.get_by_role("button", name="go").click()
    assert "Refused" in page.content()
    assert TimerStore(redis).get("auto-close", "SUP-2") is not None
    page.context.close()
