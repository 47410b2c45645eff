"""The knowledge base, public FAQ, suggestions and reply templates against the deployed help desk."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from tests.integration.operators import BASE_URL, LoggedIn, Operators, new_ticket, problem, register_player

HD = f"{BASE_URL}/helpdesk/v1"
pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def editor(ops: Operators) -> LoggedIn:
    return await ops.login(["supervisor"], brands=["demo"])


@pytest.fixture(scope="module")
async def agent(ops: Operators) -> LoggedIn:
    return await ops.login(["support_agent"], brands=["demo"])


def word() -> str:
    """A made-up word no other article holds, so searches are about this test's articles."""
    return "zq" + uuid.uuid4().hex[:10].translate(str.maketrans("0123456789", "ghijklmnop"))


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 15.0) -> None:
    # Another replica learns of a change over Redis or, at worst, at its next poll of the change log.
    for _ in range(int(seconds / 0.5)):
        if await check():
            return
        await asyncio.sleep(0.5)
    assert await check()


async def article(c: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body = {"brand": "demo", "language": "en", "category": "payments", "title": "t", "body": "", **fields}
    r = await c.post(f"{HD}/kb/articles", json=body)
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


def address() -> str:
    # The FAQ's rate limit is per client address; the local proxy address is trusted to name one.
    return f"198.18.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250 + 1}"


async def faq(q: str, **params: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=30, headers={"X-Forwarded-For": address()}) as c:
        r = await c.get(f"{HD}/faq/search", params={"brand": "demo", "q": q, **params})
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


async def test_create_is_a_draft_and_a_retry_returns_it(editor: LoggedIn) -> None:
    w = word()
    a = await article(editor.client, title=f"Withdrawal limits {w}", body=f"How **{w}** works.", tags=["cashout"])
    assert (a["status"], a["version"], a["published_version"]) == ("draft", 1, None)
    assert a["slug"] == f"withdrawal-limits-{w}"
    r = await editor.client.post(f"{HD}/kb/articles", json={
        "article_id": a["article_id"], "brand": "demo", "language": "en", "category": "payments", "title": "other"})
    assert r.status_code == 200 and r.json()["title"] == a["title"]
    r = await editor.client.get(f"{HD}/kb/articles/{a['article_id']}")
    assert r.status_code == 200 and r.json()["body"] == f"How **{w}** works."


async def test_public_faq_and_plain_agents_never_see_drafts(editor: LoggedIn, agent: LoggedIn) -> None:
    w = word()
    a = await article(editor.client, title=f"Bonus terms {w}", body=f"Wagering {w} rules.")
    r = await editor.client.get(f"{HD}/kb/search", params={"q": w})
    assert [h["article_id"] for h in r.json()["items"]] == [a["article_id"]]
    assert r.json()["items"][0]["status"] == "draft"
    r = await agent.client.get(f"{HD}/kb/search", params={"q": w})
    assert r.status_code == 200 and r.json()["items"] == []
    assert await faq(w) == []
    r = await agent.client.get(f"{HD}/kb/articles/{a['article_id']}")
    assert r.status_code == 404
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.get(f"{HD}/faq/articles/{a['slug']}", params={"brand": "demo"})
    assert r.status_code == 404


async def test_publish_makes_it_public_with_safe_html_and_no_internal_fields(editor: LoggedIn) -> None:
    w = word()
    body = f"# Heading\n\nSee [help](https://example.test/h) {w}.\n\n<script>alert(1)</script> [x](javascript:alert(1))"
    a = await article(editor.client, title=f"Deposits {w}", body=body)
    r = await editor.client.post(f"{HD}/kb/articles/{a['article_id']}/publish", json={"version": 1})
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["published_version"]) == ("published", 1)

    async def found() -> bool:
        return [h["slug"] for h in await faq(w)] == [a["slug"]]

    await eventually(found)
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.get(f"{HD}/faq/articles/{a['slug']}", params={"brand": "demo"})
    assert r.status_code == 200, r.text
    page = r.json()
    assert set(page) == {"slug", "language", "category", "title", "body_html", "tags", "published_at"}
    assert "<script>" not in page["body_html"] and "&lt;script&gt;" in page["body_html"]
    assert 'href="javascript' not in page["body_html"]
    assert '<a href="https://example.test/h" rel="nofollow noopener noreferrer">help</a>' in page["body_html"]
    assert "<h2>Heading</h2>" in page["body_html"]


