"""The email channel over real SMTP on loopback: the inbound listener (aiosmtpd) fed by the stdlib
smtplib client, and the outbound sender talking to a second aiosmtpd instance that captures.
Needs no Cassandra, Redis or Ray."""

from __future__ import annotations

import asyncio
import hashlib
import smtplib
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from adapters.email_inbound import InboundSmtpServer, attachment_content
from adapters.email_outbound import SmtpRejected, SmtpSender, SmtpUnavailable, build_message, compose_reply
from domain.email_threading import thread_candidates, ticket_reference
from domain.errors import InvalidInput
from schemas.email import InboundEmail, OutboundAttachment

DOMAIN = "help.pitboss.test"
SUPPORT = f"support@{DOMAIN}"
PLAYER = "Ann@Player.TEST"


@dataclass
class Inbox:
    received: list[InboundEmail] = field(default_factory=list)
    fail_next: int = 0
    refuse: bool = False

    async def __call__(self, email: InboundEmail) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError("ticket store unavailable")
        if self.refuse:
            raise InvalidInput("sender is blocked", field="from")
        self.received.append(email)


@dataclass
class Listener:
    server: InboundSmtpServer
    inbox: Inbox

    @property
    def port(self) -> int:
        return self.server.port


async def _listener(**kwargs: Any) -> tuple[InboundSmtpServer, Inbox]:
    inbox = Inbox()
    options: dict[str, Any] = {
        "accepted_domains": [DOMAIN.upper()],
        "max_message_bytes": 64 * 1024,
        "max_recipients": 3,
        "trusted_authserv_id": "mx.pitboss.test",
    }
    options.update(kwargs)
    server = InboundSmtpServer(inbox, **options)
    await server.start()
    return server, inbox


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    server, inbox = await _listener()
    try:
        yield Listener(server, inbox)
    finally:
        await server.stop()


def _transaction(
    port: int, mail_from: str, rcpts: Sequence[str], data: bytes | None, mail_options: Sequence[str] = ()
) -> list[tuple[int, str]]:
    """One SMTP transaction step by step; the replies up to the first refusal."""
    replies: list[tuple[int, str]] = []
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.player.test")
        code, text = client.mail(mail_from, list(mail_options))
        replies.append((code, text.decode()))
        if code != 250:
            return replies
        for rcpt in rcpts:
            code, text = client.rcpt(rcpt)
            replies.append((code, text.decode()))
        if data is None or all(c >= 300 for c, _ in replies[1:]):
            return replies
        try:
            code, text = client.data(data)
        except smtplib.SMTPDataError as exc:
            code, text = exc.smtp_code, exc.smtp_error if isinstance(exc.smtp_error, bytes) else exc.smtp_error.encode()
        replies.append((code, text.decode()))
    return replies


async def deliver(
    port: int,
    message: EmailMessage | bytes,
    *,
    mail_from: str = PLAYER,
    rcpts: Sequence[str] = (SUPPORT,),
    mail_options: Sequence[str] = (),
) -> list[tuple[int, str]]:
    raw = message if isinstance(message, bytes) else message.as_bytes(policy=policy.SMTP)
    return await asyncio.to_thread(_transaction, port, mail_from, rcpts, raw, mail_options)


