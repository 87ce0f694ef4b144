"""The indexer wired to the real runtime: Redis streams in, PostgreSQL out, DLQ for bad entries."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

from streams import Keys
from tests.indexer._events import BACKFILL, LIKE, LIVE, POST, body, create, entry, marker, tid, uri
from workers.indexer import IndexerHandler
from workers.indexer.config import IndexerConfig
from workers.indexer.verify import verify
from workers.indexer.worker import build_consumers

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
            await redis_client.xadd(keys.stream(stream), dict(entry(stream, m).fields))
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