async def test_versions_and_optimistic_concurrency(editor: LoggedIn) -> None:
    w, w2 = word(), word()
    a = await article(editor.client, title=f"KYC documents {word()}", body=f"Send {w}.")
    aid = a["article_id"]
    assert (await editor.client.post(f"{HD}/kb/articles/{aid}/publish", json={})).status_code == 200
    # Publishing is not a new content version: the edit after it is version 2.
    r = await editor.client.patch(f"{HD}/kb/articles/{aid}", json={"version": 1, "body": f"Send {w2}."})
    assert r.status_code == 200 and r.json()["version"] == 2
    r = await editor.client.patch(f"{HD}/kb/articles/{aid}", json={"version": 1, "body": "stale edit"})
    assert r.status_code == 409 and problem(r)["field"] == "version"
    current = (await editor.client.get(f"{HD}/kb/articles/{aid}")).json()
    assert current["has_unpublished_changes"] and current["published_version"] == 1
    r = await editor.client.get(f"{HD}/kb/articles/{aid}/versions")
    assert [v["version"] for v in r.json()["items"]] == [current["version"], 1]
    assert r.json()["items"][-1]["published"] is True
    r = await editor.client.get(f"{HD}/kb/articles/{aid}/versions/1")
    assert r.json()["body"] == f"Send {w}."
    # The public still reads version 1 until the new one is published.
    await eventually(lambda: _slugs_for(w, a["slug"]))
    assert await faq(w2) == []
    r = await editor.client.post(f"{HD}/kb/articles/{aid}/publish", json={"version": 1})
    assert r.status_code == 409
    r = await editor.client.post(f"{HD}/kb/articles/{aid}/publish", json={"version": current["version"]})
    assert r.status_code == 200
    await eventually(lambda: _slugs_for(w2, a["slug"]))
    assert await faq(w) == []
    r = await editor.client.post(f"{HD}/kb/articles/{aid}/unpublish", json={})
    assert r.status_code == 200 and r.json()["status"] == "draft"
    await eventually(lambda: _none_for(w2))


async def _slugs_for(q: str, slug: str) -> bool:
    return [h["slug"] for h in await faq(q)] == [slug]


async def _none_for(q: str) -> bool:
    return await faq(q) == []


async def test_search_ranks_a_title_match_above_a_body_mention(editor: LoggedIn) -> None:
    w = word()
    body_only = await article(editor.client, title=f"Account settings {word()}",
                              body=f"Elsewhere we mention {w} once among many other words about passwords, "
                              "e-mail addresses and notification preferences.")
    in_title = await article(editor.client, title=f"{w} explained", body=f"{w} is our loyalty scheme.")
    for a in (body_only, in_title):
        assert (await editor.client.post(f"{HD}/kb/articles/{a['article_id']}/publish", json={})).status_code == 200

    async def ranked() -> bool:
        return [h["slug"] for h in await faq(w)] == [in_title["slug"], body_only["slug"]]

    await eventually(ranked)
    r = await editor.client.get(f"{HD}/kb/search", params={"q": w, "category": "payments", "language": "en"})
    assert [h["article_id"] for h in r.json()["items"]][:2] == [in_title["article_id"], body_only["article_id"]]
    r = await editor.client.get(f"{HD}/kb/search", params={"q": w, "category": "kyc"})
    assert r.json()["items"] == []


async def test_bad_input_names_the_field(editor: LoggedIn, agent: LoggedIn) -> None:
    r = await editor.client.post(f"{HD}/kb/articles", json={"brand": "demo", "language": "english",
                                                            "category": "payments", "title": "x"})
    assert r.status_code == 422 and problem(r)["field"] == "language"
    r = await editor.client.post(f"{HD}/kb/articles", json={"brand": "demo", "language": "en",
                                                            "category": "Bad Category", "title": "x"})
    assert r.status_code == 422 and problem(r)["field"] == "category"
    r = await editor.client.post(f"{HD}/kb/articles", json={"brand": "demo", "language": "en", "category": "a",
                                                            "title": "   "})
    assert r.status_code == 422 and problem(r)["field"] == "title"
    w = word()
    await article(editor.client, title=f"One {w}", slug=f"s-{w}")
    r = await editor.client.post(f"{HD}/kb/articles", json={"brand": "demo", "language": "en", "category": "a",
                                                            "title": "two", "slug": f"s-{w}"})
    assert r.status_code == 409 and problem(r)["field"] == "slug"
    r = await agent.client.post(f"{HD}/kb/articles", json={"brand": "demo", "language": "en", "category": "a",
                                                           "title": "not mine to write"})
    assert r.status_code == 403
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.get(f"{HD}/faq/search", params={"brand": "demo"})
        assert r.status_code == 422 and problem(r)["field"] == "query.q"
        r = await c.get(f"{HD}/kb/search", params={"q": "x"})
        assert r.status_code == 401


async def test_suggestions_match_the_ticket_text(editor: LoggedIn, agent: LoggedIn) -> None:
    w = word()
    a = await article(editor.client, title=f"Pending {w} withdrawals", body=f"A {w} withdrawal takes 24 hours.")
    await editor.client.post(f"{HD}/kb/articles/{a['article_id']}/publish", json={})
    t = await new_ticket(agent.client, "Where is my money?", f"My {w} withdrawal is pending since Monday.")

    async def suggested() -> bool:
        r = await agent.client.get(f"{HD}/tickets/{t['ticket_id']}/suggestions")
        assert r.status_code == 200, r.text
        return bool(r.json()["items"]) and r.json()["items"][0]["article_id"] == a["article_id"]

    await eventually(suggested)
    r = await agent.client.get(f"{HD}/tickets/{t['ticket_id']}/suggestions", headers={"HX-Request": "true"})
    assert r.headers["content-type"].startswith("text/html")
    assert 'data-testid="kb-suggestion"' in r.text and f"/dashboard/kb/{a['article_id']}" in r.text


