"""Synthetic demo data for a running stack: players and a plausible history of their play.

    python -m cluster.local.demo [--players 2000] [--days 60] [--seed 7]

Players are registered through `POST /players` (a few also get limits and exclusions through
the API), then their history is published to RabbitMQ as platform events, and the script
waits until the API shows the counters applied. Run it twice with the same seed and nothing
doubles: player ids, event ids and idempotency keys derive from the seed, so the second run
is all replays and duplicates.

Targets: `PITBOSS_API_URL` (default http://127.0.0.1:8000/platform/v1), `PITBOSS_API_KEY`
(default local-only-demo-key), `PITBOSS_RABBITMQ_URL` and the exchange from adapters.settings.

`generate()` is pure (no IO, clock passed in), so tests and benchmarks can call it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import sys
import time
import unicodedata
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time
from typing import Any
from uuid import UUID

DEFAULT_API_URL = "http://127.0.0.1:8000/platform/v1"
DEFAULT_API_KEY = "local-only-demo-key"  # the local stack's demo key; never valid anywhere else
COUNTED = ("deposits_count", "deposits_minor", "withdrawals_count", "withdrawals_minor", "bets_count",
           "bets_minor", "wins_count", "wins_minor", "sessions", "session_seconds")


# ---------------------------------------------------------------------------- the world


@dataclass(frozen=True, slots=True)
class Market:
    country: str
    weight: float
    currency: str
    # Minor units of the currency worth about one euro cent: keeps amounts comparable across markets.
    fx: float
    languages: tuple[tuple[str, float], ...]
    calling_code: str
    methods: tuple[str, ...]
    first_names: tuple[str, ...]
    last_names: tuple[str, ...]


MARKETS: tuple[Market, ...] = (
    Market("DE", 18, "EUR", 1.0, (("de", 0.95), ("en", 0.05)), "49", ("card", "paypal", "sofort", "paysafecard"),
           ("Lukas", "Anna", "Jonas", "Lea", "Felix", "Mia", "Paul", "Sophie"),
           ("Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Wagner", "Becker")),
    Market("GB", 15, "GBP", 0.86, (("en", 1.0),), "44", ("card", "paypal", "open_banking"),
           ("Oliver", "Amelia", "Harry", "Isla", "Jack", "Ava", "George", "Emily"),
           ("Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Davies")),
    Market("BR", 13, "BRL", 5.4, (("pt-BR", 0.97), ("en", 0.03)), "55", ("pix", "boleto", "card"),
           ("Gabriel", "Maria", "Lucas", "Ana", "Pedro", "Júlia", "Mateus", "Beatriz"),
           ("Silva", "Santos", "Oliveira", "Souza", "Lima", "Pereira", "Costa")),
    Market("CA", 12, "CAD", 1.47, (("en", 0.78), ("fr-CA", 0.22)), "1", ("interac", "card", "e_wallet"),
           ("Liam", "Olivia", "Noah", "Emma", "William", "Charlotte", "Félix", "Léa"),
           ("Tremblay", "Martin", "Roy", "Smith", "Brown", "Gagnon", "Wilson")),
    Market("SE", 10, "SEK", 11.5, (("sv", 0.92), ("en", 0.08)), "46", ("trustly", "swish", "card"),
           ("Erik", "Elsa", "Lars", "Alice", "Oskar", "Maja", "Nils", "Astrid"),
           ("Andersson", "Johansson", "Karlsson", "Nilsson", "Eriksson", "Larsson")),
    Market("FI", 8, "EUR", 1.0, (("fi", 0.85), ("sv", 0.1), ("en", 0.05)), "358", ("trustly", "card", "siirto"),
           ("Mikko", "Aino", "Juha", "Eeva", "Antti", "Helmi", "Ville", "Sanna"),
           ("Korhonen", "Virtanen", "Mäkinen", "Nieminen", "Järvinen", "Heikkinen")),
    Market("MT", 6, "EUR", 1.0, (("en", 0.7), ("mt", 0.3)), "356", ("card", "bank_transfer", "e_wallet"),
           ("Luke", "Maria", "Matthew", "Elena", "Jake", "Julia", "Kyle", "Martina"),
           ("Borg", "Camilleri", "Vella", "Farrugia", "Zammit", "Galea", "Grech")),
    Market("NO", 5, "NOK", 11.6, (("nb", 0.93), ("en", 0.07)), "47", ("vipps", "card", "trustly"),
           ("Jakob", "Nora", "Emil", "Ingrid", "Henrik", "Sofie", "Magnus", "Frida"),
           ("Hansen", "Johansen", "Olsen", "Larsen", "Andersen", "Pedersen")),
    Market("IE", 4, "EUR", 1.0, (("en", 1.0),), "353", ("card", "paypal", "open_banking"),
           ("Conor", "Aoife", "Seán", "Niamh", "Cian", "Saoirse", "Darragh", "Ciara"),
           ("Murphy", "Kelly", "O'Sullivan", "Walsh", "Byrne", "Ryan", "O'Brien")),
    Market("NZ", 3, "NZD", 1.8, (("en", 1.0),), "64", ("card", "poli", "e_wallet"),
           ("Jack", "Isla", "Nikau", "Aria", "Leo", "Mia", "Tama", "Ruby"),
           ("Smith", "Wilson", "Williams", "Brown", "Taylor", "Ngata", "Walker")),
    Market("AT", 3, "EUR", 1.0, (("de-AT", 0.9), ("en", 0.1)), "43", ("card", "eps", "paysafecard"),
           ("Maximilian", "Anna", "David", "Laura", "Tobias", "Lena", "Florian", "Hannah"),
           ("Gruber", "Huber", "Bauer", "Wagner", "Pichler", "Steiner", "Moser")),
    Market("MX", 3, "MXN", 18.5, (("es-MX", 0.95), ("en", 0.05)), "52", ("oxxo", "spei", "card"),
           ("Santiago", "Sofía", "Mateo", "Valentina", "Diego", "Camila", "Emiliano", "Regina"),
           ("Hernández", "García", "Martínez", "López", "González", "Rodríguez")),
)

TRAFFIC_SOURCES: tuple[tuple[str, float], ...] = (
    ("affiliate", 0.30), ("seo", 0.24), ("paid_social", 0.15), ("ppc", 0.15), ("direct", 0.09), ("referral", 0.07),
)
DEVICES: tuple[tuple[str, float], ...] = (("mobile", 0.52), ("desktop", 0.30), ("app", 0.12), ("tablet", 0.06))
GAMES: tuple[tuple[str, str, float], ...] = (
    ("slot-golden-reef", "slots", 0.16), ("slot-viking-raid", "slots", 0.14), ("slot-pharaoh-gems", "slots", 0.12),
    ("slot-fruit-fiesta", "slots", 0.10), ("slot-neon-nights", "slots", 0.08), ("slot-dragon-pearls", "slots", 0.08),
    ("jackpot-mega-vault", "jackpot", 0.05), ("live-blackjack-7", "live_casino", 0.07),
    ("live-roulette-lightning", "live_casino", 0.07), ("table-euro-roulette", "table_games", 0.05),
    ("table-baccarat", "table_games", 0.04), ("crash-rocket", "crash", 0.04),
)
# Session starts by UTC hour: evenings dominate (most markets sit in UTC-3 to UTC+3).
HOUR_WEIGHTS: tuple[float, ...] = (5, 4, 3, 2, 1, 1, 1, 1, 2, 2, 3, 3, 4, 4, 4, 5, 6, 7, 8, 9, 10, 10, 9, 7)
RTP = 0.96
WIN_PROBABILITY = 0.3  # hit rate of a spin; the win multiplier's mean makes the RTP


# ---------------------------------------------------------------------------- output types


@dataclass(frozen=True, slots=True)
class DemoPlayer:
    player_id: UUID
    index: int
    signup_at: datetime
    churned: bool
    registration: dict[str, Any]  # the body of POST /players
    limits: dict[str, Any] | None  # the body of PUT /players/{id}/limits
    exclusion: dict[str, Any] | None  # the body of POST /players/{id}/exclusions


@dataclass(frozen=True, slots=True)
class DemoData:
    players: list[DemoPlayer]
    events: list[dict[str, Any]]  # envelopes as JSON-ready dicts, in occurred_at order


# ---------------------------------------------------------------------------- generation


def generate(players: int, days: int, seed: int, now: datetime, brand: str = "demo") -> DemoData:
    """Players and their history up to `now`, deterministic for (players, days, seed, now).

    Each player draws from its own RNG (seeded by seed and index), so player i is the same
    whatever the count. Histories are laid out backwards from the next UTC midnight and cut
    at `now`: a later run on the same day gives the same events plus those that "happened"
    since, with the same ids, so re-running the demo adds nothing twice.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if days < 1 or players < 0:
        raise ValueError("days must be >= 1 and players >= 0")
    now = now.astimezone(UTC)
    anchor = datetime.combine(now.date() + timedelta(days=1), dt_time(0), UTC)
    oldest = now - timedelta(days=days)
    out: list[DemoPlayer] = []
    timed: list[tuple[datetime, int, dict[str, Any]]] = []
    for index in range(players):
        rng = random.Random(f"pitboss-demo:{seed}:{index}")
        player, history = _player(rng, index, anchor, days, brand)
        out.append(player)
        for at, env in history:
            if oldest <= at <= now:  # the future has not happened yet; older is out of the window
                timed.append((at, len(timed), env))
    timed.sort(key=lambda t: (t[0], t[1]))
    return DemoData(out, [env for _, _, env in timed])


