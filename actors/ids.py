"""Compact sets of applied command and event ids, kept per player.

Most players have few ids, and an empty Python set alone costs 216 bytes: a player keeps an
array of 8-byte hashes (searched linearly) until it has more than SMALL, then a set.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Iterable

SMALL = 128
Seen = array | set  # type: ignore[type-arg]


def id_hash(command_id: str) -> int:
    """A 63-bit hash of an id: 8 bytes a player keeps per applied command or event.

    Two different ids of one player collide with odds of about n^2 / 2^64: for a player with a
    million events, one in 36 million.
    """
    return int.from_bytes(hashlib.blake2b(command_id.encode(), digest_size=8).digest(), "little") >> 1


def new_seen() -> Seen:
    return array("q")


def add_ids(seen: Seen, ids: Iterable[int]) -> Seen:
    """`seen` with `ids` added (the same object while it stays small)."""
    if isinstance(seen, set):
        seen.update(ids)
        return seen
    seen.extend(ids)
    return set(seen) if len(seen) > SMALL else seen


def pack(seen: Iterable[int]) -> bytes:
    return array("q", sorted(seen)).tobytes()


def unpack(data: bytes) -> Seen:
    values = array("q")
    values.frombytes(data)
    return set(values) if len(values) > SMALL else values
