"""Lag in seconds from stream ids: the oldest entry a group has not acknowledged, against Redis TIME."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from streams import Keys, group_lags, lag_seconds
from streams.admin import stream_info
from tests._support import xadd

pytestmark = pytest.mark.anyio


async def server_ms(redis: aioredis.Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def aged(redis: aioredis.Redis, stream: str, *ages_ms: int) -> list[str]:
    """XADD entries whose ids say they were written `ages_ms` ago (oldest first)."""
    now = await server_ms(redis)
    return [(await xadd(redis, stream, {"n": "1"}, id=f"{now - age}-0")).decode() for age in ages_ms]


def about(seconds: float, expected: float) -> bool:
    # The reading is taken a little after the ids were made: never younger, at most ~1 s older.
    return expected <= seconds < expected + 1.0


async def test_lag_is_the_age_of_the_oldest_unacknowledged_entry(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    stream = Keys(prefix).stream("live")
    ids = await aged(redis_client, stream, 50_000, 30_000, 10_000)
    await redis_client.xgroup_create(stream, "g", id="0")
    [lag] = await group_lags(redis_client, stream, "g")
    assert lag.group == "g" and about(lag.seconds, 50.0)  # nothing read yet: the first entry
    await redis_client.xreadgroup("g", "c", {stream: ">"}, count=1)
    assert about((await group_lags(redis_client, stream, "g"))[0].seconds, 50.0)  # pending, not acked
    await redis_client.xack(stream, "g", ids[0])
    assert about((await group_lags(redis_client, stream, "g"))[0].seconds, 30.0)  # the next unread
    await redis_client.xreadgroup("g", "c", {stream: ">"}, count=2)
    await redis_client.xack(stream, "g", ids[1])
    assert about((await group_lags(redis_client, stream, "g"))[0].seconds, 10.0)  # pending again
    await redis_client.xack(stream, "g", ids[2])
    assert (await group_lags(redis_client, stream, "g"))[0].seconds == 0.0  # all acknowledged


async def test_a_pending_entry_older_than_the_unread_ones_sets_the_lag(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    stream = Keys(prefix).stream("live")
    ids = await aged(redis_client, stream, 40_000, 20_000, 5_000)
    await redis_client.xgroup_create(stream, "g", id="0")
    await redis_client.xreadgroup("g", "c", {stream: ">"}, count=2)
    await redis_client.xack(stream, "g", ids[1])  # #0 still pending, #2 unread
    assert about((await group_lags(redis_client, stream, "g"))[0].seconds, 40.0)
    await redis_client.xack(stream, "g", ids[0])
    assert about((await group_lags(redis_client, stream, "g"))[0].seconds, 5.0)
    await redis_client.xreadgroup("g", "c", {stream: ">"}, count=1)
    await redis_client.xack(stream, "g", ids[2])


async def test_every_group_and_the_worst_over_partitions(redis_client: aioredis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    parts = [keys.partition("live", i, 3) for i in range(3)]
    await aged(redis_client, parts[0], 2_000)
    await aged(redis_client, parts[1], 12_000)
    for part in parts[:2]:
        await redis_client.xgroup_create(part, "g", id="0")
        await redis_client.xgroup_create(part, "done", id="$")
    lags = {lag.group: lag.seconds for lag in await group_lags(redis_client, parts[1])}
    assert lags["done"] == 0.0 and about(lags["g"], 12.0)
    # parts[2] does not exist: it counts as caught up, like a group that does not exist yet.
    worst = await lag_seconds(redis_client, [(p, "g") for p in parts] + [(parts[0], "nope")])
    assert about(worst, 12.0)
    assert await group_lags(redis_client, parts[2]) == []
    info = await stream_info(redis_client, parts[1])
    assert {g.name: g.lag_s is not None for g in info.groups} == {"done": True, "g": True}
    assert about(next(g.lag_s for g in info.groups if g.name == "g") or 0.0, 12.0)
