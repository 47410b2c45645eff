"""Email tickets reach their player's history, on the running stack: the shards index players' profile
emails (`player_contacts`), the mail gateway links a new email ticket to the one player whose live
profile has the From address (real SMTP to the listener on 127.0.0.1:2525), and an agent links the
rest (`POST /helpdesk/v1/tickets/{id}/player`, and the ticket page's form)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import httpx
import pytest
from cassandra.cluster import Session

from adapters.cassandra.apikeys import ApiKeyStore
from adapters.cassandra.session import aexecute
from adapters.settings import Settings
from tests.integration.conftest import API_KEY, API_URL
from tests.integration.operators import ADMIN, DASHBOARD, LoggedIn, Operators, problem, register_player
from tests.integration.test_helpdesk_email import HELPDESK, mail, send, ticket, ticket_of

pytestmark = pytest.mark.stack

WAIT_SECONDS = 30.0


@pytest.fixture(scope="module")
async def agent(ops: Operators) -> LoggedIn:
    return await ops.login(["support_agent"])


@pytest.fixture(scope="module")
async def compliance(ops: Operators) -> LoggedIn:
    return await ops.login(["compliance_officer"])


@pytest.fixture
async def platform(stack: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=API_URL, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30) as c:
        yield c


def address() -> str:
    return f"maria.{uuid.uuid4().hex[:10]}@players.example.test"


def dmarc_pass(stack: Settings) -> dict[str, str]:
    verdicts = ("spf=pass smtp.mailfrom=players.example.test; dkim=pass header.d=players.example.test; "
                "dmarc=pass header.from=players.example.test")
    return {"Authentication-Results": f"{stack.smtp_trusted_authserv_id}; {verdicts}"}


async def indexed(db: Session, email: str, brand: str = "demo") -> set[UUID]:
    rows = await aexecute(db, "SELECT player_id FROM player_contacts WHERE brand = %s AND email = %s", (brand, email))
    return {r["player_id"] for r in rows}


async def wait_indexed(db: Session, email: str, player_id: str) -> None:
    """The shard writes the row with its CRM flush, shortly after the profile change."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if UUID(player_id) in await indexed(db, email):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"player {player_id} was not indexed under {email}")


async def history(agent: LoggedIn, player_id: str) -> list[dict[str, Any]]:
    r = await agent.client.get(f"{HELPDESK}/players/{player_id}/history")
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


async def audit_entries(who: LoggedIn, **match: str) -> list[dict[str, Any]]:
    r = await who.client.get(f"{ADMIN}/audit", params={"limit": 100, **match})
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


# ------------------------------------------------------------------------------------------ the gateway


async def test_an_email_from_a_registered_players_address_lands_on_their_ticket_and_history(
    stack: Settings, db: Session, agent: LoggedIn
) -> None:
    email = address()
    player_id, _ = await register_player(email=email.replace("maria", "Maria"))  # typed in another case
    await wait_indexed(db, email, player_id)
    msg = mail(email.upper().replace("@PLAYERS.EXAMPLE.TEST", "@players.example.test"), "Where is my withdrawal",
               "Hello, I am still waiting.", headers=dmarc_pass(stack))
    assert (await send(msg))[0] == 250
    t = (await ticket(agent, ticket_of(msg)))["ticket"]
    assert (t["player_id"], t["channel"]) == (player_id, "email")
    items = await history(agent, player_id)
    mine = [i for i in items if i["ticket_id"] == str(t["ticket_id"])]
    assert {i["kind"] for i in mine} == {"ticket", "message"}
    assert any("still waiting" in i["summary"] for i in mine)
    # The same email delivered again is the same ticket, still linked.
    assert (await send(msg))[0] == 250
    assert (await ticket(agent, ticket_of(msg)))["ticket"]["player_id"] == player_id


