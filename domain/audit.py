"""The audit chain's rules: canonical form, hashes, anchors and verification. Pure: no IO, no clock.

Entry `seq` of a chain is hashed as

    sha256("pitboss-audit/1\\n" + chain + "\\n" + seq + "\\n" + prev_hash + "\\n" + body)

where `body` is the canonical JSON of the record plus `seq` and `appended_at` (keys sorted by
code point, no spaces, UTF-8, times as RFC 3339 UTC with six fractional digits and `Z`, no floats)
and `prev_hash` is the hash of entry `seq - 1` (64 zeros before entry 1). The position and the
link are in the hashed text, so a row moved to another seq or re-linked no longer matches its hash,
and verification needs no JSON parsing on the fast path: it hashes the stored body as it is.

A chain alone cannot tell a consistent rewrite (every hash recomputed from some entry on) from the
original: anyone with write access to the table can compute SHA-256. Anchors close that gap: every
N entries or T seconds the writer signs (chain, seq, hash) with an HMAC key that the database does
not hold. A rewrite then contradicts the next anchor, and a cut tail leaves an anchor pointing past
the end of the chain.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain as chain_of
from typing import Any, NamedTuple

from schemas.audit import (
    AuditAnchor,
    AuditEntry,
    AuditRecord,
    ProblemKind,
    VerifyProblem,
    VerifyReport,
    rfc3339,
)

GENESIS_HASH = "0" * 64
_NO_LIMIT = 2**63
FORMAT = b"pitboss-audit/1"
ANCHOR_FORMAT = b"pitboss-audit-anchor/1"
RECORD_FIELDS: tuple[str, ...] = tuple(AuditRecord.model_fields)
# Disorder in the input (an export edited by hand, say) is sorted out within this many entries;
# beyond it the missing seqs are reported as removed.
REORDER_WINDOW = 4096
MAX_PROBLEMS = 1000


# ---------------------------------------------------------------------------- canonical form


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON of JSON-native data; floats are refused (see schemas.audit.json_native)."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_refuse
    ).encode()


def _refuse(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} has no canonical form")


def record_body(record: AuditRecord, seq: int, appended_at: datetime | str) -> bytes:
    """The stored and hashed body of `record` at `seq`. `seq` is inside too, so a moved body says
    where it came from (verification uses that only to name a reordering)."""
    data: dict[str, Any] = {name: getattr(record, name) for name in RECORD_FIELDS}
    data["record_id"] = str(record.record_id)
    data["occurred_at"] = rfc3339(record.occurred_at)
    data["seq"] = seq
    data["appended_at"] = appended_at if isinstance(appended_at, str) else rfc3339(appended_at)
    # The other fields are typed strings; only the free-form data could carry a float.
    for name in ("before", "after"):
        if data[name] is not None:
            for number in _floats(data[name]):
                raise TypeError(f"float {number!r} in {name} has no canonical form")
    return canonical_json(data)


def _floats(value: Any) -> Iterable[float]:
    if isinstance(value, float):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _floats(item)
    elif isinstance(value, list):
        for item in value:
            yield from _floats(item)


def canonical_body(entry: AuditEntry) -> bytes:
    return record_body(entry, entry.seq, entry.appended_at)


def link_hash(chain: str, seq: int, prev_hash: str, body: bytes | str) -> str:
    digest = hashlib.sha256(b"%s\n%s\n%d\n%s\n" % (FORMAT, chain.encode(), seq, prev_hash.encode()))
    digest.update(body if isinstance(body, bytes) else body.encode())
    return digest.hexdigest()


def entry_hash(prev_hash: str, entry: AuditEntry) -> str:
    """SHA-256 (hex) of `entry` chained after `prev_hash`."""
    return link_hash(entry.chain, entry.seq, prev_hash, canonical_body(entry))


def anchor_signature(key: bytes, chain: str, seq: int, hash: str) -> str:
    """HMAC-SHA256 (hex) of the statement "entry `seq` of `chain` has hash `hash`"."""
    message = b"%s\n%s\n%d\n%s" % (ANCHOR_FORMAT, chain.encode(), seq, hash.encode())
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def anchor_valid(key: bytes, anchor: AuditAnchor) -> bool:
    return hmac.compare_digest(anchor_signature(key, anchor.chain, anchor.seq, anchor.hash), anchor.signature)


# ---------------------------------------------------------------------------- writing


LinkRow = tuple[int, str, str, bytes | str]


class Link(NamedTuple):
    """What verification needs of a stored entry: its place, its link, its hash, its body (the
    canonical JSON, as bytes or as the text Cassandra returns). A tuple, so rows become links cheaply."""

    seq: int
    prev_hash: str
    hash: str
    body: bytes | str


class Chained(NamedTuple):
    """An entry placed in the chain, as the writer stores it."""

    seq: int
    prev_hash: str
    hash: str
    body: bytes
    appended_at: datetime


def chain_bodies(
    chain: str, records: Sequence[AuditRecord], head_seq: int, head_hash: str, appended_at: datetime
) -> list[Chained]:
    """Place `records` after the head (seq, hash): their seqs, links, hashes and bodies."""
    out: list[Chained] = []
    prev = head_hash
    at = rfc3339(appended_at)
    for seq, record in enumerate(records, start=head_seq + 1):
        body = record_body(record, seq, at)
        digest = link_hash(chain, seq, prev, body)
        out.append(Chained(seq, prev, digest, body, appended_at))
        prev = digest
    return out


def chain_records(
    chain: str, records: Sequence[AuditRecord], head_seq: int, head_hash: str, appended_at: datetime
) -> list[tuple[AuditEntry, bytes]]:
    """Like `chain_bodies`, with each entry as a model."""
    out: list[tuple[AuditEntry, bytes]] = []
    for record, placed in zip(records, chain_bodies(chain, records, head_seq, head_hash, appended_at), strict=True):
        # The record is already validated; constructing skips re-validating every field.
        entry = AuditEntry.model_construct(
            **{name: getattr(record, name) for name in RECORD_FIELDS},
            chain=chain,
            seq=placed.seq,
            appended_at=appended_at,
            prev_hash=placed.prev_hash,
            hash=placed.hash,
        )
        out.append((entry, placed.body))
    return out


def entry_from_body(chain: str, seq: int, prev_hash: str, hash: str, body: bytes | str) -> AuditEntry:
    """The entry a stored row holds; the row's seq wins over the one inside the body."""
    data = json.loads(body)
    data.pop("seq", None)
    return AuditEntry.model_validate({**data, "chain": chain, "seq": seq, "prev_hash": prev_hash, "hash": hash})


