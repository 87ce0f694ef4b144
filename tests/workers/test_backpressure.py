"""With no consumer, both producers stop at the high-water mark and wait; nothing is dropped."""

from __future__ import annotations

import anyio
import pytest
import redis.asyncio as aioredis

from devnet import Devnet, DevnetConfig
from schemas import RecordCreate, RepoMarker
from streams import Keys, host_key
from tests._support import get, wait_until, xreadgroup
from tests.workers._pipeline import backfiller_config, cursor_at, ingester_config, read_all
from tests.workers.test_firehose import as_tuple, assert_same_events, expected_events
from tests.workers.test_listing import run_listing_until_done
from workers.backfiller.worker import build_backfiller
from workers.ingester.worker import build_ingester

pytestmark = pytest.mark.anyio


async def test_firehose_ingester_waits_at_the_mark(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    keys = Keys(prefix)
    stream = keys.stream("firehose_live")
    await redis_client.xgroup_create(stream, "firehose_group", id="0", mkstream=True)
    async with Devnet(DevnetConfig(repos=15, seed=31)) as net:
        config = ingester_config(redis_url, prefix, net.relay_url, mode="firehose", plc_url=net.plc_url,
                                 high_water_mark=40, batch_size=5)  # fmt: skip
        cursor_key = keys.cursor("firehose_live", host_key(net.relay_url))
        async with build_ingester(redis_client, config) as ingester, anyio.create_task_group() as tg:
            source = ingester.firehoses[0]
            tg.start_soon(source.run)
            await wait_until(lambda: net.world.firehose.subscribers > 0)
            net.step(120)
            producer = source.runner.producer
            assert producer is not None
            await wait_until(lambda: producer.statistics().blocked, what="ingester blocked at the mark")
            length = await redis_client.xlen(stream)
            # Backpressure holds: the stream stopped within one batch (a commit may carry several ops).
            assert 40 <= length < 40 + 5 * 10
            cursor = await get(redis_client, cursor_key)
            assert cursor is not None and int(cursor) < net.world.firehose.last_seq
            # A consumer drains the stream; the ingester resumes and catches up without loss.
            tg.start_soon(drain, redis_client, stream)
            last = net.world.firehose.last_seq
            await wait_until(lambda: cursor_at(redis_client, cursor_key, last), timeout=30, what="caught up")
            source.stop()
            tg.cancel_scope.cancel()
        expected, _ = expected_events(net)
    got = [as_tuple(e) for e in await read_all(redis_client, stream)]
    assert_same_events(got, expected, net)  # every op exactly once, in order, however long the block lasted
    assert producer is not None and producer.statistics().waits >= 1


async def drain(redis: aioredis.Redis, stream: str) -> None:
    while True:
        reply = await xreadgroup(redis, "firehose_group", "c", {stream: ">"}, count=10, block=50)
        rows = reply[0][1] if reply else []
        if rows:
            await redis.xack(stream, "firehose_group", *[i for i, _ in rows])


async def test_backfiller_waits_at_the_mark_holding_its_job(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    keys = Keys(prefix)
    out = keys.stream("firehose_backfill")
    await redis_client.xgroup_create(out, "firehose_group", id="0", mkstream=True)
    async with Devnet(DevnetConfig(repos=12, seed=32)) as net:
        await run_listing_until_done(redis_client, ingester_config(redis_url, prefix, net.relay_url), net)
        expected = sum(1 for t in net.truth() if t["type"] == "record")
        mark = expected // 3
        assert mark >= 20, expected
        # One job per read: the one job taken is the one held.
        config = backfiller_config(redis_url, prefix, net.plc_url, firehose_high_water=mark, batch_size=10,
                                   concurrency=1, repos_per_read=1)  # fmt: skip
        async with build_backfiller(redis_client, config) as worker, anyio.create_task_group() as tg:
            tg.start_soon(worker.consumer.run)
            await wait_until(lambda: worker.producer.statistics().blocked, what="backfiller blocked")
            assert mark <= await redis_client.xlen(out) < mark + 10 + 1
            info = {g["name"]: g for g in await redis_client.xinfo_groups(keys.stream("repo_backfill"))}
            assert info[b"repo_backfill_group"]["pending"] == 1  # the job is held, not acked
            seen = 0
            while seen < expected:  # drain as a consumer would until every record arrived
                reply = await xreadgroup(
                    redis_client, "firehose_group", "c", {out: ">"}, count=100, block=100
                )
                rows = reply[0][1] if reply else []
                if rows:
                    await redis_client.xack(out, "firehose_group", *[i for i, _ in rows])
                seen = sum(1 for e in await read_all(redis_client, out) if isinstance(e, RecordCreate))
            worker.consumer.stop()
    events = await read_all(redis_client, out)
    assert sum(isinstance(e, RecordCreate) for e in events) == expected
    assert sum(isinstance(e, RepoMarker) for e in events) >= 1
