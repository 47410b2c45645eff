"""The audit log against the real Cassandra (and Ray for the actor): appends, idempotency, the
single-writer fence, tampering found by verify, anchors, export and the viewer's pages.

Each test writes its own chain (`test-<uuid>`). The fixture points at the running local stack
without deploying anything (the shared `stack` fixture would redeploy Serve when sources changed)
and applies the migrations, which are idempotent.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from actors.audit import AuditClient, AuditLog, audit_actor, to_csv_lines, to_json_lines
from adapters.cassandra.audit import BUCKET_SIZE, bucket_of, write_timestamp
from adapters.cassandra.session import connect
from adapters.settings import Settings
from domain.audit import chain_records, link_hash
from domain.errors import Unavailable
from schemas.audit import AuditEntry, AuditRecord

pytestmark = pytest.mark.stack
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def settings() -> Iterator[Settings]:
    from adapters.cassandra.migrate import migrate
    from cluster.local.stack import apply_client_env, local_env

    added = {k: v for k, v in local_env(two_dc=True).items() if k not in os.environ}
    os.environ.update(added)
    apply_client_env()
    s = Settings()
    migrate(s)
    yield s
    for key in added:
        os.environ.pop(key, None)


@pytest.fixture(scope="module")
def cql(settings: Settings) -> Iterator[Any]:
    cluster, session = connect(settings, settings.cassandra_keyspace)
    yield session
    cluster.shutdown()


@pytest.fixture
def chain() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def writer(settings: Settings, chain: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[AuditLog]:
    """An AuditLog in this process (no Ray), anchoring every 5 entries."""
    monkeypatch.setenv("PITBOSS_AUDIT_ANCHOR_EVERY", "5")
    log = AuditLog(chain)
    yield log
    await log.close()


@pytest.fixture
async def client(settings: Settings, chain: str) -> AsyncIterator[AuditClient]:
    c = AuditClient(settings, chain=chain)
    yield c
    await c.close()


def record(n: int = 0, **changes: Any) -> AuditRecord:
    base: dict[str, Any] = {
        "record_id": uuid.uuid4(),
        "actor_id": f"op-{n % 3}",
        "actor_name": "Ada Lovelace",
        "actor_roles": ["admin"],
        "action": "player.block" if n % 2 else "operator.create",
        "target_kind": "player",
        "target_id": f"p-{n}",
        "brand": "demo",
        "before": {"blocked": False},
        "after": {"blocked": True, "n": n},
        "ip": "10.0.0.7",
        "user_agent": "pytest",
        "outcome": "succeeded",
        "occurred_at": datetime.now(UTC),
    }
    return AuditRecord.model_validate({**base, **changes})


async def fill(log: AuditLog, count: int, batches: int = 3) -> list[int]:
    seqs: list[int] = []
    per = -(-count // batches)
    for start in range(0, count, per):
        part = [record(n).model_dump(mode="json") for n in range(start, min(start + per, count))]
        seqs += await log.append(part)
    return seqs


def row(cql: Any, chain: str, seq: int) -> dict[str, Any]:
    found = cql.execute(
        "SELECT seq, prev_hash, hash, body FROM audit_entries WHERE chain = %s AND bucket = %s AND seq = %s",
        (chain, bucket_of(seq), seq),
    ).one()
    assert found is not None
    return dict(found)


def put(cql: Any, chain: str, seq: int, prev_hash: str, hash_: str, body: str, stamp: int | None = None) -> None:
    """Write a row as someone with write access to the table would (or, with `stamp`, as a writer does)."""
    using = "" if stamp is None else f" USING TIMESTAMP {int(stamp)}"
    cql.execute(
        "INSERT INTO audit_entries (chain, bucket, seq, prev_hash, hash, body) VALUES (%s, %s, %s, %s, %s, %s)" + using,
        (chain, bucket_of(seq), seq, prev_hash, hash_, body),
    )


def problems(report: Any) -> list[tuple[int, str]]:
    return [(p.seq, p.kind) for p in report.problems]


# ---------------------------------------------------------------------------- appending


async def test_concurrent_appends_through_the_actor_get_contiguous_seqs_and_verify(
    settings: Settings, chain: str, client: AuditClient
) -> None:
    import ray

    if not ray.is_initialized():
        ray.init(address=settings.ray_address, namespace=settings.ray_namespace, log_to_driver=False)
    handle = audit_actor(settings, chain)
    try:
        callers = [AuditClient(settings, chain=chain, handle=handle) for _ in range(4)]

        async def caller(c: AuditClient, n: int) -> list[int]:
            return [await c.append(record(n * 100 + i)) for i in range(10)]

        results = await asyncio.gather(*(caller(callers[n % 4], n) for n in range(60)))
        seqs = sorted(s for part in results for s in part)
        assert seqs == list(range(1, 601))
        stats = await handle.stats.remote()
        assert stats["seq"] == 600 and stats["entries"] == 600
        assert stats["batches"] < 600  # concurrent appends shared commits
        report = await client.verify()
        assert report.ok, report.problems
        assert (report.checked, report.first_seq, report.last_seq) == (600, 1, 600)
    finally:
        ray.kill(handle, no_restart=True)


async def test_the_same_record_id_is_stored_once(writer: AuditLog, client: AuditClient) -> None:
    rec = record().model_dump(mode="json")
    first = await writer.append([rec])
    other = record(1).model_dump(mode="json")
    again, concurrent = await asyncio.gather(writer.append([rec]), writer.append([rec, other]))
    assert again == first and concurrent[0] == first[0]
    head = await client.head()
    assert head is not None and head.seq == 2


async def test_a_restarted_writer_answers_a_retry_with_the_first_seq(
    settings: Settings, chain: str, writer: AuditLog, client: AuditClient
) -> None:
    rec = record().model_dump(mode="json")
    first = await writer.append([rec])
    successor = AuditLog(chain)
    try:
        assert await successor.append([rec]) == first
        assert (await successor.stats())["epoch"] == 2
    finally:
        await successor.close()


async def test_a_stale_writer_cannot_fork_the_chain(chain: str, writer: AuditLog, client: AuditClient) -> None:
    await fill(writer, 4, batches=1)
    successor = AuditLog(chain)
    try:
        assert await successor.append([record(10).model_dump(mode="json")]) == [5]
        # The first writer still thinks the head is 4 with epoch 1: its commit is refused.
        with pytest.raises(Unavailable):
            await writer.append([record(11).model_dump(mode="json")])
        assert await successor.append([record(12).model_dump(mode="json")]) == [6]
        # After a failed batch the first writer claims the head again (a third epoch) and goes on
        # from where the chain is, so its retry lands after the successor's entries.
        assert await writer.append([record(11).model_dump(mode="json")]) == [7]
        assert (await writer.stats())["epoch"] == 3
    finally:
        await successor.close()
    report = await client.verify()
    assert report.ok, report.problems
    assert report.last_seq == 7


async def test_rows_of_a_batch_that_never_committed_are_removed_by_the_next_claim(
    chain: str, writer: AuditLog, client: AuditClient, cql: Any
) -> None:
    await fill(writer, 3, batches=1)
    head = await client.head()
    assert head is not None
    # What a writer that died between writing its rows and moving the head leaves behind.
    orphan, body = chain_records(chain, [record(9)], head.seq, head.hash, datetime.now(UTC))[0]
    stamp = write_timestamp(head.epoch, orphan.seq)
    put(cql, chain, orphan.seq, orphan.prev_hash, orphan.hash, body.decode(), stamp)
    assert problems(await client.verify()) == [(4, "inserted")]
    successor = AuditLog(chain)
    try:
        assert await successor.append([record(10).model_dump(mode="json")]) == [4]
    finally:
        await successor.close()
    report = await client.verify()
    assert report.ok, report.problems
    assert row(cql, chain, 4)["hash"] != orphan.hash


# ---------------------------------------------------------------------------- tampering


async def test_an_updated_column_is_found_as_changed(
    chain: str, writer: AuditLog, client: AuditClient, cql: Any
) -> None:
    await fill(writer, 30)
    r = row(cql, chain, 7)
    cql.execute(
        "UPDATE audit_entries SET body = %s WHERE chain = %s AND bucket = %s AND seq = %s",
        (r["body"].replace("Ada Lovelace", "Eve"), chain, bucket_of(7), 7),
    )
    report = await client.verify()
    assert not report.ok and problems(report) == [(7, "changed")]


async def test_a_deleted_row_is_found_as_removed(chain: str, writer: AuditLog, client: AuditClient, cql: Any) -> None:
    await fill(writer, 30)
    cql.execute("DELETE FROM audit_entries WHERE chain = %s AND bucket = %s AND seq = %s", (chain, bucket_of(12), 12))
    assert problems(await client.verify()) == [(12, "removed")]


async def test_a_forged_row_after_the_head_is_found_as_inserted(
    chain: str, writer: AuditLog, client: AuditClient, cql: Any
) -> None:
    await fill(writer, 30)
    last = row(cql, chain, 30)
    forged, body = chain_records(chain, [record(99)], 30, last["hash"], datetime.now(UTC))[0]
    put(cql, chain, 31, forged.prev_hash, forged.hash, body.decode())
    assert problems(await client.verify()) == [(31, "inserted")]


async def test_a_forged_and_rehashed_row_is_found_at_its_seq_and_by_its_anchor(
    chain: str, writer: AuditLog, client: AuditClient, cql: Any
) -> None:
    await fill(writer, 30)
    r = row(cql, chain, 20)
    body = r["body"].replace("Ada Lovelace", "Eve")
    put(cql, chain, 20, r["prev_hash"], link_hash(chain, 20, r["prev_hash"], body), body)
    # Entry 21 still links to the original hash, and the anchor at 20 (batches of 10, every 5) signs it.
    assert sorted(problems(await client.verify())) == [(20, "bad_anchor"), (20, "changed")]


async def test_two_swapped_rows_are_found_as_reordered(
    chain: str, writer: AuditLog, client: AuditClient, cql: Any
) -> None:
    await fill(writer, 30)
    a, b = row(cql, chain, 3), row(cql, chain, 9)
    put(cql, chain, 3, b["prev_hash"], b["hash"], b["body"])
    put(cql, chain, 9, a["prev_hash"], a["hash"], a["body"])
    assert problems(await client.verify()) == [(3, "reordered"), (9, "reordered")]


async def test_a_cut_tail_is_found_by_the_anchor_past_it(
    chain: str, writer: AuditLog, client: AuditClient, cql: Any
) -> None:
    await fill(writer, 30)
    # The attacker deletes entries 26..30 and moves the head back to 25 (keeping the epoch).
    for seq in range(26, 31):
        cql.execute("DELETE FROM audit_entries WHERE chain = %s AND bucket = %s AND seq = %s", (chain, 0, seq))
    h = row(cql, chain, 25)["hash"]
    cql.execute("UPDATE audit_heads SET seq = 25, hash = %s WHERE chain = %s", (h, chain))
    assert (30, "anchor_missing_entry") in problems(await client.verify())


async def test_anchors_checked_with_another_key_are_bad(
    settings: Settings, chain: str, writer: AuditLog, client: AuditClient
) -> None:
    await fill(writer, 30)
    good = await client.verify()
    assert good.ok and good.anchors_checked >= 3  # one a batch of 10 at least (every 5)
    store = await client.store()
    bad = await store.verify(chain, b"not-the-anchor-key")
    assert not bad.ok
    assert {kind for _, kind in problems(bad)} == {"bad_anchor"}
    assert len(bad.problems) == good.anchors_checked


async def test_a_range_verifies_alone(chain: str, writer: AuditLog, client: AuditClient, cql: Any) -> None:
    await fill(writer, 30)
    cql.execute("DELETE FROM audit_entries WHERE chain = %s AND bucket = %s AND seq = %s", (chain, 0, 3))
    part = await client.verify(start_seq=10, end_seq=20)
    assert part.ok and (part.first_seq, part.last_seq, part.checked) == (10, 20, 11)
    assert problems(await client.verify(start_seq=2, end_seq=5)) == [(3, "removed")]


async def test_the_command_exits_non_zero_on_a_problem(
    settings: Settings, chain: str, writer: AuditLog, cql: Any
) -> None:
    await fill(writer, 6, batches=1)
    env = {**os.environ, "PITBOSS_REGION": "eu"}
    argv = [sys.executable, "-m", "actors.audit", "verify", "--chain", chain]
    ok = await asyncio.to_thread(subprocess.run, argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"audit chain {chain}: OK" in ok.stdout
    cql.execute("DELETE FROM audit_entries WHERE chain = %s AND bucket = %s AND seq = %s", (chain, 0, 2))
    bad = await asyncio.to_thread(subprocess.run, argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1
    assert "seq 2: removed" in bad.stdout


# ---------------------------------------------------------------------------- export and viewer


async def test_an_export_returns_exactly_the_entries_of_its_time_range_in_order(
    writer: AuditLog, client: AuditClient
) -> None:
    await fill(writer, 5, batches=1)
    start = datetime.now(UTC)
    await asyncio.sleep(0.01)
    middle = await fill(writer, 7, batches=2)
    end = datetime.now(UTC)
    await asyncio.sleep(0.01)
    await fill(writer, 4, batches=1)
    got = [e async for e in client.export(start, end)]
    assert [e.seq for e in got] == middle == list(range(6, 13))
    assert all(start <= e.appended_at < end for e in got)
    everything = [e async for e in client.export(datetime(2020, 1, 1, tzinfo=UTC), datetime.now(UTC))]
    assert [e.seq for e in everything] == list(range(1, 17))


async def test_export_lines_are_valid_csv_and_json_and_defuse_formulas(writer: AuditLog, client: AuditClient) -> None:
    await writer.append([record(0, actor_name="=HYPERLINK(\"http://x\")", reason="+1", target_id="@p").model_dump(
        mode="json")])  # fmt: skip
    await fill(writer, 2, batches=1)

    async def entries() -> AsyncIterator[AuditEntry]:
        async for e in client.export(datetime(2020, 1, 1, tzinfo=UTC), datetime.now(UTC)):
            yield e

    text = "".join([line async for line in to_csv_lines(entries())])
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["seq"] for r in rows] == ["1", "2", "3"]
    assert rows[0]["actor_name"] == '\'=HYPERLINK("http://x")'
    assert (rows[0]["reason"], rows[0]["target_id"]) == ("'+1", "'@p")
    assert json.loads(rows[1]["after"]) == {"blocked": True, "n": 0}
    lines = [line async for line in to_json_lines(entries())]
    back = [AuditEntry.model_validate_json(line) for line in lines]
    assert [e.seq for e in back] == [1, 2, 3] and back[0].actor_name.startswith("=HYPERLINK")
    from domain.audit import verify_entries

    assert verify_entries(back, [], b"", chain=client.chain).ok  # an export verifies on its own


async def test_recent_pages_newest_first_with_a_cursor_and_filters(writer: AuditLog, client: AuditClient) -> None:
    await fill(writer, 25)
    first, cursor = await client.recent_page(limit=10)
    assert [e.seq for e in first] == list(range(25, 15, -1)) and cursor == 16
    second, _ = await client.recent_page(limit=10, before_seq=cursor)
    assert [e.seq for e in second] == list(range(15, 5, -1))
    blocks = await client.recent(limit=100, action="player.block", actor_id="op-1")
    assert blocks and all(e.action == "player.block" and e.actor_id == "op-1" for e in blocks)
    assert [e.seq for e in blocks] == sorted((e.seq for e in blocks), reverse=True)
    prefixed = await client.recent(limit=100, action="player.")
    assert len(prefixed) == len(await client.recent(limit=100, action="player.block"))


def test_a_bucket_holds_ten_thousand_seqs() -> None:
    assert (bucket_of(BUCKET_SIZE - 1), bucket_of(BUCKET_SIZE)) == (0, 1)
