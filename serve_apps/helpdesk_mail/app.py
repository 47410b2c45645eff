"""The help desk's email gateway: a Serve application with no HTTP route (`route_prefix: null`) and
one replica, running

- the inbound SMTP listener (`adapters.email_inbound.InboundSmtpServer`, aiosmtpd) on
  `PITBOSS_SMTP_INBOUND_HOST:PORT`, feeding `gateway.InboundThreader` (tickets through
  `serve_apps.helpdesk.service.HelpDesk`; the sender's player found through
  `serve_apps.helpdesk.contacts.SenderResolver`);
- the consumer of `ticket.message_added` (`consumer.ReplyConsumer`) that emails agents' public
  replies on email tickets through `PITBOSS_SMTP_HOST:PORT`.

The listener socket is bound with SO_REUSEADDR and SO_REUSEPORT, so during a rollout the new replica
binds while the old one drains (the kernel spreads new connections over both; an SMTP session
lives on the replica that accepted it). On shutdown the old replica stops accepting, lets open
sessions finish for a grace period, and stops its consumer (unacknowledged events are redelivered).
Serve's health check fails while the listener is not serving or the consumer has stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from ray import serve
from ray.serve import Application

from adapters.cassandra.player_contacts import PlayerContacts
from adapters.email_inbound import InboundSmtpServer
from adapters.email_outbound import SmtpSender
from adapters.settings import Settings, get_settings
from schemas.email import InboundEmail
from serve_apps.backoffice.runtime import BackOffice
from serve_apps.helpdesk.contacts import SenderResolver
from serve_apps.helpdesk.service import Actor, HelpDesk
from serve_apps.helpdesk_mail.consumer import ReplyConsumer
from serve_apps.helpdesk_mail.gateway import InboundThreader, ReplySender, parse_brands
from serve_apps.helpdesk_mail.threads import EmailThreads

log = logging.getLogger("pitboss.helpdesk.mail")

DRAIN_SECONDS = 20.0
GATEWAY_ACTOR = Actor(kind="system", id="email-gateway")


class SharedPortListener(InboundSmtpServer):
    """The listener with SO_REUSEADDR + SO_REUSEPORT, so a replacement replica can bind the same port."""

    async def start(self) -> None:
        if self._server is not None:
            return
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol, host=self.host, port=self._port, reuse_address=True, reuse_port=True
        )
        log.info("smtp listener on %s:%s for %s", self.host, self.port, ", ".join(sorted(self.accepted_domains)))

    async def drain(self, grace_seconds: float) -> None:
        """Stop accepting, then wait up to `grace_seconds` for the open sessions to end."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), timeout=grace_seconds)


def _actor(_: InboundEmail) -> Actor:
    return GATEWAY_ACTOR


def build_gateway(
    settings: Settings, backoffice: BackOffice, desk: HelpDesk
) -> tuple[SharedPortListener, ReplyConsumer]:
    """The listener and the consumer over one help desk (used by the deployment; tests may run it too)."""
    threads = EmailThreads(backoffice.session)
    brands = parse_brands(settings.helpdesk_mail_brands)
    resolver = SenderResolver(PlayerContacts(backoffice.session), backoffice.players) if backoffice.players else None
    threader = InboundThreader(desk, desk.tickets, threads, brands=brands, actor=_actor,
                               resolve=resolver.resolve if resolver is not None else None,
                               link_policy=settings.helpdesk_mail_link_players)
    listener = SharedPortListener(
        threader,
        accepted_domains=list(brands),
        host=settings.smtp_inbound_host,
        port=settings.smtp_inbound_port,
        hostname=settings.helpdesk_mail_domain,
        max_message_bytes=settings.smtp_inbound_max_bytes,
        max_recipients=settings.smtp_inbound_max_recipients,
        trusted_authserv_id=settings.smtp_trusted_authserv_id or None,
    )
    smtp = SmtpSender(
        host=settings.smtp_host,
        port=settings.smtp_port,
        username=settings.smtp_username,
        password=settings.smtp_password,
        starttls=settings.smtp_starttls,
        timeout_seconds=settings.smtp_timeout_seconds,
        max_attempts=settings.smtp_max_attempts,
        backoff_seconds=settings.smtp_backoff_seconds,
        local_hostname=settings.helpdesk_mail_domain,
    )
    sender = ReplySender(
        desk.tickets,
        threads,
        smtp,
        domain=settings.helpdesk_mail_domain,
        from_address=settings.helpdesk_mail_from,
        from_name=settings.helpdesk_mail_from_name or None,
    )
    return listener, ReplyConsumer(settings, sender)


@serve.deployment(name="MailGateway")
class MailGateway:
    async def __init__(self) -> None:  # type: ignore[misc]
        settings = get_settings()
        # Both constructors connect and prepare statements (blocking): off the replica's loop. The
        # players' shards are reached to find the player an email comes from (their live profile).
        self.backoffice = await asyncio.to_thread(BackOffice, settings)
        self.desk = await asyncio.to_thread(HelpDesk, self.backoffice)
        self.listener, self.consumer = await asyncio.to_thread(build_gateway, settings, self.backoffice, self.desk)
        await self.listener.start()
        self.consuming = asyncio.get_running_loop().create_task(self.consumer.run())

    async def check_health(self) -> None:
        if self.consuming.done():
            raise RuntimeError("the reply consumer stopped")
        if self.listener._server is None or not self.listener._server.is_serving():
            raise RuntimeError("the SMTP listener is not serving")

    async def status(self) -> dict[str, Any]:
        return {
            "smtp_listener": f"{self.listener.host}:{self.listener.port}",
            "consumer_connected": self.consumer.connected,
            "replies": dict(self.consumer.counts),
        }

    async def __del__(self) -> None:
        await self.listener.drain(DRAIN_SECONDS)
        self.consuming.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.consuming
        await self.consumer.stop()


def build_app(args: dict[str, str]) -> Application:
    return MailGateway.bind()  # type: ignore[attr-defined,no-any-return]