def _uuid(rng: random.Random) -> UUID:
    return UUID(int=rng.getrandbits(128), version=4)


def _short_id(rng: random.Random, prefix: str) -> str:
    return f"{prefix}-{rng.getrandbits(64):016x}"


def _pick(rng: random.Random, weighted: Sequence[tuple[Any, ...]]) -> Any:
    return rng.choices(weighted, weights=[w[-1] for w in weighted])[0][0]


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower().replace("'", "")


@dataclass(slots=True)
class _Persona:
    """How one player plays: the draws that make players differ from each other."""

    market: Market
    device: str
    sessions_per_day: float
    deposit_median: float  # minor units
    deposit_sigma: float
    bet: int  # minor units per spin
    spins_mean: float
    depositor: bool


def _persona(rng: random.Random, market: Market) -> _Persona:
    whale = rng.random() < 0.03
    # Deposit sizes are log-normal per player; whales scale by a Pareto draw (a heavy tail).
    median_eur_cents = rng.lognormvariate(math.log(2500), 0.6) * (min(rng.paretovariate(1.3), 40) * 8 if whale else 1)
    deposit_median = median_eur_cents * market.fx
    bet = _round_to(deposit_median * rng.uniform(0.008, 0.03), _unit(market, 10))
    return _Persona(
        market=market,
        device=_pick(rng, DEVICES),
        sessions_per_day=rng.lognormvariate(math.log(0.18), 0.8),
        deposit_median=deposit_median,
        deposit_sigma=rng.uniform(0.4, 0.9),
        bet=max(bet, _unit(market, 10)),
        spins_mean=rng.uniform(4, 12),
        depositor=rng.random() < 0.8,
    )


