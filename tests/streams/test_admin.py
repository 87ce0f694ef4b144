"""Trimming, consumer clean-up, group reset, DLQ replay, audit, and SIGTERM drain."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
import redis.asyncio as aioredis

from streams import AdminError, Keys
from streams.admin import (
    dlq_list,
    dlq_replay,
    prune_consumers,
    reset_group,
    safe_trim_id,
    stream_info,
    trim,
    trim_stream,
)
from tests._support import wait_until, xadd, xrange, xreadgroup

pytestmark = pytest.mark.anyio
PROC = Path(__file__).with_name("consumer_proc.py")


async def fill(redis: aioredis.Redis, stream: str, n: int) -> list[bytes]:
    return [await xadd(redis, stream, {"n": str(i)}) for i in range(n)]


@pytest.mark.leaves_pending("it trims around entries a group holds")
async def test_trim_keeps_everything_some_group_has_not_acked(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    stream = keys.stream("s")
    ids = await fill(redis_client, stream, 20)
    await redis_client.xgroup_create(stream, "fast", id="0")
    await redis_client.xgroup_create(stream, "slow", id="0")
    # fast: read all 20, acked all but #12 (still pending). slow: read 8, acked 5.
    await redis_client.xreadgroup("fast", "f", {stream: ">"}, count=20)
    await redis_client.xack(stream, "fast", *[i for k, i in enumerate(ids) if k != 12])
    await redis_client.xreadgroup("slow", "s", {stream: ">"}, count=8)
    await redis_client.xack(stream, "slow", *ids[:5])
    removed = await trim(redis_client, keys, stream)
    assert removed == 5
    left = [i for i, _ in await xrange(redis_client, stream)]
    assert left == ids[5:]
    # slow acks the rest of what it read; its next unread entry (#8) bounds the trim now.
    await redis_client.xack(stream, "slow", *ids[5:8])
    assert await trim(redis_client, keys, stream) == 3
    assert [i for i, _ in await xrange(redis_client, stream)] == ids[8:]
    audit = await xrange(redis_client, keys.audit())
    assert [f[b"action"] for _, f in audit] == [b"trim", b"trim"]


async def test_trim_without_groups_removes_nothing(redis_client: aioredis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    await fill(redis_client, keys.stream("s"), 3)
    assert await trim(redis_client, keys, keys.stream("s")) == 0
    assert await redis_client.xlen(keys.stream("s")) == 3


@pytest.mark.leaves_pending("a consumer with pending entries must survive the prune")
async def test_prune_deletes_only_idle_consumers_with_nothing_pending(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    stream = keys.stream("s")
    ids = await fill(redis_client, stream, 4)
    await redis_client.xgroup_create(stream, "g", id="0")
    await redis_client.xreadgroup("g", "holder", {stream: ">"}, count=2)
    await redis_client.xreadgroup("g", "finished", {stream: ">"}, count=2)
    await redis_client.xack(stream, "g", *ids[2:])
    removed = await prune_consumers(redis_client, keys, stream, "g", idle_s=0)
    assert removed == ["finished"]
    info = await stream_info(redis_client, stream)
    assert [c.name for c in info.groups[0].consumers] == ["holder"]
    assert info.groups[0].pending == 2


async def test_reset_and_unknown_names(redis_client: aioredis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    stream = keys.stream("s")
    await fill(redis_client, stream, 3)
    await redis_client.xgroup_create(stream, "g", id="$")
    await reset_group(redis_client, keys, stream, "g", "0")
    info = await stream_info(redis_client, stream)
    assert info.groups[0].last_delivered_id == "0-0" and info.groups[0].lag == 3
    with pytest.raises(AdminError, match="no group 'nope'"):
        await reset_group(redis_client, keys, stream, "nope", "0")
    with pytest.raises(AdminError, match="no such stream"):
        await stream_info(redis_client, keys.stream("missing"))


async def test_dlq_replay_moves_original_fields_back(redis_client: aioredis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    stream = keys.stream("s")
    await redis_client.xadd(
        f"{stream}:dlq", {"event": "x", "reason": "bad", "attempts": "5", "source_id": "1-0"}
    )
    assert [f["reason"] for _, f in await dlq_list(redis_client, stream)] == ["bad"]
    assert await dlq_replay(redis_client, keys, stream) == 1
    assert [f for _, f in await xrange(redis_client, stream)] == [{b"event": b"x"}]
    assert await redis_client.xlen(f"{stream}:dlq") == 0


async def test_sigterm_finishes_in_flight_work_and_exits_zero(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    stream = Keys(prefix).stream("work")
    ids = await fill(redis_client, stream, 12)
    proc = subprocess.Popen([sys.executable, str(PROC), redis_url, stream, "g", "w1", "work"])
    try:
        await wait_until(lambda: redis_client.llen(f"{stream}:started"), what="a batch in flight")
        proc.send_signal(signal.SIGTERM)
        await redis_client.set(f"{stream}:release", 1)  # let the in-flight batches finish
        assert proc.wait(20) == 0
    finally:
        proc.kill()
    started = {i for i in await redis_client.lrange(f"{stream}:started", 0, -1)}
    done = await redis_client.smembers(f"{stream}:done")
    assert started and started == done  # everything it started, it finished and acked
    assert int((await redis_client.xpending(stream, "g"))["pending"]) == 0
    assert len(done) <= len(ids)


@pytest.mark.leaves_pending("abandoned work stays pending for reclaim")
async def test_sigterm_abandons_work_still_running_after_the_grace_period(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    """A handler that never finishes (a hung download, a producer blocked at its high-water mark)
    cannot keep a worker from exiting: after the grace period it is cancelled, exit 0, and its
    entries stay pending for the next start."""
    stream = Keys(prefix).stream("hung")
    await fill(redis_client, stream, 3)
    grace = 1.0
    proc = subprocess.Popen([sys.executable, str(PROC), redis_url, stream, "g", "w1", "hang", str(grace)])
    try:
        await wait_until(lambda: redis_client.llen(f"{stream}:started"), what="a batch in flight")
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = await anyio.to_thread.run_sync(lambda: proc.wait(30))
        elapsed = time.monotonic() - signalled
    finally:
        proc.kill()
    assert code == 0
    assert grace <= elapsed < grace + 10, elapsed  # waited for the handler, then gave up on it
    assert int((await redis_client.xpending(stream, "g"))["pending"]) == 3  # nothing lost, nothing acked


@pytest.mark.leaves_pending("entries pending since before a reset are part of the case")
async def test_trim_after_a_reset_to_0_keeps_what_the_group_has_not_re_read(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    # Issue #10 §3: 10 entries, 1-4 acked, 5-10 pending, then the group is reset to 0.
    # The oldest pending entry is #5, but the group will re-read 1-4: none of them may go.
    keys = Keys(prefix)
    stream = keys.stream("s")
    ids = await fill(redis_client, stream, 10)
    await redis_client.xgroup_create(stream, "g", id="0")
    await redis_client.xreadgroup("g", "c", {stream: ">"}, count=10)
    await redis_client.xack(stream, "g", *ids[:4])
    await reset_group(redis_client, keys, stream, "g", "0")
    assert await safe_trim_id(redis_client, stream) == "0-1"
    assert await trim(redis_client, keys, stream) == 0
    assert [i for i, _ in await xrange(redis_client, stream)] == ids
    # The group re-reads 1-3 (and acks them): exactly those may go, not #4 nor the pending 5-10.
    reread = await xreadgroup(redis_client, "g", "c", {stream: ">"}, count=3)
    assert [i for i, _ in reread[0][1]] == ids[:3]
    await redis_client.xack(stream, "g", *ids[:3])
    assert await trim(redis_client, keys, stream) == 3
    assert [i for i, _ in await xrange(redis_client, stream)] == ids[3:]
    # Re-read but not acked holds the trim back just the same.
    await redis_client.xreadgroup("g", "c", {stream: ">"}, count=1)
    assert await trim(redis_client, keys, stream) == 0
    # Acking 5-9 (pending since before the reset) frees #4 only: the group will read 5-10 again.
    await redis_client.xack(stream, "g", ids[3], *ids[4:9])
    assert await trim(redis_client, keys, stream) == 1
    again = await xreadgroup(redis_client, "g", "c", {stream: ">"}, count=10)
    assert [i for i, _ in again[0][1]] == ids[4:]
    await redis_client.xack(stream, "g", *ids[4:9])
    assert await trim(redis_client, keys, stream) == 5
    assert [i for i, _ in await xrange(redis_client, stream)] == ids[9:]


@pytest.mark.leaves_pending("a group's oldest pending entry bounds the trim")
async def test_trim_is_bounded_by_the_group_that_needs_the_oldest_entry(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    stream = keys.stream("s")
    ids = await fill(redis_client, stream, 6)
    await redis_client.xgroup_create(stream, "done", id="0")
    await redis_client.xreadgroup("done", "c", {stream: ">"}, count=6)
    await redis_client.xack(stream, "done", *ids)
    # A group created at the end has read nothing, yet needs nothing already in the stream.
    await redis_client.xgroup_create(stream, "late", id="$")
    plan = await trim_stream(redis_client, keys, stream)
    assert (plan.removed, plan.reason) == (6, "unread")  # both groups are at the end: a tie
    ids += await fill(redis_client, stream, 3)
    await redis_client.xreadgroup("late", "c", {stream: ">"}, count=3)
    await redis_client.xack(stream, "late", *ids[6:])
    plan = await trim_stream(redis_client, keys, stream)
    assert (plan.removed, plan.held_by, plan.reason) == (0, "done", "unread")
    await redis_client.xreadgroup("done", "c", {stream: ">"}, count=3)
    await redis_client.xack(stream, "done", *ids[6:])
    # A third group reads all from the start and acks only the first: its oldest pending entry rules.
    await redis_client.xgroup_create(stream, "again", id="0")
    await redis_client.xreadgroup("again", "c", {stream: ">"}, count=3)
    await redis_client.xack(stream, "again", ids[6])
    plan = await trim_stream(redis_client, keys, stream)
    assert (plan.removed, plan.held_by, plan.reason, plan.minid) == (1, "again", "pending", _s(ids[7]))


async def test_trim_without_groups_says_why(redis_client: aioredis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    await fill(redis_client, keys.stream("s"), 3)
    plan = await trim_stream(redis_client, keys, keys.stream("s"))
    assert (plan.removed, plan.minid, plan.held_by) == (0, None, None)
    assert await safe_trim_id(redis_client, keys.stream("s")) is None


def _s(value: bytes) -> str:
    return value.decode()


async def test_trim_ids_beyond_exact_lua_numbers(redis_client: aioredis.Redis, prefix: str) -> None:
    # The script compares and increments ids as decimal strings: the largest seq rolls into ms+1.
    keys = Keys(prefix)
    stream = keys.stream("s")
    big = "9007199254740993-18446744073709551615"
    for entry_id in ("9007199254740993-9007199254740993", big, "9007199254740994-0"):
        await redis_client.xadd(stream, {"n": "1"}, id=entry_id)
    await redis_client.xgroup_create(stream, "g", id="0")
    await redis_client.xreadgroup("g", "c", {stream: ">"}, count=2)
    await redis_client.xack(stream, "g", "9007199254740993-9007199254740993")
    assert await safe_trim_id(redis_client, stream) == big
    await redis_client.xack(stream, "g", big)
    assert await safe_trim_id(redis_client, stream) == "9007199254740994-0"
    assert await trim(redis_client, keys, stream) == 2


def test_redis_group_replies_are_translated_in_one_place() -> None:
    """BUSYGROUP and NOGROUP become streams errors (with redis-py's as the cause); others pass."""
    from redis.exceptions import ResponseError

    from streams import GroupExists, NoGroup, StreamsError, translate

    busy = ResponseError("BUSYGROUP Consumer Group name already exists")
    exists = translate(busy)
    assert isinstance(exists, GroupExists) and isinstance(exists, StreamsError) and exists.__cause__ is busy
    assert isinstance(translate(ResponseError("NOGROUP No such key 's' or consumer group 'g'")), NoGroup)
    other = ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")
    assert translate(other) is other
