"""Apply a collapsed Batch to PostgreSQL: COPY into per-connection staging tables, then merge
with set-based SQL, one transaction for records/labels/actors and one for repo markers.

Why markers get their own transaction: a batch writing records of repo X holds a shared lock on
X's lock bucket (so that a concurrent marker of X cannot sweep while its writes are not yet
visible), and a marker holds the exclusive one. Holding both kinds in one transaction could
deadlock against a batch holding the opposite pair; in separate transactions each takes one kind,
in bucket order. Every rule is order-independent, so splitting them changes nothing else.

A record's content and the aggregates change only for rows the current transaction has locked
(through the merge or the marker sweep), and each statement runs with a fresh READ COMMITTED
snapshot taken after those locks: a concurrent replica's committed rows are seen (the two
statements are described in collections.py).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from workers.indexer.batch import Batch
from workers.indexer.collections import COLLECTIONS, merge_sql, sweep_sql, sync_sql, undo_lock_sql
from workers.indexer.errors import RetryableConflict, translated

_TEMP = "CREATE TEMP TABLE IF NOT EXISTS {} ({}) ON COMMIT DELETE ROWS"
# Staging tables live for the connection; ON COMMIT DELETE ROWS empties them after every batch.
# Each one costs a truncation at every commit, so only the high-volume path stages in tables;
# labels, actors and markers are passed as arrays (unnest) instead. A table with a TOAST-able
# column also has a TOAST table and index, truncated (the index rebuilt) at every commit too:
# _sf_touched holds short texts only, so from PostgreSQL 16 on (which takes STORAGE in CREATE
# TABLE) its columns are PLAIN and it has none.
# _sf_op's columns are batch.OpRow's; _sf_touched's are what collections.merge_sql returns.
_STAGING: dict[str, str] = {
    "_sf_op": 'did text COLLATE "C", collection text COLLATE "C", rkey text COLLATE "C", '
    'rev text COLLATE "C", cid text, json jsonb, tombstone boolean, subject text COLLATE "C", '
    'subject_cid text, ref text COLLATE "C", created_at text, campaign text COLLATE "C"',
    "_sf_touched": 'did text {plain} COLLATE "C", collection text {plain} COLLATE "C", '
    'rkey text {plain} COLLATE "C", fresh boolean, tombstone boolean, k1 text {plain} COLLATE "C"',
}
_ENSURE_STAGING = {
    plain: ";\n".join(_TEMP.format(name, cols.format(plain=plain)) for name, cols in _STAGING.items())
    for plain in ("", "STORAGE PLAIN")
}


async def prepare_connection(conn: Any) -> None:
    """Create the staging tables of a new connection (the pool's `init`, see db.py): `apply`
    needs them, and creating them once per connection spares each batch a round trip."""
    plain = "STORAGE PLAIN" if conn.get_server_version() >= (16,) else ""
    await conn.execute(_ENSURE_STAGING[plain])


# Repos are mapped to LOCK_BUCKETS advisory locks (per schema). A batch writing records takes
# the shared lock of every bucket it writes to, a marker the exclusive lock of its repo's bucket,
# both in bucket order. So a marker's sweep never runs while a write of its repo is uncommitted,
# and a write waits for a running sweep, then sees its floor. Advisory locks cost no WAL and no
# tuple writes (row locks on actor_sync would); a bounded bucket count keeps a batch from
# filling the shared lock table however many repos it touches.
LOCK_BUCKETS = 64
# The buckets are computed here and inlined as integers (no scan of the staging table, and the
# statement still fits the batch's single multi-statement round trip); unnest keeps their order.
_BUCKET_LOCKS = (
    "SELECT count({fn}(hashtext('streamfill.repo:' || current_schema()), b)) "
    "FROM unnest('{{{buckets}}}'::int[]) AS b"
)


def lock_repos_sql(dids: Iterable[str], *, exclusive: bool = False) -> str:
    """Take the (shared, or `exclusive`) advisory lock of every bucket of `dids`, in bucket order."""
    buckets = sorted({zlib.crc32(did.encode()) % LOCK_BUCKETS for did in dids})
    fn = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    return _BUCKET_LOCKS.format(fn=fn, buckets=",".join(map(str, buckets)))


# A marker's sweep: every live record of its repo older than the marker becomes a tombstone at
# the marker's rev (collections.sweep_sql), after the repo's snapshot floor is raised.
_MARKERS = """
WITH m AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
           AS m(did, rev, commit_cid, campaign)),
synced AS (
    INSERT INTO actor_sync AS s (did, commit_cid, repo_rev)
    SELECT did, commit_cid, rev FROM m ORDER BY did
    ON CONFLICT (did) DO UPDATE SET commit_cid = excluded.commit_cid, repo_rev = excluded.repo_rev,
        indexed_at = now()
    WHERE s.repo_rev IS NULL OR s.repo_rev < excluded.repo_rev
),
"""
# With undo: a campaign's markers also keep the rows they sweep and raise (collections.py).
_MERGE_MARKERS = {undo: _MARKERS + sweep_sql(undo) for undo in (False, True)}

# A negation is kept as a row so that an older positive label arriving later stays dead;
# at equal cts the negation wins.
_MERGE_LABELS = """
INSERT INTO label AS l (src, uri, cid, val, neg, cts, exp)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[],
                     $6::timestamptz[], $7::timestamptz[]) AS x(src, uri, cid, val, neg, cts, exp)