def _unit(market: Market, eur_cents: float) -> int:
    """A round step in this currency worth about `eur_cents`: 10 -> 0.10 EUR, 1 SEK, ..."""
    raw = eur_cents * market.fx
    step = 10 ** max(0, math.floor(math.log10(raw)))
    return int(max(1, round(raw / step)) * step)


def _round_to(amount: float, step: int) -> int:
    return max(step, round(amount / step) * step)


def _player(rng: random.Random, index: int, anchor: datetime, days: int, brand: str) -> tuple[
        DemoPlayer, list[tuple[datetime, dict[str, Any]]]]:
    """One player and their whole history up to `anchor` (the caller cuts it at the present)."""
    market: Market = rng.choices(MARKETS, weights=[m.weight for m in MARKETS])[0]
    pid = _uuid(rng)
    persona = _persona(rng, market)
    window = timedelta(days=days)
    signup_at = anchor - window * rng.random()
    churned = rng.random() < 0.4
    end = min(anchor, signup_at + timedelta(days=rng.expovariate(1 / 9))) if churned else anchor
    registration = _registration(rng, pid, market)
    history = _history(rng, pid, brand, persona, signup_at, end)
    history += _profile_change(rng, pid, brand, market, signup_at, end)
    limits = _limits(rng, persona) if rng.random() < 0.05 else None
    exclusion = _exclusion(rng) if rng.random() < 0.025 else None
    return DemoPlayer(pid, index, signup_at, churned, registration, limits, exclusion), history


