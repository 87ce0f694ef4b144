"""Compare the indexed state with devnet's ground truth (JSON lines) and recount the aggregates.

Truth lines: `{"type": "record", did, collection, rkey, cid, rev}` (live records of active repos;
`rev` is the repo rev of the commit that last wrote the record), `{"type": "repo", did, rev,
status}` and `{"type": "label", src, uri, val, cts}` (live labels). The comparison runs in
PostgreSQL: the truth is COPYed into temporary tables and joined with the indexed rows.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from workers.indexer.collections import AGGREGATES, live_records_sql, tombstones_sql

_SAMPLES = 5
_WORK_MEM = "256MB"

# Indexed = live rows (of every table) of actors not known to be inactive (no actor row counts
# as active).
_LIVE = f"""
SELECT r.did, r.collection, r.rkey, r.cid, r.rev FROM ({live_records_sql()}) r
LEFT JOIN actor a ON a.did = r.did WHERE a.active IS DISTINCT FROM false
"""
_LIVE_LABELS = """
SELECT DISTINCT src, uri, val FROM label WHERE NOT neg AND (exp IS NULL OR exp > now())
"""
# One pass over both sides: a FULL JOIN on equalities can only be a hash or merge join, so the
# comparison stays linear whatever the planner thinks of the sizes. Backfilled records carry the
# snapshot's rev, which is >= the rev that last wrote them.
_COMPARED = f"""
SELECT l.did IS NOT NULL AS indexed, t.did IS NOT NULL AS expected,
       l.did IS NOT NULL AND t.did IS NOT NULL AND (l.cid IS DISTINCT FROM t.cid OR l.rev < t.rev) AS stale,
       'at://' || coalesce(l.did, t.did) || '/' || coalesce(l.collection, t.collection) || '/'
           || coalesce(l.rkey, t.rkey) AS uri
FROM ({_LIVE}) l FULL JOIN _sf_truth t
    ON t.did = l.did AND t.collection = l.collection AND t.rkey = l.rkey
"""
_RECORD_COUNTS = f"""
SELECT count(*) FILTER (WHERE indexed) AS indexed,
       count(*) FILTER (WHERE NOT indexed) AS missing,
       count(*) FILTER (WHERE NOT expected) AS extra,
       count(*) FILTER (WHERE stale) AS stale
FROM ({_COMPARED}) c
"""
# Only run when something is wrong: the first few uris of each kind of problem.
_RECORD_SAMPLES = f"""
SELECT kind, uri FROM (
    SELECT kind, uri, row_number() OVER (PARTITION BY kind ORDER BY uri) AS n FROM (
        SELECT CASE WHEN NOT indexed THEN 'missing' WHEN NOT expected THEN 'extra' ELSE 'stale' END
                   AS kind,
               uri
        FROM ({_COMPARED}) c WHERE NOT indexed OR NOT expected OR stale
    ) w
) x WHERE n <= $1 ORDER BY kind, uri
"""
_LABEL_COUNTS = f"""
WITH live AS ({_LIVE_LABELS}), truth AS (SELECT DISTINCT src, uri, val FROM _sf_truth_label)
SELECT
  (SELECT count(*) FROM truth) AS expected,
  (SELECT count(*) FROM live) AS indexed,
  (SELECT count(*) FROM (SELECT * FROM truth EXCEPT SELECT * FROM live) x) AS missing,
  (SELECT count(*) FROM (SELECT * FROM live EXCEPT SELECT * FROM truth) x) AS extra
