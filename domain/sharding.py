"""Stable player -> shard placement (jump consistent hash over a hash of the player id)."""

from __future__ import annotations

import hashlib
from uuid import UUID


def jump_hash(key: int, buckets: int) -> int:
    """Lamping and Veach's jump consistent hash: growing N moves only 1/N of the keys."""
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
        j = int((b + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return b


def shard_of(player_id: UUID, shards: int) -> int:
    # Hash first: platform ids may be time-ordered (UUIDv7), which would cluster raw bytes.
    key = int.from_bytes(hashlib.blake2b(player_id.bytes, digest_size=8).digest(), "little")
    return jump_hash(key, shards)
