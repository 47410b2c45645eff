"""The dashboard in a real browser (Debian's Chromium driven by Playwright): login with TOTP
enrolment, navigation by role, personal data masked by role, admin pages, the audit viewer."""

from __future__ import annotations

import re
import uuid

import httpx
import pyotp
import pytest
from playwright.async_api import Browser, Page

from adapters.policy_file import get_engine
from adapters.settings import Settings
from domain.policy import Subject
from serve_apps.dashboard.render import NAV
from tests.integration.conftest import API_URL
from tests.integration.operators import DASHBOARD, Operators, register_player


async def login(browser: Browser, username: str, password: str) -> tuple[Page, str]:
    """Password, then TOTP enrolment in the page; returns the page (on the dashboard) and the secret."""
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(f"{DASHBOARD}/login")
    await page.fill("#username", username)
    await page.fill("#password", password)
    await page.click("button[type=submit]")
    await page.wait_for_url(re.compile(r".*/dashboard/enrol$"))
    assert await page.locator("[data-testid=qr] svg").count() == 1
    secret = (await page.text_content("[data-testid=totp-secret]") or "").strip()
    await page.fill("#code", pyotp.TOTP(secret).now())
    await page.click("button[type=submit]")
    codes = await page.locator("[data-testid=recovery-codes] li").all_text_contents()
    assert len(codes) >= 8
    await page.click("text=Continue")
    await page.wait_for_url(re.compile(r".*/dashboard/password$"))
    assert await page.locator("[data-testid=temporary-note]").count() == 1
    await page.fill("#old_password", password)
    await page.fill("#new_password", f"{password}-own")
    await page.click("main button[type=submit]")
    await page.wait_for_url(re.compile(r".*/dashboard/$"))
    return page, secret


async def test_an_operator_enrols_totp_and_logs_in_again_with_a_code(browser: Browser, ops: Operators) -> None:
    _, username, password = await ops.create(["support_agent"])
    page, secret = await login(browser, username, password)
    assert username in (await page.text_content("[data-testid=whoami]") or "")
    await page.click("header button:has-text('Log out')")
    await page.wait_for_url(re.compile(r".*/dashboard/login$"))
    await page.fill("#username", username)
    await page.fill("#password", f"{password}-own")
    await page.click("button[type=submit]")
    await page.wait_for_url(re.compile(r".*/dashboard/2fa$"))
    await page.fill("#code", "000000" if pyotp.TOTP(secret).now() != "000000" else "111111")
    await page.click("button[type=submit]")
    assert await page.locator("[role=alert]").count() == 1
    await page.context.close()


@pytest.mark.parametrize("role", ["support_agent", "marketer", "analyst", "compliance_officer", "supervisor", "admin"])
async def test_navigation_shows_exactly_what_the_role_may_open(browser: Browser, ops: Operators, role: str) -> None:
    _, username, password = await ops.create([role])
    page, _ = await login(browser, username, password)
    held = get_engine().permissions_for([role])
    shown = set(await page.locator("header nav a").evaluate_all("els => els.map(e => e.dataset.nav)"))
    assert shown == {key for key, _, _, perm in NAV if perm in held}
    for _key, _, href, perm in NAV:
        response = await page.goto(f"{DASHBOARD}{href}")
        assert response is not None
        assert (response.status == 403) == (perm not in held), f"{role} {href}: {response.status}"
    await page.context.close()


async def test_personal_data_is_masked_for_a_marketer_and_shown_to_compliance(browser: Browser, ops: Operators) -> None:
    email = f"maria.{uuid.uuid4().hex[:6]}@players.example.test"
    player_id, _ = await register_player(email=email)
    engine = get_engine()
    for role in ("marketer", "compliance_officer"):
        operator_id, username, password = await ops.create([role], brands=["demo"])
        page, _ = await login(browser, username, password)
        await page.goto(f"{DASHBOARD}/players/{player_id}")
        shown = await page.text_content("[data-testid=profile] [data-field=email]") or ""
        may = engine.allowed(
            Subject(operator_id, frozenset([role]), frozenset(["demo"]), frozenset(["*"])), "player.pii.read"
        )
        assert (shown == email) == may, f"{role} saw {shown!r}"
        if not may:
            assert email not in await page.content()
            assert await page.locator("[data-testid=masked-note]").count() == 1
        await page.context.close()


async def test_an_operator_of_another_brand_cannot_open_the_player(browser: Browser, ops: Operators) -> None:
    player_id, _ = await register_player()
    _, username, password = await ops.create(["support_agent"], brands=["other-brand"])
    page, _ = await login(browser, username, password)
    response = await page.goto(f"{DASHBOARD}/players/{player_id}")
    assert response is not None and response.status == 403
    assert "brand" in (await page.text_content("[data-testid=error-detail]") or "")
    await page.context.close()