ORDER BY src, uri, cid, val
ON CONFLICT (src, uri, cid, val) DO UPDATE SET neg = excluded.neg, cts = excluded.cts,
    exp = excluded.exp, indexed_at = now()
WHERE (l.cts, l.neg) < (excluded.cts, excluded.neg)
"""

_MERGE_ACCOUNTS = """
INSERT INTO actor AS a (did, status_seq, active, status)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::bool[], $4::text[]) AS x(did, seq, active, status)
ORDER BY did
ON CONFLICT (did) DO UPDATE SET status = excluded.status, active = excluded.active,
    status_seq = excluded.status_seq, indexed_at = now()
WHERE a.status_seq IS NULL OR a.status_seq < excluded.status_seq
"""

_MERGE_IDENTITIES = """
INSERT INTO actor AS a (did, handle_seq, handle)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[]) AS x(did, seq, handle)
ORDER BY did
ON CONFLICT (did) DO UPDATE SET handle = excluded.handle, handle_seq = excluded.handle_seq,
    indexed_at = now()
WHERE a.handle_seq IS NULL OR a.handle_seq < excluded.handle_seq
"""

# Deadlocks are resolved by PostgreSQL aborting one side; the batch is simply run again.
_CONFLICT_ATTEMPTS = 3


@dataclass(frozen=True)
class ApplyStats:
    """What one `apply` did."""

    events: int
    ops: int
    labels: int
    markers: int


async def apply(conn: Any, batch: Batch) -> ApplyStats:
    """Apply `batch` on `conn` (prepared by `prepare_connection`); raises PermanentError /
    TransientError (see errors.py)."""
    with translated():
        if batch.ops or batch.labels or batch.accounts or batch.identities:
            await _with_conflict_retry(conn, batch, _apply_main)
        if batch.markers:
            await _with_conflict_retry(conn, batch, _apply_markers)
    return ApplyStats(batch.events, len(batch.ops), len(batch.labels), len(batch.markers))


async def _with_conflict_retry(conn: Any, batch: Batch, step: Any) -> None:
    for attempt in range(_CONFLICT_ATTEMPTS):
        try:
            with translated():
                async with conn.transaction():
                    await step(conn, batch)
                    return
        except RetryableConflict:
            if attempt == _CONFLICT_ATTEMPTS - 1:
                raise


@dataclass(frozen=True)
class Statement:
    """One SQL statement of a batch's transaction; `name` labels it in profiles (bench_indexer)."""

    name: str
    sql: str
    args: tuple[Any, ...] = ()


def main_statements(batch: Batch) -> list[Statement]:
    """The statements that apply `batch` (records, labels, actors) after its ops are staged."""
    out: list[Statement] = []
    if batch.ops:
        collections = frozenset(op[1] for op in batch.ops.values())
        nsids, generic = collections & COLLECTIONS, not collections <= COLLECTIONS
        undo = any(op[11] is not None for op in batch.ops.values())
        out.append(Statement("lock repos", lock_repos_sql({op[0] for op in batch.ops.values()})))
        if undo:
            out.append(Statement("lock undo rows", undo_lock_sql(nsids, generic)))
        out += [
            Statement("merge (gate)", merge_sql(nsids, generic, undo)),
            Statement("content + aggregates", sync_sql(nsids, generic)),
        ]
    if batch.labels:
        out.append(Statement("labels", _MERGE_LABELS, tuple(_columns(batch.labels.values(), 7))))
    if batch.accounts:
        out.append(Statement("accounts", _MERGE_ACCOUNTS, tuple(_columns(batch.accounts.values(), 4))))
    if batch.identities:
        out.append(Statement("identities", _MERGE_IDENTITIES, tuple(_columns(batch.identities.values(), 3))))
    return out


async def stage_ops(conn: Any, batch: Batch) -> None:
    """COPY the batch's record operations into the staging table."""
    if batch.ops:
        await conn.copy_records_to_table("_sf_op", records=list(batch.ops.values()))


async def _apply_main(conn: Any, batch: Batch) -> None:
    await stage_ops(conn, batch)
    statements = main_statements(batch)
    # One round trip for the statements without parameters: a multi-statement simple query, in
    # which each statement gets its own snapshot.
    plain = [s.sql for s in statements if not s.args]
    if plain:
        await conn.execute(";\n".join(plain))
    for statement in statements:
        if statement.args:
            await conn.execute(statement.sql, *statement.args)


async def _apply_markers(conn: Any, batch: Batch) -> None:
    dids, revs, commits, campaigns = _columns(batch.markers.values(), 4)
    await conn.execute(lock_repos_sql(dids, exclusive=True))
    undo = any(c is not None for c in campaigns)
    await conn.execute(_MERGE_MARKERS[undo], dids, revs, commits, campaigns)
    await conn.execute(sync_sql())


def _columns(rows: Any, width: int) -> list[list[Any]]:
    """Rows to per-column lists, for unnest()."""
    columns: list[list[Any]] = [[] for _ in range(width)]
    for row in rows:
        for i, value in enumerate(row):
            columns[i].append(value)
    return columns
