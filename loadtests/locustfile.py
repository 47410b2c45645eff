"""Load test of the platform API, through its public HTTP interface only.

    .venv/bin/locust -f loadtests/locustfile.py --headless -u 32 -r 8 -t 60s \\
        --host http://127.0.0.1:8000/platform/v1

Without `--host` the API is `PITBOSS_API_URL` (default http://127.0.0.1:8000/platform/v1); the
key is `PITBOSS_API_KEY` (default local-only-demo-key, the local stack's demo key).

Each simulated platform registers a handful of players when it starts: ordinary ones, one
with a small daily deposit limit and one on a time-out, so deposit authorizations get both
answers. It then authorizes deposits, settles them with `payment.deposit` events (completed or
failed, which releases the hold), posts batches of session and game events, reads players and
registers new ones. The allow/deny split is printed when the run ends.
"""

from __future__ import annotations

import os
import random
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from locust import HttpUser, between, events, task

API_URL = os.environ.get("PITBOSS_API_URL", "http://127.0.0.1:8000/platform/v1")
API_KEY = os.environ.get("PITBOSS_API_KEY", "local-only-demo-key")
BRAND = os.environ.get("PITBOSS_DEMO_BRAND", "demo")
CURRENCIES = (("EUR", "MT"), ("EUR", "DE"), ("SEK", "SE"), ("GBP", "GB"), ("CAD", "CA"), ("BRL", "BR"))
SMALL_DAILY_LIMIT = 10_000  # minor units: a few authorizations in, the limited player is denied
DECISIONS: Counter[str] = Counter()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class _Player:
    def __init__(self, currency: str, country: str) -> None:
        self.id = str(uuid.uuid4())
        self.currency = currency
        self.country = country
        self.pending: list[tuple[str, int]] = []  # authorized deposits not settled yet
        self.session: str | None = None


class PlatformUser(HttpUser):
    """One casino platform integration calling Pitboss."""

    host = API_URL
    wait_time = between(0.01, 0.1)

    def on_start(self) -> None:
        self.client.headers.update({"Authorization": f"Bearer {API_KEY}"})
        self.players: list[_Player] = []
        for _ in range(4):
            self._register()
        limited = self._register()
        if limited is not None:
            self.client.put(f"/players/{limited.id}/limits", name="/players/{id}/limits",
                            json={"limits": [{"kind": "deposit", "period": "day", "value": SMALL_DAILY_LIMIT}]},
                            headers={"Idempotency-Key": f"lt-limit-{limited.id}"})
        excluded = self._register()
        if excluded is not None:
            self.client.post(f"/players/{excluded.id}/exclusions", name="/players/{id}/exclusions",
                             json={"kind": "timeout", "duration_hours": 24},
                             headers={"Idempotency-Key": f"lt-timeout-{excluded.id}"})

    def _register(self) -> _Player | None:
        currency, country = random.choice(CURRENCIES)
        player = _Player(currency, country)
        body = {"player_id": player.id, "currency": currency, "country": country, "language": "en",
                "traffic_source": random.choice(("seo", "affiliate", "paid_social", "ppc", "referral", "direct"))}
        with self.client.post("/players", json=body, name="/players [register]", catch_response=True) as resp:
            if resp.status_code != 201:
                resp.failure(f"register answered {resp.status_code}")
                return None
        self.players.append(player)
        return player

    @task(1)
    def register(self) -> None:
        self._register()

    @task(6)
    def authorize_deposit(self) -> None:
        if not self.players:
            return
        player = random.choice(self.players)
        tx_id = f"lt-{uuid.uuid4().hex}"
        amount = random.choice((500, 1_000, 2_000, 2_500, 5_000, 10_000, 20_000))
        body = {"tx_id": tx_id, "amount_minor": amount, "currency": player.currency}
        with self.client.post(f"/players/{player.id}/deposits/authorize", json=body,
                              name="/players/{id}/deposits/authorize", catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"authorize answered {resp.status_code}")
                return
            decision = resp.json().get("decision", "?")
        DECISIONS[decision] += 1
        if decision == "allow":
            player.pending.append((tx_id, amount))

    @task(3)
    def post_events(self) -> None:
        if not self.players:
            return
        batch: list[dict[str, Any]] = []
        for player in random.sample(self.players, min(3, len(self.players))):
            batch += self._settle(player) + self._play(player)
        if not batch:
            return
        with self.client.post("/events", json={"events": batch}, name="/events", catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"events answered {resp.status_code}")
            elif resp.json().get("rejected"):
                reasons = {r.get("reason") for r in resp.json()["results"] if r["status"] == "rejected"}
                resp.failure(f"events rejected: {sorted(map(str, reasons))[:3]}")

    @task(2)
    def read_player(self) -> None:
        if self.players:
            player = random.choice(self.players)
            self.client.get(f"/players/{player.id}", name="/players/{id}")

    def _settle(self, player: _Player) -> list[dict[str, Any]]:
        """Complete most authorized deposits and fail the rest: both release the hold."""
        out = []
        for tx_id, amount in player.pending:
            status = "completed" if random.random() < 0.6 else "failed"
            out.append(_envelope(player, "payment.deposit", {"tx_id": tx_id, "status": status, "amount_minor": amount,
                                                             "currency": player.currency, "method": "card"}))
        player.pending.clear()
        return out

    def _play(self, player: _Player) -> list[dict[str, Any]]:
        out = []
        if player.session is None:
            player.session = f"lt-ses-{uuid.uuid4().hex[:16]}"
            out.append(_envelope(player, "session.started", {"session_id": player.session, "device": "mobile"}))
        for _ in range(random.randint(3, 12)):
            bet_id = f"lt-bet-{uuid.uuid4().hex[:16]}"
            game = {"game_id": "slot-golden-reef", "game_category": "slots", "currency": player.currency}
            bet = random.choice((10, 20, 50, 100, 200))
            out.append(_envelope(player, "game.bet", {"bet_id": bet_id, "amount_minor": bet, **game}))
            if random.random() < 0.3:
                out.append(_envelope(player, "game.win", {"bet_id": bet_id, "amount_minor": bet * 3, **game}))
        if random.random() < 0.2:
            out.append(_envelope(player, "session.ended", {"session_id": player.session}))
            player.session = None
        return out


def _envelope(player: _Player, type_: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "type": type_, "occurred_at": _now(), "player_id": player.id,
            "brand": BRAND, "schema_version": 1, "payload": payload}


def _print_decisions(**_: Any) -> None:
    total = sum(DECISIONS.values())
    if total:
        split = ", ".join(f"{k} {v} ({100 * v / total:.0f}%)" for k, v in DECISIONS.most_common())
        print(f"deposit authorizations: {split}")


events.test_stop.add_listener(_print_decisions)  # type: ignore[no-untyped-call]  # locust is untyped here
