"""Apply a collapsed Batch to PostgreSQL: COPY into per-connection staging tables, then merge
with set-based SQL, one transaction for records/labels/actors and one for repo markers.

Why markers get their own transaction: a batch writing records of repo X takes a shared lock on
X's `actor_sync` row (so that a concurrent marker of X cannot sweep while its writes are not yet
visible), and a marker takes the exclusive one. Holding both kinds in one transaction could
deadlock against a batch holding the opposite pair; in separate transactions each takes one kind,
in did order. Every rule is order-independent, so splitting them changes nothing else.

Per-collection rows are changed only for record rows the current transaction has locked (through
the `record` merge or the marker sweep), and each statement of the merge runs with a fresh
READ COMMITTED snapshot taken after those locks: a concurrent replica's committed rows are seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workers.indexer.batch import Batch
from workers.indexer.collections import sync_collections_sql
from workers.indexer.errors import RetryableConflict, translated

_TEMP = "CREATE TEMP TABLE IF NOT EXISTS {} ({}) ON COMMIT DELETE ROWS"
# Staging tables live for the connection; ON COMMIT DELETE ROWS empties them after every batch.
_STAGING: dict[str, str] = {
    "_sf_op": 'uri text COLLATE "C", did text COLLATE "C", collection text COLLATE "C", rkey text, '
    'rev text COLLATE "C", cid text, json jsonb, tombstone boolean',
    "_sf_marker": 'did text COLLATE "C", rev text COLLATE "C", commit_cid text',
    "_sf_touched": 'uri text COLLATE "C", did text COLLATE "C", collection text COLLATE "C", '
    "cid text, json jsonb, tombstone boolean",
    "_sf_delta": 'agg text, key text COLLATE "C", n integer',
    "_sf_label": 'src text COLLATE "C", uri text COLLATE "C", cid text COLLATE "C", '
    'val text COLLATE "C", neg boolean, cts timestamptz, exp timestamptz',
    "_sf_account": 'did text COLLATE "C", seq bigint, active boolean, status text',
    "_sf_identity": 'did text COLLATE "C", seq bigint, handle text',
}
ENSURE_STAGING = ";\n".join(_TEMP.format(name, cols) for name, cols in _STAGING.items())

# Every repo written by the batch gets an actor_sync row (NULL rev: never snapshotted) so that
# there is a row to lock; the shared locks are taken in did order.
_LOCK_REPOS = """
INSERT INTO actor_sync (did) SELECT DISTINCT did FROM _sf_op ORDER BY did ON CONFLICT (did) DO NOTHING;
WITH locked AS (
    SELECT s.did FROM actor_sync s WHERE s.did IN (SELECT did FROM _sf_op) ORDER BY s.did FOR SHARE
) SELECT count(*) FROM locked
"""

# The gate: newer rev wins; at equal rev a live write replaces a tombstone (or a different cid).
# Writes older than the repo's completed snapshot are dropped: that snapshot already holds the
# record at its own rev, or the record was gone by then.
_MERGE_RECORDS = """
WITH up AS (
    INSERT INTO record AS r (uri, cid, did, collection, rkey, rev, json, tombstone)
    SELECT o.uri, o.cid, o.did, o.collection, o.rkey, o.rev, o.json, o.tombstone
    FROM _sf_op o LEFT JOIN actor_sync s ON s.did = o.did
    WHERE o.tombstone OR s.repo_rev IS NULL OR o.rev >= s.repo_rev
    ORDER BY o.uri
    ON CONFLICT (uri) DO UPDATE SET cid = excluded.cid, rev = excluded.rev, json = excluded.json,
        tombstone = excluded.tombstone, indexed_at = now()
    WHERE r.rev < excluded.rev
       OR (r.rev = excluded.rev AND NOT excluded.tombstone
           AND (r.tombstone OR r.cid IS DISTINCT FROM excluded.cid))
    RETURNING r.uri, r.did, r.collection, r.cid, r.json, r.tombstone
) INSERT INTO _sf_touched SELECT * FROM up
"""

_MERGE_MARKERS = """
INSERT INTO actor_sync AS s (did, commit_cid, repo_rev)
SELECT did, commit_cid, rev FROM _sf_marker ORDER BY did
ON CONFLICT (did) DO UPDATE SET commit_cid = excluded.commit_cid, repo_rev = excluded.repo_rev,
    indexed_at = now()
