"""During a database outage pending stays bounded by batch x concurrency and lag grows (issue #13
item 10: retries parked locally freed their slot, the reader kept pulling, and pending reached
44,114 against a bound of 2,000 while lag fell to 0). Exact once the database is back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

from streams import Keys
from tests._support import wait_until, xfields
from tests.indexer._events import LIKE, LIVE, POST, body, create, entry, tid, uri
from tests.indexer._proxy import PgProxy
from workers.indexer import IndexerHandler
from workers.indexer.collections import live_records_sql
from workers.indexer.config import IndexerConfig
from workers.indexer.db import create_pool
from workers.indexer.worker import build_consumers

pytestmark = pytest.mark.anyio

BATCH, CONCURRENCY = 10, 3
BOUND = BATCH * CONCURRENCY


@pytest.fixture
async def proxied(database_url: str, pool: Any, schema: str) -> AsyncIterator[tuple[PgProxy, Any]]:
    """A pool whose connections go through a proxy the test cuts (`pool` migrated the schema)."""
    proxy = PgProxy(database_url)
    await proxy.start()
    through = await create_pool(proxy.url, max_size=CONCURRENCY, schema=schema)
    try:
        yield proxy, through
    finally:
        through.terminate()
        await proxy.close()


async def add_likes(redis: aioredis.Redis, stream: str, start: int, n: int) -> None:
    subject = uri("did:plc:alice", POST, "p1")
    for i in range(start, start + n):
        event = create("did:plc:bob", LIKE, f"l{i}", tid(i), f"c{i}", body(LIKE, subject=subject))
        await redis.xadd(stream, xfields(entry(LIVE, event).fields))


async def group_state(redis: aioredis.Redis, stream: str, group: str) -> tuple[int, int]:
    """(pending, lag) of the group."""
    [info] = [g for g in await redis.xinfo_groups(stream) if g["name"] in (group, group.encode())]
    return int(info["pending"]), int(info["lag"])


async def test_pending_stays_within_batch_times_concurrency_while_the_database_is_down(
    redis_client: aioredis.Redis, prefix: str, pool: Any, proxied: tuple[PgProxy, Any]
) -> None:
    proxy, through = proxied
    stream = Keys(prefix).stream(LIVE)
    config = IndexerConfig(
        prefix=prefix, streams=(LIVE,), batch_size=BATCH, concurrency=CONCURRENCY, consumer="outage-1"
    )
    group = config.group_for(LIVE)
    await redis_client.xgroup_create(stream, group, id="0", mkstream=True)  # watched from the start
    await add_likes(redis_client, stream, 0, 200)
    await proxy.cut()  # the database is down before the first batch
    handler = IndexerHandler(through, acquire_timeout_s=2.0, retry_delay_s=0.05)
    [consumer] = build_consumers(redis_client, config, handler)
    peak = 0

    async def watch_pending() -> None:
        nonlocal peak
        while True:
            pending, _lag = await group_state(redis_client, stream, group)
            peak = max(peak, pending)
            await anyio.sleep(0.01)

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch_pending)
        await tg.start(consumer.run)
        await wait_until(lambda: handler.statistics().retried >= 10 * BOUND, timeout=60, what="retries")
        pending, lag_before = await group_state(redis_client, stream, group)
        await add_likes(redis_client, stream, 200, 50)  # the firehose goes on meanwhile
        await wait_until(lambda: handler.statistics().retried >= 20 * BOUND, timeout=60, what="more retries")
        pending, lag_during = await group_state(redis_client, stream, group)
        assert peak <= BOUND and pending <= BOUND, (peak, pending)
        assert lag_during == lag_before + 50 and lag_during >= 250 - BOUND  # lag grows, nothing drained

        await proxy.restore()
        await wait_until(lambda: _drained(redis_client, stream, group), timeout=60, what="everything indexed")
        consumer.stop()
        tg.cancel_scope.cancel()
    assert peak <= BOUND, peak
    async with pool.acquire() as conn:
        assert await conn.fetchval(f"SELECT count(*) FROM ({live_records_sql()}) r") == 250


async def _drained(redis: aioredis.Redis, stream: str, group: str) -> bool:
    return await group_state(redis, stream, group) == (0, 0)
