"""The knowledge-base editor, the reply templates page and the KPIs page in a real browser."""

from __future__ import annotations

import re
import uuid

import httpx
from playwright.async_api import Browser

from tests.browser.test_dashboard import login
from tests.integration.operators import BASE_URL, DASHBOARD, Operators


def word() -> str:
    return "zq" + uuid.uuid4().hex[:10].translate(str.maketrans("0123456789", "ghijklmnop"))


async def test_an_editor_writes_publishes_and_finds_an_article(browser: Browser, ops: Operators) -> None:
    _, username, password = await ops.create(["supervisor"], brands=["demo"])
    page, _ = await login(browser, username, password)
    w = word()
    await page.click("[data-nav=kb]")
    await page.wait_for_url(re.compile(r".*/dashboard/kb.*"))
    await page.click("[data-testid=kb-new]")
    await page.fill("[data-testid=kb-title]", f"Closing an account {w}")
    await page.fill("[data-testid=kb-category]", "account")
    await page.fill("[data-testid=kb-tags]", "closure, gdpr")
    await page.fill("[data-testid=kb-body]", f"## Steps\n\n- Ask **support** to close it ({w})\n- <b>not bold</b>")
    await page.click("[data-testid=kb-save]")
    await page.wait_for_url(re.compile(r".*/dashboard/kb/[0-9a-f-]{36}$"))
    article_url = page.url
    assert "draft" in (await page.text_content("[data-testid=kb-status]") or "")
    preview = await page.inner_html("[data-testid=kb-preview]")
    assert "<strong>support</strong>" in preview and "&lt;b&gt;not bold&lt;/b&gt;" in preview

    await page.click("[data-testid=kb-publish]")
    await page.wait_for_url(article_url)
    assert "published v1" in (await page.text_content("[data-testid=kb-status]") or "")

    # A second draft version: the history shows both, with a diff against the first.
    await page.fill("[data-testid=kb-body]", f"## Steps\n\n- Write to support ({w})")
    await page.click("[data-testid=kb-save]")
    await page.wait_for_url(article_url)
    assert await page.locator("[data-testid=kb-versions] tbody tr").count() == 2
    await page.click("[data-testid=kb-versions] tr[data-version='1'] a")
    diff = await page.text_content("[data-testid=kb-diff]") or ""
    assert "-- Ask **support** to close it" in diff and "+- Write to support" in diff

    await page.goto(f"{DASHBOARD}/kb?q={w}&language=en&brand=demo")
    hits = page.locator("[data-testid=kb-hit]")
    assert await hits.count() == 1
    assert f"Closing an account {w}" in (await hits.first.text_content() or "")
    assert await page.locator("[data-testid=kb-hit] mark").count() >= 1

    async with httpx.AsyncClient(timeout=30) as c:  # the public sees the published version 1
        r = await c.get(f"{BASE_URL}/helpdesk/v1/faq/search", params={"brand": "demo", "q": w},
                        headers={"X-Forwarded-For": "198.19.7.7"})
    assert [h["title"] for h in r.json()["items"]] == [f"Closing an account {w}"]
    await page.context.close()


async def test_templates_page_refuses_an_unknown_placeholder(browser: Browser, ops: Operators) -> None:
    _, username, password = await ops.create(["supervisor"], brands=["demo"])
    page, _ = await login(browser, username, password)
    await page.goto(f"{DASHBOARD}/kb/templates?language=en")
    form = page.locator("[data-testid=template-new]")
    name = f"Greeting {word()}"
    await form.locator("input[name=name]").fill(name)
    await form.locator("textarea[name=body]").fill("Hi {{player.nickname}}")
    await form.locator("button[type=submit]").click()
    assert "player.nickname" in (await page.text_content("[data-testid=template-error]") or "")
    form = page.locator("[data-testid=template-new]")
    await form.locator("input[name=name]").fill(name)
    await form.locator("textarea[name=body]").fill("Hi {{player.first_name|there}}, {{agent.name}}")
    await form.locator("button[type=submit]").click()
    await page.wait_for_url(re.compile(r".*/dashboard/kb/templates\?language=en$"))
    assert await page.locator(f"input[name=name][value='{name}']").count() == 1
    await page.context.close()


async def test_the_kpis_page_shows_figures(browser: Browser, ops: Operators) -> None:
    _, username, password = await ops.create(["supervisor"], brands=["demo"])
    page, _ = await login(browser, username, password)
    await page.click("[data-nav=helpdesk-kpis]")
    await page.wait_for_url(re.compile(r".*/dashboard/helpdesk/kpis.*"))
    overall = page.locator("[data-testid=kpi-overall] tbody tr")
    assert await overall.count() == 1
    cells = await overall.first.locator("td").all_text_contents()
    assert cells[0].strip().isdigit()  # tickets opened in the last seven days
    backlog = await page.locator("[data-testid=kpi-backlog] td").all_text_contents()
    assert len(backlog) == 6 and all(c.strip().isdigit() for c in backlog)
    assert await page.locator("[data-testid=kpi-agents]").count() == 1
    await page.fill("input[name=from]", "2020-01-01")
    await page.fill("input[name=to]", "2019-01-01")
    await page.click("[data-testid=kpi-filter] button[type=submit]")
    assert "to must be after from" in (await page.text_content("main [role=alert]") or "")
    await page.context.close()