def _registration(rng: random.Random, pid: UUID, market: Market) -> dict[str, Any]:
    first, last = rng.choice(market.first_names), rng.choice(market.last_names)
    # A fixed range, not relative to the clock: a re-run must send the same registration.
    birth = date(1950, 1, 1) + timedelta(days=int(rng.triangular(0, 365 * 56, 365 * 40)))
    body: dict[str, Any] = {
        "player_id": str(pid),
        "currency": market.currency,
        "country": market.country,
        "email": f"{_ascii(first)}.{_ascii(last)}{rng.randrange(1, 999)}@{rng.choice(_DOMAINS)}",
        "first_name": first,
        "last_name": last,
        "birth_date": birth.isoformat(),
        "language": _pick(rng, market.languages),
        "traffic_source": _pick(rng, TRAFFIC_SOURCES),
    }
    if rng.random() < 0.7:
        body["phone"] = f"+{market.calling_code} {rng.randrange(10**8, 10**9)}"
    return body


_DOMAINS = ("example.com", "example.org", "example.net")


class _Stream:
    """One player's events as (occurred_at, envelope)."""

    def __init__(self, rng: random.Random, pid: UUID, brand: str) -> None:
        self.rng = rng
        self.pid = str(pid)
        self.brand = brand
        self.items: list[tuple[datetime, dict[str, Any]]] = []

    def emit(self, at: datetime, type_: str, payload: dict[str, Any]) -> None:
        self.items.append((at, {
            "event_id": str(_uuid(self.rng)),
            "type": type_,
            "occurred_at": at.isoformat(timespec="milliseconds"),
            "player_id": self.pid,
            "brand": self.brand,
            "schema_version": 1,
            "payload": payload,
        }))


@dataclass(slots=True)
class _Wallet:
    currency: str
    balance: int = 0
    deposits: int = 0


def _history(rng: random.Random, pid: UUID, brand: str, persona: _Persona, signup_at: datetime,
             end: datetime) -> list[tuple[datetime, dict[str, Any]]]:
    stream = _Stream(rng, pid, brand)
    wallet = _Wallet(persona.market.currency)
    # The first session (and most first deposits) come within hours of signing up; later
    # sessions arrive as a Poisson process at the player's own rate.
    at = signup_at + timedelta(minutes=rng.expovariate(1 / 90))
    while at < end:
        at = _session(rng, stream, wallet, persona, at)
        at = _next_session(rng, at, persona.sessions_per_day)
    return stream.items


def _next_session(rng: random.Random, after: datetime, per_day: float) -> datetime:
    earliest = after + timedelta(minutes=20)
    candidate = earliest + timedelta(days=rng.expovariate(per_day))
    # Move the start to a likelier hour of the same day (evenings beat nights) unless that
    # would put it before the previous session ended.
    hour = rng.choices(range(24), weights=HOUR_WEIGHTS)[0]
    shifted = candidate.replace(hour=hour, minute=rng.randrange(60), second=rng.randrange(60))
    return shifted if shifted > earliest else candidate


def _session(rng: random.Random, s: _Stream, wallet: _Wallet, p: _Persona, start: datetime) -> datetime:
    session_id = _short_id(rng, "ses")
    device = p.device if rng.random() < 0.85 else _pick(rng, DEVICES)
    s.emit(start, "session.started", {"session_id": session_id, "device": device})
    at = start + timedelta(seconds=rng.uniform(5, 60))
    if wallet.balance < p.bet and p.depositor:
        at = _deposit(rng, s, wallet, p, at)
    game, category = _game(rng)
    spins = max(1, int(rng.expovariate(1 / p.spins_mean)))
    for _ in range(spins):
        if wallet.balance < p.bet:
            # Out of money: some reload within the session, the rest leave.
            if not p.depositor or rng.random() > 0.35:
                break
            at = _deposit(rng, s, wallet, p, at)
            if wallet.balance < p.bet:
                break
        at = _spin(rng, s, wallet, p.bet, game, category, at, session_id)
        if rng.random() < 0.05:
            game, category = _game(rng)
    at += timedelta(seconds=rng.uniform(3, 120))
    s.emit(at, "session.ended", {"session_id": session_id, "duration_s": int((at - start).total_seconds())})
    if wallet.balance > 3 * p.deposit_median and rng.random() < 0.6:
        _withdraw(rng, s, wallet, at)
    return at


def _game(rng: random.Random) -> tuple[str, str]:
    game_id, category, _ = rng.choices(GAMES, weights=[g[2] for g in GAMES])[0]
    return game_id, category