WHERE s.repo_rev IS NULL OR s.repo_rev < excluded.repo_rev;
WITH swept AS (
    UPDATE record r SET tombstone = true, rev = m.rev, cid = NULL, json = NULL, indexed_at = now()
    FROM _sf_marker m
    WHERE r.did = m.did AND NOT r.tombstone AND r.rev < m.rev
    RETURNING r.uri, r.did, r.collection, r.cid, r.json, r.tombstone
) INSERT INTO _sf_touched SELECT * FROM swept
"""

# A negation is kept as a row so that an older positive label arriving later stays dead;
# at equal cts the negation wins.
_MERGE_LABELS = """
INSERT INTO label AS l (src, uri, cid, val, neg, cts, exp)
SELECT src, uri, cid, val, neg, cts, exp FROM _sf_label ORDER BY src, uri, cid, val
ON CONFLICT (src, uri, cid, val) DO UPDATE SET neg = excluded.neg, cts = excluded.cts,
    exp = excluded.exp, indexed_at = now()
WHERE (l.cts, l.neg) < (excluded.cts, excluded.neg)
"""

_MERGE_ACCOUNTS = """
INSERT INTO actor AS a (did, status, active, status_seq)
SELECT did, status, active, seq FROM _sf_account ORDER BY did
ON CONFLICT (did) DO UPDATE SET status = excluded.status, active = excluded.active,
    status_seq = excluded.status_seq, indexed_at = now()
WHERE a.status_seq IS NULL OR a.status_seq < excluded.status_seq
"""

_MERGE_IDENTITIES = """
INSERT INTO actor AS a (did, handle, handle_seq)
SELECT did, handle, seq FROM _sf_identity ORDER BY did
ON CONFLICT (did) DO UPDATE SET handle = excluded.handle, handle_seq = excluded.handle_seq,
    indexed_at = now()
WHERE a.handle_seq IS NULL OR a.handle_seq < excluded.handle_seq
"""

_SYNC_COLLECTIONS = sync_collections_sql()
# Deadlocks are resolved by PostgreSQL aborting one side; the batch is simply run again.
_CONFLICT_ATTEMPTS = 3


@dataclass(frozen=True)
class ApplyStats:
    """What one `apply` did."""

    events: int
    ops: int
    changed: int
    labels: int
    markers: int


async def apply(conn: Any, batch: Batch) -> ApplyStats:
    """Apply `batch` on `conn`; raises PermanentError / TransientError (see errors.py)."""
    changed = 0
    with translated():
        if batch.ops or batch.labels or batch.accounts or batch.identities:
            changed += await _with_conflict_retry(conn, batch, _apply_main)
        if batch.markers:
            changed += await _with_conflict_retry(conn, batch, _apply_markers)
    return ApplyStats(batch.events, len(batch.ops), changed, len(batch.labels), len(batch.markers))


async def _with_conflict_retry(conn: Any, batch: Batch, step: Any) -> int:
    for attempt in range(_CONFLICT_ATTEMPTS):
        try:
            with translated():
                async with conn.transaction():
                    await conn.execute(ENSURE_STAGING)
                    return int(await step(conn, batch))
        except RetryableConflict:
            if attempt == _CONFLICT_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


async def _apply_main(conn: Any, batch: Batch) -> int:
    statements = []
    if batch.ops:
        await conn.copy_records_to_table("_sf_op", records=list(batch.ops.values()))
        statements += [_LOCK_REPOS, _MERGE_RECORDS, _SYNC_COLLECTIONS]
    if batch.labels:
        await conn.copy_records_to_table("_sf_label", records=list(batch.labels.values()))
        statements.append(_MERGE_LABELS)
    if batch.accounts:
        await conn.copy_records_to_table("_sf_account", records=list(batch.accounts.values()))
        statements.append(_MERGE_ACCOUNTS)
    if batch.identities:
        await conn.copy_records_to_table("_sf_identity", records=list(batch.identities.values()))
        statements.append(_MERGE_IDENTITIES)
    # One round trip: a multi-statement simple query; each statement gets its own snapshot.
    await conn.execute(";\n".join(statements))
    return await _touched(conn) if batch.ops else 0


async def _apply_markers(conn: Any, batch: Batch) -> int:
    await conn.copy_records_to_table("_sf_marker", records=list(batch.markers.values()))
    await conn.execute(f"{_MERGE_MARKERS};\n{_SYNC_COLLECTIONS}")
    return await _touched(conn)


async def _touched(conn: Any) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM _sf_touched"))
