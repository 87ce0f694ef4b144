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

from workers.indexer.batch import at_uri
from workers.indexer.collections import AGGREGATES

_SAMPLES = 5

# Indexed = live rows of actors not known to be inactive (no actor row counts as active).
_LIVE = """
SELECT r.uri, r.cid, r.rev FROM record r LEFT JOIN actor a ON a.did = r.did
WHERE NOT r.tombstone AND a.active IS DISTINCT FROM false
"""
_LIVE_LABELS = """
SELECT DISTINCT src, uri, val FROM label WHERE NOT neg AND (exp IS NULL OR exp > now())
"""
# Backfilled records carry the snapshot's rev, which is >= the rev that last wrote them.
_RECORD_COUNTS = f"""
WITH live AS ({_LIVE})
SELECT
  (SELECT count(*) FROM live) AS indexed,
  (SELECT count(*) FROM _sf_truth t WHERE NOT EXISTS (SELECT 1 FROM live l WHERE l.uri = t.uri)) AS missing,
  (SELECT count(*) FROM live l WHERE NOT EXISTS (SELECT 1 FROM _sf_truth t WHERE t.uri = l.uri)) AS extra,
  (SELECT count(*) FROM live l JOIN _sf_truth t USING (uri)
    WHERE l.cid IS DISTINCT FROM t.cid OR l.rev < t.rev) AS stale,
  (SELECT count(*) FROM record WHERE tombstone) AS tombstones
"""
_RECORD_SAMPLES = {
    "missing": f"WITH live AS ({_LIVE}) SELECT t.uri FROM _sf_truth t "
    "WHERE NOT EXISTS (SELECT 1 FROM live l WHERE l.uri = t.uri) ORDER BY t.uri LIMIT $1",
    "extra": f"WITH live AS ({_LIVE}) SELECT l.uri FROM live l "
    "WHERE NOT EXISTS (SELECT 1 FROM _sf_truth t WHERE t.uri = l.uri) ORDER BY l.uri LIMIT $1",
    "stale": f"WITH live AS ({_LIVE}) SELECT l.uri FROM live l JOIN _sf_truth t USING (uri) "
    "WHERE l.cid IS DISTINCT FROM t.cid OR l.rev < t.rev ORDER BY l.uri LIMIT $1",
}
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
  SELECT subject AS uri, 1 AS l, 0 AS rp, 0 AS re FROM "like"
  UNION ALL SELECT subject, 0, 1, 0 FROM repost
  UNION ALL SELECT reply_parent, 0, 0, 1 FROM post WHERE reply_parent IS NOT NULL
) x GROUP BY uri
"""
_PROFILE_COUNTS = """
SELECT did, sum(fr) AS followers_count, sum(fo) AS follows_count, sum(p) AS posts_count FROM (
  SELECT subject_did AS did, 1 AS fr, 0 AS fo, 0 AS p FROM follow
  UNION ALL SELECT creator, 0, 1, 0 FROM follow
  UNION ALL SELECT creator, 0, 0, 1 FROM post
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
        await conn.execute(
            'CREATE TEMP TABLE _sf_truth (uri text COLLATE "C", cid text, rev text COLLATE "C") '
            "ON COMMIT DROP;"
            'CREATE TEMP TABLE _sf_truth_label (src text COLLATE "C", uri text COLLATE "C", '
            'val text COLLATE "C") ON COMMIT DROP'
        )
        await conn.copy_records_to_table("_sf_truth", records=records)
        await conn.copy_records_to_table("_sf_truth_label", records=labels)
        counts = await conn.fetchrow(_RECORD_COUNTS)
        label_counts = await conn.fetchrow(_LABEL_COUNTS)
        samples = {
            name: [row[0] for row in await conn.fetch(sql, _SAMPLES)] for name, sql in _RECORD_SAMPLES.items()
        }
        aggregates_ok = await aggregates_match(conn)
    return Verdict(
        expected=len(records),
        indexed=counts["indexed"],
        missing=counts["missing"],
        extra=counts["extra"],
        stale=counts["stale"],
        tombstones=counts["tombstones"],
        labels_expected=label_counts["expected"],
        labels_indexed=label_counts["indexed"],
        labels_missing=label_counts["missing"],
        labels_extra=label_counts["extra"],
        aggregates_ok=aggregates_ok,
        samples={k: v for k, v in samples.items() if v},
    )


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


def _split_truth(truth: Iterable[dict[str, Any]]) -> tuple[list[tuple[str, str, str]], list[tuple[str, ...]]]:
    records, labels = [], []
    for line in truth:
        kind = line.get("type")
        if kind == "record":
            uri = at_uri(line["did"], line["collection"], line["rkey"])
            records.append((uri, line["cid"], line["rev"]))
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