def _spin(rng: random.Random, s: _Stream, wallet: _Wallet, bet: int, game: str, category: str,
          at: datetime, session_id: str) -> datetime:
    bet_id = _short_id(rng, "bet")
    currency = wallet.currency
    s.emit(at, "game.bet", {"bet_id": bet_id, "amount_minor": bet, "currency": currency, "game_id": game,
                            "game_category": category, "session_id": session_id})
    wallet.balance -= bet
    if rng.random() < WIN_PROBABILITY:
        # Exponential multipliers: mostly small wins, now and then a big one; mean gives the RTP.
        win = int(bet * rng.expovariate(WIN_PROBABILITY / RTP))
        if win > 0:
            s.emit(at + timedelta(milliseconds=rng.randrange(200, 1500)), "game.win",
                   {"bet_id": bet_id, "amount_minor": win, "currency": currency, "game_id": game,
                    "game_category": category})
            wallet.balance += win
    return at + timedelta(seconds=rng.uniform(3, 14))


def _deposit(rng: random.Random, s: _Stream, wallet: _Wallet, p: _Persona, at: datetime) -> datetime:
    amount = _round_to(rng.lognormvariate(math.log(p.deposit_median), p.deposit_sigma), _unit(p.market, 500))
    method = rng.choice(p.market.methods)
    tx_id = _short_id(rng, "dep")
    base = {"tx_id": tx_id, "amount_minor": amount, "currency": p.market.currency, "method": method}
    s.emit(at, "payment.deposit", {**base, "status": "requested"})
    at += timedelta(seconds=rng.uniform(2, 40))
    # First deposits fail more often (new cards, 3-D Secure), as cashier data usually shows.
    fail = 0.15 if wallet.deposits == 0 else 0.07
    roll = rng.random()
    status = "failed" if roll < fail else "cancelled" if roll < fail + 0.03 else "completed"
    s.emit(at, "payment.deposit", {**base, "status": status})
    if status == "completed":
        wallet.balance += amount
        wallet.deposits += 1
    return at + timedelta(seconds=rng.uniform(5, 30))


def _withdraw(rng: random.Random, s: _Stream, wallet: _Wallet, at: datetime) -> None:
    amount = _round_to(wallet.balance * rng.uniform(0.5, 1.0), 100)
    if amount > wallet.balance:
        return
    base = {"tx_id": _short_id(rng, "wd"), "amount_minor": amount, "currency": wallet.currency}
    at += timedelta(seconds=rng.uniform(10, 300))
    s.emit(at, "payment.withdrawal", {**base, "status": "requested"})
    roll = rng.random()
    if roll < 0.04:
        s.emit(at + timedelta(minutes=rng.uniform(5, 600)), "payment.withdrawal", {**base, "status": "cancelled"})
        return
    wallet.balance -= amount  # held by the cashier from the request on
    if roll < 0.10:
        s.emit(at + timedelta(hours=rng.uniform(1, 48)), "payment.withdrawal", {**base, "status": "rejected"})
        wallet.balance += amount
        return
    approved = at + timedelta(hours=rng.uniform(0.5, 30))
    s.emit(approved, "payment.withdrawal", {**base, "status": "approved"})
    s.emit(approved + timedelta(hours=rng.uniform(1, 72)), "payment.withdrawal", {**base, "status": "paid"})


def _profile_change(rng: random.Random, pid: UUID, brand: str, market: Market, start: datetime,
                    end: datetime) -> list[tuple[datetime, dict[str, Any]]]:
    if rng.random() >= 0.05 or end <= start:
        return []
    s = _Stream(rng, pid, brand)
    change: dict[str, Any] = (
        {"phone": f"+{market.calling_code} {rng.randrange(10**8, 10**9)}"} if rng.random() < 0.6
        else {"language": "en"}
    )
    s.emit(start + (end - start) * rng.random(), "player.updated", change)
    return s.items


def _limits(rng: random.Random, p: _Persona) -> dict[str, Any]:
    deposit_day = _round_to(p.deposit_median * rng.uniform(1.5, 6), _unit(p.market, 1000))
    limits: list[dict[str, Any]] = [{"kind": "deposit", "period": "day", "value": deposit_day}]
    if rng.random() < 0.6:
        limits.append({"kind": "deposit", "period": "month", "value": deposit_day * rng.randrange(8, 20)})
    if rng.random() < 0.3:
        limits.append({"kind": "loss", "period": "week", "value": deposit_day * rng.randrange(2, 5)})
    if rng.random() < 0.25:
        limits.append({"kind": "session_time", "period": "day", "value": rng.choice((60, 90, 120, 180, 240))})
    return {"limits": limits}


