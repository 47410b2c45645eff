"""Segment pages in a real browser: a marketer builds a segment with the rule builder, sees its
live size (and a bad value named in the preview), watches a member arrive, creates an A/B test
with a holdout and exports the segment as CSV; personal data stays masked for a marketer."""

from __future__ import annotations

import re
import uuid

import httpx
from playwright.async_api import Browser, expect

from tests.browser.test_dashboard import login
from tests.integration.conftest import API_KEY, API_URL
from tests.integration.operators import DASHBOARD, Operators


async def register(tag: str) -> tuple[str, str]:
    pid, email = str(uuid.uuid4()), f"b.{uuid.uuid4().hex[:8]}@players.example.test"
    async with httpx.AsyncClient(base_url=API_URL, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30) as c:
        r = await c.post("/players", json={"player_id": pid, "currency": "EUR", "country": "MT", "email": email,
                                           "first_name": "Maria", "last_name": "Borg", "traffic_source": tag})
        assert r.status_code == 201, r.text
    return pid, email


async def test_a_marketer_builds_a_segment_sees_it_grow_splits_it_and_exports_it(
    browser: Browser, ops: Operators
) -> None:
    _, username, password = await ops.create(["marketer"], brands=["demo"])
    page, _ = await login(browser, username, password)
    tag = f"b-{uuid.uuid4().hex[:10]}"

    await page.click("[data-nav=segments]")
    await page.click("[data-testid=new-segment]")
    await page.fill("#name", f"Browser {tag}")
    # A number for a code feature's neighbour: the preview names the bad part of the rule.
    await page.select_option("[data-testid=feature-0-0]", "deposits_sum_30d")
    await page.select_option("[data-testid=op-0-0]", "gt")
    await page.fill("[data-testid=value-0-0]", "lots")
    await expect(page.locator("[data-testid=preview-error]")).to_contain_text("rule.all[0].all[0].value")

    await page.select_option("[data-testid=feature-0-0]", "traffic_source")
    await page.select_option("[data-testid=op-0-0]", "eq")
    await page.fill("[data-testid=value-0-0]", tag)
    await expect(page.locator("[data-testid=preview-size]")).to_have_text("0")
    # A second condition through the builder's button (htmx re-renders the group).
    await page.click("[data-testid=add-row-0]")
    await expect(page.locator("[data-testid=row-0-1]")).to_be_visible()
    await page.select_option("[data-testid=feature-0-1]", "country")
    await page.fill("[data-testid=value-0-1]", "MT")
    # The rule as JSON sits in a closed <details>: its text content, not its (unrendered) inner text.
    await expect(page.locator("[data-testid=preview-json]")).to_contain_text('"country"')
    await page.click("[data-testid=save-segment]")
    await page.wait_for_url(re.compile(r".*/dashboard/segments/[0-9a-f-]{36}$"))
    await expect(page.locator("[data-testid=segment-size]")).to_have_text("0", timeout=15_000)

    pid, email = await register(tag)
    member = page.locator(f"[data-testid=members] tr[data-player='{pid}']")
    await expect(member).to_be_visible(timeout=90_000)  # the live fragment polls every 5 s
    shown = await member.locator("[data-testid=member-email]").text_content() or ""
    assert shown and shown != email and "*" in shown
    await expect(page.locator("[data-testid=segment-size]")).not_to_have_text("0", timeout=60_000)
    assert await page.locator("[data-testid=size-chart]").count() == 1

    async with page.expect_download() as download_info:
        await page.click("[data-testid=export]")
    download = await download_info.value
    text = (await download.path()).read_text()
    assert pid in text and email not in text

    await page.click("[data-testid=new-experiment]")
    key = f"exp-{uuid.uuid4().hex[:8]}"
    await page.fill("#experiment_key", key)
    await page.fill("#variants", "a:1\nb:1")
    await page.fill("#holdout_percent", "20")
    await page.click("[data-testid=create-experiment]")
    await page.wait_for_url(re.compile(rf".*/dashboard/experiments/{key}$"))
    await expect(page.locator("[data-testid=split] tr[data-group=holdout]")).to_be_visible()
    total = 0
    for group in ("holdout", "a", "b"):
        total += int(await page.locator(f"[data-testid=split-{group}]").text_content() or "0")
    assert total == 1
    await page.goto(f"{DASHBOARD}/experiments")
    await expect(page.locator(f"[data-testid=experiments] tr[data-experiment='{key}']")).to_contain_text("20.00 %")
    await page.context.close()
