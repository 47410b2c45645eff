"""The help desk's email channel end to end on the running stack, over real SMTP on loopback:
smtplib -> the gateway's listener (127.0.0.1:2525, Serve app `helpdesk-mail`) -> tickets; an
agent's reply over the helpdesk API -> RabbitMQ -> the gateway -> SMTP -> the local mail sink
(127.0.0.1:2526, `.data/mail/`)."""

from __future__ import annotations

import asyncio
import json
import smtplib
import socket
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any
from uuid import UUID, uuid5

import aio_pika
import pytest
from cassandra.cluster import Session

from adapters.cassandra.session import aexecute
from adapters.cassandra.tickets import TicketStore
from adapters.email_outbound import SmtpSender, SmtpUnavailable
from adapters.settings import Settings
from cluster.local.mailsink import DEFAULT_DIR as MAIL_DIR
from cluster.local.mailsink import find, read_index
from domain import tickets as rules
from domain.email_threading import parse_message_ids
from schemas.tickets import MessageCreate
from serve_apps.helpdesk_mail.gateway import NS_MESSAGE, NS_TICKET, ReplySender
from serve_apps.helpdesk_mail.threads import EmailThreads, short_id
from tests.integration.operators import BASE_URL, LoggedIn, Operators

pytestmark = pytest.mark.stack

HELPDESK = f"{BASE_URL}/helpdesk/v1"
SUPPORT = "support@help.pitboss.local"
SMTP_HOST, SMTP_PORT = "127.0.0.1", 2525
WAIT_SECONDS = 60.0


@pytest.fixture(scope="module")
async def agent(ops: Operators) -> LoggedIn:
    return await ops.login(["support_agent"])


@pytest.fixture
async def store(db: Session) -> AsyncIterator[TicketStore]:
    yield await asyncio.to_thread(TicketStore, db)


def player() -> str:
    return f"p{uuid.uuid4().hex[:12]}@player.example.com"


