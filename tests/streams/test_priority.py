"""Live first: with `Priority`, a bulk batch never starts while a live batch is handled, and while
live traffic flows bulk batches run one at a time in small chunks; once live is quiet, whole."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import anyio.lowlevel
import pytest
import redis.asyncio as aioredis

from streams import DONE, Consumer, ConsumerConfig, Entry, Keys, Outcome, Priority, PriorityConfig
from tests._support import wait_until

pytestmark = pytest.mark.anyio


async def fill(redis: aioredis.Redis, stream: str, n: int) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(n):
            pipe.xadd(stream, {"n": str(i)})
        await pipe.execute()


class Bulk:
    """A bulk handler that records its calls' sizes and how many ran at once."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.running = 0
        self.most = 0

    async def __call__(self, entries: Sequence[Entry]) -> Sequence[Outcome]:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await anyio.lowlevel.checkpoint()  # let another call start, if the gate allows it
            self.sizes.append(len(entries))
            return [DONE] * len(entries)
        finally:
            self.running -= 1


async def test_bulk_waits_for_live_then_runs_in_small_chunks_one_at_a_time(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    live, backfill = keys.stream("live"), keys.stream("backfill")
    # Live counts as active for the whole test: every bulk call runs under the live-first bound.
    priority = Priority(PriorityConfig(low_share=1, low_chunk=10, quiet_s=3600, max_wait_s=3600))
    release, in_live = anyio.Event(), anyio.Event()

    async def live_handler(entries: Sequence[Entry]) -> Sequence[Outcome]:
        in_live.set()
        await release.wait()
        return [DONE] * len(entries)

    bulk = Bulk()
    live_consumer = Consumer(
        redis_client, ConsumerConfig(live, "g", "c", block_ms=50), priority.high(live_handler)
    )
    bulk_consumer = Consumer(
        redis_client,
        ConsumerConfig(backfill, "g", "c", batch_size=100, concurrency=2, block_ms=50),
        priority.low(bulk),
    )
    await fill(redis_client, backfill, 1000)
    await redis_client.xadd(live, {"n": "live"})
    async with anyio.create_task_group() as tg:
        await tg.start(live_consumer.run)
        await in_live.wait()
        await tg.start(bulk_consumer.run)
        await wait_until(lambda: priority.statistics().low_waits >= 1, what="a bulk batch waiting for live")
        assert bulk.sizes == []  # nothing of the backfill while the live batch is in hand
        release.set()
        await wait_until(lambda: sum(bulk.sizes) == 1000, what="the backlog applied after live")
        live_consumer.stop()
        bulk_consumer.stop()
    assert set(bulk.sizes) == {10} and bulk.most == 1


async def test_a_live_batch_always_in_flight_does_not_starve_the_bulk_stream(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    live, backfill = keys.stream("live"), keys.stream("backfill")
    priority = Priority(PriorityConfig(low_share=1, low_chunk=10, quiet_s=3600, max_wait_s=0.01))
    release, in_live = anyio.Event(), anyio.Event()

    async def live_handler(entries: Sequence[Entry]) -> Sequence[Outcome]:
        in_live.set()
        await release.wait()
        return [DONE] * len(entries)

    bulk = Bulk()
    live_consumer = Consumer(
        redis_client, ConsumerConfig(live, "g", "c", block_ms=50), priority.high(live_handler)
    )
    bulk_consumer = Consumer(
        redis_client,
        ConsumerConfig(backfill, "g", "c", batch_size=100, concurrency=2, block_ms=50),
        priority.low(bulk),
    )
    await fill(redis_client, backfill, 200)
    await redis_client.xadd(live, {"n": "live"})
    async with anyio.create_task_group() as tg:
        await tg.start(live_consumer.run)
        await in_live.wait()
        await tg.start(bulk_consumer.run)
        # The live batch never ends: the backlog goes anyway, one 10-entry chunk at a time.
        await wait_until(lambda: sum(bulk.sizes) == 200, what="the backlog applied beside live")
        assert set(bulk.sizes) == {10} and bulk.most == 1 and priority.statistics().low_waits >= 1
        release.set()
        live_consumer.stop()
        bulk_consumer.stop()


async def test_with_live_quiet_bulk_batches_run_whole_and_concurrently(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    backfill = Keys(prefix).stream("backfill")
    priority = Priority(PriorityConfig(low_share=1, low_chunk=10, quiet_s=0.01))
    bulk = Bulk()
    await fill(redis_client, backfill, 1000)
    await Consumer(
        redis_client,
        ConsumerConfig(backfill, "g", "c", batch_size=100, concurrency=2, block_ms=20),
        priority.low(bulk),
    ).run_until_idle()
    assert sum(bulk.sizes) == 1000 and set(bulk.sizes) == {100}
    assert priority.statistics().low_waits == 0
