"""The agents' live-chat console in a real browser (Chromium via Playwright) against a player on a
real WebSocket: the agent opens the chat, sees the player's lines and typing, and replies."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
from playwright.async_api import Browser
from websockets.asyncio.client import connect

from tests.browser.test_dashboard import login
from tests.integration.conftest import API_KEY
from tests.integration.operators import BASE_URL, DASHBOARD, Operators, register_player

WAIT = 30.0


async def test_the_agent_console_receives_a_players_message_and_replies(browser: Browser, ops: Operators) -> None:
    player_id, _ = await register_player()
    async with httpx.AsyncClient(timeout=30) as client:
        r = await client.post(f"{BASE_URL}/helpdesk/v1/chat/sessions",
                              json={"player_id": player_id, "chat_id": str(uuid.uuid4()), "subject": "Deposit",
                                    "message": "hi, my deposit is missing"},
                              headers={"Authorization": f"Bearer {API_KEY}"})
        assert r.status_code == 201, r.text
    chat = r.json()
    _, username, password = await ops.create(["support_agent"])
    page, _ = await login(browser, username, password)
    await page.click("header nav a[data-nav=chat]")
    await page.wait_for_url(f"{DASHBOARD}/chat")
    await page.wait_for_selector("[data-testid=chat-state]:has-text('connected')")

    await page.fill("#chat-join-id", chat["ticket_id"])
    await page.click("#chat-join button")
    transcript = page.locator("[data-testid=chat-transcript]")
    await transcript.locator("p[data-author=player]", has_text="hi, my deposit is missing").wait_for()
    assert "Deposit" in (await page.text_content("[data-testid=chat-title]") or "")

    url = BASE_URL.replace("http", "ws", 1) + f"/helpdesk/v1/chat/player?token={chat['token']}"
    async with connect(url) as player:
        await player.send(json.dumps({"type": "typing"}))
        await page.locator("[data-testid=chat-typing]").wait_for(state="visible")
        await player.send(json.dumps({"type": "message", "client_id": str(uuid.uuid4()), "body": "it was 50 EUR"}))
        await transcript.locator("p[data-author=player]", has_text="it was 50 EUR").wait_for()

        await page.fill("#chat-body", "I can see it, it will arrive in a minute")
        await page.click("#chat-send")
        reply: dict[str, Any] = {}
        async with asyncio.timeout(WAIT):
            while reply.get("type") != "message" or reply.get("author_kind") != "agent":
                reply = json.loads(await player.recv())
        assert reply["body"] == "I can see it, it will arrive in a minute"
        # Acknowledged: the line shows with its seq, no longer pending.
        await transcript.locator(f"p[data-author=agent][data-seq='{reply['seq']}']").wait_for()
    await page.context.close()
