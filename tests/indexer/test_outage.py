"""Database outages: the handler retries, commits nothing partial, and loses nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from streams import DONE, Retry
from tests.indexer._events import FOLLOW, LIKE, LIVE, POST, body, create, entry, tid, uri
from tests.indexer._proxy import PgProxy
from workers.indexer import IndexerHandler
from workers.indexer.collections import live_records_sql
from workers.indexer.db import create_pool
from workers.indexer.verify import aggregates_match

pytestmark = pytest.mark.anyio

A, B = "did:plc:alice", "did:plc:bob"
P1 = uri(A, POST, "p1")


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[PgProxy]:
    proxy = PgProxy(database_url)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


@pytest.fixture
async def handler(pool: Any, proxy: PgProxy, schema: str) -> AsyncIterator[IndexerHandler]:
    """A handler whose pool goes through the proxy (the `pool` fixture has migrated the schema)."""
    proxied = await create_pool(proxy.url, max_size=2, schema=schema)
    try:
        yield IndexerHandler(proxied, acquire_timeout_s=5.0, retry_delay_s=0.1)
    finally:
        proxied.terminate()


def batch(n: int, start: int) -> list[Any]:
    return [
        entry(LIVE, create(B, LIKE, f"l{i}", tid(i), f"c{i}", body(LIKE, subject=P1)))
        for i in range(start, start + n)
    ] + [entry(LIVE, create(B, FOLLOW, f"f{start}", tid(start), "cf", body(FOLLOW, subject=A)))]


async def state(pool: Any) -> tuple[int, int, bool]:
    async with pool.acquire() as conn:
        records = await conn.fetchval(f"SELECT count(*) FROM ({live_records_sql()}) r")
        likes = await conn.fetchval("SELECT coalesce(sum(like_count), 0) FROM post_agg")
        return records, likes, await aggregates_match(conn)


async def test_cut_before_commit_rolls_back_then_everything_applies(
    pool: Any, proxy: PgProxy, handler: IndexerHandler
) -> None:
    first, second = batch(5, 100), batch(5, 200)
    assert await handler(first) == [DONE] * len(first)
    assert await state(pool) == (6, 5, True)

    proxy.cut_on(b"COMMIT;")  # the merge has run in full on the server when the link dies
    outcomes = await handler(second)
    assert proxy.cuts == 1
    assert all(isinstance(o, Retry) for o in outcomes), outcomes
    assert await state(pool) == (6, 5, True)  # nothing of the second batch is visible

    outcomes = await handler(second)  # still down: connection refused
    assert all(isinstance(o, Retry) for o in outcomes), outcomes

    await proxy.restore()
    assert await handler(second) == [DONE] * len(second)
    assert await state(pool) == (12, 10, True)
    assert handler.statistics().retried == 2 * len(second)


async def test_commit_whose_answer_is_lost_is_retried_harmlessly(
    pool: Any, proxy: PgProxy, handler: IndexerHandler
) -> None:
    entries = batch(4, 300)
    proxy.cut_on(b"COMMIT;", forward_first=True)  # committed, but the handler never hears it
    outcomes = await handler(entries)
    assert all(isinstance(o, Retry) for o in outcomes), outcomes
    assert await state(pool) == (5, 4, True)

    await proxy.restore()
    assert await handler(entries) == [DONE] * len(entries)  # the redelivery changes nothing
    assert await state(pool) == (5, 4, True)
