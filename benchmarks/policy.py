"""Decision time of the policy engine alone (no stack): the default policy, a realistic mix.

Builds operators of every role (some with several roles, most scoped to one or two brands and
countries, a few with every brand), players spread over brands, countries and VIP managers,
and a request mix weighted as the back office is used: mostly player reads (which also
decide PII masking), then limits, tickets, payments with amounts, own sessions, admin pages,
out-of-scope and unknown permissions. Each decision is timed alone (perf_counter_ns; the
timer's own cost is measured and reported, not subtracted) and the whole batch is timed once.

    python -m benchmarks policy
    python -m benchmarks.policy --decisions 1000000
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from adapters.policy_file import load_policy
from benchmarks.common import Report, percentile
from domain.policy import ALL, PolicyEngine, Resource, Subject

TARGET_P99_US = 200.0
BRANDS = [f"brand{i}" for i in range(12)]
COUNTRIES = ["MT", "GB", "SE", "DE", "FI", "IE", "NL", "ES", "IT", "CA", "BR", "NZ"]
# (permission, weight, resource kind): weights follow what the dashboard asks most.
MIX: list[tuple[str, int, str]] = [
    ("player.read", 40, "player"),
    ("player.limits.read", 10, "player"),
    ("player.pii.read", 5, "player"),
    ("player.block", 2, "player"),
    ("payment.read", 6, "payment"),
    ("payment.adjust", 3, "payment"),
    ("payment.adjust.approve", 2, "payment"),
    ("ticket.read", 8, "ticket"),
    ("ticket.write", 4, "ticket"),
    ("session.read_own", 4, "session"),
    ("mfa.manage_own", 1, "session"),
    ("dashboard.view", 5, ""),
    ("segment.read", 2, ""),
    ("campaign.write", 1, ""),
    ("report.read", 2, ""),
    ("operator.update", 1, "operator"),
    ("audit.read", 1, ""),
    ("apikey.rotate", 1, ""),
    ("player.delete", 1, "player"),  # unknown: denied
]


@dataclass(frozen=True, slots=True)
class PolicyOptions:
    decisions: int = 200_000
    operators: int = 500
    players: int = 5_000
    seed: int = 7


def _subjects(rng: random.Random, engine: PolicyEngine, n: int) -> list[Subject]:
    roles = sorted(engine.roles)
    out = []
    for i in range(n):
        held = {rng.choice(roles)} | ({rng.choice(roles)} if rng.random() < 0.2 else set())
        wide = rng.random() < 0.1
        brands = {ALL} if wide else set(rng.sample(BRANDS, rng.randint(1, 2)))
        countries = {ALL} if wide or rng.random() < 0.5 else set(rng.sample(COUNTRIES, rng.randint(1, 3)))
        out.append(Subject(f"op{i}", frozenset(held), frozenset(brands), frozenset(countries)))
    return out


def _workload(opts: PolicyOptions, engine: PolicyEngine) -> list[tuple[Subject, str, Resource | None]]:
    rng = random.Random(opts.seed)
    subjects = _subjects(rng, engine, opts.operators)
    players = [
        (
            f"p{i}",
            rng.choice(BRANDS),
            rng.choice(COUNTRIES),
            f"op{rng.randrange(opts.operators)}" if rng.random() < 0.05 else None,
        )
        for i in range(opts.players)
    ]
    weighted = [m for m in MIX for _ in range(m[1])]
    mine = {
        s.operator_id: [m for m in weighted if m[0] in engine.permissions_for(s.roles)] or weighted for s in subjects
    }
    by_brand: dict[str, list[tuple[str, str, str, str | None]]] = {}
    for p in players:
        by_brand.setdefault(p[1], []).append(p)
    work: list[tuple[Subject, str, Resource | None]] = []
    for _ in range(opts.decisions):
        subject = rng.choice(subjects)
        # The dashboard mostly offers what the operator's roles allow, on players of their brands;
        # the rest are deep links, stale pages and probing: refusals of every kind.
        permission, _, kind = rng.choice(mine[subject.operator_id] if rng.random() < 0.85 else weighted)
        in_scope = ALL not in subject.brands and rng.random() < 0.9
        pid, brand, country, vip = rng.choice(by_brand[rng.choice(sorted(subject.brands))] if in_scope else players)
        if rng.random() < 0.3 and "vip_manager" in subject.roles:
            vip = subject.operator_id
        resource: Resource | None
        if kind == "player":
            resource = Resource("player", pid, brand, country, vip_manager=vip)
        elif kind in ("payment", "ticket"):
            owner = subject.operator_id if rng.random() < 0.3 else f"op{rng.randrange(opts.operators)}"
            amount = rng.choice([2_500, 50_000, 99_999, 150_000, -400_000]) if kind == "payment" else None
            resource = Resource(kind, pid, brand, country, vip, owner, amount)
        elif kind in ("session", "operator"):
            owner = subject.operator_id if rng.random() < 0.5 else f"op{rng.randrange(opts.operators)}"
            resource = Resource(kind, owner=owner)
        else:
            resource = None
        work.append((subject, permission, resource))
    return work


def measure(opts: PolicyOptions) -> Report:
    report = Report(
        "policy", f"{opts.decisions:,} decisions, default policy, {opts.operators} operators, {opts.players:,} players"
    )
    started = time.perf_counter()
    policy = load_policy(None)
    loaded = time.perf_counter()
    engine = PolicyEngine(policy)
    built = time.perf_counter()
    work = _workload(opts, engine)
    decide, clock = engine.decide, time.perf_counter_ns

    for subject, permission, resource in work[:10_000]:  # warm up caches and the allocator
        decide(subject, permission, resource)
    timer = []
    for _ in range(10_000):
        t0 = clock()
        timer.append(clock() - t0)
    timer.sort()

    samples = [0] * len(work)
    allowed = second = masked = 0
    for i, (subject, permission, resource) in enumerate(work):
        t0 = clock()
        d = decide(subject, permission, resource)
        samples[i] = clock() - t0
        allowed += d.allowed
        second += d.needs_second_approver
        masked += bool(d.masked_fields)
    samples.sort()

    batch_start = time.perf_counter()
    for subject, permission, resource in work:
        decide(subject, permission, resource)
    batch = time.perf_counter() - batch_start

    row = {
        "email": "ann@example.com",
        "phone": "+35699123456",
        "first_name": "Ann",
        "birth_date": "1990-01-01",
        "player_id": "p1",
        "brand": "brand1",
        "balance_minor": 1234,
        "tags": ["vip"],
    }
    marketer = Subject("m1", frozenset({"marketer"}), frozenset({ALL}), frozenset({ALL}))
    mask_start = time.perf_counter()
    for _ in range(20_000):
        engine.mask(marketer, row)
    mask_us = (time.perf_counter() - mask_start) / 20_000 * 1e6

    def us(ns: float) -> str:
        return f"{ns / 1000:.2f} us"

    p99 = percentile(samples, 99) / 1000
    report.add("decision p50", us(percentile(samples, 50)))
    report.add("decision p99", us(percentile(samples, 99)), f"<= {TARGET_P99_US:.0f} us", p99 <= TARGET_P99_US)
    report.add("decision p99.9", us(percentile(samples, 99.9)))
    report.add("decision max", us(samples[-1]))
    report.add("decision mean (untimed batch)", f"{batch / len(work) * 1e6:.2f} us")
    report.add("decisions/s (one core)", f"{len(work) / batch:,.0f}")
    report.add("mask() of an 8-field player row", f"{mask_us:.2f} us")
    report.add("load + parse default policy", f"{(loaded - started) * 1000:.1f} ms")
    report.add("compile engine", f"{(built - loaded) * 1000:.2f} ms")
    report.notes.append(
        f"timer overhead per sample (included above): p50 {us(percentile(timer, 50))}, p99 {us(percentile(timer, 99))}"
    )
    report.notes.append(
        f"mix: {allowed / len(work):.0%} allowed, {masked / len(work):.0%} with PII masked, "
        f"{second / len(work):.1%} needing a second approver"
    )
    report.notes.append(f"Python {sys.version.split()[0]}, GC on; tail figures include GC pauses and the neighbours")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.policy", description=__doc__.split("\n")[0])
    defaults = PolicyOptions()
    p.add_argument("--decisions", type=int, default=defaults.decisions)
    p.add_argument("--operators", type=int, default=defaults.operators)
    p.add_argument("--players", type=int, default=defaults.players)
    p.add_argument("--seed", type=int, default=defaults.seed)
    args = p.parse_args(argv)
    opts = PolicyOptions(args.decisions, args.operators, args.players, args.seed)
    print(measure(opts).render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