async def test_an_email_without_the_mtas_dmarc_pass_is_left_for_an_agent(db: Session, agent: LoggedIn) -> None:
    email = address()
    player_id, _ = await register_player(email=email)
    await wait_indexed(db, email, player_id)
    msg = mail(email, "No verdict", "anyone can write this From")
    assert (await send(msg))[0] == 250
    assert (await ticket(agent, ticket_of(msg)))["ticket"]["player_id"] is None


async def test_an_email_from_an_unknown_address_stays_unlinked(stack: Settings, agent: LoggedIn) -> None:
    msg = mail(address(), "Who am I", "not a player", headers=dmarc_pass(stack))
    assert (await send(msg))[0] == 250
    t = (await ticket(agent, ticket_of(msg)))["ticket"]
    assert t["player_id"] is None and t["sender_email"]


async def test_an_old_address_of_a_player_links_nobody(stack: Settings, db: Session, agent: LoggedIn,
                                                        platform: httpx.AsyncClient) -> None:
    old, new = address(), address()
    player_id, _ = await register_player(email=old)
    await wait_indexed(db, old, player_id)
    r = await platform.patch(f"/players/{player_id}", json={"email": new})
    assert r.status_code == 200, r.text
    await wait_indexed(db, new, player_id)
    msg = mail(old, "From my old mailbox", "hello", headers=dmarc_pass(stack))
    assert (await send(msg))[0] == 250
    assert (await ticket(agent, ticket_of(msg)))["ticket"]["player_id"] is None


async def test_a_stale_index_row_is_checked_against_the_live_profile(stack: Settings, db: Session,
                                                                     agent: LoggedIn) -> None:
    # A row the shard could not remove (written before a restart): the profile says otherwise.
    player_id, _ = await register_player(email=address())
    stale = address()
    await aexecute(db, "INSERT INTO player_contacts (brand, email, player_id, updated_at) VALUES (%s, %s, %s, %s)",
                   ("demo", stale, UUID(player_id), datetime.now(UTC)))
    msg = mail(stale, "Not me", "hello", headers=dmarc_pass(stack))
    assert (await send(msg))[0] == 250
    assert (await ticket(agent, ticket_of(msg)))["ticket"]["player_id"] is None


async def test_an_address_two_players_share_links_neither(stack: Settings, db: Session, agent: LoggedIn) -> None:
    email = address()
    first, _ = await register_player(email=email)
    second, _ = await register_player(email=email)
    await wait_indexed(db, email, first)
    await wait_indexed(db, email, second)
    msg = mail(email, "Which account", "hello", headers=dmarc_pass(stack))
    assert (await send(msg))[0] == 250
    assert (await ticket(agent, ticket_of(msg)))["ticket"]["player_id"] is None
    # The agent is offered both accounts, to decide which one wrote.
    offered = await candidates(agent, ticket_of(msg))
    assert {c["player_id"] for c in offered} == {first, second}
    page = await agent.client.get(f"{DASHBOARD}/tickets/{ticket_of(msg)}")
    assert 'data-testid="player-candidates"' in page.text and first in page.text and second in page.text


# ------------------------------------------------------------------------------------------ candidates


async def candidates(agent: LoggedIn, ticket_id: UUID | str) -> list[dict[str, Any]]:
    r = await agent.client.get(f"{HELPDESK}/tickets/{ticket_id}/player-candidates")
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()
    return found


async def test_an_unverified_senders_player_is_offered_masked_and_the_offer_is_audited(
    db: Session, agent: LoggedIn, compliance: LoggedIn
) -> None:
    email = address()
    player_id, _ = await register_player(email=email)  # Maria Borg
    await wait_indexed(db, email, player_id)
    msg = mail(email, "No verdict", "the gateway does not link this on its own")
    assert (await send(msg))[0] == 250
    tid = ticket_of(msg)
    assert (await ticket(agent, tid))["ticket"]["player_id"] is None
    [offer] = await candidates(agent, tid)
    assert offer["player_id"] == player_id
    if offer["masked"]:  # a support agent without the PII permission sees the masked profile
        assert offer["email"] != email and offer["first_name"] != "Maria"
    else:
        assert (offer["email"], offer["first_name"]) == (email, "Maria")
    entries = await audit_entries(compliance, action="ticket.player_candidates", target_id=str(tid))
    assert entries and player_id in str(entries[0]["after"])
    # Once linked, nobody is offered any more.
    version = (await ticket(agent, tid))["ticket"]["version"]
    r = await agent.client.post(f"{HELPDESK}/tickets/{tid}/player", json={"player_id": player_id, "version": version})
    assert r.status_code == 200, r.text
    assert await candidates(agent, tid) == []


