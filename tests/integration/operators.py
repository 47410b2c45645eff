"""Operators for tests against the deployed back office: created through the identity service,
then logged in over HTTP exactly as a person would (password, TOTP enrolment, code)."""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import pyotp
import redis.asyncio as aioredis

from adapters.cassandra.session import connect
from adapters.settings import Settings
from schemas.operators import OperatorCreate
from serve_apps.backoffice.identity import IdentityService

BASE_URL = os.environ.get("PITBOSS_BASE_URL", "http://127.0.0.1:8000")
ADMIN = f"{BASE_URL}/admin/v1"
DASHBOARD = f"{BASE_URL}/dashboard"
ROLES = (
    "support_agent",
    "payments_operator",
    "compliance_officer",
    "marketer",
    "analyst",
    "vip_manager",
    "supervisor",
    "admin",
)


@dataclass
class LoggedIn:
    """An operator with a full session: `client` sends the cookie and the CSRF header."""

    operator_id: str
    username: str
    password: str
    totp_secret: str
    csrf: str
    client: httpx.AsyncClient
    recovery_codes: list[str] = field(default_factory=list)
    last_code: str | None = None  # the TOTP code used last: the next login needs a later one

    async def aclose(self) -> None:
        await self.client.aclose()


class Operators:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.cluster, self.session = connect(settings, settings.cassandra_keyspace)
        self.redis = aioredis.from_url(settings.redis_url)
        self.identity = IdentityService(settings, self.session, self.redis)
        self._clients: list[httpx.AsyncClient] = []

    async def create(
        self, roles: list[str], brands: list[str] | None = None, jurisdictions: list[str] | None = None
    ) -> tuple[str, str, str]:
        username = f"t-{roles[0][:12].replace('_', '-')}-{uuid.uuid4().hex[:10]}"
        created, password = await self.identity.create_operator(
            OperatorCreate(
                username=username,
                display_name=username,
                email=f"{username}@ops.example.test",
                roles=roles,
                brands=brands if brands is not None else ["*"],
                jurisdictions=jurisdictions if jurisdictions is not None else ["*"],
            )
        )
        return str(created.operator_id), username, password

    def client(self) -> httpx.AsyncClient:
        c = session_client()
        self._clients.append(c)
        return c

    async def login(
        self, roles: list[str], brands: list[str] | None = None, jurisdictions: list[str] | None = None
    ) -> LoggedIn:
        operator_id, username, password = await self.create(roles, brands, jurisdictions)
        client = self.client()
        r = await client.post(f"{ADMIN}/auth/login", json={"username": username, "password": password})
        assert r.status_code == 200, r.text
        csrf = r.json()["csrf_token"]
        assert r.json()["stage"] == "enrol"
        r = await client.post(f"{ADMIN}/auth/2fa/enrol", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200, r.text
        secret = r.json()["secret"]
        code = pyotp.TOTP(secret).now()
        r = await client.post(f"{ADMIN}/auth/2fa/enrol/confirm", json={"code": code}, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200, r.text
        body = r.json()
        client.headers["X-CSRF-Token"] = body["csrf_token"]
        assert body["operator"]["must_change_password"] is True
        own = f"{password}-own"
        r = await client.post(f"{ADMIN}/auth/password", json={"old_password": password, "new_password": own})
        assert r.status_code == 204, r.text
        return LoggedIn(
            operator_id, username, own, secret, body["csrf_token"], client, body.get("recovery_codes", []), code
        )

    async def aclose(self) -> None:
        for c in self._clients:
            await c.aclose()
        await self.redis.aclose()
        self.cluster.shutdown()


async def register_player(country: str = "MT", email: str | None = None) -> tuple[str, str]:
    """A demo-brand player with personal data, through the platform API; (player id, email)."""
    from tests.integration.conftest import API_KEY, API_URL

    player_id, email = str(uuid.uuid4()), email or f"p.{uuid.uuid4().hex[:8]}@players.example.test"
    async with httpx.AsyncClient(base_url=API_URL, headers={"Authorization": f"Bearer {API_KEY}"}) as api:
        r = await api.post(
            "/players",
            json={
                "player_id": player_id,
                "currency": "EUR",
                "country": country,
                "email": email,
                "phone": "+35699123456",
                "first_name": "Maria",
                "last_name": "Borg",
                "birth_date": "1990-05-17",
            },
        )
        assert r.status_code == 201, r.text
    return player_id, email


async def new_ticket(client: httpx.AsyncClient, subject: str, body: str = "Please help", *, channel: str = "web",
                     player_id: str | None = None, language: str = "en") -> dict[str, Any]:
    """A demo-brand payments ticket created over HTTP by `client` (a fresh player unless one is
    given); its public form."""
    if player_id is None:
        player_id, _ = await register_player()
    r = await client.post(f"{BASE_URL}/helpdesk/v1/tickets", json={
        "ticket_id": str(uuid.uuid4()), "player_id": player_id, "brand": "demo", "channel": channel,
        "category": "payments", "subject": subject, "body": body, "language": language})
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


def session_client(**kwargs: Any) -> httpx.AsyncClient:
    """A client that keeps the session cookie like a browser does on http://127.0.0.1 (httpx
    itself never sends a Secure cookie over plain http)."""
    client = httpx.AsyncClient(timeout=30, follow_redirects=False, **kwargs)

    async def keep(response: httpx.Response) -> None:
        for header in response.headers.get_list("set-cookie"):
            name, _, rest = header.partition("=")
            value = rest.split(";", 1)[0]
            if "session" in name:
                if value and "Max-Age=0" not in header:
                    client.headers["cookie"] = f"{name}={value}"
                else:
                    client.headers.pop("cookie", None)

    client.event_hooks["response"].append(keep)
    return client


def session_cookie(client: httpx.AsyncClient) -> tuple[str, str]:
    name, _, value = client.headers["cookie"].partition("=")
    return name, value


def next_code(secret: str, after: str | None = None) -> str:
    """A TOTP code different from `after` (a code is accepted once): waits for the next step."""
    totp = pyotp.TOTP(secret)
    code = totp.now()
    while code == after:
        time.sleep(0.5)
        code = totp.now()
    return code


def problem(r: httpx.Response) -> dict[str, Any]:
    assert r.headers.get("content-type", "").startswith("application/problem+json"), r.text
    body: dict[str, Any] = r.json()
    return body