def should_anchor(
    head_seq: int, anchored_seq: int, anchored_at: float, now: float, every: int, seconds: float
) -> bool:
    """An anchor is due when `every` entries or `seconds` have passed since the last one, and there
    is something new to sign (`now` and `anchored_at` on one monotonic clock)."""
    if head_seq <= anchored_seq:
        return False
    return head_seq - anchored_seq >= every or now - anchored_at >= seconds


# ---------------------------------------------------------------------------- verification


@dataclass(slots=True)
class _State:
    next_seq: int
    prev_hash: str | None  # the hash the next entry must link to; None: not known (after a gap)
    alternates: set[str] = field(default_factory=set)  # hashes of duplicates of the last seq
    prev_clean: bool = False
    last_hash: str | None = None
    first_seen: int | None = None
    last_seen: int | None = None


class ChainVerifier:
    """Streams the entries of one chain (any order, sorted within REORDER_WINDOW) and reports
    every changed, removed, inserted or reordered entry and every bad anchor, with its seq.

    Feed it with `feed()` as often as needed, then call `finish()` once.
    """

    def __init__(
        self,
        chain: str,
        anchors: Iterable[AuditAnchor],
        key: bytes,
        expected_first_seq: int = 1,
        genesis_prev: str | None = GENESIS_HASH,
        *,
        expected_last_seq: int | None = None,
        expected_last_hash: str | None = None,
        max_problems: int = MAX_PROBLEMS,
    ) -> None:
        self.chain = chain
        self.key = key
        self.first = expected_first_seq
        self.expected_last_seq = expected_last_seq
        self.expected_last_hash = expected_last_hash
        self.max_problems = max_problems
        self.problems: list[VerifyProblem] = []
        self.omitted = 0
        self.checked = 0
        self.state = _State(next_seq=expected_first_seq, prev_hash=genesis_prev)
        # Anchors before the range are not this verification's business.
        self.anchors = {a.seq: a for a in anchors if a.seq >= expected_first_seq}
        self.anchors_checked = 0
        self.anchors_seen: set[int] = set()
        # Entries that arrived before their turn, and the arrival order of the current disorder.
        self.parked: dict[int, Link] = {}
        self.heap: list[int] = []
        self.window: list[int] = []

    # -- problems

    def problem(self, seq: int, kind: ProblemKind, detail: str) -> None:
        if len(self.problems) < self.max_problems:
            self.problems.append(VerifyProblem(seq=seq, kind=kind, detail=detail))
        else:
            self.omitted += 1

    # -- input

    def feed(self, links: Iterable[LinkRow]) -> None:
        """Check `links` (Link, or plain (seq, prev_hash, hash, body) tuples as Cassandra returns them)."""
        state = self.state
        limit = self.expected_last_seq if self.expected_last_seq is not None else _NO_LIMIT
        prefix = b"%s\n%s\n" % (FORMAT, self.chain.encode())
        anchors = self.anchors
        sha256 = hashlib.sha256
        count = 0
        for row in links:
            count += 1
            seq, prev_hash, digest, body = row
            data = body if isinstance(body, bytes) else body.encode()
            # The fast path: storage returns a chain in order and almost always intact. Anything
            # else (a mismatch, an anchor, disorder) takes the full checks below.
            if (
                seq == state.next_seq
                and seq <= limit
                and not self.parked
                and state.prev_clean
                and prev_hash == state.prev_hash
                and seq not in anchors
                and sha256(b"%s%d\n%s\n%s" % (prefix, seq, prev_hash.encode(), data)).hexdigest() == digest
            ):
                state.prev_hash = state.last_hash = digest
                state.next_seq = seq + 1
                state.last_seen = seq
                if state.alternates:
                    state.alternates.clear()
                continue
            link = row if isinstance(row, Link) else Link._make(row)
            if seq == state.next_seq and seq <= limit and not self.parked:
                self._check(link)
            else:
                self._arrive(link)
        self.checked += count

    def _arrive(self, link: Link) -> None:
        seq = link.seq
        state = self.state
        if self.expected_last_seq is not None and seq > self.expected_last_seq:
            # Past the head: a forged row, or a write whose commit never happened and was not cleaned.
            self.problem(seq, "inserted", f"entry {seq} lies beyond the chain head ({self.expected_last_seq})")
            return
        if seq < self.first:
            self.problem(seq, "inserted", f"entry {seq} lies before the start of the range ({self.first})")
            return
        if seq < state.next_seq:
            # Its seq is taken already: a second entry claims a place in the chain (a fork or a forgery).
            self.problem(seq, "inserted", f"a second entry with seq {seq}")
            if seq == state.last_seen:
                state.alternates.add(link.hash)
            return
        if seq in self.parked:
            self.problem(seq, "inserted", f"a second entry with seq {seq}")
            return
        self.window.append(seq)
        if seq == state.next_seq:
            self._check(link)
            self._drain(force=False)
            return
        self.parked[seq] = link
        heapq.heappush(self.heap, seq)
        self._drain(force=len(self.parked) > REORDER_WINDOW)

    def _drain(self, force: bool) -> None:
        state = self.state
        while self.heap:
            low = self.heap[0]
            if low != state.next_seq:
                if not force:
                    return
                self._gap(state.next_seq, low)
                force = False
            heapq.heappop(self.heap)
            self._check(self.parked.pop(low))
        self._close_window()

    def _close_window(self) -> None:
        # An entry is out of order when its place in the arrival order differs from its place in
        # seq order: a swap flags exactly the two swapped entries, a gap none.
        if not self.window:
            return
        for arrived, expected in zip(self.window, sorted(self.window), strict=True):
            if arrived != expected:
                self.problem(arrived, "reordered", f"entry {arrived} came out of seq order")
        self.window = []

    def _gap(self, start: int, end: int) -> None:
        """Seqs start..end-1 are missing."""
        which = f"entry {start}" if end - start == 1 else f"entries {start}..{end - 1}"
        self.problem(start, "removed", f"{which} missing from the chain")
        self.state.next_seq = end
        # What the next entry links to is gone; its link cannot be checked.
        self.state.prev_hash = None
        self.state.alternates.clear()
        self.state.prev_clean = False

    # -- the checks

    def _check(self, link: Link) -> None:
        state = self.state
        seq = link.seq
        clean = True
        # 1. Its own hash: catches a changed body, prev_hash or hash, and a row moved to another seq.
        if link_hash(self.chain, seq, link.prev_hash, link.body) != link.hash:
            clean = False
            moved_from = self._moved_from(link)
            if moved_from is not None:
                self.problem(seq, "reordered", f"entry {seq} holds the entry of seq {moved_from}")
            else:
                self.problem(seq, "changed", f"entry {seq} does not match its hash")
        # 2. Its link: a self-consistent entry chained to something other than its predecessor
        #    means the predecessor was rewritten and re-hashed, or the chain forked there.
        elif (
            state.prev_hash is not None
            and link.prev_hash != state.prev_hash
            and link.prev_hash not in state.alternates
        ):
            clean = False
            if seq == self.first:
                self.problem(seq, "changed", f"entry {seq} does not link to the hash its range starts from")
            elif state.prev_clean:
                self.problem(
                    seq - 1,
                    "changed",
                    f"entry {seq - 1} was rewritten and re-hashed (or the chain forked): "
                    f"entry {seq} links to another hash",
                )
            # Otherwise the predecessor is reported already; this is its echo.
        # 3. A signed anchor at this seq must name this entry's hash.
        anchor = self.anchors.get(seq)
        if anchor is not None:
            self._check_anchor(anchor, link.hash)
        state.prev_hash = link.hash
        state.alternates.clear()
        state.prev_clean = clean
        state.last_hash = link.hash
        state.next_seq = seq + 1
        if state.first_seen is None:
            state.first_seen = seq
        state.last_seen = seq

    def _moved_from(self, link: Link) -> int | None:
        """The seq this body was written at, when it hashes correctly there (a moved row)."""
        try:
            claimed = json.loads(link.body).get("seq")
        except (ValueError, AttributeError):
            return None
        if not isinstance(claimed, int) or claimed == link.seq:
            return None
        return claimed if link_hash(self.chain, claimed, link.prev_hash, link.body) == link.hash else None

    def _check_anchor(self, anchor: AuditAnchor, stored_hash: str) -> None:
        self.anchors_seen.add(anchor.seq)
        self.anchors_checked += 1
        if anchor.chain != self.chain or not anchor_valid(self.key, anchor):
            self.problem(anchor.seq, "bad_anchor", f"the anchor at {anchor.seq} has a wrong signature")
        elif not hmac.compare_digest(anchor.hash, stored_hash):
            self.problem(anchor.seq, "bad_anchor", f"the anchor at {anchor.seq} signs another hash than the entry's")

    # -- the end

    def finish(self) -> VerifyReport:
        state = self.state
        self._drain(force=True)
        if self.expected_last_seq is not None and state.next_seq <= self.expected_last_seq:
            self._gap(state.next_seq, self.expected_last_seq + 1)
        elif (
            self.expected_last_hash is not None
            and state.last_seen is not None
            and state.last_seen == self.expected_last_seq
            and state.prev_clean
            and state.last_hash != self.expected_last_hash
            and self.expected_last_hash not in state.alternates
        ):
            # Nothing follows the last entry to catch a re-hash: the head row remembers its hash.
            self.problem(
                state.last_seen, "changed", f"entry {state.last_seen} does not have the hash the chain head records"
            )
        for seq in sorted(set(self.anchors) - self.anchors_seen):
            self.anchors_checked += 1
            self.problem(seq, "anchor_missing_entry", f"an anchor signs entry {seq}, which is not in the chain")
        self.problems.sort(key=lambda p: p.seq)
        return VerifyReport(
            ok=not self.problems and not self.omitted,
            chain=self.chain,
            checked=self.checked,
            first_seq=state.first_seen,
            last_seq=state.last_seen,
            anchors_checked=self.anchors_checked,
            problems=self.problems,
            problems_omitted=self.omitted,
        )