def mail(
    sender: str,
    subject: str,
    text: str,
    *,
    in_reply_to: str | None = None,
    references: str | None = None,
    headers: dict[str, str] | None = None,
    attachments: list[tuple[str, str, bytes]] = (),  # type: ignore[assignment]
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"Player <{sender}>"
    msg["To"] = SUPPORT
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{uuid.uuid4()}@player.example.com>"
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = references
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(text)
    for filename, content_type, data in attachments:
        maintype, _, subtype = content_type.partition("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg


def _send(raw: bytes, sender: str) -> tuple[int, str]:
    """One SMTP transaction; the reply code and text of DATA, or of the command that refused."""
    with smtplib.SMTP(SMTP_HOST, SMTP_PORT, timeout=60) as client:
        client.ehlo()
        code, text = client.mail(sender, [f"SIZE={len(raw)}"])
        if code < 400:
            code, text = client.rcpt(SUPPORT)
        if code < 400:
            code, text = client.data(raw)
    return code, text.decode("utf-8", "replace")


async def send(msg: EmailMessage | bytes, sender: str | None = None) -> tuple[int, str]:
    raw = msg if isinstance(msg, bytes) else msg.as_bytes()
    who = sender or (str(msg["From"].addresses[0].addr_spec) if isinstance(msg, EmailMessage) else "x@example.com")
    return await asyncio.to_thread(_send, raw, who)


def ticket_of(msg: EmailMessage) -> UUID:
    return uuid5(NS_TICKET, str(msg["Message-ID"]))


async def ticket(agent: LoggedIn, ticket_id: UUID) -> dict[str, Any]:
    r = await agent.client.get(f"{HELPDESK}/tickets/{ticket_id}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def indexed(db: Session, message_id: str) -> list[dict[str, Any]]:
    return await aexecute(db, "SELECT ticket_id FROM helpdesk_email_ids WHERE message_id = %s", (message_id,))


async def ticket_exists(db: Session, ticket_id: UUID) -> bool:
    return bool(await aexecute(db, "SELECT ticket_id FROM tickets WHERE ticket_id = %s", (ticket_id,)))


async def sunk(**match: str) -> dict[str, Any]:
    """The mail sink's entry matching `match`, waiting for the gateway to send it."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        found = find(MAIL_DIR, **match)
        if found:
            return found[-1]
        await asyncio.sleep(0.3)
    raise AssertionError(f"no mail with {match} reached the sink")


async def reply(agent: LoggedIn, ticket_id: UUID, text: str, visibility: str = "public") -> dict[str, Any]:
    r = await agent.client.post(
        f"{HELPDESK}/tickets/{ticket_id}/messages",
        json={"message_id": str(uuid.uuid4()), "body": text, "visibility": visibility, "author_kind": "agent"},
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


# ------------------------------------------------------------------------------------------ inbound


async def test_an_email_from_an_unknown_sender_opens_an_email_ticket(agent: LoggedIn) -> None:
    who = player()
    msg = mail(who, "Withdrawal missing", "Hello,\nmy withdrawal of 50 EUR has not arrived.",
               attachments=[("receipt.txt", "text/plain", b"tx 42\n"), ("tool.exe", "application/x-msdownload",
                                                                          b"MZ\x90\x00")])
    assert (await send(msg))[0] == 250
    view = await ticket(agent, ticket_of(msg))
    t = view["ticket"]
    assert (t["channel"], t["sender_email"], t["player_id"], t["subject"]) == ("email", who, None, "Withdrawal missing")
    first = view["messages"][0]
    assert first["author_kind"] == "player" and first["body"].startswith("Hello,\nmy withdrawal")
    assert "tool.exe" in first["body"] and "not kept" in first["body"]
    assert [a["filename"] for a in view["attachments"]] == ["receipt.txt"]
    assert first["attachments"] == [view["attachments"][0]["attachment_id"]]


async def test_a_reply_with_in_reply_to_threads_into_the_same_ticket_without_the_quote(agent: LoggedIn) -> None:
    who = player()
    first = mail(who, "Bonus question", "Why was my bonus removed?")
    assert (await send(first))[0] == 250
    quoted = "Thanks, one more thing.\n\nOn Mon, 1 Jan 2024, Support wrote:\n> old text"
    answer = mail(who, "Re: Bonus question", quoted, in_reply_to=str(first["Message-ID"]),
                  references=str(first["Message-ID"]))
    assert (await send(answer))[0] == 250
    view = await ticket(agent, ticket_of(first))
    assert [m["body"] for m in view["messages"]] == ["Why was my bonus removed?", "Thanks, one more thing."]
    assert view["messages"][1]["message_id"] == str(uuid5(NS_MESSAGE, str(answer["Message-ID"])))


async def test_the_same_message_id_delivered_twice_is_one_message(agent: LoggedIn) -> None:
    who = player()
    first = mail(who, "Twice", "Once only please")
    raw = first.as_bytes()
    assert (await send(raw, who))[0] == 250
    assert (await send(raw, who))[0] == 250
    answer = mail(who, "Re: Twice", "a reply", in_reply_to=str(first["Message-ID"]))
    assert (await send(answer))[0] == 250
    assert (await send(answer))[0] == 250
    view = await ticket(agent, ticket_of(first))
    assert view["ticket"]["message_count"] == 2
    assert [m["body"] for m in view["messages"]] == ["Once only please", "a reply"]


async def test_a_tag_written_by_another_sender_opens_a_new_ticket(agent: LoggedIn, db: Session) -> None:
    owner, stranger = player(), player()
    first = mail(owner, "My account", "Please help")
    assert (await send(first))[0] == 250
    tag = short_id(ticket_of(first))
    own = mail(owner, f"Re: [#{tag}] My account", "Only the tag, no threading headers")
    assert (await send(own))[0] == 250
    intruder = mail(stranger, f"Re: [#{tag}] My account", "let me in", in_reply_to=str(first["Message-ID"]))
    assert (await send(intruder))[0] == 250
    view = await ticket(agent, ticket_of(first))
    assert [m["body"] for m in view["messages"]] == ["Please help", "Only the tag, no threading headers"]
    other = await ticket(agent, ticket_of(intruder))
    assert other["ticket"]["sender_email"] == stranger


async def test_a_reply_to_a_closed_ticket_opens_a_follow_up_ticket(agent: LoggedIn, store: TicketStore) -> None:
    who = player()
    first = mail(who, "Closed soon", "first")
    assert (await send(first))[0] == 250
    old = ticket_of(first)
    r = await agent.client.patch(f"{HELPDESK}/tickets/{old}", json={"status": "solved"})
    assert r.status_code == 200, r.text
    # The scheduler's close, as it does it: the rules with the store.
    before = await store.get(old)
    after, _ = rules.apply(before, rules.CloseSolved(days=0), before.updated_at)
    await store.update(before, after)
    late = mail(who, f"Re: [#{short_id(old)}] Closed soon", "still broken", in_reply_to=str(first["Message-ID"]))
    assert (await send(late))[0] == 250
    assert (await ticket(agent, old))["ticket"]["message_count"] == 1
    follow = await ticket(agent, ticket_of(late))
    assert f"follows:{old}" in follow["ticket"]["tags"]
    assert follow["messages"][0]["body"].startswith("still broken") and str(old) in follow["messages"][0]["body"]


async def test_malformed_mail_is_refused_with_5xx_and_nothing_stored(db: Session) -> None:
    mid = f"<{uuid.uuid4()}@player.example.com>"
    raw = (f"From: a@player.example.com\r\nFrom: b@player.example.com\r\nTo: {SUPPORT}\r\nSubject: two senders\r\n"
           f"Message-ID: {mid}\r\n\r\nhello\r\n").encode()
    code, text = await send(raw, "a@player.example.com")
    assert code == 554 and "more than one from" in text.lower()
    assert await indexed(db, mid) == []
    assert not await ticket_exists(db, uuid5(NS_TICKET, mid))


async def test_oversize_mail_is_refused_with_5xx_and_nothing_stored(stack: Settings, db: Session) -> None:
    who = player()
    msg = mail(who, "Huge", "x" * (stack.smtp_inbound_max_bytes + 1024))
    code, _ = await send(msg)
    assert code == 552
    assert await indexed(db, str(msg["Message-ID"])) == []
    assert not await ticket_exists(db, ticket_of(msg))


async def test_dmarc_fail_from_the_trusted_authserv_is_refused_and_from_others_ignored(
    stack: Settings, db: Session
) -> None:
    who = player()
    verdict = f"{stack.smtp_trusted_authserv_id}; spf=fail smtp.mailfrom=x; dmarc=fail header.from=x"
    spoof = mail(who, "Send money", "urgent", headers={"Authentication-Results": verdict})
    code, text = await send(spoof)
    assert code == 550 and "dmarc" in text.lower()
    assert await indexed(db, str(spoof["Message-ID"])) == []
    assert not await ticket_exists(db, ticket_of(spoof))
    # A header the sender wrote under another authserv-id is not the MTA's verdict.
    forged = mail(who, "Hello", "fine", headers={"Authentication-Results": "evil.example; dmarc=fail"})
    assert (await send(forged))[0] == 250
    assert await ticket_exists(db, ticket_of(forged))


async def test_an_auto_reply_creates_nothing(db: Session) -> None:
    auto = mail(player(), "Out of office", "I am away", headers={"Auto-Submitted": "auto-replied"})
    code, text = await send(auto)
    assert code == 250 and "no ticket" in text
    assert await indexed(db, str(auto["Message-ID"])) == []
    assert not await ticket_exists(db, ticket_of(auto))


# ------------------------------------------------------------------------------------------ outbound


async def test_an_agent_reply_is_emailed_threaded_and_internal_notes_never_leave(agent: LoggedIn) -> None:
    who = player()
    first = mail(who, "Deposit failed", "My card was charged twice")
    assert (await send(first))[0] == 250
    tid = ticket_of(first)
    note = f"internal {uuid.uuid4().hex}: check the PSP"
    await reply(agent, tid, note, visibility="internal")
    answer = await reply(agent, tid, "We refunded the second charge.")
    out = await sunk(in_reply_to=str(first["Message-ID"]))
    assert out["rcpt_to"] == [who]
    assert f"[#{short_id(tid)}]" in out["subject"] and "Deposit failed" in out["subject"]
    assert parse_message_ids(out["references"]) == [str(first["Message-ID"])]
    assert out["message_id"].endswith("@help.pitboss.local>")
    raw = (MAIL_DIR / out["file"]).read_bytes()
    assert b"We refunded the second charge." in raw
    # The note was written first: had it been emailed, it would be in the sink by now.
    to_player = [e for e in read_index(MAIL_DIR) if e["rcpt_to"] == [who]]
    assert not any(note.encode() in (MAIL_DIR / e["file"]).read_bytes() for e in to_player)

    # The player answers our reply: it threads by our Message-ID, and our next reply references both.
    back = mail(who, str(out["subject"]), "Thanks!\n\n> We refunded", in_reply_to=out["message_id"],
                references=f"{first['Message-ID']} {out['message_id']}")
    assert (await send(back))[0] == 250
    view = await ticket(agent, tid)
    assert view["messages"][-1]["body"] == "Thanks!"
    await reply(agent, tid, "You are welcome.")
    second = await sunk(in_reply_to=str(back["Message-ID"]))
    assert parse_message_ids(second["references"]) == [str(first["Message-ID"]), out["message_id"],
                                                       str(back["Message-ID"])]
    assert answer["visibility"] == "public"


async def test_a_reply_event_delivered_again_is_not_emailed_twice(agent: LoggedIn, stack: Settings) -> None:
    who = player()
    first = mail(who, "Once", "hello")
    assert (await send(first))[0] == 250
    tid = ticket_of(first)
    answer = await reply(agent, tid, "Sent once")
    out = await sunk(in_reply_to=str(first["Message-ID"]))
    # Redeliver the same event (as after a consumer crash before its ack)...
    event = {"ticket_id": str(tid), "message_id": answer["message_id"], "channel": "email", "visibility": "public",
             "author_kind": "agent", "player_id": None, "brand": "demo"}
    connection = await aio_pika.connect_robust(stack.rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        await channel.default_exchange.publish(aio_pika.Message(json.dumps(event).encode()),
                                               routing_key=stack.helpdesk_mail_queue)
    # ...then a later reply: once it is in the sink, the queue got past the redelivered event.
    await reply(agent, tid, "Sent after the redelivery")
    await sunk(in_reply_to=out["message_id"])
    assert len(find(MAIL_DIR, message_id=out["message_id"])) == 1


async def test_an_unreachable_relay_is_retried_then_failed_and_a_replay_sends_once(
    agent: LoggedIn, db: Session, store: TicketStore
) -> None:
    # The gateway's sender driven directly (the deployed one talks to the sink): first a relay port
    # nobody listens on, then the sink. Same Cassandra records as the deployed gateway.
    who = player()
    first = mail(who, "Relay down", "hello")
    assert (await send(first))[0] == 250
    tid = ticket_of(first)
    # An agent's reply committed with the rules and the store only, so no event reaches the deployed gateway.
    before = await store.get(tid)
    body = MessageCreate(message_id=uuid.uuid4(), body="direct", visibility="public", author_kind="agent")
    after, events = rules.apply(before, rules.AddMessage(body, agent.operator_id), datetime.now(UTC))
    stored = rules.message_of(events)
    assert stored is not None
    await store.add_message(before, after, stored)
    note = {"message_id": str(stored.message_id)}
    threads = await asyncio.to_thread(EmailThreads, db)
    event = {"ticket_id": str(tid), "message_id": note["message_id"], "channel": "email", "visibility": "public",
             "author_kind": "agent"}

    def sender(port: int) -> ReplySender:
        smtp = SmtpSender(host="127.0.0.1", port=port, max_attempts=3, backoff_seconds=0.01, timeout_seconds=5)
        return ReplySender(store, threads, smtp, domain="help.pitboss.local", from_address=SUPPORT)

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead_port = closed.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(SmtpUnavailable):
            await sender(dead_port).handle(event)
    record = await threads.send_record(UUID(note["message_id"]))
    assert record is not None and (record.state, record.attempts) == ("failed", 1)
    live = sender(2526)
    assert (await live.handle(event)).outcome == "sent"
    assert (await live.handle(event)).outcome == "duplicate"
    record = await threads.send_record(UUID(note["message_id"]))
    assert record is not None and (record.state, record.attempts) == ("sent", 2)
    assert len(find(MAIL_DIR, message_id=record.email_message_id)) == 1


async def test_an_event_calling_an_internal_note_public_sends_nothing(
    agent: LoggedIn, db: Session, store: TicketStore
) -> None:
    who = player()
    first = mail(who, "Forged event", "hello")
    assert (await send(first))[0] == 250
    tid = ticket_of(first)
    note = await reply(agent, tid, "internal only", visibility="internal")
    forged = {"ticket_id": str(tid), "message_id": note["message_id"], "channel": "email", "visibility": "public",
              "author_kind": "agent"}
    threads = await asyncio.to_thread(EmailThreads, db)
    sender = ReplySender(store, threads, SmtpSender(host="127.0.0.1", port=2526), domain="help.pitboss.local",
                         from_address=SUPPORT)
    assert (await sender.handle(forged)).outcome == "skipped"
    assert await threads.send_record(UUID(note["message_id"])) is None
