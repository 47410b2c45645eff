"""Live chat delivery: player -> agent latency with many chats open at once.

Registers --chats players, opens a chat for each (POST /helpdesk/v1/chat/sessions), connects one
player socket per chat and one socket per support agent (--chats-per-agent chats each, joined
with `join` frames), then for --seconds every player sends a line at
a steady rate (--rate lines/s over all chats, spread evenly, start times staggered). Measures, on
one clock in this process: player send -> the agent socket receives the line (delivery: stored in
Cassandra, published on Redis, pushed by the replica), and player send -> the player's ack.
Afterwards it waits for every line to be copied into its ticket and reports how long that took.

    python -m benchmarks chat
    python -m benchmarks.chat --chats 200 --rate 100 --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import httpx
import pyotp
import redis.asyncio as aioredis
import uvloop
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from adapters.cassandra.session import connect as cassandra
from adapters.cassandra.tickets import TicketStore
from adapters.settings import Settings
from benchmarks.common import Api, Report, Target, host_note, ms, percentile, register_players, say
from schemas.operators import OperatorCreate
from serve_apps.backoffice.identity import IdentityService

TARGET_P99_MS = 100.0


@dataclass(frozen=True, slots=True)
class ChatOptions:
    chats: int = 200
    chats_per_agent: int = 10
    rate: float = 100.0  # lines per second over all chats
    seconds: float = 30.0


def _base(target: Target) -> str:
    return target.api_url.split("/platform/v1")[0]


async def _agent_cookie(base: str, settings: Settings, roles: Sequence[str] = ("support_agent",)) -> tuple[str, str]:
    """A fresh operator (a support agent unless `roles` says otherwise) logged in over HTTP (password,
    TOTP enrolment, own password): (cookie, id)."""
    cluster, session = cassandra(settings, settings.cassandra_keyspace)
    redis = aioredis.from_url(settings.redis_url)
    try:
        identity = IdentityService(settings, session, redis)
        name = f"bench-chat-{uuid.uuid4().hex[:8]}"
        op, password = await identity.create_operator(OperatorCreate(
            username=name, display_name=name, email=f"{name}@ops.example.test", roles=list(roles),
            brands=["*"], jurisdictions=["*"]))
    finally:
        await redis.aclose()
        cluster.shutdown()
    admin = f"{base}/admin/v1"
    async with httpx.AsyncClient(timeout=30) as client:
        cookie = ""

        async def post(path: str, body: Any = None, csrf: str = "") -> dict[str, Any]:
            nonlocal cookie
            headers = {"Cookie": cookie, "X-CSRF-Token": csrf} if cookie else {}
            r = await client.post(admin + path, json=body, headers=headers)
            r.raise_for_status()
            for header in r.headers.get_list("set-cookie"):
                if "session" in header.split("=", 1)[0]:
                    cookie = header.split(";", 1)[0]
            return r.json() if r.content else {}

        csrf = (await post("/auth/login", {"username": name, "password": password}))["csrf_token"]
        secret = (await post("/auth/2fa/enrol", csrf=csrf))["secret"]
        csrf = (await post("/auth/2fa/enrol/confirm", {"code": pyotp.TOTP(secret).now()}, csrf))["csrf_token"]
        await post("/auth/password", {"old_password": password, "new_password": password + "-own"}, csrf)
    return cookie, str(op.operator_id)


async def _frames(ws: ClientConnection, on: Any) -> None:
    async for raw in ws:
        on(json.loads(raw))


async def _loop_lag(lags: list[float], tick: float = 0.01) -> None:
    """How late this process's own event loop wakes up: the part of a delivery time that is the
    client's, not the server's (both ends are timed here)."""
    while True:
        at = time.perf_counter()
        await asyncio.sleep(tick)
        lags.append(time.perf_counter() - at - tick)


async def _copied(settings: Settings, expected: dict[str, int], deadline: float) -> int:
    """Chats whose ticket holds all their lines, polling until all do or the deadline passes."""
    cluster, session = cassandra(settings, settings.cassandra_keyspace)
    store = await asyncio.to_thread(TicketStore, session)
    try:
        pending = dict(expected)
        while pending and time.monotonic() < deadline:
            for tid in list(pending):
                if len((await store.get(UUID(tid))).messages) >= pending[tid]:
                    del pending[tid]
            if pending:
                await asyncio.sleep(0.5)
        return len(expected) - len(pending)
    finally:
        cluster.shutdown()


async def run(target: Target, opts: ChatOptions) -> Report:
    base, settings = _base(target), Settings()
    ws_base = base.replace("http", "ws", 1) + "/helpdesk/v1"
    async with Api(target) as api:
        players, _ = await register_players(api, opts.chats)
    # One agent per socket: an agent's chats go to every socket of theirs, so sockets of one agent
    # would each receive the others' chats too.
    agents = [await _agent_cookie(base, settings) for _ in range(0, opts.chats, opts.chats_per_agent)]
    say(f"{len(agents)} agents logged in; opening {opts.chats} chats")
    chats: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=60, headers={"Authorization": f"Bearer {target.api_key}"},
                                 limits=httpx.Limits(max_connections=32)) as client:
        gate = asyncio.Semaphore(32)

        async def open_one(pid: str) -> dict[str, Any]:
            body = {"player_id": pid, "chat_id": str(uuid.uuid4()), "message": "hello"}
            async with gate:
                for attempt in range(6):  # a 503 is retried with the same chat_id (idempotent)
                    r = await client.post(f"{base}/helpdesk/v1/chat/sessions", json=body)
                    if r.status_code != 503:
                        break
                    await asyncio.sleep(0.5 * 2**attempt)
                r.raise_for_status()
                return dict(r.json())

        chats = list(await asyncio.gather(*(open_one(p) for p in players)))

    sent: dict[str, float] = {}
    delivered: list[float] = []
    acked: list[float] = []
    lines_of: dict[str, int] = {c["ticket_id"]: 1 for c in chats}
    errors: list[str] = []
    interrupted: list[str] = []
    repeats: list[str] = []
    sent_at: dict[str, float] = {}
    lags: list[float] = []

    def on_agent(frame: dict[str, Any]) -> None:
        if frame.get("type") == "message" and frame.get("author_kind") == "player":
            at = sent.pop(frame["client_id"], None)  # the first delivery counts; a repeat would be a bug
            if at is not None:
                delivered.append(time.perf_counter() - at)
            else:
                repeats.append(frame["client_id"])
        elif frame.get("type") == "error":
            errors.append(str(frame.get("detail")))

    def on_player(frame: dict[str, Any]) -> None:
        if frame.get("type") == "ack":
            at = sent_at.get(frame["client_id"])
            if at is not None:
                acked.append(time.perf_counter() - at)
        elif frame.get("type") == "error":
            errors.append(str(frame.get("detail")))

    agent_sockets: list[ClientConnection] = []
    player_sockets: list[ClientConnection] = []
    readers: list[asyncio.Task[None]] = []
    try:
        for n, i in enumerate(range(0, len(chats), opts.chats_per_agent)):
            ws = await connect(f"{ws_base}/chat/agent", additional_headers={"Cookie": agents[n][0]},
                               origin=base, open_timeout=60, max_queue=None)  # type: ignore[arg-type]
            agent_sockets.append(ws)
            for c in chats[i:i + opts.chats_per_agent]:
                await ws.send(json.dumps({"type": "join", "ticket_id": c["ticket_id"], "after": 1}))
            readers.append(asyncio.create_task(_frames(ws, on_agent)))
        for c in chats:
            ws = await connect(f"{ws_base}/chat/player?token={c['token']}&after=1", open_timeout=60, max_queue=None)
            player_sockets.append(ws)
            readers.append(asyncio.create_task(_frames(ws, on_player)))
        say(f"{len(player_sockets)} player, {len(agent_sockets)} agent sockets open; sending {opts.seconds:.0f}s")
        await asyncio.sleep(2.0)  # joins answered

        interval = len(chats) / opts.rate  # each chat's period
        started = time.perf_counter()

        async def talk(i: int, ws: ClientConnection, tid: str) -> None:
            n = 0
            await asyncio.sleep(interval * i / len(chats))
            while time.perf_counter() - started < opts.seconds and not interrupted:
                client_id = str(uuid.uuid4())
                sent[client_id] = sent_at[client_id] = time.perf_counter()
                try:
                    await ws.send(json.dumps({"type": "message", "client_id": client_id,
                                              "body": f"line {n} of chat {i}"}))
                except ConnectionClosed as exc:  # a redeploy of the stack (1012): the figures would be noise
                    del sent[client_id], sent_at[client_id]
                    interrupted.append(str(exc))
                    return
                lines_of[tid] += 1
                n += 1
                due = started + interval * i / len(chats) + n * interval
                await asyncio.sleep(max(0.0, due - time.perf_counter()))

        lag = asyncio.create_task(_loop_lag(lags))
        await asyncio.gather(*(talk(i, ws, c["ticket_id"]) for i, (ws, c) in enumerate(zip(player_sockets, chats,
                                                                                             strict=True))))
        elapsed = time.perf_counter() - started
        lag.cancel()
        say(f"sent {len(sent_at)} lines in {elapsed:.0f}s")
        await asyncio.sleep(3.0)  # the last deliveries
    finally:
        for t in readers:
            t.cancel()
        for ws in [*agent_sockets, *player_sockets]:
            await ws.close()
    copy_started = time.monotonic()
    copied = await _copied(settings, lines_of, copy_started + 120)
    copy_seconds = time.monotonic() - copy_started

    total = len(sent_at)
    delivered.sort()  # percentile() reads a sorted sequence
    acked.sort()
    report = Report("chat", f"{opts.chats} open chats ({opts.chats} player + {len(agent_sockets)} agent sockets), "
                            f"{total} lines at {total / elapsed:.0f}/s over {elapsed:.0f}s")
    if delivered:
        report.add("delivery player->agent p50", ms(percentile(delivered, 50)))
        report.add("delivery player->agent p95", ms(percentile(delivered, 95)))
        p99 = percentile(delivered, 99)
        report.add("delivery player->agent p99", ms(p99), f"<= {TARGET_P99_MS:.0f} ms", p99 * 1000 <= TARGET_P99_MS)
        report.add("delivery max", ms(max(delivered)))
    if acked:
        report.add("ack (stored) p50 / p99", f"{ms(percentile(acked, 50))} / {ms(percentile(acked, 99))}")
    if lags:
        lags.sort()
        report.add("client's own loop lag p50 / p99", f"{ms(percentile(lags, 50))} / {ms(percentile(lags, 99))}")
    report.add("lines delivered / sent", f"{len(delivered)} / {total}", "all", len(delivered) == total)
    report.add("lines delivered twice to an agent", str(len(repeats)), "0", not repeats)
    report.add("errors", str(len(errors)), "0", not errors)
    report.add("tickets with every line copied", f"{copied} / {len(lines_of)} after {copy_seconds:.1f}s")
    report.notes.append("delivery = player's send until the agent's socket receives the line: stored in Cassandra "
                        "(chat_lines), published on Redis, pushed by the helpdesk replica; one client process "
                        "times both ends on one clock, so its own event-loop delay is included")
    report.notes.append("copying into the ticket (one ticket commit per chat per copy, at most "
                        "PITBOSS_CHAT_COPIES_PER_SECOND a second per worker replica) runs in the help-desk worker, "
                        "off the delivery path and out of the sockets' process")
    if errors:
        report.notes.append(f"first error: {errors[0]}")
    if interrupted:
        report.notes.append(f"INTERRUPTED after {elapsed:.0f}s, figures are partial: {interrupted[0]}")
    report.notes.append(host_note())
    return report


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.chat", description=__doc__.split("\n")[0] if __doc__ else "")
    p.add_argument("--chats", type=int, default=200)
    p.add_argument("--chats-per-agent", type=int, default=10)
    p.add_argument("--rate", type=float, default=100.0, help="lines per second over all chats")
    p.add_argument("--seconds", type=float, default=30.0)
    a = p.parse_args(argv)
    # uvloop: the client shares the box with the stack, and its own loop delay counts in every figure.
    report = uvloop.run(run(Target.from_env(), ChatOptions(a.chats, a.chats_per_agent, a.rate, a.seconds)))
    print(report.render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