async def test_templates_refuse_unknown_placeholders_and_render_the_players_data(editor: LoggedIn,
                                                                                agent: LoggedIn) -> None:
    r = await editor.client.post(f"{HD}/templates", json={"language": "en", "name": "bad",
                                                         "body": "Hi {{player.nickname}}"})
    assert r.status_code == 422 and "player.nickname" in problem(r)["detail"]
    r = await agent.client.post(f"{HD}/templates", json={"language": "en", "name": "x", "body": "y"})
    assert r.status_code == 403
    name = f"Deposit check {word()}"
    r = await editor.client.post(f"{HD}/templates", json={
        "language": "en", "name": name, "set_status": "pending", "add_tags": ["deposit-check"],
        "body": "Hello {{player.first_name|there}}, ticket {{ticket.short_id}} ({{player.tier}}, "
                "{{player.currency}}). {{agent.name}}"})
    assert r.status_code == 201, r.text
    tpl = r.json()
    assert tpl["placeholders"] == ["player.first_name", "ticket.short_id", "player.tier", "player.currency",
                                   "agent.name"]
    r = await agent.client.get(f"{HD}/templates", params={"language": "en"})
    assert name in [x["name"] for x in r.json()["items"]]

    player_id, _ = await register_player()
    t = await new_ticket(agent.client, "Deposit missing", "I paid but see nothing", player_id=player_id)
    r = await agent.client.post(f"{HD}/tickets/{t['ticket_id']}/apply-template",
                                json={"template_id": tpl["template_id"], "ticket_version": t["version"]})
    assert r.status_code == 200, r.text
    applied = r.json()
    assert applied["body"] == (f"Hello Maria, ticket {t['ticket_id'][:8]} (Standard, EUR). {agent.username}")
    assert applied["set_status"] == "pending" and applied["added_tags"] == ["deposit-check"]
    r = await agent.client.get(f"{HD}/tickets/{t['ticket_id']}")
    assert r.json()["ticket"]["status"] == "pending" and "deposit-check" in r.json()["ticket"]["tags"]
    # The same template on a ticket that already moved: nothing left to apply, the text still renders.
    r = await agent.client.post(f"{HD}/tickets/{t['ticket_id']}/apply-template",
                                json={"template_id": tpl["template_id"]}, headers={"HX-Request": "true"})
    assert r.status_code == 200 and "no action applied" in r.text and "Hello Maria" in r.text

    r = await editor.client.patch(f"{HD}/templates/{tpl['template_id']}", json={"version": 1, "body": "{{oops}}"})
    assert r.status_code == 422
    r = await editor.client.patch(f"{HD}/templates/{tpl['template_id']}", json={"version": 9, "body": "ok"})
    assert r.status_code == 409
    r = await editor.client.delete(f"{HD}/templates/{tpl['template_id']}", params={"version": 1})
    assert r.status_code == 204
    r = await agent.client.get(f"{HD}/templates/{tpl['template_id']}")
    assert r.status_code == 404


async def test_the_public_faq_is_rate_limited_per_client_address() -> None:
    ip = address()
    async with httpx.AsyncClient(timeout=30, headers={"X-Forwarded-For": ip}) as c:
        # One burst, so it falls in one one-minute window (twice the limit: even split over two windows, one overflows).
        codes = await asyncio.gather(*(c.get(f"{HD}/faq/search", params={"brand": "demo", "q": "limit"})
                                       for _ in range(250)))
        assert any(r.status_code == 200 for r in codes)
        limited = [r for r in codes if r.status_code == 429]
        assert limited and int(limited[0].headers["Retry-After"]) >= 1
        assert problem(limited[0])["title"] == "Too many requests"
    async with httpx.AsyncClient(timeout=30, headers={"X-Forwarded-For": address()}) as other:
        r = await other.get(f"{HD}/faq/search", params={"brand": "demo", "q": "limit"})
        assert r.status_code == 200


async def test_changes_are_on_the_audit_record(editor: LoggedIn, ops: Operators) -> None:
    admin = await ops.login(["admin"])
    a = await article(editor.client, title=f"Audited {word()}")
    await editor.client.post(f"{HD}/kb/articles/{a['article_id']}/publish", json={})
    r = await admin.client.get(f"{BASE_URL}/admin/v1/audit", params={"target_id": a["article_id"]})
    assert r.status_code == 200, r.text
    actions = {e["action"] for e in r.json()["items"]}
    assert {"kb.article.create", "kb.article.publish"} <= actions
