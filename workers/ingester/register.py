"""The listed register: which (did, rev, active) a listing already enqueued, in ~18 bytes a repo.

Every listing path (the relay's listRepos, each PDS's listRepos, every re-check pass) guards
each job with a `Mark` checked and written by the same script call that XADDs the job and moves
the cursor, so a crash never marks a repo listed without its job, and two paths that find one
DID enqueue it once. A job is written when the DID is new, when its rev is newer than the one
listed, or when the same rev comes with the other `active`; an older rev (a lagging relay) is
skipped.

Layout: `LISTED_BUCKETS` hashes `repo_backfill:listed:<bucket>`; a DID's 64-bit BLAKE2b digest
gives its bucket (top 19 bits) and its field (the next 5 bytes); the value is the rev's 63-bit
TID shifted left by one with `active` in the lowest bit (8 bytes; the top bit stays clear for
TIDs before the year 2112). Buckets of up to ~128 fields
stay in Redis' compact listpack encoding: at 40M repos a bucket holds ~76. A rev that is not a
TID is stored as an opaque digest with the top bit set (compared for equality only). Two DIDs
whose field collides (~0.001 expected pairs at 40M repos) only cost extra jobs, never a lost one.
"""

from __future__ import annotations

import hashlib

from atp import InvalidSyntax
from atp.tid import decode_tid
from streams import Keys, Mark, partition_index

__all__ = ["LISTED_BUCKETS", "listed_mark", "mark_value"]

# 2^19 buckets: ~76 fields each at 40M repos, under the 128-entry listpack limit of a default server.
BUCKET_BITS = 19
LISTED_BUCKETS = 1 << BUCKET_BITS
_OPAQUE = 1 << 63


def mark_value(rev: str | None, active: bool) -> bytes:
    """8 bytes: (TID << 1 | active), or an opaque digest with the top bit set for a non-TID rev."""
    try:
        version = decode_tid(rev or "")
    except (InvalidSyntax, ValueError):
        digest = int.from_bytes(hashlib.blake2b(f"{rev}|{active}".encode(), digest_size=8).digest())
        return (digest | _OPAQUE).to_bytes(8, "big")
    return ((version << 1) | int(active)).to_bytes(8, "big")


def listed_mark(
    keys: Keys, stream: str, did: str, rev: str | None, active: bool, *, partitions: int = 1
) -> Mark:
    """The register slot of `did` and the value that says (rev, active) was listed.

    With the stream in `partitions` > 1 partitions the bucket lives in the slot of the DID's
    partition (`Keys.listed_in`), and each partition has 1/partitions of the buckets, so the
    total stays `LISTED_BUCKETS` and a bucket's size does not change.
    """
    digest = hashlib.blake2b(did.encode(), digest_size=8).digest()
    bucket = int.from_bytes(digest[:3]) >> (24 - BUCKET_BITS)
    if partitions > 1:
        partition = keys.partition(stream, partition_index(did, partitions), partitions)
        key = keys.listed_in(partition, bucket % max(1, LISTED_BUCKETS // partitions))
    else:
        key = keys.listed(stream, bucket)
    return Mark(key, digest[3:8], mark_value(rev, active))