async def test_an_unknown_sender_or_ticket_gets_no_candidates(stack: Settings, agent: LoggedIn) -> None:
    msg = mail(address(), "Who am I", "not a player", headers=dmarc_pass(stack))
    assert (await send(msg))[0] == 250
    assert await candidates(agent, ticket_of(msg)) == []
    r = await agent.client.get(f"{HELPDESK}/tickets/{uuid.uuid4()}/player-candidates")
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")


# ------------------------------------------------------------------------------------------ an agent links


async def unlinked_ticket(agent: LoggedIn) -> dict[str, Any]:
    """An email ticket from an unknown address, with a second message from the same sender."""
    who = address()
    first = mail(who, "Bonus missing", "My bonus did not arrive.")
    assert (await send(first))[0] == 250
    again = mail(who, "Re: Bonus missing", "Any news?", in_reply_to=str(first["Message-ID"]))
    assert (await send(again))[0] == 250
    view = await ticket(agent, ticket_of(first))
    t: dict[str, Any] = view["ticket"]
    assert t["player_id"] is None and len(view["messages"]) == 2
    return t


async def test_an_agent_links_an_email_ticket_and_the_player_history_shows_it_all(
    agent: LoggedIn, compliance: LoggedIn
) -> None:
    t = await unlinked_ticket(agent)
    player_id, _ = await register_player()
    url = f"{HELPDESK}/tickets/{t['ticket_id']}/player"
    r = await agent.client.post(url, json={"player_id": player_id, "version": t["version"]})
    assert r.status_code == 200, r.text
    assert (r.json()["player_id"], r.json()["version"]) == (player_id, t["version"] + 1)
    items = [i for i in await history(agent, player_id) if i["ticket_id"] == t["ticket_id"]]
    assert sorted(i["kind"] for i in items) == ["message", "message", "ticket"]
    assert any("Any news?" in i["summary"] for i in items)
    # A retry (the answer was lost) returns the linked ticket, whatever version it sends.
    again = await agent.client.post(url, json={"player_id": player_id, "version": t["version"]})
    assert again.status_code == 200 and again.json()["version"] == t["version"] + 1
    # A later message of the player lands in their history too.
    r = await agent.client.post(f"{HELPDESK}/tickets/{t['ticket_id']}/messages",
                                json={"message_id": str(uuid.uuid4()), "body": "Credited now.", "author_kind": "agent"})
    assert r.status_code == 201, r.text
    assert any("Credited now." in i["summary"] for i in await history(agent, player_id))
    [entry] = await audit_entries(compliance, action="ticket.link_player", target_id=t["ticket_id"])
    assert entry["before"]["player_id"] is None and entry["after"]["player_id"] == player_id
    assert entry["actor_id"] == agent.operator_id


async def test_a_ticket_of_one_player_is_not_moved_to_another(agent: LoggedIn) -> None:
    t = await unlinked_ticket(agent)
    first, _ = await register_player()
    second, _ = await register_player()
    url = f"{HELPDESK}/tickets/{t['ticket_id']}/player"
    assert (await agent.client.post(url, json={"player_id": first, "version": t["version"]})).status_code == 200
    r = await agent.client.post(url, json={"player_id": second, "version": t["version"] + 1})
    assert r.status_code == 409 and problem(r)["field"] == "player_id"
    assert (await ticket(agent, UUID(t["ticket_id"])))["ticket"]["player_id"] == first


