"""Migrations: applied once, idempotent, safe when several replicas start at the same time; an
existing database migrates forward with its rows."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import orjson
import pytest

from tests.indexer._db import live_pairs
from tests.indexer._events import LIKE, POST, uri
from tests.indexer._world import DIDS, World
from workers.indexer import IndexerHandler
from workers.indexer.db import create_pool
from workers.indexer.migrate import applied_versions, load_migrations, migrate
from workers.indexer.verify import verify

pytestmark = pytest.mark.anyio


async def connect(database_url: str, schema: str) -> Any:
    return await asyncpg.connect(database_url, server_settings={"search_path": schema})


async def test_migrate_twice_applies_once(database_url: str, schema: str) -> None:
    conn = await connect(database_url, schema)
    try:
        assert await applied_versions(conn) == []
        assert await migrate(conn) == [m.version for m in load_migrations()]
        assert await migrate(conn) == []
        assert await applied_versions(conn) == ["0001", "0002", "0003"]
        assert await conn.fetchval("SELECT to_regclass('post_agg') IS NOT NULL")
    finally:
        await conn.close()


async def test_concurrent_replicas_apply_each_migration_exactly_once(database_url: str, schema: str) -> None:
    conns = [await connect(database_url, schema) for _ in range(4)]
    results: list[list[str]] = []

    async def start(conn: Any) -> None:
        results.append(await migrate(conn))

    try:
        async with anyio.create_task_group() as tg:
            for conn in conns:
                tg.start_soon(start, conn)
        assert sorted(results) == [[], [], [], ["0001", "0002", "0003"]]
        assert await conns[0].fetchval("SELECT count(*) FROM schema_migrations") == 3
    finally:
        for conn in conns:
            await conn.close()


def test_badly_named_migration_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "1_oops.sql").write_text("SELECT 1")
    with pytest.raises(ValueError, match="NNNN_name"):
        load_migrations(tmp_path)


async def test_0002_carries_an_indexed_0001_database_forward(database_url: str, schema: str) -> None:
    """A database indexed under 0001 (one `record` row per record with its JSON, tombstones,
    aggregates) migrates to 0002 and verifies exactly; the indexer then keeps working on it."""
    rng = random.Random(5)
    world = World()
    for _ in range(80):
        world.step(rng.randrange(3), rng.randrange(5), rng.randrange(6), rng.randrange(50))
    conn = await connect(database_url, schema)
    try:
        await migrate(conn, load_migrations()[:1])
        await conn.executemany(
            "INSERT INTO record (uri, did, collection, rkey, rev, cid, json, tombstone) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            _final_rows(world) + [row for row, _ in _OTHERS],
        )
        await conn.execute(_RECOUNT_0001)
        assert await migrate(conn) == [m.version for m in load_migrations()[1:]]
    finally:
        await conn.close()

    pool = await create_pool(database_url, max_size=2, schema=schema)
    others = [truth for _, truth in _OTHERS if truth]
    try:
        verdict = await verify(pool, world.truth() + others)
        assert verdict.ok and verdict.tombstones > 3, verdict.to_json()
        assert await live_pairs(pool, '"like"', LIKE, "subject") == world.table(LIKE, "subject")
        assert await live_pairs(pool, "post", POST, "reply_parent") == world.table(POST, "parent")
        for _ in range(30):  # new commits (updates and deletes of migrated records among them)
            world.step(rng.randrange(3), rng.randrange(5), rng.randrange(6), rng.randrange(50))
        entries = [e for did in DIDS for e in world.live_entries(did, 0)]
        assert all(type(o).__name__ == "Done" for o in await IndexerHandler(pool)(entries))
        verdict = await verify(pool, world.truth() + others)
        assert verdict.ok, verdict.to_json()
    finally:
        await pool.close()


def _final_rows(world: World) -> list[tuple[Any, ...]]:
    """What 0001 held after every commit of `world`: the newest write or delete of each uri."""
    rows: dict[str, tuple[Any, ...]] = {}
    for did in DIDS:
        for commit in world.commits[did]:
            e = commit.event
            record = getattr(e, "record", None)
            json = None if record is None else bytes(record).decode()
            rows[uri(did, e.collection, e.rkey)] = (
                uri(did, e.collection, e.rkey),
                did,
                e.collection,
                e.rkey,
                e.rev,
                getattr(e, "cid", None),
                json,
                record is None,
            )
    return list(rows.values())


def _other(collection: str, rkey: str, record: dict[str, Any] | None) -> tuple[tuple[Any, ...], Any]:
    """A 0001 row of a collection the world does not write, and its truth line (None: a tombstone)."""
    did, rev, cid = "did:plc:dave", "3l00000000001", None if record is None else f"bafy{rkey}"
    json = None if record is None else orjson.dumps({"$type": collection, **record}).decode()
    row = (uri(did, collection, rkey), did, collection, rkey, rev, cid, json, record is None)
    truth = {"type": "record", "did": did, "collection": collection, "rkey": rkey, "cid": cid, "rev": rev}
    return row, (None if record is None else truth)


_OTHERS = [
    _other("app.bsky.graph.block", "b1", {"subject": "did:plc:alice", "createdAt": "2024-01-01T00:00:00Z"}),
    _other("app.bsky.graph.block", "b2", None),
    _other("app.bsky.graph.listitem", "i1", {"subject": "did:plc:bob", "list": "at://did:plc:dave/l/1"}),
    _other("app.bsky.graph.list", "l1", {"name": "friends", "purpose": "app.bsky.graph.defs#curatelist"}),
    _other("app.bsky.feed.generator", "g1", {"did": "did:web:feed.example", "displayName": "feed"}),
    _other("com.example.thing", "t1", {"anything": [1, 2]}),
    _other("com.example.thing", "t2", None),
]


# 0001's aggregates of those rows (its per-collection tables are not read by 0002).
_RECOUNT_0001 = """
INSERT INTO post_agg (uri, like_count, repost_count, reply_count)
SELECT k, sum(l), sum(r), sum(p) FROM (
    SELECT json #>> '{subject,uri}' AS k, 1 AS l, 0 AS r, 0 AS p FROM record
    WHERE NOT tombstone AND collection = 'app.bsky.feed.like'
    UNION ALL SELECT json #>> '{subject,uri}', 0, 1, 0 FROM record
    WHERE NOT tombstone AND collection = 'app.bsky.feed.repost'
    UNION ALL SELECT json #>> '{reply,parent,uri}', 0, 0, 1 FROM record
    WHERE NOT tombstone AND collection = 'app.bsky.feed.post' AND json #>> '{reply,parent,uri}' IS NOT NULL
) x GROUP BY k;
INSERT INTO profile_agg (did, followers_count, follows_count, posts_count)
SELECT k, sum(fr), sum(fo), sum(p) FROM (
    SELECT json->>'subject' AS k, 1 AS fr, 0 AS fo, 0 AS p FROM record
    WHERE NOT tombstone AND collection = 'app.bsky.graph.follow'
    UNION ALL SELECT did, 0, 1, 0 FROM record WHERE NOT tombstone AND collection = 'app.bsky.graph.follow'
    UNION ALL SELECT did, 0, 0, 1 FROM record WHERE NOT tombstone AND collection = 'app.bsky.feed.post'
) x GROUP BY k
"""
