"""The audit chain's pure rules: canonical form, hashing, anchors, and verification finding any
single mutation of a valid chain at the right seq."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from domain.audit import (
    GENESIS_HASH,
    Link,
    anchor_signature,
    canonical_body,
    chain_records,
    entry_from_body,
    entry_hash,
    link_hash,
    should_anchor,
    verify_entries,
    verify_links,
)
from schemas.audit import AuditAnchor, AuditEntry, AuditRecord, VerifyReport

KEY = b"test-anchor-key"
CHAIN = "test-chain"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**20), max_value=10**20) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
records = st.builds(
    AuditRecord,
    record_id=st.uuids(),
    actor_id=texts,
    actor_name=texts,
    actor_roles=st.lists(texts, max_size=3),
    action=st.sampled_from(["operator.create", "auth.login", "player.block", "campaign.send"]),
    target_kind=st.sampled_from(["operator", "player", "campaign"]),
    target_id=st.none() | texts,
    brand=st.none() | st.just("demo"),
    before=st.none() | st.dictionaries(texts, json_values, max_size=3),
    after=st.none() | st.dictionaries(texts, json_values, max_size=3),
    ip=st.none() | st.just("10.0.0.7"),
    user_agent=st.none() | texts,
    outcome=st.sampled_from(["succeeded", "denied", "failed"]),
    reason=st.none() | texts,
    request_id=st.none() | texts,
    occurred_at=st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)),
)


def record(**changes: Any) -> AuditRecord:
    base: dict[str, Any] = {
        "record_id": uuid.uuid4(),
        "actor_id": "op-1",
        "actor_name": "Ada",
        "actor_roles": ["admin"],
        "action": "player.block",
        "target_kind": "player",
        "target_id": "p-1",
        "outcome": "succeeded",
        "occurred_at": T0,
    }
    return AuditRecord.model_validate({**base, **changes})


def build(recs: list[AuditRecord], batch: int = 3) -> list[AuditEntry]:
    """A valid chain, appended in batches as the writer does."""
    out: list[AuditEntry] = []
    head_seq, head_hash = 0, GENESIS_HASH
    for start in range(0, len(recs), batch):
        at = T0 + timedelta(seconds=start)
        for entry, _ in chain_records(CHAIN, recs[start : start + batch], head_seq, head_hash, at):
            out.append(entry)
            head_seq, head_hash = entry.seq, entry.hash
    return out


def anchors_of(entries: list[AuditEntry], every: int = 3, key: bytes = KEY) -> list[AuditAnchor]:
    return [
        AuditAnchor(
            chain=CHAIN, seq=e.seq, hash=e.hash, signature=anchor_signature(key, CHAIN, e.seq, e.hash), signed_at=T0
        )
        for e in entries
        if e.seq % every == 0
    ]


def links_of(entries: list[AuditEntry]) -> list[Link]:
    return [Link(e.seq, e.prev_hash, e.hash, canonical_body(e)) for e in entries]


def check(entries: list[AuditEntry], head: AuditEntry, anchors: list[AuditAnchor] | None = None) -> VerifyReport:
    """Verify as the store does: against the chain head."""
    return verify_entries(
        entries, anchors or [], KEY, chain=CHAIN, expected_last_seq=head.seq, expected_last_hash=head.hash
    )


def kinds_at(report: VerifyReport, seq: int) -> set[str]:
    return {p.kind for p in report.problems if p.seq == seq}


chains = st.lists(records, min_size=2, max_size=12).map(build)


# ---------------------------------------------------------------------------- canonical form


@given(chains)
def test_a_chain_built_by_the_writer_verifies(entries: list[AuditEntry]) -> None:
    report = check(entries, entries[-1], anchors_of(entries))
    assert report.ok, report.problems
    assert (report.checked, report.first_seq, report.last_seq) == (len(entries), 1, len(entries))
    assert report.anchors_checked == len(entries) // 3


@given(chains)
def test_each_hash_covers_its_predecessor(entries: list[AuditEntry]) -> None:
    prev = GENESIS_HASH
    for entry in entries:
        assert entry.prev_hash == prev
        assert entry_hash(prev, entry) == entry.hash
        prev = entry.hash


@given(records, st.integers(min_value=1, max_value=10**12))
def test_a_stored_body_reads_back_as_the_same_entry(rec: AuditRecord, seq: int) -> None:
    entry, body = chain_records(CHAIN, [rec], seq - 1, GENESIS_HASH, T0)[0]
    back = entry_from_body(CHAIN, seq, entry.prev_hash, entry.hash, body.decode())
    assert back == entry
    assert back.record() == rec
    assert canonical_body(back) == body


def test_the_canonical_body_is_sorted_compact_json_with_utc_times() -> None:
    rec = record(
        record_id=uuid.UUID(int=1),
        occurred_at=datetime(2026, 3, 1, 13, 0, tzinfo=timezone(timedelta(hours=1))),
        after={"b": 1, "a": "é"},
    )
    body = chain_records(CHAIN, [rec], 0, GENESIS_HASH, T0)[0][1]
    text = body.decode()
    assert text.startswith('{"action":"player.block","actor_id":"op-1"')
    assert '"after":{"a":"é","b":1}' in text
    assert '"occurred_at":"2026-03-01T12:00:00.000000Z"' in text
    assert '"appended_at":"2026-03-01T12:00:00.000000Z","before":null' in text
    assert " " not in text.replace("Ada", "")


def test_audit_data_is_normalised_to_json_without_floats() -> None:
    rec = record(
        before={"limit": 0.1, "at": datetime(2026, 1, 1, tzinfo=UTC), "id": uuid.UUID(int=2), "d": Decimal("1.50")},
        after={"tags": {"b", "a"}, "pair": (1, 2)},
    )
    assert rec.before == {
        "limit": "0.1",
        "at": "2026-01-01T00:00:00.000000Z",
        "id": "00000000-0000-0000-0000-000000000002",
        "d": "1.50",
    }
    assert rec.after == {"tags": ["a", "b"], "pair": [1, 2]}
    with pytest.raises(ValidationError):
        record(after={"x": float("nan")})
    with pytest.raises(ValidationError):
        record(after={1: "non-string key"})


def test_a_timestamp_without_offset_is_refused() -> None:
    with pytest.raises(ValidationError):
        record(occurred_at=datetime(2026, 1, 1))


def test_an_anchor_signature_depends_on_key_chain_seq_and_hash() -> None:
    base = anchor_signature(KEY, "eu", 10, "a" * 64)
    assert base == anchor_signature(KEY, "eu", 10, "a" * 64)
    others = {
        anchor_signature(b"other", "eu", 10, "a" * 64),
        anchor_signature(KEY, "us", 10, "a" * 64),
        anchor_signature(KEY, "eu", 11, "a" * 64),
        anchor_signature(KEY, "eu", 10, "b" * 64),
    }
    assert base not in others and len(others) == 4


@given(
    st.integers(0, 5000),
    st.integers(0, 5000),
    st.floats(0, 1000),
    st.floats(0, 1000),
)
def test_an_anchor_is_due_after_n_entries_or_t_seconds_when_there_is_news(
    head: int, anchored: int, at: float, now: float
) -> None:
    due = should_anchor(head, anchored, at, now, every=1000, seconds=60)
    assert due == (head > anchored and (head - anchored >= 1000 or now - at >= 60))


# ---------------------------------------------------------------------------- single mutations

FIELDS = ["actor_name", "action", "outcome", "before", "occurred_at", "target_id", "ip", "prev_hash", "hash"]


def changed_value(entry: AuditEntry, name: str) -> Any:
    current = getattr(entry, name)
    if name in ("prev_hash", "hash"):
        return ("f" if current[0] != "f" else "e") + current[1:]
    if name == "occurred_at":
        return current + timedelta(microseconds=1)
    if name == "outcome":
        return "denied" if current != "denied" else "failed"
    if name == "before":
        return {"forged": True} if current != {"forged": True} else None
    return (current or "") + "x"


@given(chains, st.data())
def test_a_changed_field_is_found_at_its_seq(entries: list[AuditEntry], data: st.DataObject) -> None:
    k = data.draw(st.integers(0, len(entries) - 1))
    name = data.draw(st.sampled_from(FIELDS))
    tampered = list(entries)
    tampered[k] = entries[k].model_copy(update={name: changed_value(entries[k], name)})
    report = check(tampered, entries[-1])
    assert not report.ok
    assert kinds_at(report, k + 1) == {"changed"}
    assert {p.seq for p in report.problems} == {k + 1}


@given(chains, st.data())
def test_a_changed_and_rehashed_entry_is_found_at_its_seq(entries: list[AuditEntry], data: st.DataObject) -> None:
    k = data.draw(st.integers(0, len(entries) - 1))
    forged = entries[k].model_copy(update={"actor_name": entries[k].actor_name + "x"})
    forged = forged.model_copy(update={"hash": entry_hash(forged.prev_hash, forged)})
    tampered = [*entries[:k], forged, *entries[k + 1 :]]
    report = check(tampered, entries[-1])
    assert "changed" in kinds_at(report, k + 1)
    assert {p.seq for p in report.problems} == {k + 1}


@given(chains, st.data())
def test_a_removed_entry_is_found_at_its_seq(entries: list[AuditEntry], data: st.DataObject) -> None:
    k = data.draw(st.integers(0, len(entries) - 1))
    report = check([*entries[:k], *entries[k + 1 :]], entries[-1])
    assert [(p.seq, p.kind) for p in report.problems] == [(k + 1, "removed")]


@given(chains, st.data())
def test_a_duplicated_entry_is_found_as_inserted(entries: list[AuditEntry], data: st.DataObject) -> None:
    k = data.draw(st.integers(0, len(entries) - 1))
    report = check([*entries[: k + 1], entries[k], *entries[k + 1 :]], entries[-1])
    assert [(p.seq, p.kind) for p in report.problems] == [(k + 1, "inserted")]


@given(chains, records, st.data())
def test_a_forged_entry_linked_in_is_found_as_inserted(
    entries: list[AuditEntry], rec: AuditRecord, data: st.DataObject
) -> None:
    # The forger knows the algorithm: the fake entry links to the real predecessor and hashes right.
    k = data.draw(st.integers(0, len(entries) - 1))
    prev_hash = entries[k - 1].hash if k else GENESIS_HASH
    forged = chain_records(CHAIN, [rec], k, prev_hash, T0)[0][0]
    before_original = data.draw(st.booleans())
    position = k if before_original else k + 1
    report = check([*entries[:position], forged, *entries[position:]], entries[-1])
    assert [(p.seq, p.kind) for p in report.problems] == [(k + 1, "inserted")]


@given(chains, records)
def test_an_entry_beyond_the_head_is_found_as_inserted(entries: list[AuditEntry], rec: AuditRecord) -> None:
    head = entries[-1]
    forged = chain_records(CHAIN, [rec], head.seq, head.hash, T0)[0][0]
    report = check([*entries, forged], head)
    assert [(p.seq, p.kind) for p in report.problems] == [(head.seq + 1, "inserted")]


@given(chains, st.data())
def test_two_swapped_entries_are_found_as_reordered(entries: list[AuditEntry], data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(entries) - 2))
    j = data.draw(st.integers(i + 1, len(entries) - 1))
    swapped = list(entries)
    swapped[i], swapped[j] = swapped[j], swapped[i]
    report = check(swapped, entries[-1])
    assert {p.seq for p in report.problems} == {i + 1, j + 1}
    assert {p.kind for p in report.problems} == {"reordered"}


@given(chains, st.data())
def test_two_rows_with_swapped_contents_are_found_as_reordered(entries: list[AuditEntry], data: st.DataObject) -> None:
    # What swapping two rows in Cassandra looks like: the seqs stay in order, the contents move.
    links = links_of(entries)
    i = data.draw(st.integers(0, len(links) - 2))
    j = data.draw(st.integers(i + 1, len(links) - 1))
    a, b = links[i], links[j]
    links[i] = Link(a.seq, b.prev_hash, b.hash, b.body)
    links[j] = Link(b.seq, a.prev_hash, a.hash, a.body)
    head = entries[-1]
    report = verify_links(CHAIN, links, [], KEY, expected_last_seq=head.seq, expected_last_hash=head.hash)
    assert [(p.seq, p.kind) for p in report.problems] == [(i + 1, "reordered"), (j + 1, "reordered")]


# ---------------------------------------------------------------------------- anchors


@given(chains.filter(lambda es: len(es) >= 3), st.data())
def test_a_consistent_rewrite_is_caught_by_the_next_anchor(entries: list[AuditEntry], data: st.DataObject) -> None:
    # Rewriting an entry and re-hashing everything after it leaves a valid-looking chain;
    # only a signed anchor at or after the rewrite contradicts it.
    k = data.draw(st.integers(0, len(entries) - 1))
    anchors = anchors_of(entries)
    rewritten = list(entries[:k])
    prev = entries[k - 1].hash if k else GENESIS_HASH
    for n, entry in enumerate(entries[k:]):
        e = entry.model_copy(update={"prev_hash": prev, "actor_name": entry.actor_name + ("x" if n == 0 else "")})
        e = e.model_copy(update={"hash": entry_hash(prev, e)})
        rewritten.append(e)
        prev = e.hash
    report = check(rewritten, rewritten[-1], anchors)
    later = [a.seq for a in anchors if a.seq >= k + 1]
    if later:
        assert "bad_anchor" in kinds_at(report, later[0]), report.problems
    else:
        assert report.ok  # nothing signed covers it: why anchors are also written every T seconds


@given(chains.filter(lambda es: len(es) >= 3))
def test_anchors_signed_with_another_key_are_bad(entries: list[AuditEntry]) -> None:
    anchors = anchors_of(entries, key=b"not-the-key")
    report = check(entries, entries[-1], anchors)
    assert [(p.seq, p.kind) for p in report.problems] == [(a.seq, "bad_anchor") for a in anchors]


@given(chains.filter(lambda es: len(es) >= 4), st.integers(1, 3))
def test_a_cut_tail_leaves_an_anchor_without_its_entry(entries: list[AuditEntry], cut: int) -> None:
    # The attacker deletes the last entries and moves the head back; the anchor past the cut remains.
    anchors = anchors_of(entries, every=1)
    kept = entries[:-cut]
    report = check(kept, kept[-1], anchors)
    assert [(p.seq, p.kind) for p in report.problems] == [(e.seq, "anchor_missing_entry") for e in entries[-cut:]]


# ---------------------------------------------------------------------------- ranges


@given(chains, st.data())
def test_a_range_verifies_from_the_hash_before_it(entries: list[AuditEntry], data: st.DataObject) -> None:
    start = data.draw(st.integers(1, len(entries)))
    part = entries[start - 1 :]
    prev = entries[start - 2].hash if start > 1 else GENESIS_HASH
    assert verify_entries(part, [], KEY, start, prev).ok
    assert not verify_entries(part, [], KEY, start, "1" * 64).ok


@settings(max_examples=20)
@given(chains)
def test_links_and_entries_verify_alike(entries: list[AuditEntry]) -> None:
    head = entries[-1]
    by_links = verify_links(CHAIN, links_of(entries), [], KEY, expected_last_seq=head.seq, expected_last_hash=head.hash)
    assert by_links == check(entries, head)


@settings(max_examples=30)
@given(chains, st.data())
def test_plain_row_tuples_verify_like_links(entries: list[AuditEntry], data: st.DataObject) -> None:
    # Cassandra hands the verifier bare tuples (seq, prev_hash, hash, body text).
    head = entries[-1]
    rows = [(e.seq, e.prev_hash, e.hash, canonical_body(e).decode()) for e in entries]
    assert verify_links(CHAIN, rows, [], KEY, expected_last_seq=head.seq, expected_last_hash=head.hash).ok
    k = data.draw(st.integers(0, len(rows) - 1))
    seq, prev, digest, body = rows[k]
    rows[k] = (seq, prev, digest, body.replace('"seq"', '"seq" '))
    report = verify_links(CHAIN, rows, [], KEY, expected_last_seq=head.seq, expected_last_hash=head.hash)
    assert [(p.seq, p.kind) for p in report.problems] == [(k + 1, "changed")]


def test_a_long_gap_is_one_removal_and_not_a_reordering() -> None:
    # Beyond the reorder window the verifier stops waiting for the missing entry.
    links = [Link(s, "", "", b"") for s in range(1, 6000)]
    del links[9]
    report = verify_links(CHAIN, links, [], KEY, genesis_prev=None)
    removed = [p for p in report.problems if p.kind == "removed"]
    assert [(p.seq, p.kind) for p in removed] == [(10, "removed")]
    assert not [p for p in report.problems if p.kind == "reordered"]


def test_link_hash_is_sha256_of_the_documented_text() -> None:
    import hashlib

    text = b"pitboss-audit/1\neu\n7\n" + b"a" * 64 + b"\n{}"
    assert link_hash("eu", 7, "a" * 64, b"{}") == hashlib.sha256(text).hexdigest()