async def test_a_stale_version_is_refused_and_nothing_is_linked(agent: LoggedIn) -> None:
    t = await unlinked_ticket(agent)
    player_id, _ = await register_player()
    r = await agent.client.post(f"{HELPDESK}/tickets/{t['ticket_id']}/player",
                                json={"player_id": player_id, "version": t["version"] - 1})
    assert r.status_code == 409 and problem(r)["field"] == "version"
    assert (await ticket(agent, UUID(t["ticket_id"])))["ticket"]["player_id"] is None
    assert [i for i in await history(agent, player_id) if i["ticket_id"] == t["ticket_id"]] == []


async def test_an_unknown_player_is_refused_naming_player_id(agent: LoggedIn, compliance: LoggedIn) -> None:
    t = await unlinked_ticket(agent)
    r = await agent.client.post(f"{HELPDESK}/tickets/{t['ticket_id']}/player",
                                json={"player_id": str(uuid.uuid4()), "version": t["version"]})
    assert r.status_code == 404 and problem(r)["field"] == "player_id"
    failed = await audit_entries(compliance, action="ticket.link_player", target_id=t["ticket_id"], outcome="failed")
    assert len(failed) == 1


async def test_a_player_of_another_brand_is_refused_naming_player_id(stack: Settings, db: Session,
                                                                     agent: LoggedIn) -> None:
    brand = f"t-link-{uuid.uuid4().hex[:8]}"
    _, key = await ApiKeyStore(db).create(brand, "test_player_contacts")
    player_id = str(uuid.uuid4())
    async with httpx.AsyncClient(base_url=API_URL, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
        r = await c.post("/players", json={"player_id": player_id, "currency": "EUR", "country": "MT"})
        assert r.status_code == 201, r.text
    t = await unlinked_ticket(agent)
    r = await agent.client.post(f"{HELPDESK}/tickets/{t['ticket_id']}/player",
                                json={"player_id": player_id, "version": t["version"]})
    assert r.status_code == 422 and problem(r)["field"] == "player_id"
    assert (await ticket(agent, UUID(t["ticket_id"])))["ticket"]["player_id"] is None


async def test_bad_bodies_and_a_missing_csrf_token_are_refused(agent: LoggedIn) -> None:
    t = await unlinked_ticket(agent)
    player_id, _ = await register_player()
    url = f"{HELPDESK}/tickets/{t['ticket_id']}/player"
    r = await agent.client.post(url, json={"player_id": "not-a-uuid", "version": t["version"]})
    assert r.status_code == 422 and "player_id" in str(problem(r))
    headers = {k: v for k, v in agent.client.headers.items() if k.lower() != "x-csrf-token"}
    async with httpx.AsyncClient(timeout=30, headers=headers) as bare:
        r = await bare.post(url, json={"player_id": player_id, "version": t["version"]})
    assert r.status_code == 403, r.text
    assert (await ticket(agent, UUID(t["ticket_id"])))["ticket"]["player_id"] is None


async def test_the_ticket_page_offers_the_link_form_and_it_links(agent: LoggedIn) -> None:
    t = await unlinked_ticket(agent)
    player_id, _ = await register_player()
    page = await agent.client.get(f"{DASHBOARD}/tickets/{t['ticket_id']}")
    assert page.status_code == 200 and 'data-testid="link-player-form"' in page.text
    form = {"csrf_token": agent.csrf, "version": str(t["version"]), "player_id": f" {player_id} "}
    headers = {k: v for k, v in agent.client.headers.items() if k.lower() != "x-csrf-token"}
    async with httpx.AsyncClient(timeout=30, headers=headers) as browser:
        r = await browser.post(f"{DASHBOARD}/tickets/{t['ticket_id']}/player", data=form)
    assert r.status_code == 303, r.text
    assert (await ticket(agent, UUID(t["ticket_id"])))["ticket"]["player_id"] == player_id
    page = await agent.client.get(f"{DASHBOARD}/tickets/{t['ticket_id']}")
    assert 'data-testid="link-player-form"' not in page.text and player_id in page.text