def _exclusion(rng: random.Random) -> dict[str, Any]:
    roll = rng.random()
    if roll < 0.65:
        return {"kind": "timeout", "duration_hours": rng.choice((24, 72, 168, 720))}
    if roll < 0.9:
        return {"kind": "self_exclusion", "duration_months": rng.choice((6, 12, 60))}
    return {"kind": "self_exclusion", "indefinite": True}


def expected_lifetime(events: Iterable[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per player id, the lifetime counters the API should show once every event is applied."""
    out: dict[str, dict[str, int]] = {}
    for env in events:
        totals = out.setdefault(env["player_id"], dict.fromkeys(COUNTED, 0))
        p, kind = env["payload"], env["type"]
        if kind == "session.started":
            totals["sessions"] += 1
        elif kind == "session.ended":
            totals["session_seconds"] += p.get("duration_s") or 0
        elif kind == "payment.deposit" and p["status"] == "completed":
            totals["deposits_count"] += 1
            totals["deposits_minor"] += p["amount_minor"]
        elif kind == "payment.withdrawal" and p["status"] == "paid":
            totals["withdrawals_count"] += 1
            totals["withdrawals_minor"] += p["amount_minor"]
        elif kind == "game.bet":
            totals["bets_count"] += 1
            totals["bets_minor"] += p["amount_minor"]
        elif kind == "game.win":
            totals["wins_count"] += 1
            totals["wins_minor"] += p["amount_minor"]
    return out


# ---------------------------------------------------------------------------- talking to the stack


@dataclass(frozen=True, slots=True)
class Target:
    api_url: str
    api_key: str
    rabbitmq_url: str
    exchange: str


class DemoError(RuntimeError):
    pass


class Api:
    """The platform API over aiohttp (on a 2-core box httpx costs ~10x the client CPU)."""

    def __init__(self, base_url: str, api_key: str, concurrency: int) -> None:
        import aiohttp

        self.base = base_url.rstrip("/")
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency),
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=aiohttp.ClientTimeout(total=30),
        )

    async def close(self) -> None:
        await self.session.close()

    async def send(self, method: str, path: str, body: dict[str, Any] | None = None,
                   headers: dict[str, str] | None = None, attempts: int = 6) -> Any:
        """One API call, retried on 503 and connection errors (every call here is idempotent)."""
        import aiohttp

        delay = 0.25
        for attempt in range(attempts):
            try:
                async with self.session.request(method, self.base + path, json=body, headers=headers) as resp:
                    text = await resp.text()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                if attempt == attempts - 1:
                    raise DemoError(f"{method} {path}: {exc!r}") from exc
            else:
                if status < 400:
                    return json.loads(text)
                if status not in (429, 502, 503, 504) or attempt == attempts - 1:
                    raise DemoError(f"{method} {path} -> {status}: {text[:300]}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 4.0)
        raise AssertionError("unreachable")


async def _bounded(jobs: Iterable[Any], concurrency: int) -> list[Any]:
    """Await coroutines with at most `concurrency` in flight, results in input order."""
    gate = asyncio.Semaphore(concurrency)

    async def one(job: Any) -> Any:
        async with gate:
            return await job

    return await asyncio.gather(*(one(j) for j in jobs))


async def register(api: Api, players: Sequence[DemoPlayer], concurrency: int) -> str:
    """Register every player; returns the brand the API key belongs to."""
    answers = await _bounded((api.send("POST", "/players", p.registration) for p in players), concurrency)
    brands = {a["brand"] for a in answers}
    return brands.pop() if len(brands) == 1 else ",".join(sorted(brands))


async def apply_controls(api: Api, players: Sequence[DemoPlayer], concurrency: int) -> tuple[int, int]:
    """Limits and exclusions, with idempotency keys derived from the player so re-runs replay."""
    jobs = []
    for p in players:
        if p.limits is not None:
            jobs.append(api.send("PUT", f"/players/{p.player_id}/limits", p.limits,
                                 {"Idempotency-Key": f"demo-limits-{p.player_id}"}))
        if p.exclusion is not None:
            jobs.append(api.send("POST", f"/players/{p.player_id}/exclusions", p.exclusion,
                                 {"Idempotency-Key": f"demo-exclusion-{p.player_id}"}))
    await _bounded(jobs, concurrency)
    return sum(p.limits is not None for p in players), sum(p.exclusion is not None for p in players)


async def publish(target: Target, events: Sequence[dict[str, Any]], window: int = 1000, channels: int = 4) -> float:
    """Publish persistent messages with publisher confirms; returns seconds taken.

    Each player's events go through one channel, in order; a few channels with a window of
    confirms in flight each keep the broker busy without unbounded memory. The queue and its
    bindings are declared first so nothing published before the consumer starts is lost.
    """
    import aio_pika

    from adapters import rabbit
    from adapters.settings import Settings

    settings = Settings(rabbitmq_url=target.rabbitmq_url, events_exchange=target.exchange)
    lanes: list[list[dict[str, Any]]] = [[] for _ in range(channels)]
    for env in events:
        lanes[zlib.crc32(env["player_id"].encode()) % channels].append(env)
    started = time.perf_counter()
    connection = await aio_pika.connect_robust(target.rabbitmq_url, timeout=10)
    async with connection:

        async def lane(items: list[dict[str, Any]]) -> None:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            exchange, _ = await rabbit.declare(channel, settings)
            for start in range(0, len(items), window):
                await asyncio.gather(*(
                    rabbit.publish(exchange, env["type"], json.dumps(env, separators=(",", ":")).encode(),
                                   message_id=env["event_id"])
                    for env in items[start : start + window]
                ))

        await asyncio.gather(*(lane(items) for items in lanes))
    return time.perf_counter() - started


async def wait_applied(api: Api, expected: dict[str, dict[str, int]], sample: Sequence[str],
                       max_wait: float, concurrency: int = 16) -> tuple[bool, float, int]:
    """Poll the sampled players until their lifetime counters equal what was published.

    Returns (all caught up, seconds waited, players caught up).
    """
    started = time.perf_counter()
    pending = list(sample)
    while True:
        views = await _bounded((api.send("GET", f"/players/{pid}") for pid in pending), concurrency)
        pending = [pid for pid, view in zip(pending, views, strict=True)
                   if any(view["lifetime"].get(k, 0) != v for k, v in expected[pid].items())]
        waited = time.perf_counter() - started
        if not pending or waited > max_wait:
            return not pending, waited, len(sample) - len(pending)
        print(f"  waiting: {len(sample) - len(pending)}/{len(sample)} sampled players caught up "
              f"({waited:.0f}s)", flush=True)
        await asyncio.sleep(2.0)


# ---------------------------------------------------------------------------- summary


def summary(data: DemoData) -> list[str]:
    types = Counter(e["type"] for e in data.events)
    countries = Counter(p.registration["country"] for p in data.players)
    sources = Counter(p.registration["traffic_source"] for p in data.players)
    money: dict[str, Counter[str]] = {}
    for env in data.events:
        p = env["payload"]
        c = money.setdefault(p.get("currency", ""), Counter())
        if env["type"] == "payment.deposit" and p["status"] == "completed":
            c["deposits"] += p["amount_minor"]
        elif env["type"] == "game.bet":
            c["bets"] += p["amount_minor"]
        elif env["type"] == "game.win":
            c["wins"] += p["amount_minor"]
        elif env["type"] == "payment.withdrawal" and p["status"] == "paid":
            c["withdrawals"] += p["amount_minor"]
    depositors = {e["player_id"] for e in data.events
                  if e["type"] == "payment.deposit" and e["payload"]["status"] == "completed"}
    n = max(1, len(data.players))
    lines = [
        f"players        {len(data.players)}  (depositors {len(depositors)}, "
        f"churned {sum(p.churned for p in data.players)}, "
        f"limits {sum(p.limits is not None for p in data.players)}, "
        f"exclusions {sum(p.exclusion is not None for p in data.players)})",
        "countries      " + ", ".join(f"{k} {v}" for k, v in countries.most_common()),
        "traffic        " + ", ".join(f"{k} {100 * v / n:.0f}%" for k, v in sources.most_common()),
        f"events         {len(data.events)}: " + ", ".join(f"{k} {v}" for k, v in sorted(types.items())),
        "money (major units, by currency):",
        f"  {'cur':<4} {'deposits':>14} {'withdrawals':>14} {'bets':>14} {'wins':>14} {'GGR':>12} {'RTP':>6}",
    ]
    for cur, c in sorted(money.items()):
        if not cur:
            continue
        rtp = c["wins"] / c["bets"] if c["bets"] else 0.0
        lines.append(f"  {cur:<4} {c['deposits'] / 100:>14,.2f} {c['withdrawals'] / 100:>14,.2f} "
                     f"{c['bets'] / 100:>14,.2f} {c['wins'] / 100:>14,.2f} "
                     f"{(c['bets'] - c['wins']) / 100:>12,.2f} {rtp:>6.1%}")
    return lines


# ---------------------------------------------------------------------------- command line


def _instant(text: str) -> datetime:
    at = datetime.fromisoformat(text)
    if at.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone (e.g. 2026-11-22T09:27:00+00:00)")
    return at.astimezone(UTC)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    env = os.environ
    parser = argparse.ArgumentParser(prog="python -m cluster.local.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--players", type=int, default=2000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--brand", default=env.get("PITBOSS_DEMO_BRAND", "demo"),
                        help="brand written into the envelopes; must be the API key's brand")
    parser.add_argument("--api-url", default=env.get("PITBOSS_API_URL", DEFAULT_API_URL))
    parser.add_argument("--api-key", default=env.get("PITBOSS_API_KEY", DEFAULT_API_KEY))
    parser.add_argument("--rabbitmq-url", default=env.get("PITBOSS_RABBITMQ_URL",
                                                          "amqp://guest:guest@127.0.0.1:5672/"))
    parser.add_argument("--exchange", default=env.get("PITBOSS_EVENTS_EXCHANGE", "pitboss.events"))
    parser.add_argument("--concurrency", type=int, default=32, help="API calls in flight")
    parser.add_argument("--sample", type=int, default=200, help="players polled to confirm the events landed")
    parser.add_argument("--wait-timeout", type=float, default=600.0, help="seconds to wait for the counters")
    parser.add_argument("--until", type=_instant, default=None,
                        help="the history ends at this instant (ISO 8601 with a zone; default now). The same "
                             "seed and --until give the same events: the local stack passes the instant of its "
                             "first demo run, because a history generated on another day reuses the ids")
    parser.add_argument("--dry-run", action="store_true", help="generate and print the summary only")
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> int:
    data = generate(args.players, args.days, args.seed, args.until or datetime.now(UTC), args.brand)
    print("\n".join(summary(data)), flush=True)
    if args.dry_run:
        return 0
    target = Target(args.api_url.rstrip("/"), args.api_key, args.rabbitmq_url, args.exchange)
    api = Api(target.api_url, target.api_key, args.concurrency)
    try:
        t0 = time.perf_counter()
        brand = await register(api, data.players, args.concurrency)
        if brand != args.brand:
            raise DemoError(f"the API key belongs to brand {brand!r}, the events say {args.brand!r}: pass --brand")
        n_limits, n_excl = await apply_controls(api, data.players, args.concurrency)
        t1 = time.perf_counter()
        print(f"registered     {len(data.players)} players in {t1 - t0:.1f}s "
              f"({len(data.players) / max(t1 - t0, 1e-9):.0f}/s); limits {n_limits}, exclusions {n_excl}", flush=True)
        expected = expected_lifetime(data.events)
        ids = sorted(expected)
        sample = random.Random(args.seed).sample(ids, min(args.sample, len(ids)))
        if (await wait_applied(api, expected, sample, 0.0))[0]:
            # Publishing again would be all duplicates: minutes of the box's CPU for nothing.
            print(f"already loaded {len(sample)}/{len(sample)} sampled players already show this history; "
                  "not published again", flush=True)
            return 0
        seconds = await publish(target, data.events)
        print(f"published      {len(data.events)} events in {seconds:.1f}s "
              f"({len(data.events) / max(seconds, 1e-9):.0f}/s) to {target.exchange}", flush=True)
        ok, waited, caught_up = await wait_applied(api, expected, sample, args.wait_timeout)
    finally:
        await api.close()
    if not ok:
        print(f"NOT APPLIED    only {caught_up}/{len(sample)} sampled players show their events after "
              f"{waited:.0f}s; check the consumer and {target.exchange}'s dead-letter queue", flush=True)
        return 1
    print(f"applied        {len(sample)}/{len(sample)} sampled players show every event "
          f"({waited:.1f}s after publishing ended)", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(run(args))
    except DemoError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