def player_mail(subject: str = "Bonus missing", body: str = "My bonus did not arrive.", **headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"Ann Player <{PLAYER}>"
    msg["To"] = f"Pitboss Support <{SUPPORT}>"
    msg["Subject"] = subject
    msg["Date"] = "Mon, 01 Jan 2024 10:00:00 +0100"
    msg["Message-ID"] = "<CAF1234@Mail.Player.TEST>"
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg


# --- Inbound ---------------------------------------------------------------------------------


async def test_plain_message_reaches_the_callback(listener: Listener) -> None:
    msg = player_mail()
    raw = msg.as_bytes(policy=policy.SMTP)
    # The trusted MTA's header is on top; the one below claims the same id but was written by the sender.
    raw = (
        b"Authentication-Results: mx.pitboss.test; spf=pass smtp.mailfrom=player.test;\r\n"
        b" dkim=pass header.d=player.test\r\n"
        b"Authentication-Results: mx.pitboss.test; spf=fail; dkim=fail\r\n" + raw
    )
    replies = await deliver(listener.port, raw)
    assert [code for code, _ in replies] == [250, 250, 250]
    assert "<CAF1234@mail.player.test>" in replies[-1][1]
    [email] = listener.inbox.received
    assert email.message_id == "<CAF1234@mail.player.test>"
    assert not email.message_id_synthesized
    assert (email.from_address, email.from_name) == ("Ann@player.test", "Ann Player")
    assert email.to == [SUPPORT]
    assert email.subject == "Bonus missing"
    assert (email.text, email.text_source) == ("My bonus did not arrive.", "plain")
    assert email.envelope_from == "Ann@player.test" and email.envelope_to == [SUPPORT]
    assert not email.envelope_mismatch and not email.auto_reply
    assert email.peer == "127.0.0.1"
    assert email.authentication is not None
    assert (email.authentication.spf, email.authentication.dkim) == ("pass", "pass")
    assert email.date is not None and email.date.utcoffset() is not None
    assert email.received_at.tzinfo is not None
    assert email.size == len(raw)
    assert email.raw and email.sha256 == hashlib.sha256(email.raw).hexdigest()
    assert "raw" not in email.model_dump()


async def test_multipart_alternative_prefers_the_plain_part(listener: Listener) -> None:
    msg = player_mail(body="plain version")
    msg.add_alternative("<p>html <b>version</b></p>", subtype="html")
    assert [c for c, _ in await deliver(listener.port, msg)][-1] == 250
    [email] = listener.inbox.received
    assert (email.text, email.text_source, email.attachments) == ("plain version", "plain", [])


async def test_html_only_message_is_turned_into_safe_text(listener: Listener) -> None:
    msg = player_mail()
    msg.set_content(
        '<html><body><p>Withdrawal <b>pending</b></p><script>steal()</script><img src="x" onerror="y()"></body></html>',
        subtype="html",
    )
    assert [c for c, _ in await deliver(listener.port, msg)][-1] == 250
    [email] = listener.inbox.received
    assert (email.text, email.text_source) == ("Withdrawal pending", "html")


async def test_attachments_are_described_and_their_bytes_kept_in_the_raw_message(listener: Listener) -> None:
    msg = player_mail(body="Screenshot attached.")
    png = bytes(range(256)) * 8
    msg.add_attachment(png, maintype="image", subtype="png", filename="../../etc/screen shot.png")
    msg.add_attachment(b"%PDF-1.4 statement", maintype="application", subtype="pdf", filename="statement.pdf")
    assert [c for c, _ in await deliver(listener.port, msg)][-1] == 250
    [email] = listener.inbox.received
    assert email.text == "Screenshot attached."
    first, second = email.attachments
    assert (first.part, first.filename, first.content_type, first.size) == ("2", "screen shot.png", "image/png", 2048)
    assert first.sha256 == hashlib.sha256(png).hexdigest()
    assert (second.part, second.filename, second.content_type) == ("3", "statement.pdf", "application/pdf")
    assert attachment_content(email.raw, "2") == png
    assert attachment_content(email.raw, second.part) == b"%PDF-1.4 statement"


async def test_auto_replies_are_accepted_and_dropped(listener: Listener) -> None:
    vacation = player_mail(subject="Out of office", Auto_Submitted="auto-replied")
    replies = await deliver(listener.port, vacation)
    assert replies[-1][0] == 250 and "automatic" in replies[-1][1]
    bounce = player_mail(subject="Undelivered Mail Returned to Sender")
    replies = await deliver(listener.port, bounce, mail_from="<>")
    assert replies[-1][0] == 250
    assert listener.inbox.received == []


async def test_auto_replies_can_be_handed_on_flagged() -> None:
    server, inbox = await _listener(deliver_auto_replies=True)
    try:
        await deliver(server.port, player_mail(Precedence="bulk"))
    finally:
        await server.stop()
    [email] = inbox.received
    assert email.auto_reply and email.auto_reply_reason == "Precedence: bulk"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"To: support@help.pitboss.test\r\nSubject: no sender\r\n\r\nhello\r\n", "no From header"),
        (
            b"From: a@player.test\r\nFrom: ceo@help.pitboss.test\r\nTo: support@help.pitboss.test\r\n\r\nhi\r\n",
            "more than one from header",
        ),
        (b"From: a@player.test, b@player.test\r\nTo: support@help.pitboss.test\r\n\r\nhi\r\n", "exactly one address"),
        (b"From: not an address\r\nTo: support@help.pitboss.test\r\n\r\nhi\r\n", "From address is not valid"),
        (b"\x00\xff\xfe garbage without headers\r\n", "no From header"),
    ],
)
async def test_malformed_messages_are_refused_and_nothing_reaches_the_callback(
    listener: Listener, raw: bytes, reason: str
) -> None:
    replies = await deliver(listener.port, raw)
    code, text = replies[-1]
    assert code == 554
    assert text.startswith("5.6.0") and reason in text
    assert listener.inbox.received == []