"""
# COUNT(*) recomputation of both aggregate tables; a missing aggregate row counts as zeros.
_POST_COUNTS = """
SELECT uri, sum(l) AS like_count, sum(rp) AS repost_count, sum(re) AS reply_count FROM (
  SELECT subject AS uri, 1 AS l, 0 AS rp, 0 AS re FROM "like" WHERE NOT tombstone
  UNION ALL SELECT subject, 0, 1, 0 FROM repost WHERE NOT tombstone
  UNION ALL SELECT reply_parent, 0, 0, 1 FROM post WHERE NOT tombstone AND reply_parent IS NOT NULL
) x GROUP BY uri
"""
_PROFILE_COUNTS = """
SELECT did, sum(fr) AS followers_count, sum(fo) AS follows_count, sum(p) AS posts_count FROM (
  SELECT subject_did AS did, 1 AS fr, 0 AS fo, 0 AS p FROM follow WHERE NOT tombstone
  UNION ALL SELECT did, 0, 1, 0 FROM follow WHERE NOT tombstone
  UNION ALL SELECT did, 0, 0, 1 FROM post WHERE NOT tombstone
) x GROUP BY did
"""


@dataclass(frozen=True)
class Verdict:
    """The outcome of one verification; `ok` when nothing is missing, extra or stale."""

    expected: int
    indexed: int
    missing: int
    extra: int
    stale: int
    tombstones: int
    labels_expected: int
    labels_indexed: int
    labels_missing: int
    labels_extra: int
    aggregates_ok: bool
    samples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        wrong = self.missing + self.extra + self.stale + self.labels_missing + self.labels_extra
        return wrong == 0 and self.aggregates_ok

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


async def verify(conn_or_pool: Any, truth: Iterable[dict[str, Any]]) -> Verdict:
    """Verify the database behind `conn_or_pool` against `truth` lines."""
    records, labels = _split_truth(truth)
    async with _connection(conn_or_pool) as conn, conn.transaction():
        await _load_truth(conn, records, labels)
        counts = await conn.fetchrow(_RECORD_COUNTS)
        label_counts = await conn.fetchrow(_LABEL_COUNTS)
        wrong = counts["missing"] + counts["extra"] + counts["stale"]
        samples: dict[str, list[str]] = {}
        for kind, uri in await conn.fetch(_RECORD_SAMPLES, _SAMPLES) if wrong else []:
            samples.setdefault(kind, []).append(uri)
        tombstones = await conn.fetchval(tombstones_sql())
        aggregates_ok = await aggregates_match(conn)
    return Verdict(
        expected=len(records),
        indexed=counts["indexed"],
        missing=counts["missing"],
        extra=counts["extra"],
        stale=counts["stale"],
        tombstones=tombstones,
        labels_expected=label_counts["expected"],
        labels_indexed=label_counts["indexed"],
        labels_missing=label_counts["missing"],
        labels_extra=label_counts["extra"],
        aggregates_ok=aggregates_ok,
        samples=samples,
    )


async def _load_truth(conn: Any, records: list[tuple[str, ...]], labels: list[tuple[str, ...]]) -> None:
    """COPY the truth into temporary tables and ANALYZE them: without statistics the planner
    takes a temp table for a few rows and may pick a nested loop over millions."""
    await conn.execute(
        'CREATE TEMP TABLE _sf_truth (did text COLLATE "C", collection text COLLATE "C", '
        'rkey text COLLATE "C", cid text, rev text COLLATE "C") ON COMMIT DROP;'
        'CREATE TEMP TABLE _sf_truth_label (src text COLLATE "C", uri text COLLATE "C", '
        'val text COLLATE "C") ON COMMIT DROP;'
        # Hash joins over a few million rows fit in memory instead of spilling in batches.
        f"SET LOCAL work_mem = '{_WORK_MEM}'"
    )
    await conn.copy_records_to_table("_sf_truth", records=records)
    await conn.copy_records_to_table("_sf_truth_label", records=labels)
    await conn.execute("ANALYZE _sf_truth, _sf_truth_label")


async def aggregates_match(conn: Any) -> bool:
    """True when post_agg and profile_agg equal a COUNT(*) recomputation of the live rows."""
    for table, counts_sql in (("post_agg", _POST_COUNTS), ("profile_agg", _PROFILE_COUNTS)):
        key, counters = AGGREGATES[table]
        differs = " OR ".join(f"coalesce(a.{c}, 0) <> coalesce(t.{c}, 0)" for c in counters)
        bad = await conn.fetchval(
            f"SELECT count(*) FROM {table} a FULL JOIN ({counts_sql}) t USING ({key}) WHERE {differs}"
        )
        if bad:
            return False
    return True


def _split_truth(truth: Iterable[dict[str, Any]]) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    records: list[tuple[str, ...]] = []
    labels: list[tuple[str, ...]] = []
    for line in truth:
        kind = line.get("type")
        if kind == "record":
            records.append((line["did"], line["collection"], line["rkey"], line["cid"], line["rev"]))
        elif kind == "label":
            labels.append((line["src"], line["uri"], line["val"]))
    return records, labels


@contextlib.asynccontextmanager
async def _connection(conn_or_pool: Any) -> AsyncIterator[Any]:
    if hasattr(conn_or_pool, "acquire"):
        async with conn_or_pool.acquire() as conn:
            yield conn
    else:
        yield conn_or_pool
