"""The web console in a real headless Chromium against a real `bulwark serve --demo` process.

One server (demo fleet, demo sensors) and one browser for the whole module. Chromium is Debian's
`chromium` package, driven by Playwright through its executable_path (no browser download);
.ci/run installs it. Without it these tests skip, or fail under BULWARK_REQUIRE_SERVICES=1.
Set BULWARK_UPDATE_SCREENSHOTS=1 to write the screenshots of docs/console.md into docs/images/.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import unavailable
from tests.support import server_process

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("BULWARK_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
LIVE_TIMEOUT_MS = 60_000


@dataclass
class Console:
    base: str
    passwords: dict[str, str]
    database_url: str
    shots: Path

    def machine_ids(self, where: str) -> list[tuple[str, str]]:
        """(id, dns name) of demo machines matching a SQL condition: the ground truth the pages are checked against."""
        engine = create_engine(self.database_url)
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT m.id, m.computer_dns_name FROM machines m LEFT JOIN device_groups g ON g.id = m.rbac_group_id "
                    f"WHERE {where} ORDER BY m.computer_dns_name"
                )
            ).all()
        engine.dispose()
        return [(r[0], r[1]) for r in rows]

    def wait_for_sensor(self, dns_name: str, timeout: float = 90.0) -> None:
        """Until the demo sensor of this machine has enrolled (they start with the server, on a busy machine slowly)."""
        engine = create_engine(self.database_url)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                with engine.connect() as conn:
                    found = conn.execute(
                        text("SELECT 1 FROM sensors s JOIN machines m ON m.id = s.machine_id WHERE m.computer_dns_name = :n"),
                        {"n": dns_name},
                    ).first()
                if found:
                    return
                time.sleep(0.5)
        finally:
            engine.dispose()
        raise AssertionError(f"the demo sensor of {dns_name} did not enrol in {timeout} s")


@pytest.fixture(scope="module")
def sync_playwright_module():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (pip install -e '.[test]')")
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        unavailable(f"Chromium not found at {CHROMIUM}: apt-get install -y chromium (.ci/run does)")
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="module")
def browser(sync_playwright_module):
    executable = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    browser = sync_playwright_module.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    data = tmp_path_factory.mktemp("console")
    url = f"sqlite:///{data / 'bulwark.db'}"
    env = {"BULWARK_DATABASE_URL": url, "BULWARK_RATE_LIMIT": "10000/minute"}
    shots = DOCS_IMAGES if os.environ.get("BULWARK_UPDATE_SCREENSHOTS") else tmp_path_factory.mktemp("shots")
    shots.mkdir(parents=True, exist_ok=True)
    with server_process("--demo", "--data-dir", str(data), env=env, log=data / "server.log", timeout=60) as base:
        printed = (data / "server.log").read_text()
        assert f"Console: {base}/console/" in printed
        creds = json.loads((data / "demo-credentials.json").read_text())
        passwords = {u["username"]: u["password"] for u in creds["users"]}
        for upn, password in passwords.items():
            assert f"{upn} / {password}" in printed
        yield Console(base, passwords, url, shots)


def _sign_in(browser, console: Console, upn: str, viewport: dict[str, int] | None = None):
    context = browser.new_context(viewport=viewport or {"width": 1200, "height": 760})
    page = context.new_page()
    page.goto(console.base + "/")
    # Bulwark's own authority shows the sign-in form; the console never sees the password.
    assert "/oauth2/v2.0/authorize?" in page.url
    page.get_by_label("User name").fill(upn)
    page.get_by_label("Password").fill(console.passwords[upn])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{console.base}/console/devices")
    return page


@pytest.fixture(scope="module")
def analyst(browser, console: Console):
    page = _sign_in(browser, console, "analyst@contoso.com")
    yield page
    page.context.close()


def _shot(page, console: Console, name: str) -> None:
    page.screenshot(path=str(console.shots / f"{name}.png"))


def test_admin_filters_offboards_and_sees_the_action_succeed_live(analyst, console: Console) -> None:
    from playwright.sync_api import expect

    page = analyst
    # The sign-in cookie is the only thing the browser holds: opaque, HttpOnly, SameSite.
    cookie = next(c for c in page.context.cookies() if c["name"] == "bulwark_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["path"] == "/console"
    assert "." not in cookie["value"]  # not a token

    page.get_by_label("Platform").select_option("Windows11")
    page.get_by_label("Health").select_option("Active")
    page.get_by_label("Search by name").fill("ws-00")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url("**/console/devices?*platform=Windows11*")
    rows = page.locator("#devices tbody tr")
    expect(rows.first).to_be_visible()
    platforms = rows.locator("td[data-label=Platform]").all_inner_texts()
    names = rows.locator("td[data-label=Name]").all_inner_texts()
    expected = [
        n
        for _, n in console.machine_ids(
            "m.os_platform = 'Windows11' AND m.health_status = 'Active' AND m.computer_dns_name LIKE '%ws-00%' AND (g.name IS NULL OR g.name <> 'Finance')"
        )
    ]
    assert set(platforms) == {"Windows11"} and names == expected[: len(names)] and len(names) == min(25, len(expected))
    _shot(page, console, "console-devices")

    console.wait_for_sensor("ws-0000.contoso.com")
    page.get_by_role("link", name="ws-0000.contoso.com").click()
    page.wait_for_url("**/console/devices/*")
    page.get_by_role("button", name="Offboard device").click()
    dialog = page.locator("#offboard-dialog")
    expect(dialog).to_be_visible()
    page.get_by_label("Comment (required)").fill("Laptop returned to IT <b>not bold</b>")
    _shot(page, console, "console-offboard-dialog")
    page.locator("#offboard-submit").click()
    page.wait_for_url("**/console/devices/*?requested=*")
    expect(page.locator("#offboard-requested")).to_be_visible()
    action_id = page.url.split("requested=")[1]
    row = page.locator(f"#device-actions tr[data-action-id='{action_id}']")
    expect(row).to_contain_text("Laptop returned to IT <b>not bold</b>")  # escaped, shown as typed
    # From here on, no navigation: the row's status changes by itself until the sensor succeeds.
    page.evaluate("window.__stillHere = true")
    expect(row.locator(".status")).to_have_text("Succeeded", timeout=LIVE_TIMEOUT_MS)
    expect(page.locator("#offboard-requested .status")).to_have_text("Succeeded")
    assert page.evaluate("window.__stillHere") is True
    _shot(page, console, "console-device-succeeded")


def test_admin_cancels_a_pending_action_of_a_device_without_a_sensor(analyst, console: Console) -> None:
    from playwright.sync_api import expect

    page = analyst
    # Inactive demo machines run no simulated sensor, so their offboard stays Pending.
    target_id, target_name = console.machine_ids(
        "m.os_platform = 'Windows11' AND m.health_status = 'Inactive' AND (g.name IS NULL OR g.name <> 'Finance')"
    )[0]
    page.goto(f"{console.base}/console/devices/{target_id}")
    page.get_by_role("button", name="Offboard device").click()
    page.get_by_label("Comment (required)").fill("Stolen laptop")
    page.locator("#offboard-submit").click()
    page.wait_for_url("**?requested=*")
    action_id = page.url.split("requested=")[1]

    page.get_by_role("link", name="Action center").click()
    page.get_by_label("Status").select_option("Pending")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url("**/console/actions?*status=Pending*")
    row = page.locator(f"#action-rows tr[data-action-id='{action_id}']")
    expect(row).to_contain_text(target_name)
    _shot(page, console, "console-action-center")
    row.get_by_role("link", name=f"Cancel… action on {target_name}").click()
    page.wait_for_url(f"**/console/actions/{action_id}#cancel")
    page.get_by_label("Comment (required)").fill("Found the laptop")
    page.get_by_role("button", name="Cancel action").click()
    page.wait_for_url(f"**/console/actions/{action_id}")
    expect(page.locator("#action-status .status")).to_have_text("Cancelled")
    expect(page.locator("#action-status")).to_contain_text("Found the laptop")
    expect(page.get_by_role("button", name="Cancel action")).to_have_count(0)
    # The audit trail has both, recorded by the same use cases as the API's, with the console's request ids.
    page.get_by_role("link", name="Audit").click()
    page.get_by_label("Machine id").fill(target_id)
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url("**/console/audit?*")
    rows = page.locator("#audit tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("machine_action.cancel.requested")
    expect(rows.nth(0)).to_contain_text("Found the laptop")
    expect(rows.nth(1)).to_contain_text("machine_action.offboard.requested")
    expect(rows.nth(1)).to_contain_text("analyst@contoso.com")
    _shot(page, console, "console-audit")


def test_reader_sees_no_offboard_control(browser, console: Console) -> None:
    from playwright.sync_api import expect

    page = _sign_in(browser, console, "reader@contoso.com", viewport={"width": 390, "height": 844})
    try:
        machine_id, name = console.machine_ids(
            "m.os_platform = 'Windows11' AND m.health_status = 'Active' AND (g.name IS NULL OR g.name <> 'Finance')"
        )[1]
        page.goto(f"{console.base}/console/devices/{machine_id}")
        expect(page.locator("h1")).to_have_text(name)
        expect(page.get_by_role("button", name="Offboard device")).to_have_count(0)
        expect(page.locator("#offboard-view-only")).to_have_text("Your role is view-only: you cannot offboard devices.")
        expect(page.get_by_role("link", name="Audit")).to_have_count(0)
        _shot(page, console, "console-reader-phone")
        page.get_by_role("link", name="Action center").click()
        expect(page.locator("#action-rows")).to_be_visible()
        expect(page.get_by_role("link", name="Cancel…")).to_have_count(0)
        # Asking by URL is refused with the API's code and the request id.
        page.goto(f"{console.base}/console/audit")
        expect(page.locator(".alert")).to_contain_text("Forbidden")
    finally:
        page.context.close()


def test_user_without_finance_never_sees_a_finance_device(analyst, browser, console: Console) -> None:
    from playwright.sync_api import expect

    page = analyst
    finance = console.machine_ids("g.name = 'Finance'")
    assert finance, "the demo fleet has Finance devices"
    finance_id, finance_name = finance[0]
    # By list: every page of the full inventory.
    seen: list[str] = []
    page.goto(f"{console.base}/console/devices")
    while True:
        seen += page.locator("#devices td[data-label=Name]").all_inner_texts()
        following = page.locator("a[rel=next]")
        if following.count() == 0:
            break
        following.click()
        page.wait_for_load_state()
    visible = console.machine_ids("g.name IS NULL OR g.name <> 'Finance'")
    assert sorted(seen) == sorted(n for _, n in visible)
    assert not set(seen) & {n for _, n in finance}
    expect(page.get_by_label("Device group").locator("option", has_text="Finance")).to_have_count(0)
    # By search.
    page.goto(f"{console.base}/console/devices?q={finance_name.split('.')[0]}")
    expect(page.locator("#device-count")).to_have_text("No device matches.")
    # By URL: answered as not found, like the API, with the request id.
    page.goto(f"{console.base}/console/devices/{finance_id}")
    expect(page.locator(".alert")).to_contain_text("ResourceNotFound")
    expect(page.locator(".alert")).to_contain_text("request id")
    assert finance_name not in page.content()
    _shot(page, console, "console-not-found")
    # The Finance administrator does see it: the test can tell the difference.
    admin = _sign_in(browser, console, "finance.admin@contoso.com")
    try:
        admin.goto(f"{console.base}/console/devices/{finance_id}")
        expect(admin.locator("h1")).to_have_text(finance_name)
    finally:
        admin.context.close()


def test_a_form_posted_without_its_csrf_token_is_refused(analyst, console: Console) -> None:
    from playwright.sync_api import expect

    page = analyst
    machine_id, _ = console.machine_ids(
        "m.os_platform = 'Windows11' AND m.health_status = 'Active' AND (g.name IS NULL OR g.name <> 'Finance')"
    )[2]
    page.goto(f"{console.base}/console/devices/{machine_id}")
    # A form without the token, submitted by the browser with the session cookie (as a forged one would be).
    page.evaluate(
        """(action) => {
            const form = document.createElement('form');
            form.method = 'post';
            form.action = action;
            const comment = document.createElement('input');
            comment.name = 'comment';
            comment.value = 'forged';
            form.appendChild(comment);
            document.body.appendChild(form);
            form.submit();
        }""",
        f"/console/devices/{machine_id}/offboard",
    )
    page.wait_for_load_state()
    expect(page.locator("h1")).to_have_text("Not allowed")
    expect(page.locator(".alert")).to_contain_text("CsrfTokenInvalid")
    # Nothing was done.
    page.goto(f"{console.base}/console/devices/{machine_id}")
    expect(page.locator("#device-actions")).to_contain_text("No action yet.")


def test_sign_out_ends_the_session(browser, console: Console) -> None:
    from playwright.sync_api import expect

    page = _sign_in(browser, console, "analyst@contoso.com")
    try:
        cookie = next(c for c in page.context.cookies() if c["name"] == "bulwark_session")
        page.get_by_role("button", name="Sign out").click()
        expect(page.locator("h1")).to_have_text("Signed out")
        # The old cookie, put back, opens nothing: the session ended on the server.
        page.context.add_cookies([cookie])
        page.goto(f"{console.base}/console/devices")
        assert "/oauth2/v2.0/authorize?" in page.url
    finally:
        page.context.close()