async def test_oversize_messages_are_refused_with_552(listener: Listener) -> None:
    big = player_mail(body="x" * 70 + ("\n" + "y" * 70) * 1200)  # about 85 KiB against a 64 KiB limit
    # Declared with SIZE (as smtplib.sendmail does): refused at MAIL FROM.
    replies = await deliver(listener.port, big, mail_options=[f"SIZE={len(big.as_bytes())}"])
    assert replies == [(552, replies[0][1])]
    # Not declared: refused after DATA.
    replies = await deliver(listener.port, big)
    assert replies[-1][0] == 552
    assert listener.inbox.received == []


async def test_recipients_outside_the_accepted_domains_are_refused(listener: Listener) -> None:
    replies = await deliver(listener.port, player_mail(), rcpts=["victim@elsewhere.test"])
    assert replies[1][0] == 550 and "5.7.1" in replies[1][1]
    replies = await deliver(listener.port, player_mail(), rcpts=["victim@elsewhere.test", SUPPORT])
    assert [c for c, _ in replies] == [250, 550, 250, 250]
    [email] = listener.inbox.received
    assert email.envelope_to == [SUPPORT]


async def test_too_many_recipients_get_452(listener: Listener) -> None:
    rcpts = [f"agent{i}@{DOMAIN}" for i in range(4)]
    replies = await deliver(listener.port, player_mail(), rcpts=rcpts)
    assert [c for c, _ in replies] == [250, 250, 250, 250, 452, 250]
    assert len(listener.inbox.received[0].envelope_to) == 3


async def test_spoofed_envelope_is_flagged(listener: Listener) -> None:
    assert (await deliver(listener.port, player_mail(), mail_from="bounce+123@mailer.example"))[-1][0] == 250
    [email] = listener.inbox.received
    assert email.envelope_mismatch and email.envelope_from == "bounce+123@mailer.example"


async def test_a_failing_callback_answers_451_and_the_retry_is_delivered(listener: Listener) -> None:
    listener.inbox.fail_next = 1
    replies = await deliver(listener.port, player_mail())
    assert replies[-1][0] == 451 and replies[-1][1].startswith("4.3.0")
    assert listener.inbox.received == []
    # The sending MTA retries the same bytes: delivered once now, with the same Message-ID, which
    # is what the ticket service deduplicates by (a lost 250 would make it arrive again too).
    assert (await deliver(listener.port, player_mail()))[-1][0] == 250
    [email] = listener.inbox.received
    assert email.message_id == "<CAF1234@mail.player.test>"


async def test_a_message_the_service_refuses_gets_a_permanent_error(listener: Listener) -> None:
    listener.inbox.refuse = True
    replies = await deliver(listener.port, player_mail())
    assert replies[-1][0] == 550 and "sender is blocked" in replies[-1][1]


