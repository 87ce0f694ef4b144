"""The listed register: which (did, rev, active) a listing already enqueued, in ~20 bytes a repo.

Every listing path (the relay's listRepos, each PDS's listRepos, every re-check pass) guards
each job with a `Mark` checked and written by the same script call that XADDs the job and moves
the cursor, so a crash never marks a repo listed without its job, and two paths that find one
DID enqueue it once. A job is written when the DID is new, when its rev is newer than the one
listed, or when the same rev comes with the other `active`; an older rev (a lagging relay) is
skipped.

One same-rev change is not believed: a host the account migrated away from. The reference PDS
keeps a migrated account, deactivated, and its listRepos lists it `active: false` at the rev it
left with, while the new host lists it active at that same rev (until its next commit). Taken
at its word, each re-check would flip the slot twice and download the repo again. So a PDS's
listing tags its value with its host (`source`), and the script (`streams.Mark`) lets an
inactive listing at the same rev undo an active one only when it comes from the host that
listed it active (same tag), or when either side is untagged: the relay's listing, which
follows each account's current host, is untagged and always believed. A host that lists the
DID active at the same rev takes the slot over (rewritten, no job). A migrated account
therefore costs at most two extra jobs, once, whatever the order the hosts are paged in (while
its new host can be paged at all); a real deactivation (by the host the account is on, or seen
by the relay) is still a job.

Layout: `LISTED_BUCKETS` hashes `repo_backfill:listed:<bucket>`; a DID's 64-bit BLAKE2b digest
gives its bucket (top 19 bits) and its field (the next 5 bytes); the value is the rev's 63-bit
TID shifted left by one with `active` in the lowest bit (8 bytes; the top bit stays clear for
TIDs before the year 2112), then, from a PDS's listing, a 2-byte digest of its hostname (two
hosts share a tag with odds 1/65,536: such a migrated account flips as before). Buckets of up
to ~128 fields stay in Redis' compact listpack encoding: at 40M repos a bucket holds ~76. A rev
that is not a TID is stored as an opaque digest with the top bit set (compared for equality
only; `active` stays the lowest bit). Two DIDs whose field collides (~0.001 expected pairs at
40M repos) only cost extra jobs, never a lost one.
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
TAG_BYTES = 2


def mark_value(rev: str | None, active: bool, source: str | None = None) -> bytes:
    """(TID << 1 | active) in 8 bytes, then the 2-byte tag of `source` (a PDS's host) if any.

    A rev that is not a TID becomes an opaque digest of it with the top bit set, `active` in the
    lowest bit.
    """
    try:
        version = decode_tid(rev or "")
    except (InvalidSyntax, ValueError):
        digest = int.from_bytes(hashlib.blake2b(f"{rev}".encode(), digest_size=8).digest())
        version = (digest >> 2) | (_OPAQUE >> 1)
    value = ((version << 1) | int(active)).to_bytes(8, "big")
    if source is None:
        return value
    return value + hashlib.blake2b(source.encode(), digest_size=TAG_BYTES).digest()


def listed_mark(
    keys: Keys,
    stream: str,
    did: str,
    rev: str | None,
    active: bool,
    *,
    partitions: int = 1,
    source: str | None = None,
) -> Mark:
    """The register slot of `did` and the value that says (rev, active) was listed (by `source`).

    `source` is the host of a PDS's own listing (None for a relay's): see the module docstring.

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
    return Mark(key, digest[3:8], mark_value(rev, active, source))