async def test_an_admin_creates_an_operator_and_an_api_key_and_verifies_the_audit_chain(
    browser: Browser, ops: Operators
) -> None:
    _, username, password = await ops.create(["admin"])
    page, _ = await login(browser, username, password)
    await page.goto(f"{DASHBOARD}/operators")
    new_name = f"b-agent-{uuid.uuid4().hex[:8]}"
    await page.fill("#username", new_name)
    await page.fill("#display_name", "Browser Agent")
    await page.check("input[name=roles][value=support_agent]")
    await page.click("form[action$='/operators'] button[type=submit]")
    assert new_name in (await page.text_content("[data-testid=created]") or "")
    assert len((await page.text_content("[data-testid=temporary-password]") or "").strip()) >= 12

    await page.goto(f"{DASHBOARD}/api-keys")
    await page.fill("#brand", "demo")
    await page.fill("#label", f"browser test {new_name}")
    await page.click("form[action$='/api-keys'] button[type=submit]")
    key = (await page.text_content("[data-testid=new-api-key]") or "").strip()
    async with httpx.AsyncClient(base_url=API_URL, headers={"Authorization": f"Bearer {key}"}) as api:
        assert (await api.get(f"/players/{uuid.uuid4()}")).status_code == 404

    await page.goto(f"{DASHBOARD}/audit?verify=1")
    assert "Chain verified" in (await page.text_content("[data-testid=verify-status]") or "")
    assert "operator.create" in (await page.text_content("[data-testid=audit-entries]") or "")
    await page.context.close()


async def _sso(browser: Browser, sub: str) -> Page:
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(f"{DASHBOARD}/login")
    await page.click("[data-sso=local-idp]")
    await page.wait_for_url(re.compile(r"http://127\.0\.0\.1:9400/.*"))
    await page.fill("input[name=sub]", sub)
    await page.click("button:has-text('Authorize')")
    await page.wait_for_load_state()
    return page


async def test_an_operator_logs_in_through_the_test_identity_provider(browser: Browser, stack: Settings) -> None:
    page = await _sso(browser, "compliance@idp.local")
    await page.wait_for_url(re.compile(r".*/dashboard/$"))
    assert "compliance_officer" in (await page.text_content("[data-testid=whoami]") or "")
    response = await page.goto(f"{DASHBOARD}/audit")
    assert response is not None and response.status == 200
    response = await page.goto(f"{DASHBOARD}/operators")
    assert response is not None and response.status == 403
    await page.context.close()


async def test_an_identity_without_a_pitboss_group_is_refused(browser: Browser, stack: Settings) -> None:
    page = await _sso(browser, "nobody@idp.local")
    assert "no Pitboss role" in await page.content()
    response = await page.goto(f"{DASHBOARD}/")
    assert response is not None and re.search(r"/dashboard/login$", page.url)
    await page.context.close()


async def test_a_payments_operator_requests_a_large_adjustment_and_a_supervisor_approves_it(
    browser: Browser, ops: Operators
) -> None:
    player_id, _ = await register_player()
    _, username, password = await ops.create(["payments_operator"], brands=["demo"])
    page, _ = await login(browser, username, password)
    await page.goto(f"{DASHBOARD}/players/{player_id}")
    await page.fill("#amount_minor", "250000")
    await page.fill("#adj_reason", "deposit charged twice by the PSP")
    await page.fill("#case_ref", "PSP-7781")
    await page.click("button:has-text('Request adjustment')")
    await page.wait_for_url(re.compile(rf".*/dashboard/players/{player_id}$"))
    row = page.locator("[data-testid=adjustments] tr[data-adjustment]")
    assert await row.count() == 1
    assert (await row.locator("[data-testid=adjustment-status]").text_content() or "").startswith("pending_approval")
    assert await row.locator("button:has-text('Approve')").count() == 0  # not the requester's to approve
    await page.context.close()

    _, username, password = await ops.create(["supervisor"], brands=["demo"])
    page, _ = await login(browser, username, password)
    await page.goto(f"{DASHBOARD}/adjustments")
    assert await page.locator(f"[data-testid=pending-adjustments] a[href$='{player_id}']").count() == 1
    await page.goto(f"{DASHBOARD}/players/{player_id}")
    await page.locator("[data-testid=adjustments] button:has-text('Approve')").click()
    await page.wait_for_url(re.compile(rf".*/dashboard/players/{player_id}$"))
    status = page.locator("[data-testid=adjustments] [data-testid=adjustment-status]")
    assert (await status.text_content() or "").startswith("approved")
    assert username in (await page.locator("[data-testid=adjustments] tr[data-adjustment]").text_content() or "")
    await page.context.close()