async def test_a_message_without_message_id_gets_a_stable_one(listener: Listener) -> None:
    msg = player_mail()
    del msg["Message-ID"]
    await deliver(listener.port, msg)
    await deliver(listener.port, msg)
    first, second = listener.inbox.received
    assert first.message_id_synthesized
    assert first.message_id == second.message_id == f"<{first.sha256}@pitboss.invalid>"


# --- Outbound --------------------------------------------------------------------------------


@dataclass
class Capture:
    """A relay for the sender's tests: refuses some recipients, fails some DATA, keeps the rest."""

    messages: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    data_failures: list[str] = field(default_factory=list)

    async def handle_RCPT(  # aiosmtpd hook names
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 no such user"
        if address.startswith("busy@"):
            return "450 4.2.1 mailbox busy"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_failures:
            return self.data_failures.pop(0)
        self.messages.append((str(envelope.mail_from), list(envelope.rcpt_tos), envelope.original_content or b""))
        return "250 OK queued"


@dataclass
class Relay:
    capture: Capture
    port: int


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    capture = Capture()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(capture, loop=loop), host="127.0.0.1", port=0)
    try:
        yield Relay(capture, int(server.sockets[0].getsockname()[1]))
    finally:
        server.close()
        await server.wait_closed()


@dataclass
class Ticket:
    short_id: str
    subject: str


async def _no_wait(seconds: float) -> None:
    return None


def sender_for(port: int, **kwargs: Any) -> SmtpSender:
    return SmtpSender(host="127.0.0.1", port=port, envelope_from=f"bounces@{DOMAIN}", sleep=_no_wait, **kwargs)


async def test_a_reply_carries_the_threading_headers_and_the_answer_threads_back(
    listener: Listener, relay: Relay
) -> None:
    first = player_mail(References="<older@mail.player.test>")
    await deliver(listener.port, first)
    [inbound] = listener.inbox.received
    ticket = Ticket("ABC123", inbound.subject)

    reply = compose_reply(
        ticket,
        domain=DOMAIN,
        from_address=SUPPORT,
        from_name="Pitboss Support",
        to=[inbound.from_address],
        text="Hello Ann, your bonus is credited now. Grüße",
        parent_message_ids=[*inbound.references, inbound.message_id],
        attachments=[OutboundAttachment(filename="terms.pdf", content_type="application/pdf", data=b"%PDF terms")],
    )
    result = await sender_for(relay.port).send(reply)
    assert result.accepted == ("Ann@player.test",) and result.attempts == 1

    [(envelope_from, rcpts, raw)] = relay.capture.messages
    assert envelope_from == f"bounces@{DOMAIN}" and rcpts == ["Ann@player.test"]
    sent = BytesParser(policy=policy.default).parsebytes(raw)
    assert sent["Message-ID"] == reply.message_id and reply.message_id.endswith(f"@{DOMAIN}>")
    assert sent["In-Reply-To"] == "<CAF1234@mail.player.test>"
    assert sent["References"] == "<older@mail.player.test> <CAF1234@mail.player.test>"
    assert sent["Subject"] == "Re: [#ABC123] Bonus missing"
    assert sent["Auto-Submitted"] is None
    assert str(sent["From"]) == f"Pitboss Support <{SUPPORT}>"
    body = sent.get_body(preferencelist=("plain",))
    assert body is not None and body.get_content().strip() == "Hello Ann, your bonus is credited now. Grüße"
    [attachment] = list(sent.iter_attachments())
    assert attachment.get_filename() == "terms.pdf" and attachment.get_content() == b"%PDF terms"

    # The player answers from their client: the answer threads back to the reply, and the
    # subject tag is there as the fallback.
    answer = player_mail(
        subject=f"Re: {sent['Subject']}",
        body="Thanks, got it!\n\nOn Mon, 1 Jan 2024, Pitboss Support wrote:\n> Hello Ann",
        In_Reply_To=sent["Message-ID"],
        References=f"{sent['References']} {sent['Message-ID']}",
    )
    answer.replace_header("Message-ID", "<CAF5678@mail.player.test>")
    await deliver(listener.port, answer)
    threaded = listener.inbox.received[-1]
    assert thread_candidates(threaded)[:2] == [reply.message_id, "<CAF1234@mail.player.test>"]
    assert ticket_reference(threaded.subject) == "ABC123"