def verify_links(
    chain: str,
    links: Iterable[LinkRow],
    anchors: Iterable[AuditAnchor],
    key: bytes,
    expected_first_seq: int = 1,
    genesis_prev: str | None = GENESIS_HASH,
    *,
    expected_last_seq: int | None = None,
    expected_last_hash: str | None = None,
) -> VerifyReport:
    verifier = ChainVerifier(
        chain,
        anchors,
        key,
        expected_first_seq,
        genesis_prev,
        expected_last_seq=expected_last_seq,
        expected_last_hash=expected_last_hash,
    )
    verifier.feed(links)
    return verifier.finish()


def verify_entries(
    entries: Iterable[AuditEntry],
    anchors: Iterable[AuditAnchor],
    key: bytes,
    expected_first_seq: int = 1,
    genesis_prev: str | None = GENESIS_HASH,
    *,
    chain: str | None = None,
    expected_last_seq: int | None = None,
    expected_last_hash: str | None = None,
) -> VerifyReport:
    """Verify entries of one chain (as read back or exported).

    `genesis_prev` is what the first entry must link to: 64 zeros from seq 1, the hash of entry
    `expected_first_seq - 1` for a range, None to take the first link on trust.
    `expected_last_seq`/`expected_last_hash` (the chain head) catch a cut or re-hashed tail.
    """
    items = iter(entries)
    first = next(items, None)
    name = chain or (first.chain if first is not None else "")
    verifier = ChainVerifier(
        name,
        anchors,
        key,
        expected_first_seq,
        genesis_prev,
        expected_last_seq=expected_last_seq,
        expected_last_hash=expected_last_hash,
    )

    def links() -> Iterable[Link]:
        for entry in chain_of([first] if first is not None else [], items):
            if entry.chain != name:
                verifier.checked += 1
                verifier.problem(entry.seq, "inserted", f"entry {entry.seq} belongs to chain {entry.chain!r}")
                continue
            yield Link(entry.seq, entry.prev_hash, entry.hash, canonical_body(entry))

    verifier.feed(links())
    return verifier.finish()
