"""The indexer wired to the real runtime: Redis streams in, PostgreSQL out, DLQ for bad entries."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

from streams import Keys, Priority, PriorityConfig
from tests._support import wait_until, xfields
from tests.indexer._db import record_row
from tests.indexer._events import BACKFILL, LIKE, LIVE, POST, body, create, entry, marker, tid, uri
from workers.indexer import IndexerHandler
from workers.indexer.config import IndexerConfig
from workers.indexer.verify import verify
from workers.indexer.worker import Indexer, build_consumers

pytestmark = pytest.mark.anyio

A, B = "did:plc:alice", "did:plc:bob"


async def test_consumers_index_streams_until_idle(
    pool: Any, redis_client: aioredis.Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    config = IndexerConfig(prefix=prefix, streams=(LIVE, BACKFILL), batch_size=50)
    p1 = uri(A, POST, "p1")
    backfill = [create(A, POST, "p1", tid(9), "c1", body(POST), seq=-1), marker(A, tid(9), 1)]
    live = [create(B, LIKE, f"l{i}", tid(i), f"c{i}", body(LIKE, subject=p1)) for i in range(20)]
    for stream, messages in ((BACKFILL, backfill), (LIVE, live)):
        for m in messages:
            await redis_client.xadd(keys.stream(stream), xfields(entry(stream, m).fields))
    await redis_client.xadd(keys.stream(LIVE), {b"event": b"{broken"})

    for consumer in build_consumers(redis_client, config, IndexerHandler(pool)):
        await consumer.run_until_idle()

    truth = [{"type": "record", "did": A, "collection": POST, "rkey": "p1", "cid": "c1", "rev": tid(9)}]
    truth += [
        {"type": "record", "did": B, "collection": LIKE, "rkey": f"l{i}", "cid": f"c{i}", "rev": tid(i)}
        for i in range(20)
    ]
    verdict = await verify(pool, truth)
    assert verdict.ok, verdict.to_json()
    for stream in (LIVE, BACKFILL):
        pending = await redis_client.xpending(keys.stream(stream), config.group)
        assert pending["pending"] == 0
    assert await redis_client.xlen(keys.dlq(keys.stream(LIVE))) == 1


async def test_a_live_event_behind_a_big_backfill_backlog_is_indexed_before_the_backlog_drains(
    pool: Any, redis_client: aioredis.Redis, prefix: str
) -> None:
    """INDEXER_LIVE_FIRST: a live create written while 20,000 backfill events wait is in
    PostgreSQL while most of the backlog is still in Redis."""
    keys = Keys(prefix)
    config = IndexerConfig(prefix=prefix, streams=(LIVE, BACKFILL), batch_size=500)
    total = 20_000
    async with redis_client.pipeline(transaction=False) as pipe:
        for i in range(total):
            m = create(f"did:plc:bf{i % 200:04d}", POST, f"p{i}", tid(5), f"c{i}", body(POST), seq=-1)
            pipe.xadd(keys.stream(BACKFILL), xfields(entry(BACKFILL, m).fields))
        await pipe.execute()
    priority = Priority()
    consumers = build_consumers(redis_client, config, IndexerHandler(pool), priority)

    async def backfilled() -> int:
        async with pool.acquire() as conn:
            return int(await conn.fetchval("SELECT count(*) FROM post WHERE did LIKE 'did:plc:bf%'"))

    async with anyio.create_task_group() as tg:
        for consumer in consumers:
            await tg.start(consumer.run)
        await wait_until(lambda: priority.statistics().low_batches >= 1, what="the backfill under way")
        live = create(B, POST, "now", tid(1), "cnow", body(POST))
        await redis_client.xadd(keys.stream(LIVE), xfields(entry(LIVE, live).fields))
        await wait_until(lambda: record_row(pool, uri(B, POST, "now")), what="the live post indexed")
        done = await backfilled()
        assert done < total // 2, f"{done} of {total} backfill events were applied before the live one"

        async def drained() -> bool:
            return await backfilled() == total

        await wait_until(drained, timeout=120, what="the backlog drained")
        for consumer in consumers:
            consumer.stop()


async def test_live_first_chunk_is_retuned_live(pool: Any, redis_client: aioredis.Redis, prefix: str) -> None:
    """INDEXER_LIVE_FIRST_CHUNK is a live setting: a running indexer's priority takes the new size."""
    config = IndexerConfig(prefix=prefix, streams=(LIVE, BACKFILL), live_first_chunk=100)
    priority = Priority(PriorityConfig(low_chunk=config.live_first_chunk))
    handler = IndexerHandler(pool)
    indexer = Indexer(build_consumers(redis_client, config, handler, priority), handler, pool, priority)
    indexer.retune(replace(config, live_first_chunk=25))
    assert priority.config.low_chunk == 25