async def test_temporary_failures_are_retried_until_accepted(relay: Relay) -> None:
    relay.capture.data_failures = ["451 4.3.0 try later", "421 4.7.0 busy"]
    delays: list[float] = []

    async def record(seconds: float) -> None:
        delays.append(seconds)

    sender = SmtpSender(host="127.0.0.1", port=relay.port, sleep=record, backoff_seconds=1.0)
    reply = compose_reply(
        Ticket("ABC123", "x"), domain=DOMAIN, from_address=SUPPORT, to=[PLAYER], text="hi", parent_message_ids=[]
    )
    result = await sender.send(reply)
    assert result.attempts == 3 and len(delays) == 2
    assert len(relay.capture.messages) == 1


async def test_permanent_refusals_are_not_retried(relay: Relay) -> None:
    def reply_to(*to: str) -> Any:
        return compose_reply(
            Ticket("ABC123", "x"), domain=DOMAIN, from_address=SUPPORT, to=list(to), text="hi", parent_message_ids=[]
        )

    with pytest.raises(SmtpRejected) as refused:
        await sender_for(relay.port).send(reply_to("nobody@player.test"))
    assert refused.value.field == "to" and refused.value.extra["refused"]["nobody@player.test"][0] == 550
    relay.capture.data_failures = ["554 5.7.1 spam"]
    with pytest.raises(SmtpRejected) as spam:
        await sender_for(relay.port).send(reply_to(PLAYER))
    assert spam.value.extra["code"] == 554
    result = await sender_for(relay.port).send(reply_to(PLAYER, "nobody@player.test"))
    assert result.accepted == ("Ann@player.test",) and result.refused["nobody@player.test"][0] == 550
    assert len(relay.capture.messages) == 1


async def test_a_busy_recipient_is_retried_alone_then_reported(relay: Relay) -> None:
    reply = compose_reply(
        Ticket("ABC123", "x"),
        domain=DOMAIN,
        from_address=SUPPORT,
        to=[PLAYER, "busy@player.test"],
        text="hi",
        parent_message_ids=[],
    )
    with pytest.raises(SmtpUnavailable) as unavailable:
        await sender_for(relay.port, max_attempts=3).send(reply)
    assert unavailable.value.extra["accepted"] == ["Ann@player.test"]
    assert unavailable.value.extra["pending"] == ["busy@player.test"]
    assert len(relay.capture.messages) == 1  # never sent twice to the player


async def test_an_unreachable_relay_gives_up_with_503() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    reply = compose_reply(
        Ticket("ABC123", "x"), domain=DOMAIN, from_address=SUPPORT, to=[PLAYER], text="hi", parent_message_ids=[]
    )
    with pytest.raises(SmtpUnavailable) as unavailable:
        await sender_for(port, max_attempts=2).send(reply)
    assert unavailable.value.status == 503 and "2 attempts" in unavailable.value.detail


def test_outbound_messages_never_carry_injected_headers() -> None:
    with pytest.raises(ValueError):
        compose_reply(
            Ticket("ABC123", "x"),
            domain=DOMAIN,
            from_address=SUPPORT,
            from_name="Support\r\nBcc: everyone@example.com",
            to=[PLAYER],
            text="hi",
            parent_message_ids=[],
        )
    ok = compose_reply(
        Ticket("ABC123", "x\r\nBcc: a@b.c"),
        domain=DOMAIN,
        from_address=SUPPORT,
        to=[PLAYER],
        text="hi",
        parent_message_ids=[],
    )
    assert "Bcc" not in build_message(ok) and "\n" not in ok.subject
