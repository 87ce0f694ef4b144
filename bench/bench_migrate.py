"""Migration 0002 on a database indexed under 0001, against a plain copy of the same table.

Fills 0001's schema with what its indexer held after BENCH_MIGRATE_EVENTS (200,000) events of
bench_indexer's firehose mix: one `record` row per uri (newest write or delete, tombstones
included) and the per-collection rows of the live ones. Then, on the same server:

raw:        CREATE TABLE ... AS SELECT * FROM record, then its primary key: the least a rewrite
            of the table of records costs.
migration:  `migrate()` applying 0002 (new tables filled from record's JSON, keys and indexes
            built after loading).

Prints both in seconds per million records and their ratio, and the bytes per record of the
tables of records (heap, TOAST and indexes; freshly loaded, so without the free space and dead
rows an online index accumulates) under 0001 and under 0002.

Against an embedded PostgreSQL unless DATABASE_URL is set.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import report
from bench.bench_indexer import make_events, scratch_schema
from workers._embedded_pg import database_url_or_embedded
from workers.indexer.migrate import load_migrations, migrate

EVENTS = int(os.environ.get("BENCH_MIGRATE_EVENTS", "200000"))

# What 0001's indexer derived from `record` for the live records of the bench's collections.
_FILL_0001 = """
INSERT INTO post (uri, cid, creator, text, reply_root, reply_root_cid, reply_parent, reply_parent_cid,
    langs, created_at)
SELECT uri, cid, did, json->>'text', json #>> '{reply,root,uri}', json #>> '{reply,root,cid}',
    json #>> '{reply,parent,uri}', json #>> '{reply,parent,cid}', json->'langs', json->>'createdAt'
FROM record WHERE NOT tombstone AND collection = 'app.bsky.feed.post';
INSERT INTO "like" (uri, cid, creator, subject, subject_cid, created_at)
SELECT uri, cid, did, json #>> '{subject,uri}', json #>> '{subject,cid}', json->>'createdAt'
FROM record WHERE NOT tombstone AND collection = 'app.bsky.feed.like';
INSERT INTO repost (uri, cid, creator, subject, subject_cid, created_at)
SELECT uri, cid, did, json #>> '{subject,uri}', json #>> '{subject,cid}', json->>'createdAt'
FROM record WHERE NOT tombstone AND collection = 'app.bsky.feed.repost';
INSERT INTO follow (uri, cid, creator, subject_did, created_at)
SELECT uri, cid, did, json->>'subject', json->>'createdAt'
FROM record WHERE NOT tombstone AND collection = 'app.bsky.graph.follow'
"""
_RAW_COPY = "CREATE TABLE raw_copy AS SELECT * FROM record; ALTER TABLE raw_copy ADD PRIMARY KEY (uri)"
_TABLES_0001 = ("record", "post", '"like"', "repost", "follow")
_TABLES_0002 = ("record", "post", '"like"', "repost", "follow")


def rows_0001(events: list[Any]) -> list[tuple[Any, ...]]:
    """0001's `record` rows after `events`: the newest write or delete of each uri."""
    rows: dict[str, tuple[Any, ...]] = {}
    for e in events:
        uri = f"at://{e.did}/{e.collection}/{e.rkey}"
        record = getattr(e, "record", None)
        json = None if record is None else bytes(record).decode()
        rows[uri] = (uri, getattr(e, "cid", None), e.did, e.collection, e.rkey, e.rev, json, record is None)
    return list(rows.values())


async def _bytes(conn: Any, tables: tuple[str, ...]) -> int:
    sizes = [await conn.fetchval(f"SELECT pg_total_relation_size('{t}')") for t in tables]
    return sum(sizes)


async def main(url: str) -> None:
    rows = rows_0001(make_events(EVENTS))
    async with scratch_schema(url) as schema:
        conn = await asyncpg.connect(url, server_settings={"search_path": schema})
        try:
            await migrate(conn, load_migrations()[:1])
            await conn.copy_records_to_table(
                "record",
                records=rows,
                columns=["uri", "cid", "did", "collection", "rkey", "rev", "json", "tombstone"],
            )
            await conn.execute(_FILL_0001)
            await conn.execute("VACUUM ANALYZE")
            before = await _bytes(conn, _TABLES_0001)
            started = time.perf_counter()
            await conn.execute(_RAW_COPY)
            raw_s = time.perf_counter() - started
            await conn.execute("DROP TABLE raw_copy")
            started = time.perf_counter()
            assert await migrate(conn, load_migrations()[:2]) == ["0002"]  # 0001 -> 0002 only
            migration_s = time.perf_counter() - started
            await conn.execute("VACUUM ANALYZE")
            after = await _bytes(conn, _TABLES_0002)
        finally:
            await conn.close()
    per_million = 1e6 / len(rows)
    report(
        "bench_migrate",
        [
            {
                "path": "raw copy of record + its key",
                "records": len(rows),
                "s_per_million": raw_s * per_million,
            },
            {
                "path": "migration 0001 -> 0002",
                "records": len(rows),
                "s_per_million": migration_s * per_million,
                "ratio": raw_s / migration_s,
            },
            {
                "path": "bytes per record",
                "0001": before / len(rows),
                "0002": after / len(rows),
                "ratio": after / before,
            },
        ],
    )


if __name__ == "__main__":
    with database_url_or_embedded(os.environ.get("DATABASE_URL")) as db_url:
        anyio.run(main, db_url)
