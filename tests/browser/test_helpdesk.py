"""The help desk in a real browser: the queue with SLA countdowns ticking, the ticket view (a public
reply, an internal note, a status change, an attachment), and the communication history on the
player page."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page

from tests.browser.test_dashboard import login
from tests.integration.operators import DASHBOARD, Operators, register_player


@pytest.fixture(scope="module")
async def agent_page(browser: Browser, ops: Operators) -> AsyncIterator[Page]:
    _, username, password = await ops.create(["supervisor"])
    page, _ = await login(browser, username, password)
    yield page
    await page.context.close()


async def open_ticket(page: Page, player_id: str, subject: str) -> str:
    await page.goto(f"{DASHBOARD}/tickets")
    form = page.locator("[data-testid=new-ticket]")
    await form.locator("#n-player").fill(player_id)
    await form.locator("#n-subject").fill(subject)
    await form.locator("#n-body").fill("I cannot withdraw my winnings.")
    await form.locator("button[type=submit]").click()
    await page.wait_for_url(re.compile(r".*/dashboard/tickets/[0-9a-f-]{36}$"))
    return page.url.rsplit("/", 1)[1]


async def test_the_queue_shows_tickets_with_a_live_sla_countdown(agent_page: Page) -> None:
    player_id, _ = await register_player()
    subject = f"Queue test {uuid.uuid4().hex[:8]}"
    ticket_id = await open_ticket(agent_page, player_id, subject)
    await agent_page.goto(f"{DASHBOARD}/tickets?brand=demo&status=new")
    row = agent_page.locator(f"[data-ticket='{ticket_id}']")
    await row.wait_for()
    assert subject in (await row.text_content() or "")
    sla = row.locator("[data-testid=sla]")
    # The script replaces the server's text with a countdown and keeps ticking.
    await agent_page.wait_for_function(
        "el => /first response in \\d/.test(el.textContent)", arg=await sla.element_handle())
    first = await sla.text_content()
    await agent_page.wait_for_function("([el, t]) => el.textContent !== t", arg=[await sla.element_handle(), first])
    # The page's presence heartbeat made this agent available.
    await agent_page.wait_for_function(
        "() => (document.querySelector('[data-testid=presence-state]') || {}).textContent.startsWith('available')")


async def test_the_ticket_view_replies_notes_changes_status_and_attaches(agent_page: Page,
                                                                         tmp_path: Path) -> None:
    player_id, _ = await register_player()
    await open_ticket(agent_page, player_id, "Ticket view test")
    assert await agent_page.text_content("[data-testid=ticket-status]") == "new"
    await agent_page.fill("#reply-body", "Checking the KYC file first.")
    await agent_page.check("input[name=visibility][value=internal]")
    await agent_page.click("[data-testid=reply-form] button[type=submit]")
    await agent_page.locator("[data-visibility=internal]").wait_for()
    assert await agent_page.text_content("[data-testid=ticket-status]") == "new"
    await agent_page.fill("#reply-body", "Your withdrawal is on its way.")
    await agent_page.click("[data-testid=reply-form] button[type=submit]")
    await agent_page.locator("[data-visibility=public]:has-text('on its way')").wait_for()
    assert await agent_page.text_content("[data-testid=ticket-status]") == "open"
    assert await agent_page.locator("[data-testid=messages] li").count() == 3
    await agent_page.select_option("#c-status", "pending")
    await agent_page.select_option("#c-priority", "P2")
    await agent_page.click("[data-testid=ticket-controls] button[type=submit]")
    await agent_page.wait_for_function(
        "() => document.querySelector('[data-testid=ticket-status]').textContent === 'pending'")
    # A refused upload says why; an allowed one is listed and downloadable.
    bad = tmp_path / "tool.exe"
    bad.write_bytes(b"MZ" * 32)
    await agent_page.set_input_files("#upload input[type=file]", str(bad))
    await agent_page.click("#upload button[type=submit]")
    error = agent_page.locator("[data-testid=upload-error]")
    await error.wait_for()
    assert "not allowed" in (await error.text_content() or "")
    good = tmp_path / "note.txt"
    good.write_text("transaction 12345\n")
    await agent_page.set_input_files("#upload input[type=file]", str(good))
    await agent_page.click("#upload button[type=submit]")
    await agent_page.locator("[data-testid=attachments] a:has-text('note.txt')").wait_for()


async def test_the_player_page_shows_the_communication_history(agent_page: Page) -> None:
    player_id, _ = await register_player()
    await open_ticket(agent_page, player_id, "History card test")
    await agent_page.fill("#reply-body", "We have answered you by email too.")
    await agent_page.click("[data-testid=reply-form] button[type=submit]")
    await agent_page.locator("[data-visibility=public]:has-text('by email too')").wait_for()
    await agent_page.goto(f"{DASHBOARD}/players/{player_id}")
    history = agent_page.locator("[data-testid=communication-history] [data-testid=history]")
    await history.wait_for()
    kinds = await history.locator("tr").evaluate_all("rows => rows.map(r => r.dataset.kind)")
    assert "ticket" in kinds and "message" in kinds
    assert "History card test" in (await history.text_content() or "")
